"""Audio and frame preprocessing in numpy: shared by the runtime and by training, so that
what a model was trained on is exactly what it sees when deployed.

Frames follow CLIP's own transform (open_clip / OpenAI): resize the shorter side to the
image size with antialiased bicubic interpolation (PIL's filter), centre crop, scale to
[0, 1], normalise per channel. Audio is resampled with a polyphase filter.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np


# -- frames ---------------------------------------------------------------------------------
def _bicubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    # PIL's bicubic kernel (a = -0.5).
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


@lru_cache(maxsize=64)
def _resample_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] weights of PIL's antialiased bicubic resampling along one axis."""
    scale = in_size / out_size
    support = 2.0 * max(scale, 1.0)  # the filter widens when shrinking (antialias)
    fscale = max(scale, 1.0)
    m = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), in_size)
        w = _bicubic((np.arange(lo, hi) - centre + 0.5) / fscale)
        total = w.sum()
        m[i, lo:hi] = w / total if total != 0 else w
    return m.astype(np.float32)


def resize_bicubic(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, C] -> uint8 [height, width, C], horizontal pass first, as PIL does."""
    h, w = image.shape[:2]
    x = image.astype(np.float32)
    if w != width:
        x = np.matmul(_resample_matrix(w, width)[None], x)  # [H, width, C]: (1,o,w) @ (h,w,c)
        x = np.clip(np.rint(x), 0, 255)  # PIL rounds to 8 bits between passes
    if h != height:
        x = np.tensordot(_resample_matrix(h, height), x, axes=(1, 0))  # [height, W, C]
        x = np.clip(np.rint(x), 0, 255)
    return x.astype(np.uint8)


def resize_and_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to `size` (bicubic), then a centre crop: uint8 [size, size, C]."""
    h, w = image.shape[:2]
    if h <= w:
        nh, nw = size, max(size, int(size * w / h))
    else:
        nh, nw = max(size, int(size * h / w)), size
    resized = resize_bicubic(image, nh, nw)
    top = int(round((nh - size) / 2.0))
    left = int(round((nw - size) / 2.0))
    return resized[top:top + size, left:left + size]


def normalize_frames(frames: np.ndarray, mean, std) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W], CLIP-normalised."""
    x = frames.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def sample_frame_indices(available: int, count: int) -> np.ndarray:
    """`count` indices spread evenly over `available` frames (all of them when there are
    no more than `count`): the centre of each of `count` equal segments."""
    if available <= count:
        return np.arange(available)
    return np.floor((np.arange(count) + 0.5) * available / count).astype(np.int64)


# -- audio ----------------------------------------------------------------------------------
def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy's resample_poly, Kaiser-windowed FIR), float32 out."""
    if orig_rate == target_rate:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    ratio = Fraction(target_rate, orig_rate).limit_denominator(1000)
    return resample_poly(audio.astype(np.float64), ratio.numerator, ratio.denominator).astype(np.float32)


def pcm_to_float(audio: np.ndarray) -> np.ndarray:
    """int16/int32 PCM to float32 in [-1, 1); floats pass through as float32."""
    if audio.dtype == np.int16:
        return audio.astype(np.float32) / 32768.0
    if audio.dtype == np.int32:
        return (audio.astype(np.float64) / 2147483648.0).astype(np.float32)
    return audio.astype(np.float32, copy=False)


def wavlm_frames(samples: int, kernels, strides) -> int:
    """WavLM frames for `samples` input samples (0 when the clip is too short)."""
    for k, s in zip(kernels, strides):
        if samples < k:
            return 0
        samples = (samples - k) // s + 1
    return int(samples)


def min_samples(kernels, strides) -> int:
    """The shortest input that yields one WavLM frame (400 samples = 25 ms at 16 kHz)."""
    n = 1
    for k, s in reversed(list(zip(kernels, strides))):
        n = (n - 1) * s + k
    return n


__all__ = ["resize_bicubic", "resize_and_crop", "normalize_frames", "sample_frame_indices",
           "resample", "pcm_to_float", "wavlm_frames", "min_samples"]
