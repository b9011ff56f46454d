"""Latency of Foal-Net: eager PyTorch vs ONNX Runtime vs TensorRT, per stage and end to end,
side by side in one run.

    python -m benchmarks.latency --preset large --random-weights --frames 4 --iters 5 \\
        --out benchmarks/results/cpu-large
    python -m benchmarks.latency --checkpoint training/demo --iters 50 --out benchmarks/results/cpu-tiny

Backends are measured interleaved (A B C A B C ...), so drift hits all alike; ratios to
eager are taken per iteration (paired) and reported as median [25th-75th percentile].
Every row carries its output difference from eager FP32, so a fast wrong backend cannot
hide. Writes NAME.json, NAME.md and NAME.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

ALL_BACKENDS = ("eager", "eager-autocast", "compile", "onnxruntime", "onnxruntime-fp16", "onnxruntime-int8",
                "tensorrt")


# -- machine ------------------------------------------------------------------------------
def machine() -> dict:
    import onnxruntime
    import torch

    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "platform": platform.platform()}


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def matmul_peak(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """torch's FP32 matrix-multiply throughput on this machine (FLOP/s), best of `repeats`."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = min(_timed(lambda: torch.matmul(a, b)) for _ in range(repeats))
    return 2 * n ** 3 / best


def cpu_gemm_peaks(threads: int, n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """The best GEMM this machine runs (GFLOP/s), per engine: torch FP32, ONNX Runtime FP32
    (MLAS) and ONNX Runtime INT8 (a MatMul dynamically quantised exactly as our INT8 bundles
    are, so activations are quantised per call as in the real graphs). 2n^3 operations each."""
    import tempfile

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from export.quantize import quantize_int8
    from foal_edge.backends.onnxruntime import OnnxRuntimeRunner

    peaks = {"torch_fp32": matmul_peak(threads, n, repeats) / 1e9}
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    weight = numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])], [weight])
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "gemm.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), fp32)
        for name, path in (("onnxruntime_fp32", fp32), ("onnxruntime_int8", quantize_int8(fp32, Path(tmp) / "q.onnx"))):
            runner = OnnxRuntimeRunner(path, threads=threads)
            runner.run({"a": a})
            best = min(_timed(lambda: runner.run({"a": a})) for _ in range(repeats))
            peaks[name] = 2 * n ** 3 / best / 1e9
    return peaks


