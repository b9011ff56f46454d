"""`python -m foal_edge live BUNDLE`: a webcam and a microphone, or `--replay FILE`, through a
StreamingPredictor, with the label and probability bars in a panel beside the picture.

Sources: `--replay FILE` plays a video file (its frames, upright, and its audio track, PyAV)
in real time as if it were live (`--speed 0` as fast as it runs); otherwise the camera
(OpenCV) and the microphone (sounddevice), from the `live` extra. When the audio ends before
the video, the rest is predicted from the frames alone (said once). A source that falls
behind real time (a slow machine, a large picture) drops frames to keep up: they are neither
predicted, shown nor recorded; the first drop is said at once and the count at the end.

Outputs: a line per prediction on stdout (`--jsonl FILE` for machine-readable ones), a window
where there is a display (OpenCV), and `--record FILE` (.mp4, .mkv, .mov, .avi): every frame
shown, with its panel, at its own time, and the audio track (PyAV). The panel sits below a
landscape picture and beside a portrait one, never over it, sized from the picture. Both
files are written under a temporary name beside the target and renamed over it when the run
ends (Ctrl-C included), never naming the replayed file, each locked against a second writer.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import model_card
from .errors import BackendUnavailableError, InvalidInputError, MediaError
from .outputs import AtomicFile, OutputLock, check_output
from .streaming import StreamingPredictor

BAR_COLOURS = {"neutral": (170, 170, 170), "happy": (250, 200, 40), "angry": (230, 60, 50), "sad": (70, 120, 230)}
PANEL = (24, 24, 24)
LOW_COLOUR = (255, 170, 40)  # the head line of a low-confidence prediction
# Containers --record writes: suffix -> (PyAV format, audio codec).
RECORD_FORMATS = {".mp4": ("mp4", "aac"), ".m4v": ("mp4", "aac"), ".mov": ("mov", "aac"),
                  ".mkv": ("matroska", "aac"), ".avi": ("avi", "pcm_s16le")}
AUDIO_END_SLACK = 0.25  # frames this far past the audio's end go on alone (less is encoder padding)
LATE_AFTER = 0.1  # seconds behind real time before frames are dropped
SHOW_EVERY = 0.5  # while behind, a frame is still shown (and predicted) this often, in seconds


# -- the panel ------------------------------------------------------------------------------
def panel_layout(width: int, height: int, rows: int = 5) -> tuple[str, int, float]:
    """(where, panel size in pixels, scale): below a landscape picture (size = its height),
    beside a portrait one (size = its width). The scale follows the picture's short side
    (1 at 360 px), so the text and bars keep their proportion at any resolution."""
    scale = max(0.6, min(width, height) / 360)
    if height > width:
        return "right", int(round(190 * scale)), scale
    return "below", int(round((8 + 18 * rows) * scale)), scale


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=max(8, size))
    except (TypeError, OSError):  # a Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: float) -> str:
    """`text`, cut (with an ellipsis) to `width` pixels in `font`."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..." if text else ""


