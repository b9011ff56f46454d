"""Audio and frame preprocessing in numpy: shared by the runtime and by training, so that
what a model was trained on is exactly what it sees when deployed.

Frames follow CLIP's own transform (open_clip / OpenAI): resize the shorter side to the
image size with Pillow's antialiased bicubic filter, centre crop, scale to [0, 1],
normalise per channel. Audio is resampled with a polyphase filter.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from functools import lru_cache

import numpy as np


# -- frames ---------------------------------------------------------------------------------
# CLIP's transform resizes a PIL image with Image.BICUBIC (antialiased when shrinking), then
# centre-crops. For every frame a camera makes, the CPU path calls Pillow itself: CLIP's own
# arithmetic, not a copy of it, and Pillow releases the GIL, so frames are resized on a
# thread pool. A wide frame that is shrunk (the usual camera frame) is resampled over its crop
# alone with Pillow's `box` argument: the same filter at the same scale, 40% less work at
# 720p; against resize-then-crop, within one grey level on photographs and two on noise (86
# frame sizes from 224 to 2400 wide, measured; tests/test_preprocess.py). Not a tall
# frame (up to 26 grey levels apart, measured) nor one enlarged (2 grey levels at 160x120):
# those are resized whole and cropped. Only a frame of extreme aspect ratio, whose full resize would be
# large (an 8x8192 strip becomes 224x229376), takes the matrix path below, which computes
# just the crop.

PILLOW_MAX_PIXELS = 16 * 224 * 224  # resized frames up to 16:1 go through Pillow (<= 3.2 MB)


def crop_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """CLIP's resize (shorter side to `size`, torchvision's integer rounding) and centre crop:
    -> (resized height, resized width, crop top, crop left); the crop is size x size."""
    if height <= width:
        nh, nw = size, max(size, int(size * width / height))
    else:
        nh, nw = max(size, int(size * height / width)), size
    top = int(round((nh - size) / 2.0))
    left = int(round((nw - size) / 2.0))
    return nh, nw, top, left


def resize_and_crop(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [size, size, 3]: shorter side to `size` with Pillow's bicubic
    filter, then the centre crop, exactly as CLIP's Resize + CenterCrop."""
    from PIL import Image

    h, w = image.shape[:2]
    nh, nw, top, left = crop_box(h, w, size)
    if nh * nw > PILLOW_MAX_PIXELS:
        return _resize_crop_matrices(image, size)
    pil = Image.fromarray(np.ascontiguousarray(image), "RGB")
    if nh == size <= h:  # wide (or square) and shrunk: the crop's columns alone, at the full resize's scale
        scale = w / nw
        box = (left * scale, 0.0, (left + size) * scale, float(h))
        return np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC, box=box))
    return np.asarray(pil.resize((nw, nh), Image.Resampling.BICUBIC))[top:top + size, left:left + size]


def _resize_crop_matrices(image: np.ndarray, size: int) -> np.ndarray:
    """The crop alone, as two matrix products over the source pixels in the filter's reach;
    rounded to 8 bits between the passes as Pillow does. Within 1 grey level of Pillow."""
    wx, wy = resize_matrices(image.shape[0], image.shape[1], size)
    cols, rows = np.flatnonzero(wx.any(0)), np.flatnonzero(wy.any(0))
    c0, c1, r0, r1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    x = image[r0:r1, c0:c1].astype(np.float32)
    x = np.clip(np.floor(np.einsum("hwc,sw->hsc", x, wx[:, c0:c1]) + 0.5), 0, 255)  # horizontal
    x = np.clip(np.floor(np.einsum("hsc,th->tsc", x, wy[:, r0:r1]) + 0.5), 0, 255)  # vertical
    return x.astype(np.uint8)


_POOL = None
_POOL_LOCK = threading.Lock()


def _pool():
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1),
                                       thread_name_prefix="foal-edge-resize")
        return _POOL


def resize_frames(frames, size: int, workers: int | None = None) -> np.ndarray:
    """Resize + crop every frame: uint8 [K, H, W, 3] -> uint8 [K, size, size, 3]. Frames are
    spread over a thread pool (Pillow releases the GIL), `workers` at most (default: all
    cores; 1 runs inline)."""
    if frames.shape[1:3] == (size, size):  # crops already (decode.FrameScaler): CLIP's resize is the identity
        return np.asarray(frames, np.uint8)
    out = np.empty((len(frames), size, size, 3), np.uint8)

    def some(ks) -> None:
        for k in ks:
            out[k] = resize_and_crop(frames[k], size)

    workers = min(len(frames), workers or os.cpu_count() or 1)
    if workers <= 1:
        some(range(len(frames)))
    else:
        # Chunks of consecutive frames, one per worker: fewer hand-offs than one task a frame.
        list(_pool().map(some, np.array_split(np.arange(len(frames)), workers)))
    return out


