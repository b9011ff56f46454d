"""`StreamingPredictor`: a live loop over a microphone, a camera, or both.

Push audio chunks and camera frames as they arrive. A frame is encoded on arrival only if
it will be fused: frames are sampled by timestamp, one per window / frames-per-clip seconds,
and the others are dropped unseen, so a 30 fps camera costs the frames the model uses.
Every `hop` seconds (of audio, or of frame time on a camera-only stream) the last `window`
seconds are fused and the result is kept as `latest()` and passed to the callback. Memory
is bounded by the window however long it runs.

Modalities: `audio=True, video=True` (a microphone and a camera), `video=False` (a microphone
alone: the audio-only head answers) or `audio=False` (a camera alone: frame timestamps are
the clock and the video-only head answers). With voice activity detection on (the
Predictor's `vad`), a window without speech is answered by the video head, and WavLM hears
only the speech.
"""

from __future__ import annotations

import collections
import threading
import time

import numpy as np

from . import preprocess
from .errors import CallbackError, InvalidInputError
from .predictor import Prediction, Predictor
from .validate import MAX_SECONDS, check_finite, check_positive


class StreamingPredictor:
    def __init__(self, predictor: Predictor, window: float | None = None, hop: float = 1.0, callback=None,
                 audio: bool = True, video: bool = True, emit: str = "hop", vad="auto"):
        if not isinstance(predictor, Predictor):
            raise InvalidInputError(f"StreamingPredictor wraps a foal_edge.Predictor, not {type(predictor).__name__}")
        if callback is not None and not callable(callback):
            raise InvalidInputError(f"callback must be callable (it receives each Prediction), not {callback!r}")
        if not isinstance(audio, bool) or not isinstance(video, bool) or not (audio or video):
            raise InvalidInputError(f"audio and video are True/False and at least one is True, not {audio!r}, "
                                    f"{video!r}")
        m = predictor.manifest
        self.predictor = predictor
        self.audio, self.video = audio, video
        self.window = m.audio_seconds if window is None else check_positive("window", window, "a number of seconds")
        hop = check_positive("hop", hop, "a number of seconds")
        if hop > self.window:
            raise InvalidInputError(f"hop must be in (0, window={self.window:g}] seconds, not {hop!r}")
        if self.window > m.audio_seconds:
            raise InvalidInputError(f"window {self.window} s exceeds the bundle's {m.audio_seconds:g} s audio window")
        self.rate = m.sample_rate
        self.hop = hop
        self.hop_samples = int(round(hop * self.rate))
        self.window_samples = int(round(self.window * self.rate))
        if self.window_samples < predictor.min_samples:
            raise InvalidInputError(f"window {self.window:g} s is shorter than one WavLM frame "
                                    f"({1000 * predictor.min_samples / self.rate:g} ms)")
        if self.hop_samples < 1:
            raise InvalidInputError(f"hop {hop:g} s is shorter than one audio sample at {self.rate} Hz")
        # One frame kept per this many seconds: frames-per-clip of them span a window.
        self.frame_spacing = self.window / predictor.frames_per_clip
        self.callback = callback
        if emit not in ("hop", "turns"):
            raise InvalidInputError(f"emit must be 'hop' (a prediction every hop) or 'turns' (a segment per speech "
                                    f"turn, as the file timeline), not {emit!r}")
        self.emit = emit
        self._vad = vad
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget all audio and frames and start the clock again at 0 (a new session, or a
        camera whose clock restarted). The next chunk may come at another sample rate."""
        with self._lock:
            self._src_rate: int | None = None  # the rate chunks arrive at, fixed by the first one
            self._audio = np.zeros(0, np.float32)  # at most one window, at the source rate
            self._pushed = 0  # source samples pushed so far: the clock, exact over any chunking
            self._since_hop = 0
            self._frames: collections.deque = collections.deque()  # (timestamp, embedding [D_v]), in time order
            self._last_timestamp = -np.inf
            self._last_kept = -np.inf
            self._next_video_hop = self.hop
            self._latest: Prediction | None = None
            self._encode_ms = 0.0  # frames encoded since the last prediction
            self.frames_seen = self.frames_encoded = 0
            self._turns = None
            if self.emit == "turns":
                from .timeline import TimelineCore

                self._turns = TimelineCore(self.predictor, audio=self.audio, video=self.video, vad=self._vad)

    @property
    def _clock(self) -> float:
        """Seconds of audio pushed so far (of frame time on a camera-only stream)."""
        if not self.audio:
            return max(self._last_timestamp, 0.0)
        return self._pushed / self._src_rate if self._src_rate else 0.0

    def push_audio(self, chunk, sample_rate: int) -> Prediction | None:
        """Append audio; returns a new prediction when a hop completes (else None). Chunks are
        kept at their own rate and the window is resampled once per prediction, so the clock
        is exact whatever the chunk size. If the callback raises, the chunk has been consumed
        and its prediction made: a CallbackError says so (do not push the chunk again)."""
        from .validate import check_audio

        if not self.audio:
            raise InvalidInputError("this stream is camera-only (audio=False): push frames only")
        chunk = check_audio(chunk, sample_rate, 0)
        src = int(sample_rate)
        result = None
        with self._lock:
            if self._src_rate is None:
                self._src_rate = src
            elif src != self._src_rate:
                raise InvalidInputError(f"sample_rate changed from {self._src_rate} to {src} Hz in mid-stream; push "
                                        "one rate per stream, or call reset() to start a new one")
            if self._turns is not None:
                self._pushed += len(chunk)
                wave = chunk if src == self.rate else preprocess.resample(chunk, src, self.rate)
                segments = self._turns.push_audio(wave)
            else:
                window_src = int(np.ceil(self.window_samples * src / self.rate))
                hop_src = max(1, int(round(self.hop_samples * src / self.rate)))
                self._audio = np.concatenate([self._audio, chunk])[-window_src:]
                self._pushed += len(chunk)
                self._since_hop += len(chunk)
                enough = len(self._audio) * self.rate >= self.predictor.min_samples * src
                if self._since_hop >= hop_src and enough:
                    self._since_hop %= hop_src
                    result = self._fuse_window()
        return self._deliver_segments(segments) if self._turns is not None else self._deliver(result)

    def push_frame(self, frame, timestamp: float) -> Prediction | None:
        """Offer one RGB uint8 frame [H, W, 3]. `timestamp`: seconds on the audio clock (0 = the
        first audio sample pushed; on a camera-only stream, the camera's own clock), not
        decreasing, at most one window ahead of the audio pushed so far. The frame is encoded
        only if it is due (one per window / frames-per-clip seconds); others are dropped
        unencoded. A camera-only stream returns a new prediction when a hop completes."""
        if not self.video:
            raise InvalidInputError("this stream is microphone-only (video=False): push audio only")
        timestamp = check_finite("timestamp", timestamp, "a finite number of seconds on the audio clock",
                                 limit=MAX_SECONDS)
        shape = np.shape(frame)
        if len(shape) == 4 and shape[0] != 1:
            raise InvalidInputError(f"push_frame takes one frame [H, W, 3], got {shape[0]} stacked {shape}: push "
                                    "each frame with its own timestamp")
        result = None
        with self._lock:
            if timestamp < self._last_timestamp:
                raise InvalidInputError(f"frame timestamp {timestamp:g} s is before the previous frame's "
                                        f"{self._last_timestamp:g} s; timestamps must not go backwards "
                                        "(call reset() when the camera's clock restarts)")
            if self.audio and timestamp > self._clock + self.window:
                raise InvalidInputError(f"frame timestamp {timestamp:g} s is more than the {self.window:g} s window "
                                        f"ahead of the audio ({self._clock:g} s pushed); give timestamps in seconds "
                                        "on the audio clock (0 = the first audio sample) and push audio as it arrives")
            self.frames_seen += 1
            if self._turns is not None:
                from .validate import check_frames

                self._last_timestamp = timestamp
                segments = self._turns.push_frame(timestamp, check_frames(frame, None)[0])
            else:
                due = timestamp >= self._last_kept + self.frame_spacing * (1 - 1e-6)
                if due:
                    t0 = time.perf_counter()
                    selected, _ = self.predictor.pipeline.select_frames(frame)  # validates: one frame in, one out
                    embedding = self.predictor.pipeline.embed_frames(selected)[0][0]
                    self._encode_ms += 1e3 * (time.perf_counter() - t0)
                    self._frames.append((timestamp, embedding))
                    self._last_kept = timestamp
                    self.frames_encoded += 1
                self._last_timestamp = timestamp
                if not self.audio and timestamp >= self._next_video_hop:
                    self._next_video_hop = (np.floor(timestamp / self.hop) + 1) * self.hop
                    result = self._fuse_window()
                self._drop_old(self._clock)
        return self._deliver_segments(segments) if self._turns is not None else self._deliver(result)

    def _deliver(self, result: Prediction | None) -> Prediction | None:
        if result is not None:
            self._call_back(result, "The chunk was consumed and its prediction is latest(); do not push the chunk again")
        return result

    def _call_back(self, item, consumed: str) -> None:
        """Hand `item` to the callback; what it raises becomes a CallbackError saying `consumed`."""
        if self.callback is None:
            return
        try:
            self.callback(item)
        except Exception as exc:
            raise CallbackError(f"the callback raised {type(exc).__name__}: {exc}. {consumed}") from exc

    def finish(self) -> list:
        """emit="turns": the stream ended; the turn in progress and the stretch after it are
        answered now. -> list of Segments."""
        if self._turns is None:
            raise InvalidInputError("finish() ends a stream of turns (emit='turns'); a hop stream needs no finishing")
        with self._lock:
            segments = self._turns.finish()
        return self._deliver_segments(segments)

    def _deliver_segments(self, segments: list) -> list:
        if segments:
            self._latest = segments[-1]
        for segment in segments:
            self._call_back(segment, "The input was consumed and its segments made; do not push it again")
        return segments

    def _drop_old(self, now: float) -> None:
        while self._frames and self._frames[0][0] < now - self.window:
            self._frames.popleft()

    def _fuse_window(self) -> Prediction:
        t_start = time.perf_counter()
        steps = self.predictor.pipeline
        self._drop_old(self._clock)
        timings = {"video": self._encode_ms}
        notes = []
        embeddings = None
        # Frames inside the window; frames that arrived ahead of the audio wait for it.
        current = [e for t, e in self._frames if t <= self._clock]
        if current:
            stack = np.stack(current)
            embeddings = stack[preprocess.sample_frame_indices(len(stack), self.predictor.frames_per_clip)]
        hidden = None
        if self.audio:
            t0 = time.perf_counter()
            audio = self._audio if self._src_rate == self.rate else \
                preprocess.resample(self._audio, self._src_rate, self.rate)[: self.window_samples]
            timings["audio_preprocess"] = 1e3 * (time.perf_counter() - t0)
            speech, more, timings["vad"] = steps.speech_only(audio, has_video=embeddings is not None)
            notes += more
            if speech is not None:
                t0 = time.perf_counter()
                hidden = steps.encode_audio(speech)
                timings["audio"] = 1e3 * (time.perf_counter() - t0)
        t0 = time.perf_counter()
        raw = steps.fuse([hidden], [embeddings])[0]
        timings["fusion"] = 1e3 * (time.perf_counter() - t0)
        timings["total"] = timings["video"] + 1e3 * (time.perf_counter() - t_start)
        self._encode_ms = 0.0
        self._latest = steps.prediction(raw, hidden is not None, embeddings is not None, timings, notes)
        return self._latest

    def latest(self) -> Prediction | None:
        return self._latest

    @property
    def buffered_frames(self) -> int:
        return len(self._frames)

    @property
    def buffered_seconds(self) -> float:
        return len(self._audio) / self._src_rate if self._src_rate else 0.0

    @property
    def clock(self) -> float:
        """Seconds of audio pushed since the start (or reset()); frame time on a camera-only stream."""
        return self._clock
