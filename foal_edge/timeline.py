"""An emotion timeline of a recording: segments, not one window.

    segments = Predictor("build/foal-demo").timeline("interview.mp4")
    for s in segments: print(f"{s.start:7.2f} {s.end:7.2f} {s.label}")

Speech is cut into turns by voice activity (foal_edge/vad.py): speech frames closer than
`merge_gap` seconds belong to one turn; a turn whose speech lasts less than 0.25 s is a click or a
cough and is dropped. A turn is predicted from its own audio (widened by 0.15 s either side) and
the frames of its span; a turn longer than the bundle's window is cut into windows that overlap
by `overlap` seconds, each reported over its own part (the parts tile the turn; the overlap is
context the model hears on both sides of a cut). Stretches without speech are answered by the
video-only head every `hop` seconds when the recording has frames. Frames are taken by timestamp,
one per window / frames-per-clip seconds (the spacing a window's clip has), and encoded once.

How the defaults were chosen (benchmarks/results/timeline-choices.md, docs/timeline.md): with
Silero, merge gaps of 0.3-0.5 s find the turn boundaries of espeak-ng conversations with F1 0.992
(within 0.3 s), 0.7 s and more start to join turns (0.984 at 0.7 s, 0.81 at 1.5 s): 0.5 s is the
longest gap at the top. The split overlap (0.5 s) made no difference to accuracy on the demo's
synthetic voice (0.594 at 0 and 0.5 s, 0.586 at 1 s) for 17% more audio heard; it is kept for real
speech, where a cut can fall inside a word (`overlap=0` is the cheaper choice). A video hop of
one window gives half the segments of a 1 s hop at nearly its accuracy (0.427 against 0.444).

The rules live in `Segmenter` (voice decisions in, spans out) and `TimelineCore` (audio and frames
in, segments out, memory bounded by a window), which `Predictor.timeline` (files, through one
streaming pass of foal_edge/decode.py, or arrays) and `StreamingPredictor(..., emit="turns")`
share, so a live stream and a file give the same turns for the same audio.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

import numpy as np

from . import preprocess
from .errors import InvalidInputError

MERGE_GAP = 0.5  # seconds of non-speech that end a turn (shorter pauses stay inside it)
OVERLAP = 0.5  # seconds by which the windows of a long turn overlap
PAD = 0.15  # audio heard beyond the first and last speech frame (word onsets and endings)
MIN_SPEECH = 0.25  # a turn with less speech than this is a click, a cough or a false alarm
MIN_VIDEO_TILE = 0.5  # a stretch without speech shorter than this, before a turn, is left unanswered
VAD_FRAME_SECONDS = 0.032  # the decision step when voice activity detection is off
FRAME_BATCH = 4  # frames encoded together: the 1st-4th kept, the 5th-8th, ... (see TimelineCore._embed)


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the recording
    end: float
    label: str
    probabilities: dict[str, float]
    attributes: dict[str, float] | None  # valence/arousal/dominance (1-5) when the bundle has them
    modalities: tuple[str, ...]  # ("audio", "video"), ("audio",) or ("video",)
    notes: tuple[str, ...] = field(default=())
    kind: str = "speech"  # "speech" (a turn, or a window of one) or "video" (no speech: the video head)
    # the label's calibrated probability and whether it is under Predictor(min_confidence=), as in
    # the Prediction the segment was made from (foal_edge/confidence.py)
    confidence: float | None = None
    low_confidence: bool = False

    def to_dict(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "kind": self.kind, "label": self.label,
                "confidence": self.confidence, "low_confidence": self.low_confidence,
                "probabilities": self.probabilities, "attributes": self.attributes,
                "modalities": list(self.modalities), "notes": list(self.notes)}


@dataclass(frozen=True)
class Span:
    """A segment before prediction: what it reports and what the model hears."""
    kind: str  # "speech" or "video"
    start: float
    end: float
    heard_start: float
    heard_end: float
    note: str = ""


class Segmenter:
    """Voice decisions (one bool per `frame_seconds`) in, spans out, in time order, as soon as
    they are final. `push` takes decisions as they come; `idle(t)` says that nothing was heard up
    to `t` (a camera-only stream); `finish(t)` closes the recording at `t`."""

    def __init__(self, window: float, frame_seconds: float, video: bool, merge_gap: float = MERGE_GAP,
                 overlap: float = OVERLAP, hop: float | None = None, pad: float = PAD,
                 min_speech: float = MIN_SPEECH):
        if not 0 <= overlap < window / 2:
            raise InvalidInputError(f"overlap must be in [0, {window / 2:g}) seconds (half the {window:g} s window), "
                                    f"not {overlap!r}")
        if merge_gap < 2 * pad:
            raise InvalidInputError(f"merge_gap must be at least {2 * pad:g} s (twice the {pad:g} s of audio heard "
                                    f"around speech), not {merge_gap!r}")
        self.window, self.fs, self.video = window, frame_seconds, video
        self.merge_gap, self.overlap, self.pad, self.min_speech = merge_gap, overlap, pad, min_speech
        self.hop = window if hop is None else hop
        if self.hop <= 0:
            raise InvalidInputError(f"hop must be a positive number of seconds, not {hop!r}")
        self.frames = 0
        self.gap_from = 0.0  # where the stretch without speech not yet answered starts
        self.turn: dict | None = None

    @property
    def now(self) -> float:
        return self.frames * self.fs

    def needed_from(self) -> tuple[float, float]:
        """The earliest times a span not yet emitted may need: (audio, frames)."""
        if self.turn is not None:  # a last window may reach back a window from the next one's start
            audio = max(self.turn["first_heard"], self.turn["heard_from"] - self.window)
        else:
            audio = self.now - self.pad - self.fs
        return max(0.0, audio), max(0.0, min(self.gap_from, audio))

    def push(self, voiced: np.ndarray) -> list[Span]:
        out: list[Span] = []
        for v in np.asarray(voiced, bool):
            ts = self.frames * self.fs
            te = ts + self.fs
            self.frames += 1
            turn = self.turn
            if v:
                if turn is None:
                    turn = self.turn = {"start": ts, "voiced_end": te, "speech": 0.0, "parts": 0,
                                        "heard_from": max(0.0, ts - self.pad), "reported_from": ts,
                                        "first_heard": max(0.0, ts - self.pad)}
                turn["voiced_end"] = te
                turn["speech"] += self.fs
                # A long turn: a window's worth is heard, so that window is final.
                while turn["speech"] >= self.min_speech and te + self.pad >= turn["heard_from"] + self.window:
                    out += self._part(turn)
            elif turn is not None:
                if te - turn["voiced_end"] >= self.merge_gap:
                    out += self._close(turn, final_time=te)
            elif self.video:
                out += self._tile(te)
        return out

    def idle(self, t: float) -> list[Span]:
        """Nothing heard up to `t` (no audio on this stream): answer the stretch with the video head."""
        return self._tile(t) if self.video and self.turn is None else []

    def finish(self, end: float) -> list[Span]:
        out = self._close(self.turn, final_time=end) if self.turn is not None else []
        if self.video:
            out += self._tile(end, last=True)
        return out

    def _tile(self, until: float, last: bool = False) -> list[Span]:
        out = []
        while self.gap_from + self.hop <= until + 1e-9:
            out.append(Span("video", self.gap_from, self.gap_from + self.hop, self.gap_from, self.gap_from + self.hop))
            self.gap_from += self.hop
        if last and until - self.gap_from >= MIN_VIDEO_TILE:
            out.append(Span("video", self.gap_from, until, self.gap_from, until))
            self.gap_from = until
        return out

    def _before_turn(self, turn: dict) -> list[Span]:
        """A turn is confirmed: the stretch without speech before it is answered up to its start."""
        out = []
        if turn["parts"] == 0 and self.video:
            out = self._tile(turn["start"])
            if turn["start"] - self.gap_from >= MIN_VIDEO_TILE:
                out.append(Span("video", self.gap_from, turn["start"], self.gap_from, turn["start"]))
        return out

    def _part(self, turn: dict) -> list[Span]:
        out = self._before_turn(turn)
        heard_from = turn["heard_from"]
        heard_to = heard_from + self.window
        end = heard_to - self.overlap / 2
        turn["parts"] += 1
        out.append(Span("speech", turn["reported_from"], end, heard_from, heard_to,
                        f"window {turn['parts']} of a turn longer than the {self.window:g} s window"))
        turn["reported_from"] = end
        turn["heard_from"] = heard_to - self.overlap
        return out

    def _close(self, turn: dict, final_time: float) -> list[Span]:
        self.turn = None
        if turn["speech"] < self.min_speech and turn["parts"] == 0:
            # Too little speech: a click or a cough. The stretch stays without speech.
            return self._tile(final_time) if self.video else []
        out = self._before_turn(turn)
        heard_to = min(turn["voiced_end"] + self.pad, final_time)
        if turn["parts"]:
            heard_from = max(turn["first_heard"], min(turn["heard_from"], heard_to - self.window))
            note = f"last window of a turn longer than the {self.window:g} s window"
        else:
            heard_from, note = turn["heard_from"], ""
        out.append(Span("speech", turn["reported_from"], turn["voiced_end"], heard_from, heard_to, note))
        self.gap_from = turn["voiced_end"]
        if self.video:
            out += self._tile(final_time)
        return out


class TimelineCore:
    """Audio (float32 mono at the bundle's rate, pushed in time order) and frames (RGB uint8 with
    timestamps on the audio clock) in; `Segment`s out, each as soon as it is final and its frames
    are in. Holds about a window of audio and the frame embeddings of a window: memory is flat
    however long the recording."""

    def __init__(self, predictor, audio: bool = True, video: bool = True, vad="auto", merge_gap: float = MERGE_GAP,
                 overlap: float = OVERLAP, hop: float | None = None, callback=None):
        from . import vad as voice

        m = predictor.manifest
        self.predictor = predictor
        self.rate = m.sample_rate
        self.window = m.audio_seconds
        self.audio, self.video = audio, video
        if vad not in (True, False, "auto", "silero", "webrtc"):
            raise InvalidInputError(f"vad must be 'silero', 'webrtc', 'auto', True or False, not {vad!r}")
        if audio and vad is not False:
            kind = "auto" if vad in (True, "auto") else vad
            self.detector = voice.VoiceActivity(self.rate, kind)
            self._vad_stream = self.detector.stream()
            frame_seconds = self.detector.frame_seconds
        else:
            self.detector = self._vad_stream = None
            frame_seconds = VAD_FRAME_SECONDS
        self.segmenter = Segmenter(self.window, frame_seconds, video, merge_gap, overlap, hop)
        self.spacing = self.window / predictor.frames_per_clip
        from .decode import FrameGrid

        self.grid = FrameGrid(self.spacing)
        self.callback = callback
        self._audio = np.zeros(0, np.float32)
        self._audio_from = 0  # sample index of _audio[0]
        self._pushed = 0
        self._unjudged = 0  # samples pushed without VAD (vad off): decisions owed
        self._raw: list[tuple[float, np.ndarray]] = []  # frames waiting for their batch
        self._frames: collections.deque = collections.deque()  # (timestamp, embedding)
        self._video_time = -np.inf
        self._video_done = not video
        self._spans: collections.deque = collections.deque()
        self.segments_made = 0
        self.timings = {"vad": 0.0, "audio": 0.0, "video": 0.0, "fusion": 0.0}

    # -- input ----------------------------------------------------------------------------
    def push_audio(self, samples: np.ndarray) -> list[Segment]:
        samples = np.asarray(samples, np.float32)
        self._audio = np.concatenate([self._audio, samples])
        self._pushed += len(samples)
        t0 = time.perf_counter()
        if self._vad_stream is not None:
            voiced = self._vad_stream.push(samples)
        else:
            step = int(round(VAD_FRAME_SECONDS * self.rate))
            self._unjudged += len(samples)
            voiced = np.ones(self._unjudged // step, bool)
            self._unjudged -= len(voiced) * step
        self.timings["vad"] += time.perf_counter() - t0
        self._spans.extend(self.segmenter.push(voiced))
        return self._resolve()

    def push_frame(self, timestamp: float, frame: np.ndarray) -> list[Segment]:
        if timestamp > self._video_time:
            self._video_time = timestamp
        if self.grid.due(timestamp):
            self._raw.append((timestamp, frame))
            if len(self._raw) >= FRAME_BATCH:
                self._embed()
        if not self.audio:
            self._spans.extend(self.segmenter.idle(timestamp))
        return self._resolve()

    def finish(self, end: float | None = None) -> list[Segment]:
        """The recording ended (at `end` seconds; by default where the audio or frames stopped)."""
        if end is None:
            end = self._pushed / self.rate if self.audio else max(self._video_time + self.spacing, 0.0)
        self._video_done = True
        self._embed()
        if self._vad_stream is not None:
            self._spans.extend(self.segmenter.push(self._vad_stream.flush()))
        self._spans.extend(self.segmenter.finish(end))
        return self._resolve()

    # -- work -----------------------------------------------------------------------------
    def _embed(self) -> None:
        """Encode the frames waiting. They are encoded in fixed groups (the 1st to 4th frame
        kept, the 5th to 8th, ...; a last group at the end), never as a span happens to need them:
        an int8 encoder quantises each batch with its own scale, so a frame's embedding depends on
        the frames it is encoded with, and the groups must not depend on how input arrives."""
        if not self._raw:
            return
        t0 = time.perf_counter()
        times = [t for t, _ in self._raw]
        shapes = {f.shape for _, f in self._raw}
        groups = [self._raw] if len(shapes) == 1 else [[x] for x in self._raw]  # a resolution change mid-file
        embeddings = []
        for group in groups:
            e, _, _, _ = self.predictor.pipeline.embed_frames(np.stack([f for _, f in group]))
            embeddings.extend(e)
        self._frames.extend(zip(times, embeddings))
        self._raw = []
        self.timings["video"] += time.perf_counter() - t0

    def _ready(self, span: Span) -> bool:
        """Every frame the span may use is in and encoded (frames up to a spacing past its end,
        for a span too short to hold one)."""
        if not self.video or self._video_done:
            return True
        until = span.heard_end + self.spacing
        return self._video_time >= until and not (self._raw and self._raw[0][0] < until)

    def _resolve(self) -> list[Segment]:
        out = []
        while self._spans and self._ready(self._spans[0]):
            segment = self._predict(self._spans.popleft())
            if segment is not None:
                out.append(segment)
                self.segments_made += 1
                if self.callback is not None:
                    self.callback(segment)
        self._trim()
        return out

    def _trim(self) -> None:
        audio, frames = self.segmenter.needed_from()
        for s in self._spans:
            frames = min(frames, s.heard_start)
            if s.kind == "speech":
                audio = min(audio, s.heard_start)
        first = int(audio * self.rate) - 1
        if first > self._audio_from:
            self._audio = self._audio[first - self._audio_from:]
            self._audio_from = first
        while self._frames and self._frames[0][0] < frames - self.spacing:
            self._frames.popleft()

    def _clip_frames(self, start: float, end: float) -> np.ndarray | None:
        chosen = [e for t, e in self._frames if start - 1e-6 <= t < end]
        if not chosen:  # a span shorter than the frame spacing: the frame nearest its middle
            middle = (start + end) / 2
            near = min((x for x in self._frames if x[0] < end + self.spacing), key=lambda x: abs(x[0] - middle),
                       default=None)
            if near is None or abs(near[0] - middle) > self.spacing:
                return None
            chosen = [near[1]]
        stack = np.stack(chosen)
        return stack[preprocess.sample_frame_indices(len(stack), self.predictor.frames_per_clip)]

    def _predict(self, span: Span) -> Segment | None:
        p = self.predictor.pipeline
        notes = [span.note] if span.note else []
        embeddings = self._clip_frames(span.heard_start, span.heard_end) if self.video else None
        hidden = None
        if span.kind == "speech":
            a = int(round(span.heard_start * self.rate)) - self._audio_from
            b = int(round(span.heard_end * self.rate)) - self._audio_from
            wave = self._audio[max(a, 0):max(b, 0)]
            if len(wave) < p.min_samples:
                wave = np.pad(wave, (0, p.min_samples - len(wave)))
            t0 = time.perf_counter()
            hidden = p.encode_audio(np.ascontiguousarray(wave))
            self.timings["audio"] += time.perf_counter() - t0
            if self.video and embeddings is None:
                notes.append("no frames in this turn's span: the audio-only head answers")
        elif embeddings is None:
            return None  # no frames for a stretch without speech: nothing to say
        else:
            notes.append("no speech: the video-only head answers")
        t0 = time.perf_counter()
        raw = p.fuse([hidden], [embeddings])[0]
        self.timings["fusion"] += time.perf_counter() - t0
        pred = p.prediction(raw, hidden is not None, embeddings is not None, {}, notes)
        return Segment(span.start, span.end, pred.label, pred.probabilities, pred.attributes, pred.modalities,
                       tuple(notes), span.kind, pred.confidence, pred.low_confidence)


OPTIONS = ("vad", "merge_gap", "overlap", "hop")


def _check_options(options: dict) -> None:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InvalidInputError(f"unknown timeline option(s) {unknown}: the options are {', '.join(OPTIONS)} (and "
                                "use_audio, use_video, progress for a file)")


def from_arrays(predictor, audio=None, sample_rate=None, frames=None, fps=None, timestamps=None, **options):
    """The timeline of audio and frames a caller decoded: audio (mono, any rate) and frames
    (uint8 RGB [N, H, W, 3], at `fps` or with `timestamps` in seconds on the audio clock)."""
    from .validate import check_audio, check_frames

    _check_options(options)
    if audio is None and frames is None:
        raise InvalidInputError("give audio, frames or both; both are missing")
    wave = None
    if audio is not None:
        wave = check_audio(audio, sample_rate, predictor.min_samples)
        wave = preprocess.resample(wave, int(sample_rate), predictor.manifest.sample_rate)
    times = None
    if frames is not None:
        frames = check_frames(frames, None)
        if timestamps is not None:
            times = np.asarray(timestamps, np.float64)
            if times.shape != (len(frames),) or not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0):
                raise InvalidInputError(f"timestamps must be {len(frames)} finite, non-decreasing seconds, one per "
                                        "frame")
        elif fps is not None and float(fps) > 0:
            times = np.arange(len(frames)) / float(fps)
        else:
            raise InvalidInputError("frames need fps=... or timestamps=... to be placed on the timeline")
    core = TimelineCore(predictor, audio=wave is not None, video=frames is not None, **options)
    out = []
    rate = predictor.manifest.sample_rate
    step = rate // 2
    pos, i = 0, 0
    n_audio = 0 if wave is None else len(wave)
    n_frames = 0 if frames is None else len(frames)
    while pos < n_audio or i < n_frames:
        # In time order: frames up to the end of the next audio chunk, then the chunk.
        until = (pos + step) / rate if pos < n_audio else np.inf
        while i < n_frames and times[i] < until:
            out += core.push_frame(float(times[i]), frames[i])
            i += 1
        if pos < n_audio:
            out += core.push_audio(wave[pos:pos + step])
            pos += step
    end = n_audio / rate if wave is not None else (float(times[-1]) + (1 / float(fps) if fps else 0.0))
    return out + core.finish(end)


def from_file(predictor, path, use_audio: bool = True, use_video: bool = True, progress=None, **options):
    """The timeline of a media file, in one streaming pass (foal_edge/decode.py), decoding on a
    thread while this one predicts. progress: a callable given (seconds done, seconds total)."""
    from .decode import Decoder, probe
    from .validate import check_path

    _check_options(options)
    path = check_path("path", path)
    info = probe(path)
    audio = use_audio and info.has_audio
    video = use_video and info.has_video
    if not audio and not video:
        raise InvalidInputError(f"{path}: nothing to read ({'no audio track' if use_audio else 'audio left out'}, "
                                f"{'no video track' if use_video else 'video left out'})")
    core = TimelineCore(predictor, audio=audio, video=video, **options)
    decoder = Decoder(path, predictor.manifest.sample_rate, core.spacing, audio=audio, video=video,
                      image_size=predictor.manifest.image_size)
    out = []
    last = 0.0
    for kind, t, data in decoder.iterate():
        out += core.push_audio(data) if kind == "audio" else core.push_frame(t, data)
        if progress is not None and decoder.seconds - last >= 1.0:
            last = decoder.seconds
            progress(last, info.duration)
    frame_time = 1 / info.fps if info.fps > 0 else core.spacing  # the last frame lasts one frame
    last_frame = decoder.last_frame_time
    end = max(core._pushed / core.rate, last_frame + frame_time if video and last_frame is not None else 0.0)
    out += core.finish(end)
    if progress is not None:
        progress(end, info.duration)
    return out


# -- outputs ---------------------------------------------------------------------------------
FORMATS = (".jsonl", ".csv", ".vtt")


def _vtt_time(t: float) -> str:
    ms = int(round(t * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def write(segments: list[Segment], path) -> None:
    """Segments to `path`, by its suffix: .jsonl (one object per segment), .csv (start, end,
    kind, label, confidence, low_confidence, modalities, one column per label's probability,
    attributes, notes) or .vtt (WebVTT: a cue per segment with the label and its confidence,
    "low confidence" under Predictor(min_confidence=), for a video player). Written
    to a temporary file beside it and renamed, so a failure never leaves half a file."""
    import csv
    import json
    import os
    from pathlib import Path

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InvalidInputError(f"{path}: name a {', '.join(FORMATS)} file")
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        if suffix == ".jsonl":
            for s in segments:
                f.write(json.dumps(s.to_dict()) + "\n")
        elif suffix == ".csv":
            labels = list(segments[0].probabilities) if segments else []
            attributes = list(next((s.attributes for s in segments if s.attributes), {}) or {})
            w = csv.writer(f)
            w.writerow(["start", "end", "kind", "label", "confidence", "low_confidence", "modalities", *labels,
                        *attributes, "notes"])
            for s in segments:
                w.writerow([f"{s.start:.3f}", f"{s.end:.3f}", s.kind, s.label,
                            "" if s.confidence is None else f"{s.confidence:.4f}", int(s.low_confidence),
                            "+".join(s.modalities),
                            *(f"{s.probabilities[l]:.4f}" for l in labels),
                            *((f"{s.attributes[a]:.3f}" if s.attributes else "") for a in attributes),
                            "; ".join(s.notes)])
        else:
            f.write("WEBVTT\n\n")
            for i, s in enumerate(segments, 1):
                if s.end <= s.start:
                    continue
                source = "voice+face" if s.modalities == ("audio", "video") else \
                    ("voice" if s.modalities == ("audio",) else "face")
                conf = s.probabilities[s.label] if s.confidence is None else s.confidence
                f.write(f"{i}\n{_vtt_time(s.start)} --> {_vtt_time(s.end)}\n"
                        f"{s.label} {conf:.0%}{', low confidence' if s.low_confidence else ''} ({source})\n\n")
    os.replace(tmp, path)


def check_plotting() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise InvalidInputError("--plot draws with matplotlib, which the runtime does not install: pip install "
                                "matplotlib (or leave --plot out)") from exc


def plot(segments: list[Segment], path, title: str = "") -> None:
    """The probabilities over time (a line per label, each segment's values held over its span),
    speech turns shaded, the label of each segment written above it."""
    check_plotting()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not segments:
        raise InvalidInputError("no segments to plot (the recording had no speech and no frames)")
    labels = list(segments[0].probabilities)
    end = max(s.end for s in segments)
    fig, ax = plt.subplots(figsize=(12, 3.6), dpi=110)
    colours = plt.get_cmap("tab10")
    for s in segments:
        if s.kind == "speech":
            ax.axvspan(s.start, s.end, color="0.85", lw=0)
        ax.axvline(s.start, color="0.6", lw=0.5)
    for i, label in enumerate(labels):
        xs, ys = [], []
        for s in segments:
            xs += [s.start, s.end]
            ys += [s.probabilities[label]] * 2
        ax.plot(xs, ys, color=colours(i), lw=1.6, label=label)
    for s in segments:  # the label over each segment wide enough to hold it
        if s.end - s.start >= end / 40:
            ax.text((s.start + s.end) / 2, 1.02, s.label[:3], ha="center", va="bottom", fontsize=7,
                    color="k" if s.kind == "speech" else "0.45")
    ax.set_xlim(0, end)
    ax.set_ylim(0, 1.12)
    ax.set_xlabel("seconds (grey: speech turns, predicted from voice and face; white: the face alone)")
    ax.set_ylabel("probability")
    ax.set_title(title, fontsize=10, loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def progress_bar(name: str, enabled: bool = True):
    """A tqdm bar over seconds of the recording, when tqdm is installed and wanted: a callable
    (seconds done, seconds total) with close(); None otherwise."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None

    class Bar:
        def __init__(self):
            self.bar = tqdm(desc=name, unit="s", total=None, bar_format="{desc}: {percentage:3.0f}%|{bar}| "
                            "{n:.0f}/{total_fmt} s [{elapsed}<{remaining}, {rate_fmt}]")

        def __call__(self, done, total):
            if total and self.bar.total is None:
                self.bar.total = round(total)
            self.bar.n = min(done, self.bar.total or done)
            self.bar.refresh()

        def close(self):
            self.bar.close()

    return Bar()
