"""The HTTP/JSON form of a clip and of an error, shared by the server (`foal_edge.serve`) and
`foal_edge.Client`, and simple to write from any language:

    POST /predict
    {"audio":  {"dtype": "int16" | "float32", "sample_rate": 16000, "shape": [N] or [N, C],
                "data": BASE64},
     "frames": {"shape": [N, H, W, 3], "data": BASE64 of uint8 RGB},
     "fps": 8}
    -> 200 {"label": ..., "probabilities": {...}, "attributes": ..., "modalities": [...],
            "timings_ms": {...}, "backend": ..., "notes": [...]}
    -> 400 {"error": "InvalidInputError", "message": the runtime's own text}

Samples and pixels travel as base64 of their little-endian bytes (a 3 s clip is 128 kB of
int16 audio as base64, where a JSON list of floats would be 4x that and slow to parse).
Either "audio" or "frames" may be left out, not both; "audio.shape" may be left out for mono.
Numbers are plain JSON numbers (no 5000-digit ones: Python refuses more than 4300 digits).
Everything malformed is an InvalidInputError on the server (a 400) and a ProtocolError in the
client, never another exception.
"""

from __future__ import annotations

import base64
import binascii
import json
import math

import numpy as np

from .errors import (AuthenticationError, BackendUnavailableError, BundleError, FoalEdgeError, InferenceError,
                     InvalidInputError, MediaError, ProtocolError)

AUDIO_DTYPES = {"int16": "<i2", "int32": "<i4", "float32": "<f4", "float64": "<f8"}
MAX_BODY_BYTES = 256 << 20  # 256 MB: an hour of 16 kHz int16 audio is 115 MB
MAX_RESPONSE_BYTES = 1 << 20  # a prediction is about 1 kB, /health a few kB
MAX_MESSAGE_CHARS = 2000  # an error message, as sent and as shown
ERRORS = {cls.__name__: cls for cls in (InvalidInputError, BundleError, BackendUnavailableError, MediaError,
                                        InferenceError, AuthenticationError, FoalEdgeError)}
MODALITIES = ("audio", "video")


def _plain(value, name: str):
    """A JSON-able number: numpy scalars as Python ones (np.int64 -> int, np.float32 ->
    float), which the Predictor accepts alike; anything else is left for the checks."""
    if isinstance(value, np.generic) and value.dtype.kind in "iuf" and value.shape == ():
        return value.item()
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise InvalidInputError(f"{name} must be a number, not {type(value).__name__}")


def encode_clip(audio=None, sample_rate=None, frames=None, fps=None) -> bytes:
    """A clip as the request body (numpy arrays in; the dtype decides the audio's wire type).
    The clip is checked first, as `Predictor.predict` checks it without a bundle's numbers
    (validate.check_clip): a clip the Predictor refuses is refused here with the same message."""
    from .validate import check_clip

    check_clip({"audio": audio, "sample_rate": sample_rate, "frames": frames, "fps": fps})
    body = {}
    if audio is not None:
        audio = np.asarray(audio)
        name = next((k for k, v in AUDIO_DTYPES.items() if np.dtype(v) == audio.dtype.newbyteorder("<")), None)
        if name is None:
            raise InvalidInputError(f"audio dtype {audio.dtype} cannot be sent: use int16, int32, float32 or float64")
        body["audio"] = {"dtype": name, "sample_rate": _plain(sample_rate, "sample_rate"),
                         "shape": list(audio.shape),
                         "data": base64.b64encode(np.ascontiguousarray(audio, AUDIO_DTYPES[name]).tobytes()).decode()}
    if frames is not None:
        if isinstance(frames, (list, tuple)):
            frames = np.stack([np.asarray(f) for f in frames])
        frames = np.asarray(frames)
        if frames.dtype != np.uint8:
            raise InvalidInputError(f"frames must be uint8 RGB, got {frames.dtype}")
        body["frames"] = {"shape": list(frames.shape), "data": base64.b64encode(frames.tobytes()).decode()}
    if fps is not None:
        body["fps"] = _plain(fps, "fps")
    return json.dumps(body, allow_nan=False).encode()


