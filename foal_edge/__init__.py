"""foal-edge runtime: Foal-Net emotion recognition from a bundle, with ONNX Runtime or
TensorRT. Imports numpy only; backends are imported when a Predictor opens them."""

from .errors import (AuthenticationError, BackendUnavailableError, BundleError, CallbackError, FoalEdgeError,
                     IncompatibleEngineError, InferenceError, InvalidInputError, MediaError, ProtocolError,
                     ServerTimeoutError)
from .client import Client
from .predictor import Prediction, Predictor
from .streaming import StreamingPredictor

__version__ = "0.1.0"
__all__ = ["Predictor", "StreamingPredictor", "Prediction", "Client", "FoalEdgeError", "InvalidInputError", "BundleError",
           "IncompatibleEngineError", "BackendUnavailableError", "InferenceError", "MediaError", "CallbackError",
           "ProtocolError", "AuthenticationError", "ServerTimeoutError"]