def annotate(frame: np.ndarray, prediction, t: float, note: str | None = None,
             notice: str | None = None) -> np.ndarray:
    """The frame, untouched, with a panel below it (landscape) or beside it (portrait): the
    time, the label with its calibrated confidence (amber and marked "low confidence" when the
    prediction is under Predictor(min_confidence=)), each probability as a bar, the modalities
    used, then `note` and the model card's `notice` (foal_edge.model_card.notice, e.g. the
    demo's synthetic-data line). Every bar and text ends inside the panel whatever the frame
    size; the result has even sides (for H.264)."""
    from PIL import Image, ImageDraw

    h, w = frame.shape[:2]
    rows = 1 + (len(prediction.probabilities) if prediction else 1) + (1 if note else 0) + (1 if notice else 0)
    where, size, scale = panel_layout(w, h, rows)
    cw, ch = (w + size, h) if where == "right" else (w, h + size)
    cw, ch = cw + cw % 2, ch + ch % 2
    canvas = Image.new("RGB", (cw, ch), PANEL)
    canvas.paste(Image.fromarray(np.ascontiguousarray(frame[:, :, :3])), (0, 0))
    d = ImageDraw.Draw(canvas)
    x0, y0 = (w, 0) if where == "right" else (0, h)
    pw = cw - x0  # the panel's width
    row = 18 * scale
    font = _font(int(13 * scale))
    pad = 6 * scale
    low = prediction is not None and getattr(prediction, "low_confidence", False)
    conf = getattr(prediction, "confidence", None) if prediction is not None else None
    head = f"{t:5.1f}s  " + (f"{prediction.label}" + (f" {conf:.2f}" if conf is not None else "")
                             + ("  LOW CONFIDENCE" if low else "") + f"  ({'+'.join(prediction.modalities)})"
                             if prediction else "listening...")
    d.text((x0 + pad, y0 + pad / 2), _fit(d, head, font, pw - 2 * pad), fill=LOW_COLOUR if low else (255, 255, 255),
           font=font)
    if prediction is not None:
        label_w = min(70 * scale, 0.35 * pw)
        value_w = min(40 * scale, 0.2 * pw)
        bar_w = max(1.0, pw - 2 * pad - label_w - value_w)
        for i, (label, p) in enumerate(sorted(prediction.probabilities.items(), key=lambda kv: -kv[1])):
            y = y0 + pad / 2 + row * (i + 1)
            p = min(max(float(p), 0.0), 1.0)
            d.text((x0 + pad, y), _fit(d, label, font, label_w - 2 * scale), fill=(255, 255, 255), font=font)
            bx = x0 + pad + label_w
            d.rectangle([bx, y + 3 * scale, bx + bar_w * p, y + row - 5 * scale],
                        fill=BAR_COLOURS.get(label, (120, 200, 120)))
            d.text((bx + bar_w + 2 * scale, y), f"{p:.2f}", fill=(255, 255, 255), font=font)
    last = rows - 1
    if notice:
        d.text((x0 + pad, y0 + pad / 2 + row * last), _fit(d, notice, font, pw - 2 * pad), fill=(170, 170, 170),
               font=font)
        last -= 1
    if note:
        d.text((x0 + pad, y0 + pad / 2 + row * last), _fit(d, note, font, pw - 2 * pad), fill=(255, 200, 120),
               font=font)
    return np.asarray(canvas)


# -- outputs --------------------------------------------------------------------------------
@dataclass
class Plan:
    """What `check_outputs` settled before anything is opened."""
    record_format: tuple[str, str] | None = None


def check_outputs(replay=None, record=None, jsonl=None) -> Plan:
    """Refuse, before the model loads, an output that would destroy an input or cannot be
    written: the replayed file named as an output (or a link to it), the same file for both
    outputs, a FIFO or a device, a --record suffix no container here writes."""
    from . import media

    inputs = []
    if replay is not None:
        inputs.append(media.check_input(replay))
    plan = Plan()
    if record is not None:
        suffix = Path(record).suffix.lower()
        if suffix not in RECORD_FORMATS:
            raise InvalidInputError(f"--record {record}: the recording is a video file: name it .mp4, .mkv, .mov or "
                                    ".avi")
        check_output(record, inputs, "--record")
        plan.record_format = RECORD_FORMATS[suffix]
        _check_codecs(record, *plan.record_format)
    if jsonl is not None:
        if Path(jsonl).suffix.lower() != ".jsonl":
            raise InvalidInputError(f"--jsonl {jsonl}: name a .jsonl file")
        check_output(jsonl, inputs + ([Path(record)] if record is not None else []), "--jsonl")
    return plan


def _video_codec(av) -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _check_codecs(record, fmt: str, audio_codec: str) -> None:
    try:
        import av
    except ImportError as exc:
        raise MediaError("--record writes video with PyAV: pip install 'foal-edge[media]'") from exc
    import io

    try:
        with av.open(io.BytesIO(), "w", format=fmt) as probe:
            probe.add_stream(_video_codec(av), rate=30)
            probe.add_stream(audio_codec, rate=16000)
    except (av.error.FFmpegError, ValueError, KeyError) as exc:
        raise MediaError(f"--record {record}: this PyAV build cannot write {fmt} with {_video_codec(av)} and "
                         f"{audio_codec} ({exc}); try .mp4 or .mkv") from None