def _json(body: bytes, what: str, error):
    """JSON from bytes, every failure as `error` (json raises ValueError for a number of more
    than 4300 digits, RecursionError for deep nesting, UnicodeDecodeError for bad UTF-8)."""
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError, UnicodeDecodeError, TypeError) as exc:
        raise error(f"{what} is not JSON ({str(exc)[:200]})") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _shape(raw, what: str, ranks: tuple[int, ...], limit: int = 1 << 31) -> list[int]:
    if not isinstance(raw, list) or len(raw) not in ranks or not all(_is_int(d) and 0 <= d <= limit for d in raw):
        raise InvalidInputError(f'"{what}.shape" is a list of {" or ".join(map(str, ranks))} sizes (whole numbers '
                                f"0..{limit})")
    return raw


def decode_clip(body: bytes) -> dict:
    """A request body -> the keyword arguments of `Predictor.predict`; InvalidInputError, with
    what is wrong, for anything else. Values are then checked by validate.check_clip."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise InvalidInputError("the request body must be bytes")
    if len(body) > MAX_BODY_BYTES:
        raise InvalidInputError(f"request body is {len(body)} bytes, more than {MAX_BODY_BYTES}")
    raw = _json(bytes(body), "the request body", InvalidInputError)
    if not isinstance(raw, dict) or set(raw) - {"audio", "frames", "fps"}:
        raise InvalidInputError('the request is a JSON object with "audio", "frames" and "fps" (see foal_edge.wire)')
    clip = {"audio": None, "sample_rate": None, "frames": None, "fps": raw.get("fps")}
    audio = raw.get("audio")
    if audio is not None:
        dtype_name = audio.get("dtype") if isinstance(audio, dict) else None
        if not isinstance(dtype_name, str) or dtype_name not in AUDIO_DTYPES or "data" not in audio or \
                set(audio) - {"dtype", "sample_rate", "shape", "data"}:
            raise InvalidInputError(f'"audio" is {{"dtype": one of {list(AUDIO_DTYPES)}, "sample_rate": Hz, '
                                    '"shape": [N] or [N, C], "data": base64}')
        data, dtype = _b64(audio["data"], "audio"), np.dtype(AUDIO_DTYPES[dtype_name])
        if len(data) % dtype.itemsize:
            raise InvalidInputError(f'"audio.data" is not a whole number of {dtype_name} samples')
        samples = np.frombuffer(data, dtype)
        if "shape" in audio:
            shape = _shape(audio["shape"], "audio", (1, 2))
            if math.prod(shape) != samples.size:
                raise InvalidInputError(f'"audio.data" has {samples.size} samples, the shape {shape} needs '
                                        f"{math.prod(shape)}")
            samples = samples.reshape(shape)
        clip["audio"] = samples
        clip["sample_rate"] = audio.get("sample_rate")
    frames = raw.get("frames")
    if frames is not None:
        if not isinstance(frames, dict) or set(frames) - {"shape", "data"}:
            raise InvalidInputError('"frames" is {"shape": [N, H, W, 3], "data": base64 of uint8}')
        shape = _shape(frames.get("shape"), "frames", (3, 4), 1 << 16)
        data = _b64(frames.get("data", ""), "frames")
        if len(data) != math.prod(shape):  # Python ints: no overflow
            raise InvalidInputError(f'"frames.data" has {len(data)} bytes, the shape {shape} needs '
                                    f"{math.prod(shape)}")
        clip["frames"] = np.frombuffer(data, np.uint8).reshape(shape)
    return clip


def _b64(text, what: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInputError(f'"{what}.data" must be a base64 string')
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(f'"{what}.data" is not base64 ({exc})') from None


def _clip_text(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def error_body(exc: FoalEdgeError | None, name: str | None = None, message: str | None = None) -> bytes:
    return json.dumps({"error": name or type(exc).__name__, "message": _clip_text(message or str(exc))}).encode()


def error_from(status: int, body: bytes) -> FoalEdgeError:
    """The exception an error response stands for, with the server's own message; a body
    that is not a foal-edge error (a proxy's HTML page) is a ProtocolError saying the status."""
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError, UnicodeDecodeError, TypeError):
        raw = None
    if status == 401:
        message = raw.get("message") if isinstance(raw, dict) and isinstance(raw.get("message"), str) else ""
        return AuthenticationError(_clip_text(message or "the server wants a token: Client(url, token=...)"))
    if not isinstance(raw, dict) or not isinstance(raw.get("error"), str) or not isinstance(raw.get("message"), str):
        text = bytes(body[:200]).decode("utf-8", "replace")
        return ProtocolError(f"the server answered HTTP {status} without a foal-edge error ({text!r})")
    cls = ERRORS.get(raw["error"], FoalEdgeError)
    return cls(_clip_text(raw["message"]) or f"the server answered {status}")


