"""Turn a trained Foal-Net checkpoint into a deployable bundle.

    python -m export.build_engine                       # the demo bundle -> build/foal-demo
    python -m export.build_engine --checkpoint runs/foal/fold1 --out bundles/foal --precision fp16
    python -m export.build_engine --preset large --random-weights --out build/large-fp16 --precision fp16

Exports the three graphs (audio encoder, video encoder, fusion) to ONNX, converts them to
the requested precision, builds TensorRT engines on this machine when TensorRT and a GPU
are here (ONNX otherwise), measures parity against the eager model, and writes the
bundle: the graph files plus manifest.json. `foal_edge.Predictor(OUT)` runs it.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "training" / "demo"
DEMO_OUT = Path("build/foal-demo")
MAX_ENGINE_FRAME = (720, 1280)  # the largest camera frame the TensorRT preprocess engine takes
# --precision auto on ONNX ships an INT8 encoder only when it is faster here and the labels hold.
MIN_INT8_AGREEMENT, MIN_INT8_CLIPS, MIN_INT8_SPEEDUP = 0.99, 100, 1.05


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.build_engine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="a training output directory (config.json + model.safetensors); "
                        "default: the committed demo checkpoint, training/demo")
    p.add_argument("--preset", choices=("large", "base", "tiny"),
                   help="with --random-weights: the architecture to build (the checkpoint's own otherwise)")
    p.add_argument("--random-weights", action="store_true",
                   help="no checkpoint: random weights of --preset (for latency and parity work, not accuracy)")
    p.add_argument("--precision", choices=("auto", "fp32", "fp16", "int8"), default="auto",
                   help="fp32; fp16 (FP32 kept for LayerNorm, Softmax, reductions, position arithmetic); "
                        "int8 (dynamic quantisation of the encoders' MatMul/Gemm, for CPUs). "
                        "auto: fp16 for TensorRT; for ONNX, per encoder the faster of FP32 and INT8 on "
                        f"this machine, INT8 only if labels agree with FP32 on >= {100 * MIN_INT8_AGREEMENT:g}%% "
                        f"of at least {MIN_INT8_CLIPS} parity clips")
    p.add_argument("--target", choices=("auto", "onnx", "tensorrt"), default="auto",
                   help="auto: TensorRT engines when TensorRT and a GPU are present, ONNX otherwise")
    p.add_argument("--out", type=Path, default=None, help=f"bundle directory (default {DEMO_OUT})")
    p.add_argument("--frames", type=int, default=None,
                   help="frames per clip the runtime samples (default: the checkpoint's; the paper: 180)")
    p.add_argument("--max-audio-seconds", type=float, default=None,
                   help="longest audio window (default: the checkpoint's; the paper: 6)")
    p.add_argument("--workspace-mb", type=int, default=1024,
                   help="TensorRT builder workspace (Jetson shares memory with the CPU: keep it small)")
    p.add_argument("--timing-cache", type=Path, default=None,
                   help="TensorRT timing cache file, read if present and updated (speeds up rebuilds)")
    p.add_argument("--weakly-typed", action="store_true",
                   help="TensorRT 10.x only: build from the FP32 ONNX with the FP16 builder flag instead of "
                        "the strongly typed FP16 ONNX")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18; see export/onnx_export.py)")
    p.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo",
                   help="torch.onnx exporter (dynamo: measured faster on ONNX Runtime, see README)")
    p.add_argument("--parity-clips", type=int, default=None,
                   help="synthetic clips for the parity check (default 200 for tiny, 4 otherwise; 0 skips)")
    p.add_argument("--device", type=int, default=0, help="CUDA device for TensorRT builds")
    p.add_argument("--model-card", type=Path, default=None,  # issue 25
                   help="JSON (or YAML) with the model card fields the checkpoint cannot know: licences, intended "
                        "and prohibited uses, who built it (see docs/confidence.md)")
    p.add_argument("--ort-cuda-variant", dest="ort_cuda_variant", action="store_true", default=None,
                   help="add ONNX Runtime CUDA's optimised FP16 audio and video graphs (fused attention; default "
                        "with --precision fp16 --target onnx), used only by backend onnxruntime-cuda")
    p.add_argument("--no-ort-cuda-variant", dest="ort_cuda_variant", action="store_false",
                   help="leave that variant out")
    return p


def progress(items, desc: str):
    """A progress bar on stderr (tqdm; shown on a terminal, one summary line otherwise)."""
    from tqdm import tqdm

    return tqdm(items, desc=f"[build_engine] {desc}", unit="clip", file=sys.stderr, leave=False,
                mininterval=1.0)


def log_step(msg: str) -> None:
    print(f"[build_engine] {msg}", file=sys.stderr, flush=True)


def load_model(args):
    from training.model import FoalNet

    if args.random_weights:
        if not args.preset:
            raise SystemExit("--random-weights needs --preset large|base|tiny")
        return FoalNet.from_preset(args.preset).eval()
    checkpoint = args.checkpoint or DEMO_CHECKPOINT
    try:
        model = FoalNet.load(checkpoint).eval()
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"cannot load checkpoint: {exc}")
    if args.preset and args.preset != model.config.preset:
        raise SystemExit(f"{checkpoint} is a {model.config.preset!r} checkpoint, not {args.preset!r}")
    return model


def choose_target(args) -> tuple[str, str]:
    from .tensorrt_build import tensorrt_status

    usable, why = tensorrt_status()
    if args.target == "tensorrt" and not usable:
        raise SystemExit(f"--target tensorrt: {why}")
    if args.target == "onnx" or (args.target == "auto" and not usable):
        return "onnx", ("ONNX requested" if args.target == "onnx" else f"ONNX because {why}")
    return "tensorrt", f"TensorRT engines because {why}"


def profiles_for(name: str, config, manifest_frames: int, max_seconds: float):
    """min / opt / max shapes per input of one graph (batch 1 at opt; up to 4 clips)."""
    from foal_edge.preprocess import min_samples, wavlm_frames

    from .tensorrt_build import Profile

    rate = config.sample_rate
    kernels, strides = config.audio.conv_kernel, config.audio.conv_stride
    s_min, s_opt, s_max = min_samples(kernels, strides), int(min(6.0, max_seconds) * rate), int(max_seconds * rate)
    t_min, t_opt, t_max = (wavlm_frames(s, kernels, strides) for s in (s_min, s_opt, s_max))
    size, d_a, d_v = config.video.image_size, config.audio.hidden_size, config.video.embed_dim
    if name == "audio":
        return {"waveform": Profile((1, s_min), (1, s_opt), (4, s_max))}
    if name == "video":
        return {"frames": Profile((1, 3, size, size), (manifest_frames, 3, size, size),
                                  (4 * manifest_frames, 3, size, size))}
    if name == "preprocess":  # one clip of landscape camera frames up to 1280x720 (others: the CPU path)
        h, w = MAX_ENGINE_FRAME
        return {"frames": Profile((1, 8, 8, 3), (manifest_frames, 480, 640, 3), (manifest_frames, h, w, 3)),
                "resize_x": Profile((size, 8), (size, 640), (size, w)),
                "resize_y": Profile((size, 8), (size, 480), (size, h))}
    return {"audio": Profile((1, t_min, d_a), (1, t_opt, d_a), (4, t_max, d_a)),
            "audio_mask": Profile((1, t_min), (1, t_opt), (4, t_max)),
            "video": Profile((1, 1, d_v), (1, manifest_frames, d_v), (4, manifest_frames, d_v)),
            "video_mask": Profile((1, 1), (1, manifest_frames), (4, manifest_frames))}


def main(argv=None) -> Path:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # onnxscript's optimiser warns once per Split node ("Skipping constant folding for op Split
    # with multiple outputs"): nothing to act on, six lines per export.
    logging.getLogger("onnxscript.optimizer._constant_folding").setLevel(logging.ERROR)
    demo = args.checkpoint is None and not args.random_weights
    t_start = time.time()

    from foal_edge.backends.onnxruntime import OnnxRuntimeRunner
    from foal_edge.manifest import GRAPHS, OPTIONAL_GRAPHS

    from . import graphs as graph_defs
    from . import parity
    from .bundle import graph_info, manifest_for, write_manifest
    from .fp16 import convert_file
    from .onnx_export import OPSET, export_onnx
    from .quantize import quantize_int8

    model = load_model(args)
    config = model.config
    import dataclasses  # issue 25: the model card, checked before the long export so a bad card fails at once

    from foal_edge.errors import FoalEdgeError

    from .model_card import bundle_card
    try:
        card, calibration = bundle_card(None if args.random_weights else args.checkpoint or DEMO_CHECKPOINT,
                                        args.model_card, config)
    except FoalEdgeError as exc:
        raise SystemExit(f"error: {exc}")
    if args.frames:
        config.frames_per_clip = args.frames
    if args.max_audio_seconds:
        config.audio_seconds = args.max_audio_seconds
    target, why = choose_target(args)
    precision = args.precision if args.precision != "auto" else ("fp16" if target == "tensorrt" else "cpu-auto")
    if target == "tensorrt" and precision == "int8":
        raise SystemExit("--precision int8 is the CPU (ONNX Runtime) variant; for TensorRT use fp16")
    out = args.out or DEMO_OUT
    out.mkdir(parents=True, exist_ok=True)
    opset = args.opset or OPSET
    n_parity = args.parity_clips if args.parity_clips is not None else (200 if config.preset == "tiny" else 4)

    work = Path(tempfile.mkdtemp(prefix="foal-export-"))
    try:
        specs, modules = graph_defs.specs(model), graph_defs.modules(model)
        fp32 = {}
        for name in GRAPHS + OPTIONAL_GRAPHS:
            t = time.time()
            fp32[name] = export_onnx(modules[name], graph_defs.example_inputs(model, name), specs[name],
                                     work / f"{name}.onnx", opset=opset, exporter=args.exporter)
            log_step(f"exported {name} graph to ONNX ({args.exporter}, opset {opset}) in {time.time() - t:.1f}s")

        # The precision variant the bundle ships. Frame preprocessing stays FP32 whatever the
        # precision: its weights must resolve 1/255 (FP16 would move pixels by grey levels).
        final = {"preprocess": fp32["preprocess"]}
        for name in GRAPHS:
            if precision == "fp32":
                final[name] = fp32[name]
            elif precision == "fp16":
                final[name] = work / f"{name}.fp16.onnx"
                convert_file(fp32[name], final[name])
            else:  # int8 (or its candidate for cpu-auto): the encoders; the tiny fusion head stays fp32
                final[name] = (quantize_int8(fp32[name], work / f"{name}.int8.onnx") if name != "fusion"
                               else fp32[name])
        if precision != "fp32":
            log_step(f"converted the graphs to {'int8 (candidates for auto)' if precision == 'cpu-auto' else precision}")

        # Parity: FP32 ONNX vs eager, and the shipped variant vs FP32 ONNX.
        if n_parity:
            log_step(f"making {n_parity} synthetic parity clips")
        inputs = parity.clip_inputs(config, range(10_000, 10_000 + n_parity))
        ort32 = {n: OnnxRuntimeRunner(fp32[n]) for n in GRAPHS}
        report, shipped, choice = {}, None, None
        if n_parity:
            t = time.time()
            eager = lambda w, f: parity.run_eager(model, w, f)  # noqa: E731
            onnx32 = lambda w, f: parity.run_sessions(ort32, w, f)  # noqa: E731
            report["fp32_vs_eager"] = parity.compare(eager, onnx32, progress(inputs, "parity: FP32 ONNX vs eager"))
            if precision != "fp32":
                low = "int8" if precision == "cpu-auto" else precision
                shipped = {n: OnnxRuntimeRunner(final[n], precision=low if n != "fusion" or
                                                low == "fp16" else "fp32") for n in GRAPHS}
                report[f"{low}_vs_fp32"] = parity.compare(
                    onnx32, lambda w, f: parity.run_sessions(shipped, w, f),
                    progress(inputs, f"parity: {low.upper()} vs FP32"))
                report[f"{low}_vs_fp32"]["encoder_cosine"] = parity.encoder_cosines(
                    ort32, shipped, config, seconds=(1.0, 3.0, config.audio_seconds))
            log_step(f"parity on {n_parity} synthetic clips in {time.time() - t:.1f}s")
        graph_precision = {n: ("fp32" if n == "preprocess" or (n == "fusion" and precision != "fp16")
                               else precision) for n in GRAPHS + OPTIONAL_GRAPHS}
        if precision == "cpu-auto":
            choice = choose_cpu_precision(ort32, shipped, report.get("int8_vs_fp32"), inputs)
            for name, pick in choice["graphs"].items():
                graph_precision[name] = pick
                if pick == "fp32":
                    final[name] = fp32[name]
            picks = set(choice["graphs"][n] for n in ("audio", "video"))
            if picks == {"fp32"}:
                report.pop("int8_vs_fp32", None)
            elif len(picks) == 2:  # one encoder INT8, one FP32: measure the mix that ships
                mixed = {n: ort32[n] if choice["graphs"][n] == "fp32" else shipped[n] for n in GRAPHS}
                report["int8_vs_fp32"] = parity.compare(
                    onnx32, lambda w, f: parity.run_sessions(mixed, w, f), inputs)
            log_step(f"auto precision: {choice['why']}")
            precision = "int8" if "int8" in choice["graphs"].values() else "fp32"

        # Into the bundle: ONNX files, or engines built from them.
        entries, variants = {}, {}
        for name in GRAPHS + OPTIONAL_GRAPHS:
            suffix = "" if graph_precision[name] == "fp32" else f".{graph_precision[name]}"
            if target == "onnx":
                dst = out / f"{name}{suffix}.onnx"
                shutil.copyfile(final[name], dst)
                entries[name] = graph_info(out, dst, "onnx", graph_precision[name], final[name], opset=opset)
            else:
                entries[name] = build_tensorrt(args, config, name, fp32[name], final[name], out,
                                               graph_precision[name])
            if name in GRAPHS:
                entries[name].parity = {k: _graph_parity(v, name) for k, v in report.items()} or None
            else:
                entries[name].parity = {"vs_cpu_pillow": parity.preprocess_parity(fp32[name], config)}

        if target == "onnx" and (args.ort_cuda_variant or (args.ort_cuda_variant is None and precision == "fp16")):
            from .ort_optimize import add_ort_cuda_variants

            t = time.time()
            variants = add_ort_cuda_variants(out, entries, fp32, (config.video.heads, config.video.width))
            log_step("ONNX Runtime CUDA variants of the encoder graphs in " f"{time.time() - t:.1f}s: " + "; ".join(
                f"{name} {r['fused']}" + (f", cosine {r['vs_fp32_on_cpu']['cosine']:.6f} to FP32 on the CPU"
                                          if "vs_fp32_on_cpu" in r else "") for name, r in variants.items()))
        demo_files = write_demo_clip(out, config)
        write_manifest(out, dataclasses.replace(manifest_for(config, entries, demo_files), model_card=card,
                                                calibration=calibration))  # issue 25
        (out / "export_report.json").write_text(json.dumps(
            {"parity": report, "precision": precision, "auto_precision": choice, "target": target, "exporter": args.exporter,
             "opset": opset, "ort_cuda_variants": variants, "seconds": round(time.time() - t_start, 1)}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print_summary(out, entries, report, precision)
    what = "the demo bundle" if demo else "a bundle"
    print(f"built {what} at {out}: {precision.upper()} {target.upper() if target == 'onnx' else 'TensorRT'} "
          f"graphs ({why}) in {time.time() - t_start:.0f}s")
    return out


def choose_cpu_precision(fp32: dict, int8: dict | None, int8_parity: dict | None, inputs, rounds: int = 7) -> dict:
    """--precision auto on ONNX: per encoder, INT8 where it runs at least MIN_INT8_SPEEDUP x
    faster than FP32 on this machine (median of interleaved runs on a parity clip), and only
    if INT8 kept the labels of FP32 on enough parity clips. The fusion head stays FP32."""
    keep = {"graphs": {"audio": "fp32", "video": "fp32", "fusion": "fp32"}, "speedup": {}}
    clips = int8_parity["clips"] if int8_parity else 0
    agreement = int8_parity["label_agreement"] if int8_parity else 0.0
    if clips < MIN_INT8_CLIPS or agreement < MIN_INT8_AGREEMENT:
        keep["why"] = (f"FP32: INT8 kept {100 * agreement:.1f}% of labels on {clips} clips "
                       f"(needs >= {100 * MIN_INT8_AGREEMENT:g}% of >= {MIN_INT8_CLIPS}; --parity-clips sets the count)")
        return keep
    wave, frames = max(inputs, key=lambda x: x[0].shape[1])
    feeds = {"audio": {"waveform": wave}, "video": {"frames": frames}}
    for name in ("audio", "video"):
        times = {"fp32": [], "int8": []}
        for r in range(rounds + 1):  # round 0 warms both sessions up
            for kind, runner in (("fp32", fp32[name]), ("int8", int8[name])):
                t = time.perf_counter()
                runner.run(feeds[name])
                if r:
                    times[kind].append(time.perf_counter() - t)
        speedup = float(np.median(times["fp32"]) / np.median(times["int8"]))
        keep["speedup"][name] = speedup
        if speedup >= MIN_INT8_SPEEDUP:
            keep["graphs"][name] = "int8"
    keep["why"] = (f"INT8 kept {100 * agreement:.1f}% of labels on {clips} clips; INT8/FP32 speed here: " +
                   ", ".join(f"{n} {v:.2f}x -> {keep['graphs'][n].upper()}" for n, v in keep["speedup"].items()))
    return keep


def _graph_parity(report: dict, name: str) -> dict:
    out = {"clips": report["clips"], "max_abs_diff": report["max_abs_diff"][name]}
    if name == "fusion":
        out.update(max_probability_diff=report["max_probability_diff"], label_agreement=report["label_agreement"])
    else:
        out["min_cosine"] = report["min_cosine"][name]
    return out


def build_tensorrt(args, config, name, fp32_onnx, final_onnx, out, precision):
    import tensorrt as trt

    from foal_edge.cuda import open_cuda

    from .bundle import graph_info
    from .tensorrt_build import build_engine

    cc = open_cuda(args.device).compute_capability()
    engine = out / f"{name}.{precision}.trt{trt.__version__}.sm{cc.replace('.', '')}.engine"
    profiles = profiles_for(name, config, config.frames_per_clip, config.audio_seconds)
    weak = args.weakly_typed and precision == "fp16"
    log_step(f"building the {name} TensorRT engine ({'weakly typed + FP16 flag' if weak else 'strongly typed'})")
    t = time.time()
    build_engine(fp32_onnx if weak else final_onnx, engine, profiles, strongly_typed=not weak, fp16_flag=weak,
                 workspace_mb=args.workspace_mb, timing_cache=args.timing_cache)
    log_step(f"built {engine.name} in {time.time() - t:.0f}s")
    from .onnx_export import OPSET

    return graph_info(out, engine, "tensorrt", precision, final_onnx, opset=args.opset or OPSET,
                      tensorrt_version=trt.__version__, compute_capability=cc,
                      profiles={k: {"min": list(p.min), "opt": list(p.opt), "max": list(p.max)}
                                for k, p in profiles.items()})


def write_demo_clip(out: Path, config) -> dict:
    """A sample clip inside the bundle for `python -m foal_edge predict BUNDLE --demo`:
    16-bit WAV (read with the standard library) and frames as a plain .npy (no pickle)."""
    import wave

    from training.synthetic import make_clip

    seconds = min(3.0, config.audio_seconds)
    audio, frames, code = make_clip(2024, code="hap", seconds=seconds, frames=24)
    with wave.open(str(out / "demo.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(config.sample_rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    np.save(out / "demo_frames.npy", frames, allow_pickle=False)
    from foal_edge.manifest import sha256_file

    return {"audio": "demo.wav", "frames": "demo_frames.npy", "fps": len(frames) / seconds, "expected": "happy",
            "sha256": {f: sha256_file(out / f) for f in ("demo.wav", "demo_frames.npy")}}


def print_summary(out: Path, entries, report, precision) -> None:
    print(f"\n{'graph':<8} {'format':<9} {'precision':<9} {'size':>9}  parity")
    for name, e in entries.items():
        size = (out / e.file).stat().st_size
        checks = []
        if name == "preprocess" and e.parity:
            checks.append(f"vs the CPU path (Pillow): max {e.parity['vs_cpu_pillow']['max_grey_levels']:.2f} "
                          "grey levels")
        for key, r in report.items():
            if name not in r["max_abs_diff"]:
                continue
            checks.append(f"{key}: max|d| {r['max_abs_diff'][name]:.2e}")
            if name == "fusion":
                checks.append(f"labels {100 * r['label_agreement']:.1f}% of {r['clips']}")
        print(f"{name:<8} {e.format:<9} {e.precision:<9} {size / 1e6:>7.2f}MB  {'; '.join(checks) or 'not run'}")
    print()


if __name__ == "__main__":
    main()
