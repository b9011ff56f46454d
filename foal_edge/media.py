"""Optional audio/video file decoding: soundfile for audio, PyAV for video (and for the
audio track of a video). Both are imported only when a file is actually read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import MediaError


def _require(module: str, extra: str = "media"):
    try:
        return __import__(module)
    except ImportError as exc:
        raise MediaError(f"reading files needs the '{module}' package: pip install 'foal-edge[{extra}]'") from exc


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    return path


def read_audio(path) -> tuple[np.ndarray, int]:
    """-> (samples float32 [S] or [S, C], sample_rate). Channels are kept: mixing is the caller's choice."""
    sf = _require("soundfile")
    path = _existing(path)
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except Exception as exc:  # soundfile raises its own LibsndfileError / RuntimeError
        raise MediaError(f"{path}: cannot decode audio ({exc})") from exc
    return audio, int(rate)


def video_info(path) -> tuple[float, int]:
    """-> (frames per second, frame count; the count may be an estimate from the container)."""
    av = _require("av")
    path = _existing(path)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            count = stream.frames or int(round(float(stream.duration * stream.time_base) * fps)
                                         if stream.duration else 0)
            return fps, count
    except (av.error.FFmpegError, IndexError) as exc:
        raise MediaError(f"{path}: cannot read video ({exc})") from exc


def read_video(path, indices=None) -> tuple[np.ndarray | dict[int, np.ndarray], float]:
    """Decode RGB uint8 frames. With `indices` (frame numbers) only those are kept, as a
    dict, so a long video never has to fit in memory; without, all frames [N, H, W, 3].
    Returns (frames, fps)."""
    av = _require("av")
    path = _existing(path)
    wanted = None if indices is None else set(int(i) for i in indices)
    last = None if wanted is None else (max(wanted) if wanted else -1)
    kept: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            for i, frame in enumerate(container.decode(stream)):
                if last is not None and i > last:
                    break
                if wanted is None or i in wanted:
                    kept[i] = frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, IndexError) as exc:
        raise MediaError(f"{path}: cannot decode video ({exc})") from exc
    if wanted is None:
        if not kept:
            raise MediaError(f"{path}: the video has no frames")
        return np.stack([kept[i] for i in sorted(kept)]), fps
    return kept, fps


def read_video_audio(path) -> tuple[np.ndarray, int]:
    """The first audio track of a video file, mixed to mono float32 (the mean of its channels,
    as `predict_files` mixes a stereo audio file)."""
    av = _require("av")
    path = _existing(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(f"{path}: the video has no audio track; pass audio separately")
            stream = container.streams.audio[0]
            # Planar float whatever the codec writes: packed (interleaved) formats such as
            # PCM s16 would otherwise come out as one row of interleaved samples.
            planar = av.AudioResampler(format="fltp")
            chunks = [f.to_ndarray() for frame in container.decode(stream) for f in planar.resample(frame)]
            chunks += [f.to_ndarray() for f in planar.resample(None)]
            rate = stream.rate
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: cannot decode the audio track ({exc})") from exc
    if not chunks:
        raise MediaError(f"{path}: the audio track is empty")
    return np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32), int(rate)
