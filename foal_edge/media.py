"""Optional audio/video file decoding: soundfile for audio, PyAV for video (and for the
audio track of a video). Both are imported only when a file is actually read."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from .errors import MediaError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".ts")


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


def read_audio(path, seconds: float | None = None, tail: bool = False) -> tuple[np.ndarray, int, float]:
    """-> (samples float32 [S] or [S, C], sample_rate, the file's duration in seconds).
    Channels are kept: mixing is the caller's choice. With `seconds`, only that much is read
    (the first, or with `tail` the last), so an hour-long file costs one window."""
    sf = _require("soundfile")
    path = _existing(path)
    try:
        with sf.SoundFile(str(path)) as f:
            rate, total = int(f.samplerate), f.frames
            count = total if seconds is None else min(total, int(np.ceil(seconds * rate)))
            if tail and count < total:
                f.seek(total - count)
            audio = f.read(count, dtype="float32", always_2d=False)
    except Exception as exc:  # soundfile raises its own LibsndfileError / RuntimeError
        hint = "; a video? pass it as video (--video), its audio track is used" \
            if path.suffix.lower() in VIDEO_SUFFIXES else ""
        raise MediaError(f"{path}: cannot decode audio ({exc}){hint}") from exc
    return audio, rate, total / rate if rate else 0.0


def has_audio_track(path) -> bool:
    """Whether a video (or any container PyAV opens) has an audio stream."""
    av = _require("av")
    path = _existing(path)
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: cannot open the file ({exc})") from exc


def video_info(path) -> tuple[float, int]:
    """-> (frames per second, frame count; the count may be an estimate from the container)."""
    av = _require("av")
    path = _existing(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream in this file"
                                 + (" (an audio file? pass it as audio: --audio)" if container.streams.audio else ""))
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            count = stream.frames or int(round(float(stream.duration * stream.time_base) * fps)
                                         if stream.duration else 0)
            return fps, count
    except (av.error.FFmpegError, IndexError) as exc:
        raise MediaError(f"{path}: cannot read video ({exc})") from exc


SEEK_AFTER_SECONDS = 2.0  # wanted frames further in than this are reached by seeking, not decoding


def read_video(path, indices=None) -> tuple[np.ndarray | dict[int, np.ndarray], float]:
    """Decode RGB uint8 frames. With `indices` (frame numbers) only those are converted and
    kept, as a dict, decoding stops after the last one, and a start further in is reached by
    seeking to the keyframe before it: a long or high-resolution video costs the frames
    used. Without, all frames [N, H, W, 3]. Returns (frames, fps)."""
    av = _require("av")
    path = _existing(path)
    wanted = None if indices is None else sorted(set(int(i) for i in indices))
    kept: dict[int, np.ndarray] = {}
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            tb = float(stream.time_base or 0)
            start = float(stream.start_time or 0) * tb
            seek = bool(wanted) and fps > 0 and tb > 0 and wanted[0] / fps > SEEK_AFTER_SECONDS
            if seek:
                container.seek(int((start + (wanted[0] - 0.5) / fps) / tb), stream=stream, backward=True)
            todo = None if wanted is None else set(wanted)
            for n, frame in enumerate(container.decode(stream)):
                # After a seek the frame number comes from the timestamp; from the start, by counting.
                i = int(round((frame.pts * tb - start) * fps)) if seek and frame.pts is not None else n
                if todo is None or i in todo:
                    kept[i] = frame.to_ndarray(format="rgb24")
                    if todo is not None:
                        todo.discard(i)
                        if not todo:
                            break
                elif todo is not None and i > wanted[-1]:
                    break
    except (av.error.FFmpegError, IndexError) as exc:
        raise MediaError(f"{path}: cannot decode video ({exc})") from exc
    if wanted is None:
        if not kept:
            raise MediaError(f"{path}: the video has no frames")
        return np.stack([kept[i] for i in sorted(kept)]), fps
    return kept, fps


def iter_video(path):
    """(iterator of (timestamp seconds, RGB uint8 frame), fps): every frame in order, decoded
    one at a time (a replay holds one frame, not the file)."""
    av = _require("av")
    path = _existing(path)
    fps, _ = video_info(path)

    def frames():
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                tb = float(stream.time_base or 0)
                start = float(stream.start_time or 0) * tb
                for n, frame in enumerate(container.decode(stream)):
                    t = frame.pts * tb - start if frame.pts is not None and tb else n / (fps or 30.0)
                    yield max(t, 0.0), frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: cannot decode video ({exc})") from exc

    return frames(), fps


def read_video_audio(path, seconds: float | None = None, tail: bool = False) -> tuple[np.ndarray, int, float]:
    """The first audio track of a video file, mixed to mono float32 (the mean of its channels,
    as `predict_files` mixes a stereo audio file), its rate and the track's duration in
    seconds. With `seconds`, only that much is kept: the first (decoding stops there) or, with
    `tail`, the last (decoded through, holding no more than the window)."""
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
            rate = stream.rate
            limit = None if seconds is None else int(np.ceil(seconds * rate))
            declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base \
                else (container.duration / av.time_base if container.duration else None)
            chunks, kept, decoded, stopped = [], 0, 0, False
            for frame in container.decode(stream):
                for f in planar.resample(frame):
                    chunks.append(f.to_ndarray())
                    kept += chunks[-1].shape[1]
                    decoded += chunks[-1].shape[1]
                if limit is not None and tail:
                    while kept - chunks[0].shape[1] >= limit:  # drop what is older than the window
                        kept -= chunks.pop(0).shape[1]
                elif limit is not None and kept > limit:  # more than the window: the track is longer
                    stopped = True
                    break
            if not stopped:  # the resampler's last samples
                flushed = [f.to_ndarray() for f in planar.resample(None)]
                chunks += flushed
                decoded += sum(c.shape[1] for c in flushed)
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: cannot decode the audio track ({exc})") from exc
    if not chunks:
        raise MediaError(f"{path}: the audio track is empty")
    audio = np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32)
    total = max(declared or 0.0, decoded / rate) if stopped else decoded / rate
    if limit is not None:
        audio = audio[-limit:] if tail else audio[:limit]
    return audio, int(rate), total


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV with the standard library (the demo clip needs no extra packages):
    (int16 samples [S], mixed to mono, sample rate)."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise MediaError(f"{path}: only 16-bit WAV is read without soundfile")
            raw = w.readframes(w.getnframes())
            channels = w.getnchannels()
            usable = len(raw) // (2 * channels) * 2 * channels
            if usable < len(raw) or usable < 2 * channels * w.getnframes():
                raise MediaError(f"{path}: truncated WAV (header says {w.getnframes()} frames, "
                                 f"{usable // (2 * channels)} present)")
            data = np.frombuffer(raw, "<i2").reshape(-1, channels)
            return data.mean(axis=1).astype(np.int16) if channels > 1 else data[:, 0].copy(), w.getframerate()
    except (OSError, EOFError, wave.Error) as exc:
        raise MediaError(f"{path}: cannot read the WAV file ({exc})") from None
