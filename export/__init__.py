"""Export: a trained checkpoint -> a deployable bundle (ONNX graphs or TensorRT engines).
`build_bundle` is the library call; `python -m export.build_engine` its command line."""

from .api import build_bundle
from .errors import CheckpointError, ExportError, PrecisionError, TargetUnavailableError

__all__ = ["build_bundle", "ExportError", "CheckpointError", "TargetUnavailableError", "PrecisionError"]
