"""Optional audio/video file decoding: soundfile for audio, PyAV for video (and for the
audio track of a video), Pillow for still images. Each is imported only when a file is
actually read.

Files are read as a player shows them:

- Rotation: a video's display matrix (what a phone writes for a portrait clip) or its
  `rotate` tag, and a still's EXIF orientation, are applied to the frames; `video_notes`
  says so (predict_files and batch put that note on the prediction).
- Time: frames are chosen by timestamp. Frame index `i` of `video_info`'s count means the
  time `i / fps` from the first frame (fps = the stream's average rate), and the frame used
  for a time `t` is the last one whose timestamp is <= t (within half a frame: an average
  rate is rarely exact), the frame on screen at t. On a constant-rate video that is frame
  `i` itself; on a variable-rate one it is still the frame shown at that time.
- Stills: any image Pillow reads (PNG, JPEG, WebP, BMP, GIF, TIFF, ...) is one frame.
- Size: the frame size is checked from the stream header (an image's header) before
  anything is decoded; frames over MAX_FRAME_PIXELS are refused.
- Truncated audio: a WAV whose data chunk is shorter than its header says, or any audio
  file that yields fewer samples than it declares, is refused with what is missing.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import threading
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MediaError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".ts", ".mts",
                  ".m2ts", ".3gp", ".wmv", ".ogv", ".mjpeg", ".mjpg")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_FRAME_PIXELS = 8192 * 8192  # 201 MB per RGB frame; an 8K (7680x4320) video is half of this


def _require(module: str, extra: str = "media"):
    try:
        return __import__(module)
    except ImportError as exc:
        raise MediaError(f"reading files needs the '{module}' package: pip install 'foal-edge[{extra}]'") from exc


_ERRNO = re.compile(r"\[Errno -?\d+\]\s*")


def describe(exc: BaseException) -> str:
    """A decoder's exception as words: FFmpeg's errors carry a negative four-letter tag as
    their errno ("[Errno 1094995529]" is AVERROR_INVALIDDATA); only the text is kept."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return _ERRNO.sub("", str(text)).strip()


def check_input(path) -> Path:
    """`path` as a Path when it names a regular file; a MediaError naming what it is otherwise
    (missing, a directory, a named pipe, a device). Media is read with seeking, which a pipe
    or a device cannot give."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise MediaError(f"{path}: no such file") from None
    except OSError as exc:
        raise MediaError(f"{path}: cannot open it ({describe(exc)})") from None
    if stat.S_ISREG(mode):
        return path
    what = ("a directory" if stat.S_ISDIR(mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file")
    hint = "; pass the files in it, or use batch for a folder" if stat.S_ISDIR(mode) else \
        "; media files are read with seeking, which a pipe or a device cannot do: save the stream to a file first"
    raise MediaError(f"{path}: is {what}, not a media file{hint}")


_existing = check_input  # the name the rest of the package used


# -- audio ----------------------------------------------------------------------------------
def wav_shortfall(path) -> tuple[int, int] | None:
    """For a RIFF/RF64 WAV whose data chunk is cut short: (bytes the header declares, bytes
    present). None for a complete WAV, a streamed one (size 0 or 0xFFFFFFFF: unknown) or
    another format."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            return None
        rf64_data = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"ds64":
                body = f.read(length + (length & 1))
                if len(body) >= 16:
                    rf64_data = struct.unpack("<Q", body[8:16])[0]
                continue
            if cid == b"data":
                if length == 0xFFFFFFFF and rf64_data is not None:
                    length = rf64_data
                if length in (0, 0xFFFFFFFF):
                    return None
                present = size - f.tell()
                return (length, present) if present < length else None
            f.seek(length + (length & 1), os.SEEK_CUR)


