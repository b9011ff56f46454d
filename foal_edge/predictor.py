"""`Predictor`: a bundle in, emotions out.

    from foal_edge import Predictor
    predictor = Predictor("build/foal-demo")
    result = predictor.predict(audio=wave, sample_rate=16000, frames=rgb_uint8)
    result.label, result.probabilities, result.modalities, result.timings_ms

Construction (bundle checks, backend choice, options) and the public calls live here; the
steps of a prediction are foal_edge.pipeline's, the backends foal_edge.backends'. Imports
numpy and, lazily, ONNX Runtime or TensorRT; never torch.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from . import confidence, preprocess
from .backends import close_all, open_runners
from .bundle import GRAPHS, check_graph_io, load_manifest
from .errors import BundleError, InvalidInputError, MediaError
from .pipeline import LONG_AUDIO_POLICIES, Pipeline, Prediction
from .preprocess import warm_resampler
from .validate import check_clip, check_integer, check_path

PREPROCESS_MODES = ("auto", "cpu", "graph")
VAD_CHOICES = ("auto", "silero", "webrtc", "off")  # and True (webrtc), False (off)
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
    next to the video graph: uint8 frames go to the device, and on ONNX Runtime the pixels stay
    there for the video graph; TensorRT's runner returns them to the host between the two
    engines (float32 [K, 3, S, S] out and back). "auto": the graph when the graphs run on a GPU
    and the bundle has one, the CPU otherwise. Both agree within one grey level
    (tests/test_preprocess.py).

    vad: voice activity detection (foal_edge/vad.py). On, WavLM sees only the speech in the
    audio window, and a window without speech is left out, so the video-only head answers (the
    prediction's notes say so). "webrtc" (or True): WebRTC's detector; "silero": Silero VAD (a
    fresh state per window, about 22 ms of CPU per 3 s window, several times the demo bundle's
    audio encoder; on the demo corpus's synthetic voice, a buzz of harmonics, it often hears
    little or no speech, and a window without speech is answered by the video head); False (or
    "off"): the audio as given; "auto": WebRTC when webrtcvad is installed (pip install
    'foal-edge[vad]') and takes the bundle's rate, else off. An explicit detector that is not
    installed, or does not take the bundle's rate, is a BackendUnavailableError.
    (A timeline's default is Silero: one state through a recording.)

    graph_cache: a directory where ONNX Runtime's optimised CPU graphs are kept between starts
    (keyed by each graph's sha256, the ONNX Runtime version and the CPU), "auto" for
    $FOAL_EDGE_CACHE or ~/.cache/foal-edge, None for none. Used only with verify=True: the
    cache is keyed by the checked hash.

    What it holds: bundle, manifest, backend (the one chosen), runners (graph ->
    foal_edge.backends.Runner), labels, and pipeline (foal_edge.pipeline.Pipeline: the steps,
    for callers that run them one by one, as StreamingPredictor does). close() or a `with`
    block frees the runners.

    min_confidence: a probability; a prediction whose calibrated confidence is below it has
    `low_confidence` True (None: off). See docs/confidence.md.

    spin: whether ONNX Runtime's intra-op worker threads spin while they wait for the next run
    (its default). False lets them sleep: for work that decodes, resizes or detects voice between
    runs on the same cores, above all a timeline of a file, where spinning threads took 35-46% of
    the CPU time on 2 cores (docs/timeline.md). No effect on TensorRT or with threads=1 (no worker
    threads).

    warm_up: import scipy's resampler and design the filters from the common microphone rates
    now (about half a second), so that the first prediction of audio at another rate costs what
    the later ones do. False leaves that to the first resampling, if any: for jobs that never
    resample (a file's timeline, whose audio FFmpeg resamples) or do not mind a slower first call.
    """

    def __init__(self, bundle, backend: str = "auto", device: int = 0, threads: int | None = None,
                 long_audio: str = "head", frames_per_clip: int | None = None, verify: bool = True,
                 preprocess: str = "auto", graph_cache="auto", vad="auto", min_confidence: float | None = None,
                 spin: bool = True, warm_up: bool = True):
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
        for name, value in (("spin", spin), ("warm_up", warm_up)):
            if not isinstance(value, bool):
                raise InvalidInputError(f"{name} must be True or False, not {value!r}")
        if not any(vad is v for v in (True, False)) and vad not in VAD_CHOICES:
            raise InvalidInputError(f"vad must be one of {', '.join(map(repr, VAD_CHOICES))}, True or False, "
                                    f"not {vad!r}")
        self.min_confidence = confidence.check_min_confidence(min_confidence)
        self.bundle = check_path("bundle", bundle)
        self.manifest = m = load_manifest(self.bundle, verify=verify)
        self.long_audio = long_audio
        self.labels = list(m.labels)
        self.threads = threads
        if graph_cache == "auto":
            from .backends.onnxruntime import default_cache_dir

            graph_cache = default_cache_dir()
        self.graph_cache = check_path("graph_cache", graph_cache) \
            if graph_cache is not None and verify else None
        self.backend, self.runners = open_runners(self.bundle, m, backend, device, threads, self.graph_cache,
                                                  spin=spin)
        try:
            from . import vad as voice

            kind = {True: "webrtc", False: None, "off": None}.get(vad, vad)
            if kind == "auto":
                kind = "webrtc" if voice.available("webrtc") and m.sample_rate in voice.WEBRTC_RATES else None
            self.vad = voice.VoiceActivity(m.sample_rate, kind) if kind else None
            if warm_up:
                warm_resampler(m.sample_rate)  # scipy's import and filter design now, not at the first prediction
            for name, runner in self.runners.items():
                check_graph_io(self.bundle, name, m.graphs[name], runner.io)
            on_gpu = all(r.device == "cuda" for r in self.runners.values())
            if preprocess == "graph" and "preprocess" not in self.runners:
                raise BundleError(f"{self.bundle} has no preprocess graph (bundles built before it existed): "
                                  "rebuild it with `python -m export.build_engine`, or use preprocess='cpu'")
            self.preprocess = "graph" if preprocess == "graph" or (
                preprocess == "auto" and on_gpu and "preprocess" in self.runners) else "cpu"
            self.pipeline = Pipeline(self.bundle, m, self.backend, self.runners, long_audio, frames_per_clip,
                                     threads, self.vad, self.preprocess, self.min_confidence)
        except BaseException:
            close_all(self.runners)
            raise
        self.frames_per_clip = self.pipeline.frames_per_clip
        self.min_samples = self.pipeline.min_samples

    # -- public API -----------------------------------------------------------------------
    def predict(self, audio=None, sample_rate=None, frames=None, fps=None) -> Prediction:
        """One clip. audio: mono float32/float64/int16/int32 at `sample_rate`; frames: uint8
        RGB [N, H, W, 3] or a list of [H, W, 3]; either may be None (not both)."""
        return self.predict_batch([{"audio": audio, "sample_rate": sample_rate, "frames": frames, "fps": fps}])[0]

    def check_clip(self, clip) -> None:
        """The check `predict_batch` makes of each clip before running it (validate.check_clip
        with this bundle's numbers): InvalidInputError for a clip that would fail for its input."""
        check_clip(clip, self.min_samples, self.manifest.sample_rate, self.manifest.audio_seconds, self.long_audio)

    def predict_batch(self, clips: list[dict], return_exceptions: bool = False) -> list:
        """Several clips (dicts with the arguments of `predict`), fused in one batch. Each clip
        is checked and encoded on its own, so one bad clip never fails the others: with
        return_exceptions=True its place in the result holds its exception (InvalidInputError
        for bad input) and the other clips are predicted; with False the first error is raised."""
        if not isinstance(clips, (list, tuple)) or not clips:
            raise InvalidInputError("predict_batch takes a non-empty list of dicts with audio/sample_rate/frames/fps")
        results: list = [None] * len(clips)
        index, hidden, embeddings, timings, notes = [], [], [], [], []
        for i, clip in enumerate(clips):
            try:
                self.check_clip(clip)
                h, e, t, n = self._encode_clip(clip)
            except Exception as exc:
                if not return_exceptions:
                    raise
                results[i] = exc
                continue
            index.append(i)
            hidden.append(h)
            embeddings.append(e)
            timings.append(t)
            notes.append(n)
        if not index:
            return results
        t0 = time.perf_counter()
        try:
            raws = self.pipeline.fuse(hidden, embeddings)
        except Exception:
            if not return_exceptions or len(index) == 1:
                raise
            raws = []  # the batch failed: each clip alone, so only a clip that fails by itself fails
            for k, (h, e) in enumerate(zip(hidden, embeddings)):
                try:
                    raws.append(self.pipeline.fuse([h], [e])[0])
                except Exception as exc:
                    results[index[k]] = exc
                    raws.append(None)
        fusion_ms = 1e3 * (time.perf_counter() - t0) / len(index)
        for i, raw, h, e, t, n in zip(index, raws, hidden, embeddings, timings, notes):
            if raw is None:
                continue
            t["fusion"] = fusion_ms
            t["total"] = sum(t.values())
            results[i] = self.pipeline.prediction(raw, h is not None, e is not None, t, n)
        return results

    def _encode_clip(self, clip: dict):
        """One checked clip -> (audio hidden or None, frame embeddings or None, timings, notes)."""
        audio, frames = clip.get("audio"), clip.get("frames")
        t, n = {}, []
        h = e = None
        seconds = None
        if audio is not None:
            t0 = time.perf_counter()
            wave, msgs = self.pipeline.prepare_audio(audio, clip.get("sample_rate"))
            seconds = len(wave) / self.manifest.sample_rate
            t1 = time.perf_counter()
            t["audio_preprocess"] = 1e3 * (t1 - t0)
            n += msgs
            wave, msgs, t["vad"] = self.pipeline.speech_only(wave, has_video=frames is not None)
            n += msgs
            if wave is not None:
                t1 = time.perf_counter()
                h = self.pipeline.encode_audio(wave)
                t["audio"] = 1e3 * (time.perf_counter() - t1)
        if frames is not None:
            t0 = time.perf_counter()
            selected, msgs = self.pipeline.select_frames(frames, clip.get("fps"), seconds)
            select_ms = 1e3 * (time.perf_counter() - t0)
            e, pre_ms, t["video"], more = self.pipeline.embed_frames(selected)
            t["video_preprocess"] = select_ms + pre_ms
            n += msgs + more
        return h, e, t, n

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
            notes.append(self.pipeline.cut_to_window(total))
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
            notes += media.video_notes(video_path)  # rotation applied, as a player shows it
        result = self.predict(audio=audio, sample_rate=rate, frames=frames)
        return replace(result, notes=tuple(notes) + result.notes) if notes else result

    def info(self) -> dict:
        m = self.manifest
        return {"bundle": str(self.bundle), "backend": self.backend, "preset": m.preset, "labels": m.labels,
                "attributes": m.attributes, "audio_seconds": m.audio_seconds, "frames_per_clip": m.frames_per_clip,
                "preprocess": self.preprocess, "vad": getattr(self.vad, "kind", None),
                "calibration": {"temperatures": dict(self.pipeline.temperatures), "min_confidence": self.min_confidence},
                "model_card": m.model_card,  # what it was trained on, its licences and uses (foal_edge.model_card)
                "graphs": {n: {"file": g.file, "format": g.format, "precision": g.precision} for n, g in
                           m.graphs.items()}}

    def close(self) -> None:
        """Free the runners (GPU memory, sessions); predictions afterwards raise InferenceError."""
        close_all(self.runners)

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def timeline(self, source=None, **options) -> list:
        """Segments of a recording (foal_edge/timeline.py): `source` a media file's path, or no
        source and the arrays of `from_arrays` (audio, sample_rate, frames, fps or timestamps).
        Options: vad ("silero", "webrtc", "auto", False), merge_gap, overlap, hop, use_audio,
        use_video, progress. -> list[timeline.Segment]. (A Predictor opened with spin=False reads a
        file with less CPU: decoding and inference share the cores.)"""
        from . import timeline

        if source is None:
            return timeline.from_arrays(self, **options)
        return timeline.from_file(self, source, **options)


__all__ = ["Predictor", "Prediction", "GRAPHS"]
