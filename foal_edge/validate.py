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


def check_finite(name: str, value, what: str = "a finite number") -> float:
    """A finite number (bools and strings are not numbers here)."""
    if not _is_number(value) or not np.isfinite(value):
        raise InvalidInputError(f"{name} must be {what}, not {value!r}")
    return float(value)


def check_positive(name: str, value, what: str = "a positive number") -> float:
    """A finite number > 0."""
    if check_finite(name, value, what) <= 0:
        raise InvalidInputError(f"{name} must be {what}, not {value!r}")
    return float(value)


def check_integer(name: str, value, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidInputError(f"{name} must be {what}, not {value!r}")
    return int(value)


def check_path(name: str, value) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidInputError(f"{name} must be a path (str or pathlib.Path), not {type(value).__name__}")
    return Path(value)


def check_audio(audio, sample_rate, min_samples: int) -> np.ndarray:
    """-> float32 mono [S] (int PCM scaled to [-1, 1)); the caller resamples."""
    if sample_rate is None:
        raise InvalidInputError("sample_rate is missing: pass the audio's rate in Hz (e.g. sample_rate=16000)")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.integer, np.floating)) \
            or not np.isfinite(sample_rate) or sample_rate != int(sample_rate):
        raise InvalidInputError(f"sample_rate must be a whole number of Hz, not {sample_rate!r}")
    if not 1000 <= int(sample_rate) <= MAX_SAMPLE_RATE:
        raise InvalidInputError(f"sample_rate {sample_rate} Hz is outside 1000..{MAX_SAMPLE_RATE} Hz; "
                                "pass the rate the audio was recorded at")
    try:
        audio = np.asarray(audio)
    except Exception as exc:
        raise InvalidInputError(f"audio must be a numpy array of samples ({exc})") from None
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
    audio = preprocess.pcm_to_float(audio)
    if not np.isfinite(audio).all():
        raise InvalidInputError("audio contains NaN or Inf samples; clean the signal before predicting")
    if audio.size < min_samples * sample_rate / 16000:
        raise InvalidInputError(f"audio is {audio.size} samples ({1000 * audio.size / sample_rate:.1f} ms); "
                                f"at least 25 ms are needed for one WavLM frame")
    return audio


def check_frames(frames, fps) -> np.ndarray:
    """-> uint8 [N, H, W, 3]."""
    if fps is not None:
        check_positive("fps", fps, "a positive number of frames per second")
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