def read_audio(path, seconds: float | None = None, tail: bool = False) -> tuple[np.ndarray, int, float]:
    """-> (samples float32 [S] or [S, C], sample_rate, the file's duration in seconds).
    Channels are kept: mixing is the caller's choice. With `seconds`, only that much is read
    (the first, or with `tail` the last), so an hour-long file costs one window. A file cut
    short (a WAV whose data chunk is shorter than its header says, or any file that yields
    clearly fewer samples than it declares) is refused: its header and its audio disagree."""
    sf = _require("soundfile")
    path = check_input(path)
    short = wav_shortfall(path)
    try:
        with sf.SoundFile(os.fsencode(path)) as f:  # bytes: a name need not be UTF-8
            rate, total, channels = int(f.samplerate), f.frames, f.channels
            if short is not None:
                width = _sample_width(f.subtype)
                declared, present = short[0] // (width * channels), short[1] // (width * channels)
                raise MediaError(f"{path}: truncated WAV: the header says {declared} samples "
                                 f"({declared / rate:.2f} s), the file holds {present} ({present / rate:.2f} s); the "
                                 "recording was cut off. A tool that rewrites the header (sox, ffmpeg) makes a valid "
                                 "file of what is there")
            count = total if seconds is None else min(total, int(np.ceil(seconds * rate)))
            if tail and count < total:
                f.seek(total - count)
            audio = f.read(count, dtype="float32", always_2d=False)
    except MediaError:
        raise
    except Exception as exc:  # soundfile raises its own LibsndfileError / RuntimeError
        hint = "; a video? pass it as video (--video), its audio track is used" \
            if path.suffix.lower() in VIDEO_SUFFIXES else ""
        raise MediaError(f"{path}: cannot decode audio ({describe(exc)}){hint}") from None
    # A declared length can be an estimate (an MP3 without an index): a few frames short is read
    # as it is; a file that ends well before its header says was cut off.
    if count - len(audio) > max(0.02 * count, 0.1 * rate):
        raise MediaError(f"{path}: truncated audio: the header says {total} samples ({total / rate:.2f} s), "
                         f"decoding stopped {count - len(audio)} samples short of the part read")
    return audio, rate, total / rate if rate else 0.0


def _sample_width(subtype: str) -> int:
    digits = re.findall(r"\d+", subtype or "")
    if subtype in ("FLOAT",):
        return 4
    if subtype in ("DOUBLE",):
        return 8
    if subtype in ("ULAW", "ALAW", "PCM_U8", "PCM_S8"):
        return 1
    return int(digits[0]) // 8 if digits else 2


def has_audio_track(path) -> bool:
    """Whether a video (or any container PyAV opens) has an audio stream; a still has none."""
    path = check_input(path)
    image = still_image(path)
    if image is not None:
        image.close()
        return False
    av = _require("av")
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except av.error.FFmpegError as exc:
        raise MediaError(f"{path}: cannot open the file ({describe(exc)})") from None


# -- stills ---------------------------------------------------------------------------------
def still_image(path):
    """The image Pillow opens (header only, nothing decoded; close it) when `path` is a still,
    else None. A file with a video suffix is never taken for a still (an MJPEG starts like a
    JPEG); one with an image suffix that Pillow cannot open is a MediaError."""
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return None
    from PIL import Image

    try:
        return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise MediaError(f"{path}: the image is over the {MAX_FRAME_PIXELS / 1e6:.0f}-megapixel limit ({exc})") \
            from None
    except Exception as exc:  # Pillow: UnidentifiedImageError, or its plugins' own errors
        if suffix in IMAGE_SUFFIXES:
            raise MediaError(f"{path}: cannot read the image ({describe(exc)})") from None
        return None


def _check_size(path, width: int, height: int) -> None:
    if width * height > MAX_FRAME_PIXELS:
        raise MediaError(f"{path}: frames of {width}x{height} ({width * height / 1e6:.0f} megapixels, "
                         f"{3 * width * height / 1e9:.1f} GB each decoded) are over the "
                         f"{MAX_FRAME_PIXELS / 1e6:.0f}-megapixel limit; scale the file down first")


def _read_still(path, image) -> np.ndarray:
    from PIL import Image, ImageOps

    with image:
        _check_size(path, *image.size)
        try:
            upright = ImageOps.exif_transpose(image)
            return np.asarray(upright.convert("RGB"))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise MediaError(f"{path}: cannot decode the image ({describe(exc)})") from None


def _exif_turn(image) -> int:
    """Degrees clockwise that a still's EXIF orientation turns it (0 when it has none)."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:
        return 0
    return {3: 180, 6: 90, 8: 270, 5: 90, 7: 270}.get(orientation, 0)


# -- video ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInfo:
    fps: float  # the stream's average rate (0 for a still)
    frames: int  # frame count (may be the container's estimate); 1 for a still
    width: int  # as stored (before rotation)
    height: int
    rotation: int  # degrees clockwise applied to show it upright (0, 90, 180, 270)
    flip: bool  # mirrored (a display matrix with a reflection)
    still: bool
    duration: float  # seconds (0 for a still)


def _turn_from_matrix(values) -> tuple[int, bool]:
    """(degrees clockwise, mirrored) from a 3x3 display matrix as FFmpeg stores it (int32,
    16.16 fixed point): the transform FFmpeg's own players apply."""
    a, b, c, d = (float(values[i]) for i in (0, 1, 3, 4))
    flip = a * d - b * c < 0
    if flip:  # undo the horizontal mirror first, as FFmpeg's display_matrix_flip does
        a, c = -a, -c
    clockwise = np.degrees(np.arctan2(b, a))  # minus av_display_rotation_get (counter-clockwise)
    return int(round(clockwise / 90)) * 90 % 360, flip


