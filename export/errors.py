"""Export's errors: one hierarchy, each message saying what to do (as foal_edge.errors is for
the runtime). `python -m export.build_engine` prints the message and exits non-zero."""


class ExportError(Exception):
    """A bundle could not be built from what was given."""


class CheckpointError(ExportError):
    """The checkpoint is missing, unreadable or not the architecture asked for."""


class TargetUnavailableError(ExportError):
    """The target (TensorRT engines) cannot be built on this machine."""


class PrecisionError(ExportError):
    """The precision is not one this target or source bundle can have."""


class ModelCardFileError(ExportError):
    """The model card (the checkpoint's or `--model-card FILE`) has a field missing or of the wrong type."""