class Recorder:
    """Annotated frames at their own times, and the audio track, into a video file (H.264
    where the PyAV build has it, MPEG-4 part 2 otherwise; AAC audio, PCM in AVI), written
    under a temporary name and renamed over `path` by close()."""

    def __init__(self, path: Path, fps: float, width: int, height: int, audio_rate: int | None = None,
                 fmt: tuple[str, str] = ("mp4", "aac")):
        import av
        from fractions import Fraction

        self.target = AtomicFile(path)
        tmp = self.target.__enter__()
        self.container = av.open(str(tmp), "w", format=fmt[0])
        self.stream = self.container.add_stream(_video_codec(av), rate=int(round(fps)) or 30)
        self.stream.width, self.stream.height = width - width % 2, height - height % 2
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.time_base = Fraction(1, 1000)  # frames carry their own times (ms)
        if self.stream.codec_context.name == "libx264":  # each frame encoded as it comes: no lookahead queue
            self.stream.codec_context.options = {"preset": "veryfast", "tune": "zerolatency"}
        self.audio = None
        if audio_rate:
            self.audio = self.container.add_stream(fmt[1], rate=int(audio_rate), layout="mono")
            self.audio_rate = int(audio_rate)
            self.audio_format = "s16" if fmt[1].startswith("pcm_s16") else "fltp"
            self._pending = np.zeros(0, np.float32)
            self._samples = 0
        self._last_pts = -1

    def write(self, frame: np.ndarray, t: float) -> None:
        import av
        from fractions import Fraction

        frame = frame[: self.stream.height, : self.stream.width]
        video = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video.pts = max(int(round(t * 1000)), self._last_pts + 1)
        video.time_base = Fraction(1, 1000)
        self._last_pts = video.pts
        for packet in self.stream.encode(video):
            self.container.mux(packet)

    def write_audio(self, chunk: np.ndarray, final: bool = False) -> None:
        if self.audio is None:
            return
        import av

        self._pending = np.concatenate([self._pending, np.asarray(chunk, np.float32).reshape(-1)])
        size = 1024
        while len(self._pending) >= size or (final and len(self._pending)):
            part, self._pending = self._pending[:size], self._pending[size:]
            data = np.clip(part, -1, 1)
            if self.audio_format == "s16":
                frame = av.AudioFrame.from_ndarray((data * 32767).astype(np.int16)[None], format="s16", layout="mono")
            else:
                frame = av.AudioFrame.from_ndarray(data[None], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = self.audio_rate, self._samples
            self._samples += len(part)
            for packet in self.audio.encode(frame):
                self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoders, close the file and rename it over the target."""
        try:
            for packet in self.stream.encode():
                self.container.mux(packet)
            if self.audio is not None:
                self.write_audio(np.zeros(0, np.float32), final=True)
                for packet in self.audio.encode():
                    self.container.mux(packet)
            self.container.close()
            self.target.commit()
        finally:
            self.target.discard()


class RowLog:
    """--jsonl: a row per prediction, flushed as it comes, under a temporary name renamed over
    the target when the run ends (an existing file is replaced only by a finished log)."""

    def __init__(self, path: Path):
        self.lock = OutputLock(path, "--jsonl").acquire()
        self.target = AtomicFile(path)
        self.f = open(self.target.__enter__(), "w", encoding="ascii")

    def write(self, row: dict) -> None:
        self.f.write(json.dumps(row, ensure_ascii=True) + "\n")
        self.f.flush()

    def close(self) -> None:
        try:
            self.f.close()
            self.target.commit()
        finally:
            self.target.discard()
            self.lock.release()


class Window:
    """An OpenCV window where there is a display; nothing otherwise."""

    def __init__(self, enabled: bool):
        self.cv2 = None
        if enabled and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform != "linux"):
            try:
                import cv2

                self.cv2 = cv2
            except ImportError:
                print("note: no window: OpenCV is not installed (pip install 'foal-edge[live]')", file=sys.stderr)

    def show(self, frame: np.ndarray) -> bool:
        """False when the user closed the window (q or Esc)."""
        if self.cv2 is None:
            return True
        self.cv2.imshow("foal-edge", frame[:, :, ::-1])
        return self.cv2.waitKey(1) & 0xFF not in (ord("q"), 27)


# -- sources --------------------------------------------------------------------------------
# Events: ("audio", t, samples, rate), ("frame", t, frame, fps), ("audio_end", t, None, None).
# A frame event may carry a fifth item, the monotonic time it was due (a camera's frame that
# sat in the driver's buffer was due before it was read).

def replay_source(path: Path, use_audio: bool):
    """(timestamp, frame) and (timestamp, audio chunk, rate) events of a video file, in time
    order; "audio_end" when the audio track has ended and frames remain."""
    from . import media

    audio, rate = None, None
    if use_audio and media.has_audio_track(path):
        audio, rate, _ = media.read_video_audio(path)
    frames, fps = media.iter_video(path)
    pushed, ended = 0, audio is None
    for t, frame in frames:
        if audio is not None and not ended:
            upto = min(len(audio), int(round(t * rate)))
            if upto > pushed:
                yield ("audio", upto / rate, audio[pushed:upto], rate)
                pushed = upto
            if pushed >= len(audio) and t > len(audio) / rate + AUDIO_END_SLACK:
                ended = True
                yield ("audio_end", len(audio) / rate, None, None)
        yield ("frame", t, frame, fps)
    if audio is not None and pushed < len(audio):
        yield ("audio", len(audio) / rate, audio[pushed:], rate)


def replay_audio_rate(path: Path, use_audio: bool) -> int | None:
    from . import media

    if not use_audio or not media.has_audio_track(path):
        return None
    av = media._require("av")
    with av.open(str(path)) as container:
        return int(container.streams.audio[0].rate)


def device_source(camera: int, use_audio: bool, rate: int = 16000):
    """Events from a webcam (OpenCV) and a microphone (sounddevice), timestamped on one clock.
    Every library is checked before any device is opened, so the message names the real
    cause; the flags it suggests are this command's."""
    mic = None
    chunks: queue.Queue = queue.Queue()
    if use_audio:
        try:
            import sounddevice
        except ImportError as exc:
            raise BackendUnavailableError("the microphone needs sounddevice: pip install 'foal-edge[live]' (or "
                                          "--video-only for the camera alone, or --replay FILE)") from exc
        except OSError as exc:  # sounddevice imports, then cannot load the PortAudio library
            raise BackendUnavailableError(f"the microphone needs the PortAudio library, which did not load ({exc}): "
                                          "install it (Debian/Ubuntu: apt install libportaudio2; macOS: brew install "
                                          "portaudio), or use --video-only for the camera alone") from exc
    try:
        import cv2
    except ImportError as exc:
        raise BackendUnavailableError("the camera needs OpenCV: pip install 'foal-edge[live]' (or --replay FILE; "
                                      "--audio-only for the microphone alone)") from exc
    if use_audio:
        try:
            mic = sounddevice.InputStream(samplerate=rate, channels=1, dtype="float32", blocksize=rate // 10,
                                          callback=lambda data, n, t, status: chunks.put(data[:, 0].copy()))
        except Exception as exc:  # sounddevice.PortAudioError: no input device, or it refuses the rate
            raise MediaError(f"microphone: cannot open it ({exc}); plug one in, or use --video-only") from exc
    try:  # our message, not OpenCV's own log lines first
        cv2.setLogLevel(0)
    except AttributeError:
        pass
    cap = cv2.VideoCapture(camera)
    if not cap.isOpened():
        raise MediaError(f"camera {camera}: cannot open it (no camera at this index, or another program is using "
                         "it); try --camera 1, or --replay FILE")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    start = time.monotonic()
    heard = 0
    if mic is not None:
        mic.start()
    try:
        while True:
            before = time.monotonic()
            ok, bgr = cap.read()
            after = time.monotonic()
            if not ok:
                raise MediaError(f"camera {camera}: no frame (unplugged?)")
            while mic is not None and not chunks.empty():
                chunk = chunks.get()
                heard += len(chunk)
                yield ("audio", heard / rate, chunk, rate)
            t = heard / rate if mic is not None else after - start
            # A read that did not wait came from the driver's buffer: it was due a frame ago or more.
            due = after if after - before > 0.25 / fps else before - 1.0 / fps
            yield ("frame", t, bgr[:, :, ::-1], fps, due)
    finally:
        cap.release()
        if mic is not None:
            mic.stop()


# -- the loop -------------------------------------------------------------------------------
class History(list):
    """The predictions (dicts: t, label, ...) with what happened on the way."""
    frames = 0  # frames from the source
    dropped = 0  # frames dropped to stay in real time
    interrupted = False
    audio_ended: float | None = None  # when the audio ended and the frames went on alone


def run(predictor, replay: Path | None = None, camera: int = 0, record: Path | None = None,
        jsonl: Path | None = None, hop: float = 1.0, speed: float = 1.0, window: bool = True,
        use_audio: bool = True, use_video: bool = True, out=None, plan: Plan | None = None,
        err=None) -> History:
    """Stream a source through the predictor; returns the predictions as dicts (t, label, ...)."""
    out = out or sys.stdout
    err = err or sys.stderr
    plan = plan or check_outputs(replay, record, jsonl)
    stream = StreamingPredictor(predictor, hop=hop, audio=use_audio, video=use_video)
    realtime = speed > 0 or replay is None
    pace = speed if replay is not None and speed > 0 else 1.0
    if replay is not None:
        audio_rate = replay_audio_rate(replay, use_audio) if record is not None else None
        events = replay_source(replay, use_audio)
    else:
        audio_rate = 16000 if use_audio else None
        events = device_source(camera, use_audio, rate=16000)
    view = Window(window)
    recorder = None
    pending_audio: list[np.ndarray] = []  # audio before the first frame sets the recording's size
    record_lock = OutputLock(record, "--record").acquire() if record is not None else None  # before any work
    try:
        log = RowLog(jsonl) if jsonl else None
    except BaseException:
        if record_lock is not None:
            record_lock.release()
        raise
    history, latest, note = History(), None, None
    # the card's one-line warning (the demo's "synthetic-data demo" line); a Client has no manifest
    notice = model_card.notice(getattr(getattr(predictor, "manifest", None), "model_card", None))
    start = shown_at = None
    try:
        for event in events:
            kind, t, data, extra = event[:4]
            if start is None:  # the clock starts with the first event, not with opening the source
                start = time.monotonic() - t / pace
            if replay is not None and speed > 0:  # play in real time (or faster / slower)
                delay = start + t / pace - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if kind == "audio_end":
                if use_video and stream.audio:
                    history.audio_ended = t
                    note = f"audio ended at {t:.1f} s: frames alone"
                    print(f"note: the audio ends at {t:.2f} s, before the video: the rest is predicted from the "
                          "frames alone (video-only head)", file=err, flush=True)
                    stream = StreamingPredictor(predictor, hop=hop, audio=False, video=True)
                continue
            if kind == "frame":
                history.frames += 1
                due = event[4] if len(event) > 4 else start + t / pace
                now = time.monotonic()
                # Behind: drop, but still show a frame every SHOW_EVERY seconds (a screen that moves).
                if realtime and now - due > LATE_AFTER and shown_at is not None and now - shown_at < SHOW_EVERY:
                    history.dropped += 1
                    if history.dropped == 1:
                        print(f"note: falling behind real time at {t:.2f} s ({time.monotonic() - due:.2f} s late): "
                              "dropping frames to keep up (the count comes at the end)", file=err, flush=True)
                    continue
            result = None
            if kind == "audio":
                if recorder is not None:
                    recorder.write_audio(data)
                elif record is not None:
                    pending_audio.append(np.asarray(data, np.float32))
                if stream.audio:
                    result = stream.push_audio(data, extra)
            elif kind == "frame" and use_video:  # sources give audio up to each frame first: never ahead
                result = stream.push_frame(data, t)
            if result is not None:
                latest = result
                row = {"t": round(stream.clock, 3), **result.to_dict()}
                history.append(row)
                print(f"{row['t']:7.2f}s  {result.label:<8} " + "  ".join(
                    f"{k} {v:.2f}" for k, v in sorted(result.probabilities.items(), key=lambda kv: -kv[1]))
                    + f"  ({'+'.join(result.modalities)}, {result.timings_ms.get('total', 0):.0f} ms)", file=out,
                    flush=True)
                if log:
                    log.write(row)
            if kind == "frame":
                shown_at = time.monotonic()
                shown = annotate(data, latest, t, note, notice)
                if record is not None:
                    if recorder is None:
                        recorder = Recorder(record, extra or 30.0, shown.shape[1], shown.shape[0], audio_rate,
                                            plan.record_format or RECORD_FORMATS[".mp4"])
                        for chunk in pending_audio:
                            recorder.write_audio(chunk)
                        pending_audio = []
                    recorder.write(shown, t)
                if not view.show(shown):
                    break
    except KeyboardInterrupt:
        history.interrupted = True
    finally:
        try:
            if recorder is not None:
                recorder.close()
        finally:
            if record_lock is not None:
                record_lock.release()
            if log:
                log.close()
        if history.dropped:
            print(f"note: {history.dropped} of {history.frames} frames dropped to stay in real time "
                  f"({'--speed 0 replays every frame' if replay is not None else 'a smaller camera resolution helps'})",
                  file=err, flush=True)
    return history