def _number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _names_to_numbers(v, limit: int = 256) -> bool:
    return isinstance(v, dict) and len(v) <= limit and all(isinstance(k, str) and _number(x) for k, x in v.items())


def decode_prediction(body: bytes) -> dict:
    """A /predict response -> the fields of a Prediction; ProtocolError for anything else."""
    raw = _json(body, "the server's answer", ProtocolError)
    bad = ProtocolError("the server's answer is not a foal-edge prediction (see foal_edge.wire)")
    if not isinstance(raw, dict):
        raise bad
    fields = ("label", "probabilities", "attributes", "modalities", "timings_ms", "backend", "notes")
    # the confidence fields (foal_edge.confidence) may be absent from an older server's answer
    if not set(fields) <= set(raw) <= set(fields) | set(CONFIDENCE_FIELDS):
        raise bad
    probs, attributes, modalities, notes = raw["probabilities"], raw["attributes"], raw["modalities"], raw["notes"]
    if not (isinstance(raw["label"], str) and _names_to_numbers(probs) and raw["label"] in probs
            and (attributes is None or _names_to_numbers(attributes))
            and isinstance(modalities, list) and modalities and all(isinstance(m, str) for m in modalities)
            and set(modalities) <= set(MODALITIES) and len(set(modalities)) == len(modalities)
            and _names_to_numbers(raw["timings_ms"]) and isinstance(raw["backend"], str)
            and isinstance(notes, list) and len(notes) <= 256 and all(isinstance(n, str) for n in notes)):
        raise bad
    return {"label": raw["label"], "probabilities": {k: float(v) for k, v in probs.items()},
            "attributes": None if attributes is None else {k: float(v) for k, v in attributes.items()},
            "modalities": tuple(modalities), "timings_ms": {k: float(v) for k, v in raw["timings_ms"].items()},
            "backend": raw["backend"], "notes": tuple(notes), **_decode_confidence(raw, bad)}


CONFIDENCE_FIELDS = ("confidence", "low_confidence", "per_modality")


def _probability(v) -> bool:
    return _number(v) and 0.0 <= v <= 1.0


def _decode_confidence(raw: dict, bad: ProtocolError) -> dict:
    """A prediction's confidence, low_confidence and per_modality (see Prediction), checked."""
    conf, low, per = raw.get("confidence"), raw.get("low_confidence", False), raw.get("per_modality")
    if not ((conf is None or _probability(conf)) and isinstance(low, bool)):
        raise bad
    if per is not None:
        if not (isinstance(per, dict) and set(per) <= set(MODALITIES) and per):
            raise bad
        for head in per.values():
            if not (isinstance(head, dict) and set(head) == {"label", "confidence", "probabilities"}
                    and isinstance(head["label"], str) and _probability(head["confidence"])
                    and _names_to_numbers(head["probabilities"]) and head["label"] in head["probabilities"]):
                raise bad
        per = {m: {"label": h["label"], "confidence": float(h["confidence"]),
                   "probabilities": {k: float(v) for k, v in h["probabilities"].items()}} for m, h in per.items()}
    return {"confidence": None if conf is None else float(conf), "low_confidence": low, "per_modality": per}


def decode_health(body: bytes) -> dict:
    """A /health response (a JSON object with "status": "ok" and the labels); ProtocolError
    for anything else."""
    raw = _json(body, "the server's answer", ProtocolError)
    if not isinstance(raw, dict) or raw.get("status") != "ok" or not isinstance(raw.get("labels"), list) \
            or not all(isinstance(label, str) for label in raw["labels"]):
        raise ProtocolError("the server's answer is not a foal-edge /health answer")
    return raw