# The same resampling as two matrix products, for the preprocessing graph (GPU / in-graph
# path) and extreme frames: rows of the matrices are Pillow's antialiased bicubic weights for
# the crop only, so they are [size, W] and [size, H] whatever the frame (7 MB at 8192 a side).

def _bicubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    # Pillow's bicubic kernel (a = -0.5).
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def _weights(in_size: int, out_size: int, first: int, count: int) -> np.ndarray:
    """[count, in_size]: output pixels first..first+count of an in_size -> out_size resize,
    with Pillow's support window (clipped at the borders) and normalisation."""
    scale = in_size / out_size
    fscale = max(scale, 1.0)  # the filter widens when shrinking (antialias)
    support = 2.0 * fscale
    centre = (np.arange(first, first + count) + 0.5) * scale  # [count]
    lo = np.maximum((centre - support + 0.5).astype(np.int64), 0)
    hi = np.minimum((centre + support + 0.5).astype(np.int64), in_size)
    j = np.arange(in_size)
    inside = (j[None] >= lo[:, None]) & (j[None] < hi[:, None])
    w = np.where(inside, _bicubic((j[None] - centre[:, None] + 0.5) / fscale), 0.0)
    total = w.sum(1, keepdims=True)
    return (w / np.where(total == 0, 1.0, total)).astype(np.float32)


@lru_cache(maxsize=8)  # a camera has one size; 8 entries of at most 2 x 7 MB
def resize_matrices(height: int, width: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(horizontal [size, W], vertical [size, H]) float32 weights of the resize + centre crop,
    for the preprocessing graph: crop = round(V @ round(frame @ H.T))."""
    nh, nw, top, left = crop_box(height, width, size)
    return _weights(width, nw, left, size), _weights(height, nh, top, size)


def normalize_frames(frames: np.ndarray, mean, std) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W], CLIP-normalised: (x / 255 - mean) / std, as
    one multiply and one add per element into the transposed output."""
    frames = np.asarray(frames)
    std = np.asarray(std, np.float64)
    scale = (1.0 / (255.0 * std)).astype(np.float32)[:, None, None]
    offset = (-np.asarray(mean, np.float64) / std).astype(np.float32)[:, None, None]
    out = np.empty((frames.shape[0], 3, *frames.shape[1:3]), np.float32)
    np.multiply(frames.transpose(0, 3, 1, 2), scale, out=out, dtype=np.float32)
    out += offset
    return out


def sample_frame_indices(available: int, count: int) -> np.ndarray:
    """`count` indices spread evenly over `available` frames (all of them when there are
    no more than `count`): the centre of each of `count` equal segments."""
    if available <= count:
        return np.arange(available)
    return np.floor((np.arange(count) + 0.5) * available / count).astype(np.int64)


# -- audio ----------------------------------------------------------------------------------
def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy's resample_poly with its own Kaiser-windowed FIR design,
    the filter designed once per rate pair), float32 out."""
    if orig_rate == target_rate:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    up, down = _ratio(orig_rate, target_rate)
    return resample_poly(audio.astype(np.float64), up, down, window=_fir(up, down)).astype(np.float32)


def _ratio(orig_rate: int, target_rate: int) -> tuple[int, int]:
    ratio = Fraction(target_rate, orig_rate).limit_denominator(1000)
    return ratio.numerator, ratio.denominator


@lru_cache(maxsize=16)
def _fir(up: int, down: int) -> np.ndarray:
    """resample_poly's default filter (firwin, Kaiser beta 5, 10 zero crossings per side),
    designed once: the design is what made the first call of a rate 0.6-1.9 s."""
    from scipy.signal import firwin

    rate = max(up, down)  # up and down are coprime (a reduced Fraction)
    return firwin(2 * 10 * rate + 1, 1.0 / rate, window=("kaiser", 5.0))  # resample_poly scales by up


COMMON_RATES = (8000, 11025, 22050, 24000, 32000, 44100, 48000)


def warm_resampler(target_rate: int) -> None:
    """Import scipy's resampler and design the filters from the common microphone rates, so
    that a Predictor's first prediction costs what the later ones do."""
    for rate in COMMON_RATES:
        if rate != target_rate:
            resample(np.zeros(64, np.float32), rate, target_rate)


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


__all__ = ["crop_box", "resize_and_crop", "resize_frames", "resize_matrices", "normalize_frames", "sample_frame_indices",
           "resample", "pcm_to_float", "wavlm_frames", "min_samples"]
