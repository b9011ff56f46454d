"""Argument checks for the public entry points: each failure is an InvalidInputError that
says what was wrong and what to do."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import preprocess
from .errors import InvalidInputError

MAX_SAMPLE_RATE = 384_000


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


MAX_FPS = 1000.0  # frames per second a camera or file may claim
MAX_SECONDS = 1e12  # stream timestamps: beyond any clock (wall-clock seconds since 1970 are 1.7e9)
MAX_FLOAT_AUDIO = 100.0  # float audio is in [-1, 1]; beyond this it is unscaled PCM or garbage


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_finite(name: str, value, what: str = "a finite number", limit: float = 1e15) -> float:
    """A finite number with |value| <= limit (bools and strings are not numbers here)."""
    try:
        number = float(value) if _is_number(value) else None
    except OverflowError:  # a Python int beyond float range
        number = None
    if number is None or not np.isfinite(number):
        raise InvalidInputError(f"{name} must be {what}, not {_short(value)}")
    if abs(number) > limit:
        raise InvalidInputError(f"{name} must be {what} of at most {limit:g} in size, not {_short(value)}")
    return number


def check_positive(name: str, value, what: str = "a positive number", limit: float = 1e15) -> float:
    """A finite number in (0, limit]."""
    if check_finite(name, value, what, limit) <= 0:
        raise InvalidInputError(f"{name} must be {what}, not {_short(value)}")
    return float(value)


def check_integer(name: str, value, minimum: int, what: str, maximum: int = 1 << 31) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not minimum <= value <= maximum:
        raise InvalidInputError(f"{name} must be {what} ({minimum}..{maximum}), not {_short(value)}")
    return int(value)


def check_path(name: str, value) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidInputError(f"{name} must be a path (str or pathlib.Path), not {type(value).__name__}")
    return Path(value)


def check_audio(audio, sample_rate, min_samples: int) -> np.ndarray:
    """-> float32 mono [S] (int PCM scaled to [-1, 1)); the caller resamples."""
    if sample_rate is None:
        raise InvalidInputError("sample_rate is missing: pass the audio's rate in Hz (e.g. sample_rate=16000)")
    rate = check_finite("sample_rate", sample_rate, "a whole number of Hz", limit=1e300)
    if rate != int(rate):
        raise InvalidInputError(f"sample_rate must be a whole number of Hz, not {_short(sample_rate)}")
    if not 1000 <= rate <= MAX_SAMPLE_RATE:
        raise InvalidInputError(f"sample_rate {_short(sample_rate)} Hz is outside 1000..{MAX_SAMPLE_RATE} Hz; "
                                "pass the rate the audio was recorded at")
    try:
        audio = np.asarray(audio)
    except Exception as exc:
        raise InvalidInputError(f"audio must be a numpy array of samples ({exc})") from None
    if audio.dtype.kind in "fi" and not audio.dtype.isnative:  # big-endian samples: same values, native order
        audio = audio.astype(audio.dtype.newbyteorder("="))
    if audio.dtype not in (np.float32, np.float64, np.int16, np.int32):
        raise InvalidInputError(f"audio dtype {audio.dtype} is not supported: pass float32/float64 in [-1, 1] "
                                "or int16/int32 PCM")
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1:
        raise InvalidInputError(f"audio must be mono, shape [samples]; got shape {audio.shape}. For stereo, "
                                "mix it down yourself (audio.mean(axis=1)) or pick a channel")
    if audio.size == 0:
        raise InvalidInputError("audio is empty")
    if audio.dtype.kind == "f":
        if not np.isfinite(audio).all():
            raise InvalidInputError("audio contains NaN or Inf samples; clean the signal before predicting")
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        if peak > MAX_FLOAT_AUDIO:
            raise InvalidInputError(f"float audio peaks at {peak:.3g}; float samples belong in [-1, 1]: if these are "
                                    "int16 PCM values stored as floats, divide by 32768 (int32: 2147483648)")
    audio = preprocess.pcm_to_float(audio)
    if audio.size < min_samples * sample_rate / 16000:
        raise InvalidInputError(f"audio is {audio.size} samples ({1000 * audio.size / sample_rate:.1f} ms); "
                                f"at least 25 ms are needed for one WavLM frame")
    return audio


def check_frames(frames, fps) -> np.ndarray:
    """-> uint8 [N, H, W, 3]."""
    if fps is not None:
        check_positive("fps", fps, "a positive number of frames per second", limit=MAX_FPS)
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise InvalidInputError("frames is an empty list; pass at least one RGB frame (or frames=None)")
        shapes = {np.shape(f) for f in frames}
        if len(shapes) > 1:
            raise InvalidInputError(f"frames in the list differ in size ({sorted(shapes)[:3]}...); "
                                    "resize them to one size first")
        frames = np.stack([np.asarray(f) for f in frames])
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise InvalidInputError(f"frames must be uint8 RGB, got {frames.dtype}; convert floats in [0, 1] with "
                                "(frames * 255).round().astype(np.uint8), values in [0, 255] with "
                                "frames.clip(0, 255).round().astype(np.uint8)")
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidInputError(f"frames must be RGB [N, H, W, 3] (or one [H, W, 3]); got shape {frames.shape}"
                                + (": drop the alpha channel (frames[..., :3])" if frames.shape[-1] == 4 else "")
                                + (": stack grey frames to 3 channels" if frames.shape[-1] == 1 else ""))
    if frames.shape[0] == 0:
        raise InvalidInputError("frames has zero frames; pass at least one (or frames=None)")
    if min(frames.shape[1:3]) < 8 or max(frames.shape[1:3]) > 8192:
        raise InvalidInputError(f"frame size {frames.shape[2]}x{frames.shape[1]} is outside 8..8192 pixels a side")
    return frames


CLIP_KEYS = ("audio", "sample_rate", "frames", "fps")


def resampled_length(samples: int, source_rate: int, target_rate: int) -> int:
    """How many samples `preprocess.resample` returns for `samples` at `source_rate`."""
    if source_rate == target_rate:
        return samples
    up, down = preprocess._ratio(source_rate, target_rate)
    return -(-samples * up // down)


def check_clip(clip, min_samples: int = 0, model_rate: int | None = None, window_seconds: float | None = None,
               long_audio: str = "head") -> None:
    """The one check of a clip (a dict with the arguments of `Predictor.predict`), done by
    `Predictor.predict_batch` before a clip is run, by the server on a request's arrival and
    (without a bundle's numbers) by `Client` before sending: a clip it passes does not fail
    for its input inside a batch. With the bundle's numbers (`min_samples` and `model_rate`:
    the shortest audio WavLM takes, at the bundle's rate; `window_seconds` and `long_audio`:
    what the predictor does with long audio) it checks what the predictor will check after
    cutting and resampling."""
    if not isinstance(clip, dict) or set(clip) - set(CLIP_KEYS):
        raise InvalidInputError("each clip is a dict with keys audio, sample_rate, frames, fps")
    audio, frames = clip.get("audio"), clip.get("frames")
    if audio is None and frames is None:
        raise InvalidInputError("give audio, frames or both; both are missing")
    if audio is not None:
        wave = check_audio(audio, clip.get("sample_rate"), min_samples)
        if model_rate is not None:
            source = int(clip["sample_rate"])
            seconds = len(wave) / source
            if window_seconds is not None and long_audio == "error" and \
                    len(wave) > int(np.ceil(round(window_seconds * model_rate) * source / model_rate)):
                raise InvalidInputError(f"audio is {seconds:.2f} s, longer than the bundle's {window_seconds:g} s "
                                        "window; cut it, or use long_audio='head' or 'tail'")
            kept = len(wave)
            if window_seconds is not None:
                kept = min(kept, int(np.ceil(round(window_seconds * model_rate) * source / model_rate)))
            if resampled_length(kept, source, model_rate) < min_samples:
                needed_ms = 1000 * min_samples / model_rate
                raise InvalidInputError(f"audio is {kept} samples at {source} Hz ({1000 * seconds:.1f} ms); at least "
                                        f"{min_samples} samples at {model_rate} Hz ({needed_ms:.0f} ms) are needed "
                                        "for one WavLM frame")
    if frames is not None:
        check_frames(frames, clip.get("fps"))
