"""The HTTP/JSON form of a clip and of an error, shared by the server (`foal_edge.serve`) and
`foal_edge.Client`, and simple to write from any language:

    POST /predict
    {"audio":  {"dtype": "int16" | "float32", "sample_rate": 16000, "data": BASE64},
     "frames": {"shape": [N, H, W, 3], "data": BASE64 of uint8 RGB},
     "fps": 8}
    -> 200 {"label": ..., "probabilities": {...}, "attributes": ..., "modalities": [...],
            "timings_ms": {...}, "backend": ..., "notes": [...]}
    -> 400 {"error": "InvalidInputError", "message": the runtime's own text}

Samples and pixels travel as base64 of their little-endian bytes (a 3 s clip is 128 kB of
int16 audio as base64, where a JSON list of floats would be 4x that and slow to parse).
Either "audio" or "frames" may be left out, not both.
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np

from .errors import BackendUnavailableError, BundleError, FoalEdgeError, InferenceError, InvalidInputError, MediaError

AUDIO_DTYPES = {"int16": "<i2", "int32": "<i4", "float32": "<f4", "float64": "<f8"}
MAX_BODY_BYTES = 256 << 20  # 256 MB: an hour of 16 kHz int16 audio is 115 MB
ERRORS = {cls.__name__: cls for cls in (InvalidInputError, BundleError, BackendUnavailableError, MediaError,
                                        InferenceError, FoalEdgeError)}


def encode_clip(audio=None, sample_rate=None, frames=None, fps=None) -> bytes:
    """A clip as the request body (numpy arrays in; the dtype decides the audio's wire type)."""
    body = {}
    if audio is not None:
        audio = np.asarray(audio)
        name = next((k for k, v in AUDIO_DTYPES.items() if np.dtype(v) == audio.dtype.newbyteorder("<")), None)
        if name is None:
            raise InvalidInputError(f"audio dtype {audio.dtype} cannot be sent: use int16, int32, float32 or float64")
        body["audio"] = {"dtype": name, "sample_rate": sample_rate,
                         "data": base64.b64encode(audio.astype(AUDIO_DTYPES[name]).tobytes()).decode()}
    if frames is not None:
        frames = np.asarray(frames)
        if frames.dtype != np.uint8:
            raise InvalidInputError(f"frames must be uint8 RGB, got {frames.dtype}")
        body["frames"] = {"shape": list(frames.shape), "data": base64.b64encode(frames.tobytes()).decode()}
    if fps is not None:
        body["fps"] = fps
    return json.dumps(body).encode()


def decode_clip(body: bytes) -> dict:
    """A request body -> the keyword arguments of `Predictor.predict`; InvalidInputError, with
    what is wrong, for anything else. Values are then checked by the Predictor itself."""
    if len(body) > MAX_BODY_BYTES:
        raise InvalidInputError(f"request body is {len(body)} bytes, more than {MAX_BODY_BYTES}")
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInputError(f"the request body is not JSON ({exc})") from None
    if not isinstance(raw, dict) or set(raw) - {"audio", "frames", "fps"}:
        raise InvalidInputError('the request is a JSON object with "audio", "frames" and "fps" (see foal_edge.wire)')
    clip = {"audio": None, "sample_rate": None, "frames": None, "fps": raw.get("fps")}
    audio = raw.get("audio")
    if audio is not None:
        if not isinstance(audio, dict) or audio.get("dtype") not in AUDIO_DTYPES or "data" not in audio:
            raise InvalidInputError(f'"audio" is {{"dtype": one of {list(AUDIO_DTYPES)}, "sample_rate": Hz, '
                                    '"data": base64}')
        data, dtype = _b64(audio["data"], "audio"), np.dtype(AUDIO_DTYPES[audio["dtype"]])
        if len(data) % dtype.itemsize:
            raise InvalidInputError(f'"audio.data" is not a whole number of {audio["dtype"]} samples')
        clip["audio"] = np.frombuffer(data, dtype)
        clip["sample_rate"] = audio.get("sample_rate")
    frames = raw.get("frames")
    if frames is not None:
        shape = frames.get("shape") if isinstance(frames, dict) else None
        if not isinstance(shape, list) or not 3 <= len(shape) <= 4 or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 1 << 16 for d in shape):
            raise InvalidInputError('"frames" is {"shape": [N, H, W, 3], "data": base64 of uint8}')
        data = _b64(frames.get("data", ""), "frames")
        if len(data) != int(np.prod(shape, dtype=np.int64)):
            raise InvalidInputError(f'"frames.data" has {len(data)} bytes, the shape {shape} needs '
                                    f"{int(np.prod(shape, dtype=np.int64))}")
        clip["frames"] = np.frombuffer(data, np.uint8).reshape(shape)
    return clip


def _b64(text, what: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInputError(f'"{what}.data" must be a base64 string')
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(f'"{what}.data" is not base64 ({exc})') from None


def error_body(exc: FoalEdgeError) -> bytes:
    return json.dumps({"error": type(exc).__name__, "message": str(exc)}).encode()


def error_from(status: int, body: bytes) -> FoalEdgeError:
    """The exception a response stands for, with the server's own message."""
    try:
        raw = json.loads(body)
        cls, message = ERRORS.get(raw.get("error"), FoalEdgeError), raw.get("message", "")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        cls, message = FoalEdgeError, body[:500].decode("utf-8", "replace")
    return cls(message or f"the server answered {status}")
