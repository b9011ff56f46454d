"""Turn a trained Foal-Net checkpoint into a deployable bundle.

    python -m export.build_engine                       # the demo bundle -> build/foal-demo
    python -m export.build_engine --checkpoint runs/foal/fold1 --out bundles/foal --precision fp16
    python -m export.build_engine --preset large --random-weights --out build/large-fp16 --precision fp16

Exports the three graphs (audio encoder, video encoder, fusion) to ONNX, converts them to
the requested precision, builds TensorRT engines on this machine when TensorRT and a GPU
are here (ONNX otherwise), measures parity against the eager model, and writes the
bundle: the graph files plus manifest.json. `foal_edge.Predictor(OUT)` runs it.

This is the command-line shell over `export.build_bundle` (export/api.py), which does the work.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .api import DEMO_OUT, EXPORTERS, TARGETS, build_bundle
from .errors import ExportError
from .precision import MIN_INT8_AGREEMENT, MIN_INT8_CLIPS, PRECISIONS


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
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="fp32; fp16 (FP32 kept for LayerNorm, Softmax, reductions, position arithmetic); "
                        "int8 (dynamic quantisation of the encoders' MatMul/Gemm, for CPUs). "
                        "auto: fp16 for TensorRT; for ONNX, per encoder the faster of FP32 and INT8 on "
                        f"this machine, INT8 only if labels agree with FP32 on >= {100 * MIN_INT8_AGREEMENT:g}%% "
                        f"of at least {MIN_INT8_CLIPS} parity clips")
    p.add_argument("--target", choices=TARGETS, default="auto",
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
    p.add_argument("--exporter", choices=EXPORTERS, default="dynamo",
                   help="torch.onnx exporter (dynamo: measured faster on ONNX Runtime, see README)")
    p.add_argument("--parity-clips", type=int, default=None,
                   help="synthetic clips for the parity check (default 200 for tiny, 4 otherwise; 0 skips)")
    p.add_argument("--device", type=int, default=0, help="CUDA device for TensorRT builds")
    p.add_argument("--model-card", type=Path, default=None,
                   help="JSON (or YAML) with the model card fields the checkpoint cannot know: licences, intended "
                        "and prohibited uses, who built it (see docs/confidence.md)")
    p.add_argument("--ort-cuda-variant", dest="ort_cuda_variant", action="store_true", default=None,
                   help="add ONNX Runtime CUDA's optimised FP16 audio and video graphs (fused attention; default "
                        "with --precision fp16 --target onnx), used only by backend onnxruntime-cuda")
    p.add_argument("--no-ort-cuda-variant", dest="ort_cuda_variant", action="store_false",
                   help="leave that variant out")
    return p


def main(argv=None) -> Path:
    args = build_parser().parse_args(argv)
    t_start = time.time()
    try:
        out = build_bundle(args.checkpoint, args.out or DEMO_OUT, precision=args.precision, target=args.target,
                           preset=args.preset, random_weights=args.random_weights, frames=args.frames,
                           max_audio_seconds=args.max_audio_seconds, parity_clips=args.parity_clips,
                           exporter=args.exporter, opset=args.opset, ort_cuda_variant=args.ort_cuda_variant,
                           workspace_mb=args.workspace_mb, timing_cache=args.timing_cache,
                           weakly_typed=args.weakly_typed, device=args.device, model_card=args.model_card)
    except ExportError as exc:
        raise SystemExit(str(exc)) from None
    from foal_edge.bundle import load_manifest

    report = json.loads((out / "export_report.json").read_text())
    precision, target = report["precision"], report["target"]
    print_summary(out, load_manifest(out, verify=False).graphs, report["parity"], precision)
    demo = args.checkpoint is None and not args.random_weights
    print(f"built {'the demo bundle' if demo else 'a bundle'} at {out}: {precision.upper()} "
          f"{target.upper() if target == 'onnx' else 'TensorRT'} graphs ({report['target_reason']}) "
          f"in {time.time() - t_start:.0f}s")
    return out


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
