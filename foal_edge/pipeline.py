"""The steps of a prediction, each a public method of `Pipeline`: `Predictor` runs them
for whole clips, `StreamingPredictor` one by one as audio and frames arrive, and the latency
benchmark times them stage by stage.

    audio:  prepare_audio (validate, window, resample) -> speech_only (VAD) -> encode_audio
    frames: select_frames (validate, sample) -> embed_frames (preprocess where the graphs
            run, or prepare_frames on the CPU, then encode_frames)
    both:   fuse (one batch through the fusion head) -> prediction (softmax, labels)

Imports numpy only; the runners come from foal_edge.backends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import confidence, preprocess
from .bundle import Manifest, check_graphs_fit
from .errors import InvalidInputError
from .preprocess import min_samples as wavlm_min_samples
from .validate import check_audio, check_frames

LONG_AUDIO_POLICIES = ("head", "tail", "error")


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]  # label -> probability; sums to 1
    attributes: dict[str, float] | None  # valence/arousal/dominance (1-5) when the model has them
    modalities: tuple[str, ...]  # what the prediction used: ("audio", "video"), ("audio",) or ("video",)
    timings_ms: dict[str, float]
    backend: str
    notes: tuple[str, ...] = field(default=())  # what was done to the input (e.g. audio cut to the window)
    # foal_edge/confidence.py: the label's calibrated probability, whether it is under
    # Predictor(min_confidence=), and with both modalities what each head says alone
    confidence: float | None = None
    low_confidence: bool = False
    per_modality: dict | None = None  # {"audio"|"video": {"label", "confidence", "probabilities"}}

    def to_dict(self) -> dict:
        return {"label": self.label, "probabilities": self.probabilities, "attributes": self.attributes,
                "modalities": list(self.modalities), "timings_ms": self.timings_ms, "backend": self.backend,
                "notes": list(self.notes), "confidence": self.confidence, "low_confidence": self.low_confidence,
                "per_modality": self.per_modality}


class Pipeline:
    """A bundle's steps over its open runners (graph -> foal_edge.backends.Runner).

    long_audio: "head", "tail" or "error" (see Predictor); frames_per_clip: the bundle's
    unless given; vad: a foal_edge.vad.VoiceActivity or None; preprocess: "cpu" or "graph"
    (where frames are resized and normalised). Thread-safe as the runners are: no state
    changes after construction."""

    def __init__(self, bundle, manifest: Manifest, backend: str, runners: dict, long_audio: str = "head",
                 frames_per_clip: int | None = None, threads: int | None = None, vad=None,
                 preprocess: str = "cpu", min_confidence: float | None = None):
        self.bundle, self.manifest, self.backend, self.runners = bundle, manifest, backend, runners
        self.min_confidence = confidence.check_min_confidence(min_confidence)
        self.temperatures = confidence.temperatures(manifest.calibration)  # 1.0 per head if uncalibrated
        self.labels = list(manifest.labels)
        self.long_audio = long_audio
        self.frames_per_clip = frames_per_clip or manifest.frames_per_clip
        self.window_samples = int(round(manifest.audio_seconds * manifest.sample_rate))
        self.min_samples = wavlm_min_samples(manifest.wavlm_conv_kernel, manifest.wavlm_conv_stride)
        self.threads, self.vad, self.preprocess = threads, vad, preprocess
        self.d_audio, self.d_video = check_graphs_fit(bundle, manifest, {n: r.io for n, r in runners.items()})

    # -- input checks ---------------------------------------------------------------------
    def cut_to_window(self, seconds: float) -> str:
        """Audio of `seconds` is longer than the window: refuse it under long_audio="error",
        else the note that says which part is kept."""
        window = self.manifest.audio_seconds
        if self.long_audio == "error":
            raise InvalidInputError(f"audio is {seconds:.2f} s, longer than the bundle's {window:g} s window; "
                                    "cut it, or use long_audio='head' or 'tail'")
        return (f"audio cut from {seconds:.2f} s to the {window:g} s window "
                f"({'first' if self.long_audio == 'head' else 'last'} part kept)")

    def prepare_audio(self, audio, sample_rate) -> tuple[np.ndarray, list[str]]:
        """Validate, convert to float32 mono at the bundle's rate, apply the window policy.
        Long audio is cut before resampling, so an hour of 48 kHz audio costs one window."""

        audio = check_audio(audio, sample_rate, self.min_samples)
        notes = []
        rate, src = self.manifest.sample_rate, int(sample_rate)
        window_src = int(np.ceil(self.window_samples * src / rate))
        if len(audio) > window_src:
            notes.append(self.cut_to_window(len(audio) / src))
            audio = audio[:window_src] if self.long_audio == "head" else audio[-window_src:]
        if src != rate:
            audio = preprocess.resample(audio, src, rate)[: self.window_samples]
            notes.append(f"audio resampled from {src} Hz to {rate} Hz")
        if len(audio) < self.min_samples:
            raise InvalidInputError(f"audio is {len(audio)} samples at {rate} Hz; at least {self.min_samples} "
                                    f"({1000 * self.min_samples / rate:.0f} ms) are needed for one WavLM frame")
        return np.ascontiguousarray(audio, dtype=np.float32), notes

    def select_frames(self, frames, fps=None, audio_seconds=None) -> tuple[np.ndarray, list[str]]:
        """Validate, keep the frames inside the audio window (when fps is given), sample
        frames-per-clip of them: uint8 [K, H, W, 3], as the caller gave them."""
        frames, notes = check_frames(frames, fps), []
        if fps is not None and audio_seconds is not None and self.long_audio != "error":
            span = int(np.ceil(min(audio_seconds, self.manifest.audio_seconds) * fps))
            if len(frames) > span > 0 and self.long_audio == "head":
                frames = frames[:span]
                notes.append(f"frames limited to the audio window's first {span}")
            elif len(frames) > span > 0:
                frames = frames[-span:]
                notes.append(f"frames limited to the audio window's last {span}")
        idx = preprocess.sample_frame_indices(len(frames), self.frames_per_clip)
        return (frames if len(idx) == len(frames) else frames[idx]), notes

    def prepare_frames(self, frames, fps=None, audio_seconds=None) -> tuple[np.ndarray, list[str]]:
        """Validate, sample to frames-per-clip (over the audio's span when fps is given),
        resize/crop/normalise exactly as CLIP, on the CPU: float32 [K, 3, S, S]."""
        frames, notes = self.select_frames(frames, fps, audio_seconds)
        return self.preprocess_frames(frames), notes

    def preprocess_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [K, H, W, 3] -> float32 [K, 3, S, S] on the CPU (Pillow, one thread per core)."""
        crops = preprocess.resize_frames(frames, self.manifest.image_size, self.threads)
        return preprocess.normalize_frames(crops, self.manifest.clip_mean, self.manifest.clip_std)

    def embed_frames(self, frames: np.ndarray) -> tuple[np.ndarray, float, float, list[str]]:
        """uint8 [K, H, W, 3] -> (embeddings [K, D_v], preprocess ms, encoder ms, notes), with
        the preprocessing where this predictor does it (see `preprocess`)."""
        t0 = time.perf_counter()
        runner = self.runners.get("preprocess") if self.preprocess == "graph" else None
        if runner is not None and not runner.fits("frames", frames.shape):
            notes = [f"frames of {frames.shape[2]}x{frames.shape[1]} exceed the preprocess engine's profile: "
                     "preprocessed on the CPU"]
            runner = None
        else:
            notes = []
        if runner is None:
            x = self.preprocess_frames(frames)
            t1 = time.perf_counter()
            return self.encode_frames(x), 1e3 * (t1 - t0), 1e3 * (time.perf_counter() - t1), notes
        wx, wy = preprocess.resize_matrices(frames.shape[1], frames.shape[2], self.manifest.image_size)
        feeds = {"frames": np.ascontiguousarray(frames), "resize_x": wx, "resize_y": wy}
        # The pixels stay where the graphs run when the backend can keep them there (ONNX
        # Runtime); TensorRT's runner returns them to the host for the video engine.
        x = runner.run(feeds, keep_on_device=True)[0]
        t1 = time.perf_counter()
        return self.runners["video"].run({"frames": x})[0], 1e3 * (t1 - t0), 1e3 * (time.perf_counter() - t1), notes

    def speech_only(self, wave: np.ndarray, has_video: bool) -> tuple[np.ndarray | None, list[str], float]:
        """Voice activity detection on a prepared window: (the speech for WavLM, or None when
        there is none and the video head can answer; notes; milliseconds)."""
        if self.vad is None:
            return wave, [], 0.0
        t0 = time.perf_counter()
        speech = self.vad.speech(wave)
        ms = 1e3 * (time.perf_counter() - t0)
        total = len(wave) / self.manifest.sample_rate
        if not speech.segments:
            if has_video:
                return None, [f"no speech heard in {total:.2f} s of audio (voice activity detection): "
                              "the video-only head answers"], ms
            return wave, [f"no speech heard in {total:.2f} s of audio (voice activity detection) and no frames: "
                          "the audio-only head answers from non-speech sound"], ms
        if len(speech.samples) < len(wave):
            return speech.samples, [f"voice activity: WavLM hears the {len(speech.samples) / len(wave):.0%} of "
                                    f"the {total:.2f} s that is speech ({len(speech.segments)} segment(s))"], ms
        return wave, [], ms

    # -- graphs ---------------------------------------------------------------------------
    def encode_audio(self, audio16k: np.ndarray) -> np.ndarray:
        """float32 [S] at the bundle rate -> hidden [T_a, D_a]."""
        return self.runners["audio"].run({"waveform": audio16k[None]})[0][0]

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """float32 [K, 3, S, S] (normalised) -> embeddings [K, D_v]."""
        return self.runners["video"].run({"frames": frames})[0]

    def fuse(self, hidden: list[np.ndarray | None], embeddings: list[np.ndarray | None]) -> list[dict]:
        """Fusion over a batch; either modality of a clip may be None. -> raw outputs per clip."""
        B = len(hidden)
        t_a = max([h.shape[0] for h in hidden if h is not None] or [1])
        t_v = max([e.shape[0] for e in embeddings if e is not None] or [1])
        a = np.zeros((B, t_a, self.d_audio), np.float32)
        v = np.zeros((B, t_v, self.d_video), np.float32)
        am = np.zeros((B, t_a), np.float32)
        vm = np.zeros((B, t_v), np.float32)
        for i, (h, e) in enumerate(zip(hidden, embeddings)):
            if h is not None:
                a[i, : len(h)], am[i, : len(h)] = h, 1
            if e is not None:
                v[i, : len(e)], vm[i, : len(e)] = e, 1
        outs = self.runners["fusion"].run({"audio": a, "audio_mask": am, "video": v, "video_mask": vm})
        names = self.runners["fusion"].outputs  # the graph's own output order: read by name
        return [{n: o[i] for n, o in zip(names, outs)} for i in range(B)]

    def prediction(self, raw: dict, has_audio: bool, has_video: bool, timings, notes) -> Prediction:
        """A clip's raw fusion outputs -> its Prediction, from the head that matches the
        modalities it had (fused, audio-only or video-only)."""
        heads = confidence.read_heads(raw, has_audio, has_video, self.labels, self.temperatures,
                                      self.min_confidence)
        attributes = None
        if "attributes" in raw and self.manifest.attributes and has_audio and has_video:
            attributes = {n: float(x) for n, x in zip(self.manifest.attributes, raw["attributes"])}
        modalities = tuple(m for m, present in (("audio", has_audio), ("video", has_video)) if present)
        return Prediction(heads.pop("label"), heads.pop("probabilities"), attributes, modalities, timings,
                          self.backend, tuple(notes), **heads)


__all__ = ["Pipeline", "Prediction", "LONG_AUDIO_POLICIES"]
