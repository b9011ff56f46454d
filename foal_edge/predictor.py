"""`Predictor`: a bundle in, emotions out.

    from foal_edge import Predictor
    predictor = Predictor("build/foal-demo")
    result = predictor.predict(audio=wave, sample_rate=16000, frames=rgb_uint8)
    result.label, result.probabilities, result.modalities, result.timings_ms

Imports numpy and, lazily, ONNX Runtime or TensorRT; never torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from . import confidence, preprocess
from .errors import BackendUnavailableError, BundleError, InvalidInputError, MediaError
from .manifest import GRAPHS, check_graph_io, load_manifest
from .preprocess import warm_resampler
from .preprocess import min_samples as wavlm_min_samples
from .validate import check_audio, check_frames, check_integer, check_path

LONG_AUDIO_POLICIES = ("head", "tail", "error")
PREPROCESS_MODES = ("auto", "cpu", "graph")


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]  # label -> probability; sums to 1
    attributes: dict[str, float] | None  # valence/arousal/dominance (1-5) when the model has them
    modalities: tuple[str, ...]  # what the prediction used: ("audio", "video"), ("audio",) or ("video",)
    timings_ms: dict[str, float]
    backend: str
    notes: tuple[str, ...] = field(default=())  # what was done to the input (e.g. audio cut to the window)
    # issue 25 (foal_edge/confidence.py): the label's calibrated probability, whether it is under
    # Predictor(min_confidence=), and with both modalities what each head says alone
    confidence: float | None = None
    low_confidence: bool = False
    per_modality: dict | None = None  # {"audio"|"video": {"label", "confidence", "probabilities"}}

    def to_dict(self) -> dict:
        return {"label": self.label, "probabilities": self.probabilities, "attributes": self.attributes,
                "modalities": list(self.modalities), "timings_ms": self.timings_ms, "backend": self.backend,
                "notes": list(self.notes), "confidence": self.confidence, "low_confidence": self.low_confidence,
                "per_modality": self.per_modality}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


MAX_THREADS, MAX_DEVICES, MAX_FRAMES_PER_CLIP = 1024, 64, 1024


class Predictor:
    """Runs a bundle's three graphs.

    backend: "auto" (TensorRT engines if the bundle has them, else ONNX Runtime with CUDA
    if available, else on CPU), "onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda" or
    "tensorrt". long_audio: what to do with audio longer than the bundle's window: "head"
    keeps the first window (as training did), "tail" the last, "error" refuses; the
    prediction's `notes` say when audio was cut. frames_per_clip overrides the bundle's
    (fewer frames: faster video, see the benchmark's frames-per-clip table).

    preprocess: where camera frames are resized, cropped and normalised. "cpu": Pillow on a
    thread pool (CLIP's own resize). "graph": the bundle's preprocess graph, run by the backend
    next to the video graph, so uint8 frames are copied to the GPU once and the video graph
    reads the result there. "auto": the graph when the graphs run on a GPU and the bundle has
    one, the CPU otherwise. Both agree within one grey level (tests/test_preprocess.py).

    vad: voice activity detection (foal_edge/vad.py, WebRTC's detector). True: WavLM sees only
    the speech in the audio window, and a window without speech is left out, so the video-only
    head answers (the prediction's notes say so); False: the audio as given; "auto": True when
    webrtcvad is installed (pip install 'foal-edge[vad]').

    graph_cache: a directory where ONNX Runtime's optimised CPU graphs are kept between starts
    (keyed by each graph's sha256, the ONNX Runtime version and the CPU), "auto" for
    $FOAL_EDGE_CACHE or ~/.cache/foal-edge, None for none. Used only with verify=True: the
    cache is keyed by the checked hash.

    min_confidence: a probability; a prediction whose calibrated confidence is below it has
    `low_confidence` True (None: off). See docs/confidence.md.
    """

    def __init__(self, bundle, backend: str = "auto", device: int = 0, threads: int | None = None,
                 long_audio: str = "head", frames_per_clip: int | None = None, verify: bool = True,
                 preprocess: str = "auto", graph_cache="auto", vad="auto", min_confidence: float | None = None):
        if long_audio not in LONG_AUDIO_POLICIES:
            raise InvalidInputError(f"long_audio must be one of {LONG_AUDIO_POLICIES}, not {long_audio!r}")
        if preprocess not in PREPROCESS_MODES:
            raise InvalidInputError(f"preprocess must be one of {PREPROCESS_MODES}, not {preprocess!r}")
        device = check_integer("device", device, 0, "a GPU index (0, 1, ...)", maximum=MAX_DEVICES - 1)
        if threads is not None:
            threads = check_integer("threads", threads, 1, "a positive number of threads or None (one per core)",
                                    maximum=MAX_THREADS)
        # Frames per clip is the main speed/accuracy knob; the bundle's value unless overridden.
        if frames_per_clip is not None:
            frames_per_clip = check_integer("frames_per_clip", frames_per_clip, 1, "a number of frames",
                                            maximum=MAX_FRAMES_PER_CLIP)
        if not isinstance(verify, bool):
            raise InvalidInputError(f"verify must be True or False, not {verify!r}")
        if vad not in (True, False, "auto"):
            raise InvalidInputError(f"vad must be True, False or 'auto', not {vad!r}")
        self.bundle = check_path("bundle", bundle)
        self.manifest = m = load_manifest(self.bundle, verify=verify)
        self.min_confidence = confidence.check_min_confidence(min_confidence)  # issue 25
        self.temperatures = confidence.temperatures(m.calibration)  # issue 25: 1.0 per head if uncalibrated
        self.long_audio = long_audio
        self.labels = list(m.labels)
        self.frames_per_clip = frames_per_clip or m.frames_per_clip
        self.window_samples = int(round(m.audio_seconds * m.sample_rate))
        self.min_samples = wavlm_min_samples(m.wavlm_conv_kernel, m.wavlm_conv_stride)
        self.threads = threads
        if graph_cache == "auto":
            from .backends.onnxruntime import default_cache_dir

            graph_cache = default_cache_dir()
        self.graph_cache = check_path("graph_cache", graph_cache) \
            if graph_cache is not None and verify else None
        self.backend, self.runners = self._open(backend, device, threads)
        from . import vad as voice

        use_vad = vad is True or (vad == "auto" and voice.available() and m.sample_rate in voice.RATES)
        self.vad = voice.VoiceActivity(m.sample_rate) if use_vad else None
        warm_resampler(m.sample_rate)  # scipy's import and filter design now, not at the first prediction
        for name, runner in self.runners.items():
            check_graph_io(self.bundle, name, m.graphs[name], runner.io)
        self.d_audio, self.d_video = self._check_widths()
        on_gpu = self.backend in ("onnxruntime-cuda", "tensorrt")
        if preprocess == "graph" and "preprocess" not in self.runners:
            raise BundleError(f"{self.bundle} has no preprocess graph (bundles built before it existed): rebuild "
                              "it with `python -m export.build_engine`, or use preprocess='cpu'")
        self.preprocess = "graph" if preprocess == "graph" or (
            preprocess == "auto" and on_gpu and "preprocess" in self.runners) else "cpu"

    # -- backends -------------------------------------------------------------------------
    def _open(self, backend: str, device: int, threads):
        formats = {g.format for g in self.manifest.graphs.values()}
        rebuild = (f"rebuild it on this device with `python -m export.build_engine --checkpoint CHECKPOINT "
                   f"--target tensorrt --out {self.bundle}`")
        if backend == "auto":
            backend = "tensorrt" if formats == {"tensorrt"} else "onnxruntime"
        if backend == "tensorrt":
            if formats != {"tensorrt"}:
                raise BackendUnavailableError(f"{self.bundle} holds ONNX graphs, not TensorRT engines: "
                                              f"build engines with --target tensorrt, or use backend='onnxruntime'")
            from .backends.tensorrt import TensorRTRunner

            runners = {n: TensorRTRunner(self.bundle / g.file, device, g.tensorrt_version, g.compute_capability,
                                         rebuild) for n, g in self.manifest.graphs.items()}
            return "tensorrt", runners
        if backend not in ("onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda"):
            raise InvalidInputError(f"unknown backend {backend!r}: use auto, onnxruntime, onnxruntime-cpu, "
                                    "onnxruntime-cuda or tensorrt")
        if formats != {"onnx"}:
            raise BackendUnavailableError(f"{self.bundle} holds TensorRT engines; ONNX Runtime cannot run them: "
                                          "use backend='tensorrt' or build an ONNX bundle (--target onnx)")
        from .backends.onnxruntime import OnnxRuntimeRunner, cuda_available

        if backend == "onnxruntime":
            backend = "onnxruntime-cuda" if cuda_available() else "onnxruntime-cpu"
        dev = backend.rsplit("-", 1)[1]
        runners = {}
        for n, g in self.manifest.graphs.items():
            # A graph may have a file only ONNX Runtime CUDA runs (fused contrib ops): used there.
            variant = g.variants.get(backend)  # the manifest allows onnxruntime-cuda variants only
            file, precision, key = (variant["file"], variant["precision"], variant["sha256"]) if variant else \
                (g.file, g.precision, g.sha256)
            runners[n] = OnnxRuntimeRunner(self.bundle / file, dev, device, threads, precision,
                                           exact_fp32=n == "preprocess", cache_key=key, cache_dir=self.graph_cache)
        return backend, runners

    def _check_widths(self) -> tuple[int, int]:
        """The graphs must fit together: the encoders' widths are the fusion head's, and the
        heads give one logit per label (one value per attribute)."""
        io = {n: r.io for n, r in self.runners.items()}
        fix = "the graphs do not fit together: rebuild the bundle from one checkpoint"
        widths = []
        for encoder, output, fusion_input in (("audio", "hidden", "audio"), ("video", "embeddings", "video")):
            produced, consumed = io[encoder][output][1][-1], io["fusion"][fusion_input][1][-1]
            if not isinstance(consumed, int) or (isinstance(produced, int) and produced != consumed):
                raise BundleError(f"{self.bundle}: the {encoder} graph gives {produced}-wide features, the fusion "
                                  f"head takes {consumed}; {fix}")
            widths.append(consumed)
        size = self.manifest.image_size
        pixels = [io["video"]["frames"][1]] + ([io["preprocess"]["pixels"][1]] if "preprocess" in io else [])
        for shape in pixels:
            if any(isinstance(d, int) and d != size for d in shape[-2:]):
                raise BundleError(f"{self.bundle}: the manifest's image_size is {size}, the graphs take "
                                  f"{shape[-2]}x{shape[-1]} frames; {fix}")
        heads = {"logits": len(self.labels), "audio_logits": len(self.labels), "video_logits": len(self.labels)}
        if "attributes" in io["fusion"]:
            heads["attributes"] = len(self.manifest.attributes)
        for output, want in heads.items():
            got = io["fusion"][output][1][-1]
            if got != want:
                raise BundleError(f"{self.bundle}: fusion output {output!r} has {got} values per clip, the manifest "
                                  f"names {want} {'labels' if output != 'attributes' else 'attributes'}; {fix}")
        return widths[0], widths[1]

    # -- input checks ---------------------------------------------------------------------
    def _cut_to_window(self, seconds: float) -> str:
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
            notes.append(self._cut_to_window(len(audio) / src))
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
        if runner is not None and not self._fits(runner, frames.shape):
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
        if self.backend.startswith("onnxruntime"):
            # Pixels stay where the graphs run; the video graph reads them there.
            x = runner.run(feeds, keep_on_device=True)[0]
        else:
            x = runner.run(feeds)[0]
        t1 = time.perf_counter()
        return self.runners["video"].run({"frames": x})[0], 1e3 * (t1 - t0), 1e3 * (time.perf_counter() - t1), notes

    @staticmethod
    def _fits(runner, shape) -> bool:
        limit = getattr(runner, "max_shapes", {}).get("frames")  # TensorRT engines have a profile maximum
        return limit is None or all(d <= m for d, m in zip(shape, limit))

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

    def _prediction(self, raw: dict, has_audio: bool, has_video: bool, timings, notes) -> Prediction:
        heads = confidence.read_heads(raw, has_audio, has_video, self.labels, self.temperatures,  # issue 25
                                      self.min_confidence)
        attributes = None
        if "attributes" in raw and self.manifest.attributes and has_audio and has_video:
            attributes = {n: float(x) for n, x in zip(self.manifest.attributes, raw["attributes"])}
        modalities = tuple(m for m, present in (("audio", has_audio), ("video", has_video)) if present)
        return Prediction(heads.pop("label"), heads.pop("probabilities"), attributes, modalities, timings,
                          self.backend, tuple(notes), **heads)

    # -- public API -----------------------------------------------------------------------
    def predict(self, audio=None, sample_rate=None, frames=None, fps=None) -> Prediction:
        """One clip. audio: mono float32/float64/int16/int32 at `sample_rate`; frames: uint8
        RGB [N, H, W, 3] or a list of [H, W, 3]; either may be None (not both)."""
        return self.predict_batch([{"audio": audio, "sample_rate": sample_rate, "frames": frames, "fps": fps}])[0]

    def predict_batch(self, clips: list[dict]) -> list[Prediction]:
        """Several clips (dicts with the arguments of `predict`), fused in one batch."""
        if not isinstance(clips, (list, tuple)) or not clips:
            raise InvalidInputError("predict_batch takes a non-empty list of dicts with audio/sample_rate/frames/fps")
        hidden, embeddings, timings, notes = [], [], [], []
        for clip in clips:
            if not isinstance(clip, dict) or set(clip) - {"audio", "sample_rate", "frames", "fps"}:
                raise InvalidInputError("each clip is a dict with keys audio, sample_rate, frames, fps")
            audio, frames = clip.get("audio"), clip.get("frames")
            if audio is None and frames is None:
                raise InvalidInputError("give audio, frames or both; both are missing")
            t, n = {}, []
            h = e = None
            seconds = None
            if audio is not None:
                t0 = time.perf_counter()
                wave, msgs = self.prepare_audio(audio, clip.get("sample_rate"))
                seconds = len(wave) / self.manifest.sample_rate
                t1 = time.perf_counter()
                t["audio_preprocess"] = 1e3 * (t1 - t0)
                n += msgs
                wave, msgs, t["vad"] = self.speech_only(wave, has_video=frames is not None)
                n += msgs
                if wave is not None:
                    t1 = time.perf_counter()
                    h = self.encode_audio(wave)
                    t["audio"] = 1e3 * (time.perf_counter() - t1)
            if frames is not None:
                t0 = time.perf_counter()
                selected, msgs = self.select_frames(frames, clip.get("fps"), seconds)
                select_ms = 1e3 * (time.perf_counter() - t0)
                e, pre_ms, t["video"], more = self.embed_frames(selected)
                t["video_preprocess"] = select_ms + pre_ms
                n += msgs + more
            hidden.append(h)
            embeddings.append(e)
            timings.append(t)
            notes.append(n)
        t0 = time.perf_counter()
        raws = self.fuse(hidden, embeddings)
        fusion_ms = 1e3 * (time.perf_counter() - t0) / len(clips)
        out = []
        for raw, h, e, t, n in zip(raws, hidden, embeddings, timings, notes):
            t["fusion"] = fusion_ms
            t["total"] = sum(t.values())
            out.append(self._prediction(raw, h is not None, e is not None, t, n))
        return out

    def predict_files(self, audio_path=None, video_path=None, use_audio: bool = True,
                      use_video: bool = True) -> Prediction:
        """Decode files (soundfile for audio, PyAV for video; the video's own audio track
        when no audio file is given) and predict. Only what the prediction uses is decoded:
        the audio window, and the frames sampled from its span of the video (seeking to it),
        so a long or high-resolution file costs one window. use_audio=False / use_video=False
        leave a modality out (the other head answers); a video without an audio track is
        predicted from its frames, with a note."""
        from . import media

        if audio_path is None and video_path is None:
            raise InvalidInputError("give audio_path, video_path or both")
        if not isinstance(use_audio, bool) or not isinstance(use_video, bool) or not (use_audio or use_video):
            raise InvalidInputError("use_audio and use_video are True/False, and at least one is True")
        audio_path = None if audio_path is None else check_path("audio_path", audio_path)
        video_path = None if video_path is None else check_path("video_path", video_path)
        if not use_video and audio_path is not None and video_path is not None:
            raise InvalidInputError("use_video=False with both files: give only the audio file")
        if not use_audio and video_path is None:
            raise InvalidInputError("use_audio=False needs a video file")
        window = self.manifest.audio_seconds
        tail = self.long_audio == "tail"
        frames = audio = None
        rate, total, notes = None, None, []
        # The window alone is read; the file's own length decides whether it was cut.
        if use_audio and audio_path is not None:
            audio, rate, total = media.read_audio(audio_path, seconds=window, tail=tail)
            if audio.ndim == 2:
                audio = audio.mean(axis=1)  # files are often stereo: mixing is what a listener hears
        elif use_audio:
            if media.has_audio_track(video_path):
                audio, rate, total = media.read_video_audio(video_path, seconds=window, tail=tail)
            elif not use_video:
                raise MediaError(f"{video_path}: the file has no audio track to predict from")
            else:
                notes.append(f"{video_path.name} has no audio track: predicted from its frames (video-only head)")
        if audio is not None and total * rate > np.ceil(window * rate):
            notes.append(self._cut_to_window(total))
        if use_video and video_path is not None:
            fps, count = media.video_info(video_path)
            seconds = window if total is None else min(total, window)
            span = int(np.ceil(seconds * fps)) if fps > 0 else self.frames_per_clip
            available = min(span, count) if count else span
            first = max(count - available, 0) if tail and count else 0
            indices = first + preprocess.sample_frame_indices(available, self.frames_per_clip)
            decoded, _ = media.read_video(video_path, indices)
            if not decoded:
                raise InvalidInputError(f"{video_path}: no frames could be decoded from the audio window")
            frames = np.stack([decoded[i] for i in sorted(decoded)])
        result = self.predict(audio=audio, sample_rate=rate, frames=frames)
        return replace(result, notes=tuple(notes) + result.notes) if notes else result

    def info(self) -> dict:
        m = self.manifest
        return {"bundle": str(self.bundle), "backend": self.backend, "preset": m.preset, "labels": m.labels,
                "attributes": m.attributes, "audio_seconds": m.audio_seconds, "frames_per_clip": m.frames_per_clip,
                "preprocess": self.preprocess,
                "graphs": {n: {"file": g.file, "format": g.format, "precision": g.precision} for n, g in
                           m.graphs.items()}}


__all__ = ["Predictor", "Prediction", "GRAPHS"]