def gpu_matmul_peaks(n: int = 8192, repeats: int = 10) -> dict[str, float]:
    """The GPU's measured matrix-multiply throughput (TFLOP/s) per dtype, best of `repeats`."""
    import torch

    out = {}
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for name, dtype in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
            a, b = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
            torch.matmul(a, b)
            torch.cuda.synchronize()
            best = float("inf")
            for _ in range(repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                torch.matmul(a, b)
                end.record()
                end.synchronize()
                best = min(best, start.elapsed_time(end) / 1e3)
            out[name] = 2 * n ** 3 / best / 1e12
            del a, b
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# -- backends -----------------------------------------------------------------------------
class Skip(Exception):
    pass


class EagerBackend:
    """The trained model's own sub-modules, eval mode, torch.inference_mode()."""

    def __init__(self, model, mode: str = "fp32"):
        import torch

        self.torch, self.model, self.mode = torch, model, mode
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(self.device)
        self.modules = {"audio": model.audio_encoder, "video": model.video_encoder, "fusion": model.fusion}
        if mode == "compile":
            try:
                self.modules = {k: torch.compile(m) for k, m in self.modules.items()}
            except Exception as exc:  # torch.compile is optional
                raise Skip(f"torch.compile failed: {exc}")

    def _ctx(self):
        torch = self.torch
        if self.mode == "autocast":
            dtype = torch.float16 if self.device == "cuda" else torch.bfloat16
            return torch.autocast(self.device, dtype=dtype)
        import contextlib

        return contextlib.nullcontext()

    def _run(self, name, *args):
        torch = self.torch
        with torch.inference_mode(), self._ctx():
            out = self.modules[name](*[torch.from_numpy(a).to(self.device) for a in args])
        if self.device == "cuda":
            torch.cuda.synchronize()
        return out

    def audio(self, wave):
        return self._run("audio", wave)[0].float().cpu().numpy()

    def video(self, frames):
        return self._run("video", frames).float().cpu().numpy()

    def fusion(self, hidden, emb):
        outs = self._run("fusion", hidden[None], np.ones((1, len(hidden)), np.float32), emb[None],
                         np.ones((1, len(emb)), np.float32))
        return outs[0][0].float().cpu().numpy()

    def end_to_end(self, predictor, audio, frames):
        """Preprocessing exactly as the runtime's CPU path (Pillow), then the eager modules."""
        wave, _ = predictor.pipeline.prepare_audio(audio, 16000)
        x, _ = predictor.pipeline.prepare_frames(frames)
        return _softmax(self.fusion(self.audio(wave[None]), self.video(x)))


class RuntimeBackend:
    """foal_edge.Predictor on a bundle: ONNX Runtime (FP32 or INT8) or TensorRT."""

    def __init__(self, bundle, backend: str, threads: int | None, frames_per_clip: int | None,
                 preprocess: str = "auto"):
        from foal_edge import FoalEdgeError, Predictor

        try:
            self.p = Predictor(bundle, backend=backend, threads=threads, frames_per_clip=frames_per_clip,
                               preprocess=preprocess)
        except FoalEdgeError as exc:
            raise Skip(str(exc))
        self.last_timings: dict[str, float] = {}

    def audio(self, wave):
        return self.p.pipeline.encode_audio(wave[0])

    def video(self, frames):
        return self.p.pipeline.encode_frames(frames)

    def fusion(self, hidden, emb):
        return self.p.pipeline.fuse([hidden], [emb])[0]["logits"]

    def end_to_end(self, predictor, audio, frames):
        r = self.p.predict(audio=audio, sample_rate=16000, frames=frames)
        self.last_timings = r.timings_ms
        return np.array([r.probabilities[l] for l in self.p.labels])


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


# -- the run ------------------------------------------------------------------------------
def build_bundles(args, checkpoint: Path, cfg) -> dict[str, Path]:
    """The FP32 ONNX bundle of the checkpoint (exported once, kept in --bundle-dir) and the
    INT8 / FP16 bundles derived from it when those backends are measured."""
    from export import build_bundle
    from export.bundle import derive_bundle

    fp32 = Path(args.bundle_dir) / "fp32"
    if not (fp32 / "manifest.json").is_file():
        print(f"[latency] exporting the FP32 ONNX bundle -> {fp32}", file=sys.stderr, flush=True)
        build_bundle(checkpoint, fp32, target="onnx", precision="fp32", parity_clips=0,
                     max_audio_seconds=args.audio_seconds)
    bundles = {"fp32": fp32}
    for precision in ("int8", "fp16"):
        if f"onnxruntime-{precision}" in args.backends:
            path = Path(args.bundle_dir) / precision
            if not (path / "manifest.json").is_file():
                derive_bundle(fp32, path, precision, (cfg.video.heads, cfg.video.width))
            bundles[precision] = path
    return bundles


def stats(times: list[float]) -> dict:
    t = np.asarray(times) * 1e3
    return {"p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean()), "n": len(t)}


def flops_of(config, samples: int, frames: int) -> dict[str, float]:
    """Each stage's FLOPs, counted from the architecture (benchmarks/flops.py: 2 x the
    multiply-accumulates of every matmul and convolution, attention scores included) for one
    waveform of `samples`, `frames` frames through the image tower and fusion over those frames.
    torch's FlopCounterMode misses open_clip's fused attention under inference_mode (ViT-L/14:
    103.8 of 162.0 GFLOP a frame), so no stage is counted by tracing the model."""
    from benchmarks.flops import stage_flops

    return {k: float(v) for k, v in stage_flops(config, samples, frames).items()}


def run(args) -> dict:
    """The whole measurement: every backend, stage by stage, interleaved; -> the results."""
    import torch

    from foal_edge import Predictor

    torch.set_num_threads(args.threads)
    model, checkpoint = load_model(args)
    cfg = model.config
    bundles = build_bundles(args, checkpoint, cfg)
    if args.bundle:
        bundles["tensorrt"] = Path(args.bundle)
    reference = Predictor(bundles["fp32"], backend="onnxruntime-cpu", threads=args.threads, preprocess="cpu")
    audio, raw_frames = make_inputs(args)
    results = {"machine": machine(), "command": "python -m benchmarks.latency " + " ".join(sys.argv[1:]),
               "preset": cfg.preset, "audio_seconds": args.audio_seconds, "threads": args.threads,
               "backends": {}, "skipped": {}, "rows": []}
    results["frame_size"] = "x".join(map(str, raw_frames.shape[1:3][::-1]))
    measure_peaks(results, args.threads)
    backends = open_backends(args, model, bundles, results)
    stages, flops_per = make_stages(args, model, reference, audio, raw_frames)
    results["flop_count"] = ("benchmarks/flops.py: 2 x multiply-accumulates of every matmul and "
                             "convolution from the architecture, attention scores included")
    times, breakdown, outputs = time_stages(args, stages, backends)
    results["rows"] = stage_rows(args, results, stages, backends, flops_per, times, breakdown, outputs)
    if args.agreement_clips:
        results["agreement"] = label_agreement(args, backends, reference, cfg)
    if args.frames_knob:
        results["frames_knob"] = frames_knob(args, bundles["fp32"], cfg)
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        results["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return results


def load_model(args):
    """The eager model (random weights are saved once in --bundle-dir and reloaded after) and
    its checkpoint directory, with WavLM's weight norm folded as export does."""
    import torch

    from export.onnx_export import remove_weight_norm
    from training.model import FoalNet

    if args.random_weights:
        torch.manual_seed(0)
        model = FoalNet.from_preset(args.preset).eval()
        checkpoint = Path(args.bundle_dir) / "checkpoint"
        if not (checkpoint / "model.safetensors").is_file():
            model.save(checkpoint)
        else:
            model = FoalNet.load(checkpoint).eval()
    else:
        checkpoint = Path(args.checkpoint)
        model = FoalNet.load(checkpoint).eval()
    # Fold WavLM's weight-norm parametrization, as export does: the same arithmetic without
    # re-deriving the positional conv kernel on every call.
    remove_weight_norm(model)
    return model, checkpoint


def make_inputs(args) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic clip of the requested length: (audio [S], uint8 frames [N, H, W, 3]) with
    frames at camera size (the synthetic faces scaled up by Pillow to --frame-size, as a
    camera would deliver them)."""
    from training.synthetic import make_clip

    audio, raw_frames, _ = make_clip(1, seconds=args.audio_seconds, frames=max(args.frames))
    if args.frame_size:
        from PIL import Image

        h, w = args.frame_size
        raw_frames = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR))
                               for f in raw_frames])
    return audio, raw_frames


def measure_peaks(results: dict, threads: int) -> None:
    """The peak a stage is measured against is the best GEMM this machine runs, whichever engine
    runs it (on CPUs with VNNI, ONNX Runtime's INT8 GEMM beats torch's FP32 several times over)."""
    import torch

    results["cpu_gemm_peaks_gflops"] = cpu_gemm_peaks(threads)
    results["matmul_peak_gflops"] = max(results["cpu_gemm_peaks_gflops"].values())
    print(f"[latency] CPU GEMM peaks (GFLOP/s) on {threads} threads: {results['cpu_gemm_peaks_gflops']}",
          file=sys.stderr, flush=True)
    if torch.cuda.is_available():
        results["gpu_matmul_peak_tflops"] = gpu_matmul_peaks()
        print(f"[latency] GPU matmul peaks (TFLOP/s): {results['gpu_matmul_peak_tflops']}", file=sys.stderr,
              flush=True)


def open_backends(args, model, bundles: dict, results: dict) -> dict:
    """{name: backend} for --backends; those that cannot run here go to results["skipped"]."""
    import torch

    backends = {}
    for name in args.backends:
        before = rss_mb()
        try:
            if name == "eager":
                backends[name] = EagerBackend(model)
            elif name == "eager-autocast":
                backends[name] = EagerBackend(model, "autocast")
            elif name == "compile":
                backends[name] = EagerBackend(model, "compile")
            elif name == "onnxruntime":
                backends[name] = RuntimeBackend(bundles["fp32"], "onnxruntime", args.threads, None)
            elif name == "onnxruntime-int8":
                backends[name] = RuntimeBackend(bundles["int8"], "onnxruntime", args.threads, None)
            elif name == "onnxruntime-fp16":
                if not torch.cuda.is_available():
                    raise Skip("FP16 graphs are a GPU format (ONNX Runtime's CPU kernels upcast them)")
                backends[name] = RuntimeBackend(bundles["fp16"], "onnxruntime", args.threads, None)
            elif name == "tensorrt":
                try:
                    import tensorrt  # noqa: F401
                except ImportError:
                    raise Skip("TensorRT is not installed on this machine")
                if "tensorrt" not in bundles:
                    raise Skip("no TensorRT bundle given (--bundle, built with --target tensorrt)")
                backends[name] = RuntimeBackend(bundles["tensorrt"], "tensorrt", None, None)
            results["backends"][name] = {"rss_load_mb": rss_mb() - before}
        except Skip as exc:
            results["skipped"][name] = str(exc)
            print(f"[latency] {name}: skipped ({exc})", file=sys.stderr, flush=True)
    return backends


def make_stages(args, model, reference, audio, raw_frames) -> tuple[list, dict]:
    """The stages timed, as (name, fn(backend), items per call), and each stage's FLOPs. Each
    stage's input is the eager FP32 output of the stage before (the same for everyone)."""
    wave = audio[None].astype(np.float32)
    frames_in = {k: reference.pipeline.prepare_frames(raw_frames[:k])[0] for k in args.frames}
    eager_ref = EagerBackend(model)
    hidden = eager_ref.audio(wave)
    embs = {k: eager_ref.video(x) for k, x in frames_in.items()}
    stages = [("audio", lambda b: b.audio(wave), 1)]
    stages += [(f"video[{k}]", (lambda k: lambda b: b.video(frames_in[k]))(k), k) for k in args.frames]
    k0 = args.frames[0]
    stages += [("fusion", lambda b: b.fusion(hidden, embs[k0]), 1)]
    e2e_frames = raw_frames[: max(args.frames)]
    stages += [("end_to_end", lambda b: b.end_to_end(reference, audio, e2e_frames), 1)]

    cfg = model.config
    flops = flops_of(cfg, wave.shape[1], k0)
    flops_per = {"audio": flops["audio"], "fusion": flops["fusion"]}
    for k in args.frames:
        flops_per[f"video[{k}]"] = flops_of(cfg, wave.shape[1], k)["video"]
    # What the end-to-end call encodes: the waveform cut to the bundle's window, and at most
    # frames_per_clip frames, which fusion then attends over.
    used = min(len(e2e_frames), cfg.frames_per_clip)
    e2e_samples = len(reference.pipeline.prepare_audio(audio, 16000)[0])
    flops_per["end_to_end"] = sum(flops_of(cfg, e2e_samples, used).values())
    return stages, flops_per


def time_stages(args, stages: list, backends: dict):
    """Every stage on every backend, interleaved (A B C for each stage, every iteration), after
    --warmup rounds. -> (times {(backend, stage): [s]}, the Predictor's own end-to-end
    timings_ms per backend, the last output of each (backend, stage))."""
    times = {(b, s): [] for b in backends for s, _, _ in stages}
    breakdown = {b: [] for b in backends}
    outputs = {}
    total = args.warmup + args.iters
    for it in range(total):
        for stage, fn, _ in stages:
            for name, backend in backends.items():
                t = time.perf_counter()
                out = fn(backend)
                dt = time.perf_counter() - t
                if it >= args.warmup:
                    times[(name, stage)].append(dt)
                    if stage == "end_to_end" and getattr(backend, "last_timings", None):
                        breakdown[name].append(backend.last_timings)
                outputs[(name, stage)] = out
        print(f"[latency] iteration {it + 1}/{total}{' (warm-up)' if it < args.warmup else ''}",
              file=sys.stderr, flush=True)
    return times, breakdown, outputs


def stage_rows(args, results, stages, backends, flops_per, times, breakdown, outputs) -> list[dict]:
    """One row per (stage, backend): percentiles, throughput, RTF, share of the peaks, paired
    speedup and output difference vs eager FP32."""
    from export.parity import cosine

    rows = []
    clip_seconds = args.audio_seconds
    for stage, _, items in stages:
        ref_out = outputs.get(("eager", stage))
        for name in backends:
            t = times[(name, stage)]
            row = {"backend": name, "stage": stage, **stats(t)}
            row["throughput_per_s"] = items / (row["p50_ms"] / 1e3)
            if stage in ("audio", "end_to_end") or stage.startswith("video"):
                row["rtf"] = row["p50_ms"] / 1e3 / clip_seconds
            row["gflop"] = flops_per[stage] / 1e9
            row["fraction_of_matmul_peak"] = flops_per[stage] / (row["p50_ms"] / 1e3) / (
                results["matmul_peak_gflops"] * 1e9)
            row["fraction_of_torch_fp32_peak"] = flops_per[stage] / (row["p50_ms"] / 1e3) / (
                results["cpu_gemm_peaks_gflops"]["torch_fp32"] * 1e9)
            if "gpu_matmul_peak_tflops" in results:  # GPU runs: the share of the FP16 tensor-core peak
                row["fraction_of_gpu_fp16_peak"] = flops_per[stage] / (row["p50_ms"] / 1e3) / (
                    results["gpu_matmul_peak_tflops"]["fp16"] * 1e12)
            if stage == "end_to_end" and breakdown.get(name):
                row["timings_ms_p50"] = {k: float(np.median([b[k] for b in breakdown[name]]))
                                         for k in breakdown[name][0]}
                row["preprocess_share"] = row["timings_ms_p50"].get("video_preprocess", 0.0) / \
                    row["timings_ms_p50"]["total"]
            if "eager" in backends:
                paired = np.asarray(times[("eager", stage)]) / np.asarray(t)
                row["speedup_vs_eager"] = {"median": float(np.median(paired)),
                                           "p25": float(np.percentile(paired, 25)),
                                           "p75": float(np.percentile(paired, 75))}
                out = outputs[(name, stage)]
                row["max_abs_diff_vs_eager"] = float(np.abs(np.asarray(out) - np.asarray(ref_out)).max())
                row["cosine_vs_eager"] = cosine(np.asarray(out), np.asarray(ref_out))
            rows.append(row)
    return rows


def label_agreement(args, backends, reference, cfg) -> dict:
    """End-to-end labels of every backend vs eager FP32 on synthetic clips."""
    from training.synthetic import make_clip

    clips = [make_clip(20_000 + i, frames=cfg.frames_per_clip) for i in range(args.agreement_clips)]
    labels = {n: [] for n in backends}
    for audio, frames, _ in clips:
        for name, b in backends.items():
            labels[name].append(int(np.argmax(b.end_to_end(reference, audio, frames))))
    base = np.array(labels.get("eager", labels[next(iter(labels))]))
    return {n: {"clips": len(clips), "label_agreement_vs_eager": float(np.mean(np.array(v) == base))}
            for n, v in labels.items()}


def frames_knob(args, bundle, cfg) -> list[dict]:
    """Latency and agreement with the 180-frame prediction for fewer frames per clip."""
    from foal_edge import Predictor
    from training.synthetic import make_clip

    clips = [make_clip(30_000 + i, seconds=args.audio_seconds, frames=180) for i in range(args.knob_clips)]
    full = Predictor(bundle, backend="onnxruntime-cpu", threads=args.threads, frames_per_clip=180)
    ref = [full.predict(audio=a, sample_rate=16000, frames=f).label for a, f, _ in clips]
    rows = []
    for k in args.frames_knob:
        p = Predictor(bundle, backend="onnxruntime-cpu", threads=args.threads, frames_per_clip=k)
        t, agree = [], 0
        for (a, f, _), r in zip(clips, ref):
            start = time.perf_counter()
            label = p.predict(audio=a, sample_rate=16000, frames=f).label
            t.append(time.perf_counter() - start)
            agree += label == r
        rows.append({"frames_per_clip": k, **stats(t), "label_agreement_vs_180": agree / len(clips)})
        print(f"[latency] frames-per-clip {k}: p50 {rows[-1]['p50_ms']:.0f} ms, agreement "
              f"{rows[-1]['label_agreement_vs_180']:.2f}", file=sys.stderr, flush=True)
    return rows


# -- reports ------------------------------------------------------------------------------
def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"# Latency: preset `{results['preset']}`, {results['audio_seconds']:g} s audio",
             "", f"Machine: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'}; torch {m['torch']}, "
             f"onnxruntime {m['onnxruntime']}, Python {m['python']}; {results['threads']} threads. "
             "CPU GEMM peaks measured in this run (GFLOP/s, 2048^3): " + ", ".join(
                 f"{k.replace('_', ' ')} {v:.0f}" for k, v in results.get("cpu_gemm_peaks_gflops", {
                     "torch_fp32": results["matmul_peak_gflops"]}).items())
             + f"; stages are shown against the best ({results['matmul_peak_gflops']:.0f}) and torch FP32.",
             *(["GPU matmul peaks measured in this run (TFLOP/s): " + ", ".join(
                 f"{k} {v:.0f}" for k, v in results["gpu_matmul_peak_tflops"].items())]
               if "gpu_matmul_peak_tflops" in results else []),
             f"End-to-end frames: {results.get('frame_size', '?')}.",
             "", f"Command: `{results['command']}`", "",
             "| backend | stage | p50 ms | p90 ms | p99 ms | per s | RTF | speedup vs eager (median [IQR]) | GFLOP "
             "| % best GEMM peak (GPU: FP16) | % torch FP32 peak | max abs diff vs eager | cosine vs eager |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results["rows"]:
        sp = r.get("speedup_vs_eager")
        spd = f"{sp['median']:.2f}x [{sp['p25']:.2f}-{sp['p75']:.2f}]" if sp else "-"
        lines.append(f"| {r['backend']} | {r['stage']} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['p99_ms']:.1f} "
                     f"| {r['throughput_per_s']:.2f} | {r.get('rtf', float('nan')):.3f} | {spd} | {r['gflop']:.2f} "
                     f"| {100 * r.get('fraction_of_gpu_fp16_peak', r['fraction_of_matmul_peak']):.1f}% "
                     f"| {100 * r.get('fraction_of_torch_fp32_peak', r['fraction_of_matmul_peak']):.1f}% "
                     f"| {r.get('max_abs_diff_vs_eager', 0):.2e} "
                     f"| {r.get('cosine_vs_eager', 1):.6f} |")
    e2e = [r for r in results["rows"] if r.get("timings_ms_p50")]
    if e2e:
        lines += ["", "End to end inside the Predictor (p50 ms of its own timings_ms):", "",
                  "| backend | audio pre | audio | video pre | video | fusion | total | preprocessing share |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in e2e:
            t = r["timings_ms_p50"]
            lines.append(f"| {r['backend']} | {t.get('audio_preprocess', 0):.1f} | {t.get('audio', 0):.1f} "
                         f"| {t.get('video_preprocess', 0):.1f} | {t.get('video', 0):.1f} | {t.get('fusion', 0):.1f} "
                         f"| {t['total']:.1f} | {100 * r['preprocess_share']:.0f}% |")
    if results["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in results["skipped"].items())]
    if results.get("agreement"):
        lines += ["", "End-to-end label agreement with eager FP32: " + ", ".join(
            f"{k} {100 * v['label_agreement_vs_eager']:.1f}% of {v['clips']}" for k, v in results["agreement"].items())]
    if results.get("frames_knob"):
        lines += ["", "Frames per clip (ONNX Runtime FP32, end to end):", "",
                  "| frames | p50 ms | agreement with 180 frames |", "| ---: | ---: | ---: |"]
        lines += [f"| {r['frames_per_clip']} | {r['p50_ms']:.0f} | {100 * r['label_agreement_vs_180']:.0f}% |"
                  for r in results["frames_knob"]]
    lines += ["", f"Peak RSS: {results['peak_rss_mb']:.0f} MB"
              + (f"; peak GPU memory {results['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in results else ""), ""]
    return "\n".join(lines)


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(r["stage"] for r in results["rows"]))
    backends = list(dict.fromkeys(r["backend"] for r in results["rows"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(stages)), 4), dpi=120)
    width = 0.8 / max(len(backends), 1)
    for i, b in enumerate(backends):
        vals = [next((r["p50_ms"] for r in results["rows"] if r["backend"] == b and r["stage"] == s), np.nan)
                for s in stages]
        ax.bar(np.arange(len(stages)) + i * width, vals, width, label=b)
    ax.set_xticks(np.arange(len(stages)) + width * (len(backends) - 1) / 2, stages)
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency (ms, log)")
    ax.set_title(f"preset {results['preset']}: {results['machine']['cpu'][:60]}", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", default=str(Path(__file__).resolve().parents[1] / "training" / "demo"),
                     help="trained checkpoint (default: the demo checkpoint)")
    src.add_argument("--random-weights", action="store_true", help="random weights of --preset")
    p.add_argument("--preset", default="tiny", choices=("large", "base", "tiny"))
    p.add_argument("--bundle", help="a TensorRT bundle to measure (ONNX bundles are built by the harness)")
    p.add_argument("--bundle-dir", default=None, help="where the harness keeps its bundles (default build/bench/NAME)")
    p.add_argument("--backends", default=",".join(ALL_BACKENDS), help="comma list of " + ", ".join(ALL_BACKENDS))
    p.add_argument("--audio-seconds", type=float, default=6.0)
    p.add_argument("--frames", default="16", help="frame counts for the video stage, e.g. 16,180")
    p.add_argument("--frame-size", default="", help="camera frame size HxW for end to end, e.g. 720x1280 "
                                                    "(default: the synthetic corpus's small frames)")
    p.add_argument("--batch", type=int, default=1, help="clips per call (only 1 is measured so far)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--agreement-clips", type=int, default=0, help="clips for end-to-end label agreement")
    p.add_argument("--frames-knob", default="", help="frames per clip to compare with 180, e.g. 4,8,16,32")
    p.add_argument("--knob-clips", type=int, default=10)
    p.add_argument("--out", required=True, help="output path without extension: writes .json, .md, .png")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.batch != 1:
        raise SystemExit("--batch: only batch 1 is implemented")
    args.backends = [b for b in args.backends.split(",") if b]
    unknown = set(args.backends) - set(ALL_BACKENDS)
    if unknown:
        raise SystemExit(f"unknown backends {sorted(unknown)}; choose from {ALL_BACKENDS}")
    args.frames = [int(f) for f in args.frames.split(",")]
    args.frame_size = tuple(int(v) for v in args.frame_size.split("x")) if args.frame_size else None
    args.frames_knob = [int(f) for f in args.frames_knob.split(",") if f]
    out = Path(args.out)
    args.bundle_dir = args.bundle_dir or str(Path("build/bench") / out.name)
    results = run(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    out.with_suffix(".md").write_text(markdown(results))
    chart(results, out.with_suffix(".png"))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
