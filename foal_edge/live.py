"""`python -m foal_edge live BUNDLE`: a webcam and a microphone, or `--replay FILE`, through a
StreamingPredictor, with the label and probability bars drawn over the picture.

Sources: `--replay FILE` plays a video file (its frames and its audio track, PyAV) in real
time as if it were live (`--speed 0` as fast as it runs); otherwise the camera (OpenCV) and
the microphone (sounddevice), from the `live` extra. Outputs: a line per prediction on stdout
(`--jsonl FILE` for machine-readable ones), a window where there is a display (OpenCV), and
`--record OUT.mp4`, every frame annotated with the latest prediction (PyAV).
"""

from __future__ import annotations

import json
import os
import queue
import sys
import time
from pathlib import Path

import numpy as np

from .errors import BackendUnavailableError, MediaError
from .streaming import StreamingPredictor

BAR_COLOURS = {"neutral": (170, 170, 170), "happy": (250, 200, 40), "angry": (230, 60, 50), "sad": (70, 120, 230)}


def annotate(frame: np.ndarray, prediction, t: float) -> np.ndarray:
    """The frame with a panel: the label, each probability as a bar, the modalities used."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(frame)
    h, w = frame.shape[:2]
    scale = max(1.0, h / 240)
    d = ImageDraw.Draw(img, "RGBA")
    panel_h = int((22 + 16 * (len(prediction.probabilities) if prediction else 1)) * scale)
    d.rectangle([0, 0, int(190 * scale), panel_h], fill=(0, 0, 0, 150))
    if prediction is None:
        d.text((6 * scale, 4 * scale), f"{t:5.1f}s  listening...", fill=(255, 255, 255))
        return np.asarray(img)
    d.text((6 * scale, 4 * scale), f"{t:5.1f}s  {prediction.label}  ({'+'.join(prediction.modalities)})",
           fill=(255, 255, 255))
    for i, (label, p) in enumerate(sorted(prediction.probabilities.items(), key=lambda kv: -kv[1])):
        y = (20 + 16 * i) * scale
        d.text((6 * scale, y), f"{label:<8}", fill=(255, 255, 255))
        x0 = 64 * scale
        d.rectangle([x0, y + 2 * scale, x0 + 110 * scale * p, y + 11 * scale],
                    fill=BAR_COLOURS.get(label, (120, 200, 120)) + (255,))
        d.text((x0 + 112 * scale * p + 2, y), f"{p:.2f}", fill=(255, 255, 255))
    return np.asarray(img)


class Recorder:
    """Annotated frames into an MP4 (H.264 where the PyAV build has it, MPEG-4 part 2 otherwise)."""

    def __init__(self, path: Path, fps: float, width: int, height: int):
        import av

        self.container = av.open(str(path), "w")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=int(round(fps)) or 30)
        self.stream.width, self.stream.height = width - width % 2, height - height % 2
        self.stream.pix_fmt = "yuv420p"

    def write(self, frame: np.ndarray) -> None:
        import av

        frame = frame[: self.stream.height, : self.stream.width]
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


class Window:
    """An OpenCV window where there is a display; nothing otherwise."""

    def __init__(self, enabled: bool):
        self.cv2 = None
        if enabled and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform != "linux"):
            try:
                import cv2

                self.cv2 = cv2
            except ImportError:
                pass

    def show(self, frame: np.ndarray) -> bool:
        """False when the user closed the window (q or Esc)."""
        if self.cv2 is None:
            return True
        self.cv2.imshow("foal-edge", frame[:, :, ::-1])
        return self.cv2.waitKey(1) & 0xFF not in (ord("q"), 27)


def replay_source(path: Path, use_audio: bool):
    """(timestamp, frame) and (timestamp, audio chunk, rate) events of a video file, in time order."""
    from . import media

    fps, _ = media.video_info(path)
    audio, rate = None, None
    if use_audio and media.has_audio_track(path):
        audio, rate, _ = media.read_video_audio(path)
    frames, _ = media.iter_video(path)
    pushed = 0
    for t, frame in frames:
        if audio is not None:
            upto = min(len(audio), int(round(t * rate)))
            if upto > pushed:
                yield ("audio", t, audio[pushed:upto], rate)
                pushed = upto
        yield ("frame", t, frame, fps)
    if audio is not None and pushed < len(audio):
        yield ("audio", len(audio) / rate, audio[pushed:], rate)


def device_source(camera: int, use_audio: bool, rate: int = 16000):
    """Events from a webcam (OpenCV) and a microphone (sounddevice), timestamped on one clock."""
    try:
        import cv2
    except ImportError as exc:
        raise BackendUnavailableError("the camera needs OpenCV: pip install 'foal-edge[live]' (or use --replay)") \
            from exc
    chunks: queue.Queue = queue.Queue()
    mic = None
    if use_audio:
        try:
            import sounddevice
        except (ImportError, OSError) as exc:
            raise BackendUnavailableError("the microphone needs sounddevice (and PortAudio): pip install "
                                          "'foal-edge[live]', or --no-audio") from exc
        mic = sounddevice.InputStream(samplerate=rate, channels=1, dtype="float32", blocksize=rate // 10,
                                      callback=lambda data, n, t, status: chunks.put(data[:, 0].copy()))
    cap = cv2.VideoCapture(camera)
    if not cap.isOpened():
        raise MediaError(f"camera {camera}: cannot open it (another program using it, or no camera)")
    start = time.monotonic()
    heard = 0
    if mic is not None:
        mic.start()
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                raise MediaError(f"camera {camera}: no frame (unplugged?)")
            while mic is not None and not chunks.empty():
                chunk = chunks.get()
                heard += len(chunk)
                yield ("audio", heard / rate, chunk, rate)
            t = heard / rate if mic is not None else time.monotonic() - start
            yield ("frame", t, bgr[:, :, ::-1], cap.get(cv2.CAP_PROP_FPS) or 30.0)
    finally:
        cap.release()
        if mic is not None:
            mic.stop()


def run(predictor, replay: Path | None = None, camera: int = 0, record: Path | None = None,
        jsonl: Path | None = None, hop: float = 1.0, speed: float = 1.0, window: bool = True,
        use_audio: bool = True, use_video: bool = True, out=sys.stdout) -> list[dict]:
    """Stream a source through the predictor; returns the predictions as dicts (t, label, ...)."""
    stream = StreamingPredictor(predictor, hop=hop, audio=use_audio, video=use_video)
    events = replay_source(replay, use_audio) if replay else device_source(camera, use_audio)
    view = Window(window)
    recorder = None
    log = open(jsonl, "w", encoding="utf-8") if jsonl else None
    history, latest = [], None
    start = time.monotonic()
    try:
        for kind, t, data, extra in events:
            if replay and speed > 0:  # play in real time (or faster / slower)
                delay = start + t / speed - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if kind == "audio" and use_audio:
                result = stream.push_audio(data, extra)
            elif kind == "frame" and use_video:  # sources give audio up to each frame first: never ahead
                result = stream.push_frame(data, t)
            else:
                result = None
            if result is not None:
                latest = result
                row = {"t": round(stream.clock, 3), **result.to_dict()}
                history.append(row)
                print(f"{row['t']:7.2f}s  {result.label:<8} " + "  ".join(
                    f"{k} {v:.2f}" for k, v in sorted(result.probabilities.items(), key=lambda kv: -kv[1]))
                    + f"  ({'+'.join(result.modalities)}, {result.timings_ms.get('total', 0):.0f} ms)", file=out,
                    flush=True)
                if log:
                    log.write(json.dumps(row) + "\n")
                    log.flush()
            if kind == "frame":
                shown = annotate(data, latest, t)
                if record is not None:
                    if recorder is None:
                        recorder = Recorder(record, extra, shown.shape[1], shown.shape[0])
                    recorder.write(shown)
                if not view.show(shown):
                    break
    except KeyboardInterrupt:
        pass
    finally:
        if recorder is not None:
            recorder.close()
        if log:
            log.close()
    return history