def _stream_turn(stream, first_frame=None) -> tuple[int, bool]:
    if first_frame is not None:
        for side in first_frame.side_data:
            if "DISPLAYMATRIX" in str(side.type):
                raw = bytes(side)
                if len(raw) >= 36:
                    return _turn_from_matrix(np.frombuffer(raw[:36], "<i4"))
    tag = (stream.metadata or {}).get("rotate")
    try:
        return int(round(float(tag) / 90)) * 90 % 360, False
    except (TypeError, ValueError):
        return 0, False


def _upright(frame: np.ndarray, rotation: int, flip: bool) -> np.ndarray:
    if flip:
        frame = frame[:, ::-1]
    if rotation:
        frame = np.rot90(frame, k=-rotation // 90)  # rot90 turns counter-clockwise
    return np.ascontiguousarray(frame) if flip or rotation else frame


def _video_stream(path, container):
    if not container.streams.video:
        raise MediaError(f"{path}: no video stream in this file"
                         + (" (an audio file? pass it as audio: --audio)" if container.streams.audio else ""))
    stream = container.streams.video[0]
    cc = stream.codec_context
    _check_size(path, int(cc.width or 0), int(cc.height or 0))
    return stream


_PROBED: dict = {}  # (device, inode, size, mtime) -> VideoInfo: a file is probed once per change
_PROBED_LOCK = threading.Lock()


def probe_video(path) -> VideoInfo:
    """What a video (or a still) is, from its headers and its first frame (which carries the
    display matrix); the frame size is checked before that frame is decoded."""
    path = check_input(path)
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    with _PROBED_LOCK:
        if key in _PROBED:
            return _PROBED[key]
    info = _probe(path)
    with _PROBED_LOCK:
        if len(_PROBED) > 256:
            _PROBED.clear()
        _PROBED[key] = info
    return info


def _probe(path: Path) -> VideoInfo:
    image = still_image(path)
    if image is not None:
        with image:
            _check_size(path, *image.size)
            return VideoInfo(0.0, 1, image.size[0], image.size[1], _exif_turn(image), False, True, 0.0)
    av = _require("av")
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(path, container)
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            tb = float(stream.time_base or 0)
            duration = float(stream.duration * tb) if stream.duration and tb else \
                (container.duration / av.time_base if container.duration else 0.0)
            count = stream.frames or (int(round(duration * fps)) if duration and fps else 0)
            first = None
            for frame in container.decode(stream):
                _check_size(path, frame.width, frame.height)
                first = frame
                break
            rotation, flip = _stream_turn(stream, first)
            return VideoInfo(fps, count, stream.codec_context.width, stream.codec_context.height, rotation, flip,
                             False, duration)
    except (av.error.FFmpegError, IndexError) as exc:
        raise MediaError(f"{path}: cannot read video ({describe(exc)})") from None


def video_info(path) -> tuple[float, int]:
    """-> (frames per second, frame count; the count may be an estimate from the container).
    A still is (0.0, 1)."""
    info = probe_video(path)
    return info.fps, info.frames


def video_notes(path) -> list[str]:
    """What was done to show the file upright, as notes for a prediction."""
    info = probe_video(path)
    if not info.rotation and not info.flip:
        return []
    source = "its EXIF orientation" if info.still else "its display matrix"
    turn = f"rotated {info.rotation} degrees clockwise" if info.rotation else ""
    mirror = "mirrored" if info.flip else ""
    return [f"{Path(path).name}: frames {' and '.join(x for x in (turn, mirror) if x)} as {source} says "
            f"(stored {info.width}x{info.height})"]


SEEK_AFTER_SECONDS = 2.0  # wanted frames further in than this are reached by seeking, not decoding


def read_video(path, indices=None) -> tuple[np.ndarray | dict[int, np.ndarray], float]:
    """Decode RGB uint8 frames, upright. With `indices` only those are converted and kept, as
    a dict: index `i` is the time i / fps from the first frame, and the frame kept for it is
    the last one shown at or before that time (variable frame rates are read as played).
    Decoding stops after the last one, and a start further in is reached by seeking to the
    keyframe before it: a long or high-resolution video costs the frames used. Without, all
    frames [N, H, W, 3] in presentation order. Returns (frames, fps). A still image is one
    frame at fps 0."""
    path = check_input(path)
    image = still_image(path)
    if image is not None:
        frame = _read_still(path, image)
        if indices is None:
            return frame[None], 0.0
        return {int(i): frame for i in sorted(set(int(i) for i in indices))}, 0.0
    av = _require("av")
    info = probe_video(path)  # the turn, from the first frame's display matrix (cached per file)
    turn = (info.rotation, info.flip)
    wanted = None if indices is None else sorted(set(int(i) for i in indices))
    kept: dict[int, np.ndarray] = {}
    every: list[tuple[float, np.ndarray]] = []
    try:
        with av.open(str(path)) as container:
            stream = _video_stream(path, container)
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            tb = float(stream.time_base or 0)
            start = float(stream.start_time or 0) * tb
            if wanted is not None and not wanted:
                return kept, fps
            times = None if wanted is None else [i / fps if fps > 0 else 0.0 for i in wanted]
            # Half a frame of slack: the average rate of a constant-rate file is often a little
            # off (15.03 for 15), and index i must still be frame i there.
            slack = 0.5 / fps if fps > 0 else 1e-3
            if times and tb > 0 and times[0] > SEEK_AFTER_SECONDS:
                container.seek(int((start + times[0]) / tb), stream=stream, backward=True)
            nxt, previous, last = 0, None, (None, None)

            def array(frame):  # one conversion per decoded frame, however many times it stands for
                nonlocal last
                if last[0] is not frame:
                    last = (frame, _upright(frame.to_ndarray(format="rgb24"), *turn))
                return last[1]

            for n, frame in enumerate(container.decode(stream)):
                _check_size(path, frame.width, frame.height)
                t = frame.time - start if frame.time is not None else (n / fps if fps > 0 else float(n))
                if wanted is None:
                    every.append((t, _upright(frame.to_ndarray(format="rgb24"), *turn)))
                    continue
                # Every wanted time before this frame's is shown by the previous frame (the
                # first frame stands for times before it).
                while nxt < len(wanted) and times[nxt] + slack < t:
                    if previous is None:
                        previous = frame
                    kept[wanted[nxt]] = array(previous)
                    nxt += 1
                if nxt == len(wanted):
                    break
                previous = frame
            else:
                if wanted is not None and previous is not None:  # the last frame stays on screen
                    while nxt < len(wanted):
                        kept[wanted[nxt]] = array(previous)
                        nxt += 1
    except (av.error.FFmpegError, IndexError) as exc:
        raise MediaError(f"{path}: cannot decode video ({describe(exc)})") from None
    if wanted is None:
        if not every:
            raise MediaError(f"{path}: the video has no frames")
        every.sort(key=lambda item: item[0])
        return np.stack([f for _, f in every]), fps
    return kept, fps


def iter_video(path):
    """(iterator of (timestamp seconds, RGB uint8 frame, upright), fps): every frame in order,
    decoded one at a time (a replay holds one frame, not the file). A still is one frame at 0."""
    path = check_input(path)
    info = probe_video(path)
    fps = info.fps

    if info.still:
        def still():
            yield 0.0, read_video(path)[0][0]

        return still(), fps
    av = _require("av")

    def frames():
        try:
            with av.open(str(path)) as container:
                stream = _video_stream(path, container)
                tb = float(stream.time_base or 0)
                start = float(stream.start_time or 0) * tb
                turn = (info.rotation, info.flip)
                for n, frame in enumerate(container.decode(stream)):
                    _check_size(path, frame.width, frame.height)
                    t = frame.time - start if frame.time is not None else n / (fps or 30.0)
                    yield max(t, 0.0), _upright(frame.to_ndarray(format="rgb24"), *turn)
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: cannot decode video ({describe(exc)})") from None

    return frames(), fps


def read_video_audio(path, seconds: float | None = None, tail: bool = False) -> tuple[np.ndarray, int, float]:
    """The first audio track of a video file, mixed to mono float32 (the mean of its channels,
    as `predict_files` mixes a stereo audio file), its rate and the track's duration in
    seconds. With `seconds`, only that much is kept: the first (decoding stops there) or, with
    `tail`, the last (decoded through, holding no more than the window)."""
    av = _require("av")
    path = check_input(path)
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
        raise MediaError(f"{path}: cannot decode the audio track ({describe(exc)})") from None
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
