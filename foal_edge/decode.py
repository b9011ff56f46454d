"""One streaming pass over a media file: audio at the bundle's rate and the frames a timeline
needs, in file order, with bounded memory.

PyAV demultiplexes the file once and decodes both streams as their packets come (video with
FFmpeg's own frame and slice threads). Audio is converted to float32 mono at the bundle's rate by
FFmpeg's resampler and handed on in chunks of about half a second. Every video frame is decoded
(a codec needs its reference frames) but only the frames on the timeline's grid (one per
`spacing` seconds, chosen by presentation timestamp, `FrameGrid`) are converted to RGB (with
`image_size`, resized by FFmpeg's scaler in the same pass and cut to CLIP's centre crop:
`FrameScaler`), shown upright as a player shows them (foal_edge/media.py's reading of the
display matrix of the first frame, or of the stream's rotate tag) and handed on. Nothing holds the
whole file: the pass keeps one chunk of audio and a few frames at a time.

`Decoder.run(sink)` calls `sink(kind, time, data)` for each item ("audio", start seconds, float32
[n]) or ("frame", timestamp, uint8 [H, W, 3]); `iterate()` yields the same items from a thread
through a bounded queue, so decoding and the caller's inference overlap. There the decoding
thread only decodes: it hands on the kept frames as FFmpeg decoded them, and they are converted to
RGB on the caller's thread (`Decoder.picture`), which has time to spare while it waits for the
next item (0.66 s of a 2.68 s timeline of a 2-minute 720p conversation:
benchmarks/results/timeline-profile.md). When the caller falls behind (a large bundle on a small
CPU), the decoding thread converts them again, so that few whole decoded frames wait in the
queue (CONVERT_ON_CALLER_BELOW).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import media, preprocess
from .errors import BackendUnavailableError, MediaError

AUDIO_CHUNK_SECONDS = 0.5
SKIP_UNUSED = True  # frames off the grid that no frame refers to are not decoded (Decoder.run)
QUEUE_ITEMS = 32  # items in flight between the decoding thread and the caller: a second or so
# Kept frames go unconverted (as FFmpeg decoded them: 3 MB at 1080p, 12 MB at 4K) through the
# queue while the caller keeps up with decoding; once this many items wait, the caller is behind
# and the decoding thread converts them itself (to a crop of 150 kB), so few large frames wait
# (a caller taking 10 ms an item over 1080p: peak RSS 101 MB, against 145 MB converting none).
CONVERT_ON_CALLER_BELOW = 4


class FrameGrid:
    """Frames kept by timestamp: one when at least `spacing` seconds have passed since the last
    one kept (the first frame is always kept). The rule StreamingPredictor uses too."""

    def __init__(self, spacing: float):
        self.spacing = spacing
        self.last = -np.inf

    def due(self, timestamp: float) -> bool:
        if timestamp >= self.last + self.spacing * (1 - 1e-6):
            self.last = timestamp
            return True
        return False


@dataclass
class MediaInfo:
    duration: float | None  # seconds, when the container says
    has_audio: bool
    has_video: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0


def _open(path: Path):
    """The container, for a regular file (a pipe, a device or a directory is refused by
    media.check_input, as for a clip, before PyAV could block on it)."""
    path = media.check_input(path)
    try:
        import av
    except ImportError as exc:
        raise BackendUnavailableError("decoding files needs PyAV: pip install 'foal-edge[media]'") from exc
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"{path}: cannot open it as audio or video ({media.describe(exc)}); check the file, or "
                         "convert it with `ffmpeg -i FILE out.mp4`") from exc


def probe(path) -> MediaInfo:
    path = Path(path)
    with _open(path) as c:
        duration = c.duration / 1e6 if c.duration else None
        video = c.streams.video[0] if c.streams.video else None
        return MediaInfo(duration, bool(c.streams.audio), video is not None,
                         video.codec_context.width if video else 0, video.codec_context.height if video else 0,
                         float(video.average_rate or 0) if video else 0.0)


class FrameScaler:
    """A decoded frame to CLIP's input crop in one pass of FFmpeg's scaler: the YUV to RGB
    conversion and CLIP's resize (shorter side to `size`) together, then the centre crop and the
    turn upright. uint8 [size, size, 3].

    The scaler runs bicubic with chroma interpolated at full resolution and accurate rounding
    (FLAGS), honouring the frame's colour matrix and range. Against the pictures that were encoded
    (frames with stripes and noise through MPEG-4 at 20 Mbit/s), its crops are closer than those
    of converting the whole frame and resizing it with Pillow (CLIP's own transform): 1.7 grey
    levels apart on average at 1280x720 and 1.2 at 1920x1080, without a bias, against 2.1 and 1.6
    with a bias of -1.2 (the default conversion's chroma), for 2.0 and 2.5 ms of CPU a frame
    against 4.9 and 8.4 (benchmarks/results/frame-scaler.md, one thread of the 2-core Xeon;
    tests/test_timeline.py checks the crops and the probabilities). FFmpeg's plain bicubic is a
    fifth cheaper but 3.1 grey levels apart at 720p (99th percentile 21, against 10). A frame
    that is not larger than its resize (enlarged, as CLIP enlarges a small frame) returns None:
    the caller converts it whole and resizes it with Pillow, exactly as CLIP."""

    FLAGS = "bicubic+accurate_rnd+full_chroma_int"

    def __init__(self, size: int):
        self.size = size
        self._key = None
        self._graph = None

    def __call__(self, frame, turn: tuple[int, bool]) -> np.ndarray | None:
        import av

        rotation, flip = turn
        w, h = frame.width, frame.height
        turned = rotation in (90, 270)
        uh, uw = (w, h) if turned else (h, w)  # upright
        nh, nw, top, left = preprocess.crop_box(uh, uw, self.size)
        if nh * nw >= uh * uw:
            return None
        tw, th = (nh, nw) if turned else (nw, nh)  # the resize, before the turn
        key = (w, h, frame.format.name, frame.colorspace, frame.color_range, tw, th)
        if key != self._key:  # the first frame, or a stream that changes size or format
            g = av.filter.Graph()
            g.threads = 1  # on the caller's thread: slice threads cost as much CPU in all and gained no time
            nodes = [g.add("buffer", f"video_size={w}x{h}:pix_fmt={frame.format.name}:time_base=1/90000:"
                                     f"pixel_aspect=1/1:colorspace={frame.colorspace}:range={frame.color_range}"),
                     g.add("scale", f"{tw}:{th}:flags={self.FLAGS}"), g.add("format", "rgb24"), g.add("buffersink")]
            for x, y in zip(nodes, nodes[1:]):
                x.link_to(y)
            g.configure()
            self._graph, self._key = g, key
        self._graph.push(frame)
        resized = media._upright(self._graph.pull().to_ndarray(), rotation, flip)
        return np.ascontiguousarray(resized[top:top + self.size, left:left + self.size])


class Decoder:
    """A single pass over `path`: audio resampled to `rate` mono (when `audio`), and the frames on
    a grid of `spacing` seconds (when `video` and spacing is not None)."""

    def __init__(self, path, rate: int, spacing: float | None, audio: bool = True, video: bool = True,
                 image_size: int | None = None):
        self.path = Path(path)
        self.image_size = image_size
        self.rate = rate
        self.spacing = spacing
        self.audio, self.video = audio, video
        self.frames_decoded = 0
        self.frames_kept = 0
        self.seconds = 0.0  # the furthest time reached
        self.last_frame_time: float | None = None  # the timestamp of the last video frame decoded
        self._scaler = FrameScaler(image_size) if image_size else None

    def picture(self, frame, turn: tuple[int, bool], scaler: FrameScaler | None = None) -> np.ndarray:
        """A kept frame as the RGB array handed on: CLIP's crop (FrameScaler) where the frame is
        larger than its resize, else the whole frame; upright. `scaler`: one of the calling
        thread's own (a FrameScaler is used by one thread)."""
        import av

        scaler = scaler or self._scaler
        try:
            rgb = scaler(frame, turn) if scaler is not None else None
            return rgb if rgb is not None else media._upright(frame.to_ndarray(format="rgb24"), *turn)
        except av.error.FFmpegError as exc:
            raise MediaError(f"{self.path}: cannot convert the {frame.width}x{frame.height} {frame.format.name} frame "
                             f"at {self.seconds:.1f} s to RGB ({exc}); re-encode the file with `ffmpeg -i FILE "
                             "out.mp4`") from exc

    def run(self, sink, stop: threading.Event | None = None, lazy: bool = False) -> None:
        """The pass: sink(kind, time, data) for each item, in file order, until the end or `stop`.
        lazy: frames are handed on as (av.VideoFrame, turn) for `picture`, unconverted."""
        import av

        with _open(self.path) as container:
            streams = []
            a = container.streams.audio[0] if self.audio and container.streams.audio else None
            v = container.streams.video[0] if self.video and self.spacing is not None and container.streams.video \
                else None
            if a is None and v is None:
                wanted = "audio or video" if self.audio and self.video else ("audio" if self.audio else "video")
                raise MediaError(f"{self.path}: no {wanted} stream to read")
            if a is not None:
                streams.append(a)
                resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
                pending: list[np.ndarray] = []
                pending_n = 0
                emitted = 0  # samples handed on: the audio clock, exact
                chunk = int(AUDIO_CHUNK_SECONDS * self.rate)
                first_pts: float | None = None
            if v is not None:
                streams.append(v)
                v.thread_type = "AUTO"  # frame and slice threads
                grid = FrameGrid(self.spacing)
                turn = None  # (degrees clockwise, mirrored): read upright as media.py reads a clip
                start = float(v.start_time * v.time_base) if v.start_time is not None else 0.0
                seconds_per_tick = float(v.time_base)  # float arithmetic per packet, not Fractions (microseconds each)
                # Frames that cannot be on the grid are not decoded when nothing refers to them
                # (FFmpeg's skip_frame=NONREF, set per packet; frame threads take it per packet).
                skipping, timed, latest_skipped = False, True, -np.inf
                reach = self.spacing * (1 - 1e-6)
            # Frame times are on the audio clock: both measured from the container's start.
            origin = container.start_time / 1e6 if container.start_time is not None else 0.0

            def flush_audio(final=False):
                nonlocal pending, pending_n, emitted
                while pending_n >= chunk or (final and pending_n):
                    joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
                    take = joined[:chunk] if not final else joined
                    sink("audio", emitted / self.rate, take)
                    emitted += len(take)
                    rest = joined[len(take):]
                    pending, pending_n = ([rest] if len(rest) else []), len(rest)
                self.seconds = max(self.seconds, emitted / self.rate)

            try:
                for packet in container.demux(*streams):
                    if stop is not None and stop.is_set():
                        return
                    if packet.stream.type == "video" and packet.pts is not None and SKIP_UNUSED:
                        # Before the grid's next frame could be due: never on the grid, whenever the
                        # decoder hands it out, as the grid's last frame only moves on. NONREF
                        # drops it only if no other frame refers to it: the frames kept, their
                        # pixels and the audio are those of decoding every frame.
                        tp = packet.pts * seconds_per_tick - origin
                        skip = timed and tp < grid.last + reach
                        if skip != skipping:
                            v.codec_context.skip_frame = "NONREF" if skip else "DEFAULT"
                            skipping = skip
                        if skip:
                            latest_skipped = max(latest_skipped, tp)
                    for frame in packet.decode():
                        if packet.stream.type == "audio":
                            if first_pts is None and frame.pts is not None:
                                first_pts = float(frame.pts * frame.time_base) - origin
                                if first_pts > 0:  # audio that starts late: silence up to it
                                    pending.append(np.zeros(int(round(first_pts * self.rate)), np.float32))
                                    pending_n += len(pending[-1])
                            for out in resampler.resample(frame):
                                x = out.to_ndarray().reshape(-1)
                                pending.append(x)
                                pending_n += len(x)
                            flush_audio()
                        else:
                            self.frames_decoded += 1
                            timed = timed and frame.pts is not None
                            t = frame.pts * seconds_per_tick - origin if frame.pts is not None else \
                                (self.frames_decoded - 1) / float(v.average_rate or 25) + start - origin
                            if turn is None:  # the first frame carries the display matrix
                                turn = media._stream_turn(v, frame)
                            if grid.due(t):
                                self.frames_kept += 1
                                sink("frame", t, (frame, turn) if lazy else self.picture(frame, turn))
                            self.seconds = max(self.seconds, t)
                            self.last_frame_time = t
                if v is not None and latest_skipped > (self.last_frame_time or -np.inf):
                    self.last_frame_time = latest_skipped  # the last frame, had it been decoded
                    self.seconds = max(self.seconds, latest_skipped)
                if a is not None:
                    for out in resampler.resample(None):
                        x = out.to_ndarray().reshape(-1)
                        pending.append(x)
                        pending_n += len(x)
                    flush_audio(final=True)
            except av.error.FFmpegError as exc:
                raise MediaError(f"{self.path}: decoding failed at {self.seconds:.1f} s ({exc}); the file may be "
                                 "truncated: re-encode it with `ffmpeg -i FILE out.mp4`") from exc

    def iterate(self):
        """The items of `run`, decoded on a thread ahead of the caller (a bounded queue)."""
        items: queue.Queue = queue.Queue(QUEUE_ITEMS)
        stop = threading.Event()
        done = object()
        failure: list[BaseException] = []

        def put(item):
            while not stop.is_set():
                try:
                    items.put(item, timeout=0.1)
                    return
                except queue.Full:
                    continue

        own = FrameScaler(self.image_size) if self.image_size else None  # the decoding thread's

        def hand_on(kind, t, data):
            if kind == "frame" and items.qsize() >= CONVERT_ON_CALLER_BELOW:  # the caller is behind
                data = self.picture(*data, scaler=own)
            put((kind, t, data))

        def work():
            try:
                self.run(hand_on, stop, lazy=True)
            except BaseException as exc:  # handed to the caller's thread
                failure.append(exc)
            finally:
                put(done)

        thread = threading.Thread(target=work, name="foal-edge-decode", daemon=True)
        thread.start()
        try:
            while True:
                item = items.get()
                if item is done:
                    break
                if item[0] == "frame" and isinstance(item[2], tuple):  # converted here, on the caller's time
                    item = ("frame", item[1], self.picture(*item[2]))
                yield item
            if failure:
                raise failure[0]
        finally:
            stop.set()
            thread.join(timeout=5)
