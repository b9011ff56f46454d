"""One exception hierarchy for everything the runtime refuses. Each message says what was
wrong and what to do about it."""


class FoalEdgeError(Exception):
    """Base class: catch this to handle every error foal_edge raises on purpose."""


class InvalidInputError(FoalEdgeError, ValueError):
    """Audio, frames or arguments that cannot be used as given."""


class BundleError(FoalEdgeError):
    """A bundle directory that is missing, incomplete, corrupt or of another schema version."""


class ModelCardError(FoalEdgeError, ValueError):
    """A model card (`build_engine --model-card FILE`, or a manifest's) with a field missing or of the wrong type."""


class IncompatibleEngineError(BundleError):
    """A TensorRT engine built for another TensorRT version or GPU: rebuild it on this device."""


class BackendUnavailableError(FoalEdgeError):
    """The requested backend (or its libraries, or a GPU) is not available here."""


class MediaError(FoalEdgeError):
    """An audio or video file that cannot be opened or decoded."""


class InferenceError(FoalEdgeError, RuntimeError):
    """A backend failed while running a graph (out of memory, a driver or CUDA error). The
    input was valid; the predictor may be used again once the cause is gone."""


class CallbackError(FoalEdgeError):
    """The user's streaming callback raised (the cause is chained). The chunk that completed
    the hop was consumed and its prediction is `latest()`: do not push that chunk again."""


class ProtocolError(FoalEdgeError):
    """A message that does not follow `foal_edge.wire`: a response the client cannot read (not
    JSON, too large, truncated, wrong fields), or a server that is not a foal-edge server."""


class AuthenticationError(FoalEdgeError):
    """The server refused the request's token (HTTP 401): pass the server's token with
    `Client(url, token=...)`."""


class ServerTimeoutError(BackendUnavailableError, TimeoutError):
    """The server did not answer within the client's total deadline (`Client(timeout=...)`)."""
