"""Compare exported graphs: precision variants against FP32, and the two torch.onnx
exporters against each other on ONNX Runtime speed.

    python -m export.compare precision --reference build/b/fp32 --candidate build/b/fp16 \\
        --out benchmarks/results/fp16-parity-large.json
    python -m export.compare exporters --preset large --random-weights --graphs video \\
        --out benchmarks/results/exporters-large.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def compare_precision(reference: Path, candidate: Path, seconds, frames) -> dict:
    from foal_edge.backends.onnxruntime import OnnxRuntimeRunner
    from foal_edge.bundle import load_manifest

    from .parity import encoder_cosines

    ref_m, cand_m = load_manifest(reference), load_manifest(candidate)

    # What encoder_cosines needs of a model config, from the manifest.
    config = SimpleNamespace(sample_rate=ref_m.sample_rate, video=SimpleNamespace(image_size=ref_m.image_size))
    runners = lambda root, m: {n: OnnxRuntimeRunner(root / g.file, precision=g.precision)  # noqa: E731
                               for n, g in m.graphs.items() if n != "fusion"}
    return {"reference": str(reference), "candidate": str(candidate),
            "precision": {n: g.precision for n, g in cand_m.graphs.items()},
            "min_row_cosine": encoder_cosines(runners(reference, ref_m), runners(candidate, cand_m), config,
                                              seconds=seconds, frames=frames)}


def compare_exporters(preset: str, graphs, iters: int, threads: int | None) -> dict:
    import torch

    from foal_edge.backends.onnxruntime import OnnxRuntimeRunner
    from training.model import FoalNet

    from . import graphs as defs
    from .onnx_export import export_onnx

    torch.manual_seed(0)
    model = FoalNet.from_preset(preset).eval()
    specs, modules = defs.specs(model), defs.modules(model)
    cfg = model.config
    inputs = {"audio": {"waveform": np.random.default_rng(0).standard_normal((1, cfg.audio_samples)).astype(np.float32)},
              "video": {"frames": np.random.default_rng(1).standard_normal(
                  (4, 3, cfg.video.image_size, cfg.video.image_size)).astype(np.float32)}}
    exporters = ("dynamo", "legacy")
    out = {"preset": preset, "iters": iters, "graphs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in graphs:
            row, runners = {}, {}
            for exporter in exporters:
                t = time.time()
                path = export_onnx(modules[name], defs.example_inputs(model, name), specs[name],
                                   Path(tmp) / f"{name}.{exporter}.onnx", exporter=exporter)
                row[exporter] = {"export_s": round(time.time() - t, 1), "file_mb": path.stat().st_size / 1e6}
                runners[exporter] = OnnxRuntimeRunner(path, threads=threads)
                runners[exporter].run(inputs[name])  # warm-up
            # Interleaved, so that whatever else the machine does falls on both alike.
            times = {e: [] for e in exporters}
            for _ in range(iters):
                for exporter in exporters:
                    t = time.perf_counter()
                    runners[exporter].run(inputs[name])
                    times[exporter].append(time.perf_counter() - t)
            for exporter in exporters:
                row[exporter].update(p50_ms=1e3 * float(np.median(times[exporter])),
                                     min_ms=1e3 * float(np.min(times[exporter])))
                print(f"[compare] {name} {exporter}: export {row[exporter]['export_s']:.0f}s, ONNX Runtime p50 "
                      f"{row[exporter]['p50_ms']:.0f} ms", file=sys.stderr, flush=True)
            ratios = [d / l for d, l in zip(times["dynamo"], times["legacy"])]
            row["dynamo_over_legacy"] = float(np.median(ratios))
            row["faster"] = min(exporters, key=lambda e: row[e]["p50_ms"])
            out["graphs"][name] = row
            del runners
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m export.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    pr = sub.add_parser("precision", help="encoder outputs of a bundle vs an FP32 bundle (per-row cosine)")
    pr.add_argument("--reference", type=Path, required=True)
    pr.add_argument("--candidate", type=Path, required=True)
    pr.add_argument("--seconds", default="1,3,6", help="audio lengths")
    pr.add_argument("--frames", default="1,4,16", help="frame counts")
    ex = sub.add_parser("exporters", help="dynamo vs legacy exporter: ONNX Runtime latency of the result")
    ex.add_argument("--preset", default="large", choices=("large", "base", "tiny"))
    ex.add_argument("--random-weights", action="store_true", help="(the only mode: speed does not depend on weights)")
    ex.add_argument("--graphs", default="audio,video")
    ex.add_argument("--iters", type=int, default=3)
    ex.add_argument("--threads", type=int, default=None)
    for sp in (pr, ex):
        sp.add_argument("--out", type=Path, help="write the result as JSON here")
    args = p.parse_args(argv)
    if args.what == "precision":
        result = compare_precision(args.reference, args.candidate, [float(s) for s in args.seconds.split(",")],
                                   [int(f) for f in args.frames.split(",")])
    else:
        result = compare_exporters(args.preset, args.graphs.split(","), args.iters, args.threads)
    result["command"] = "python -m export.compare " + " ".join(sys.argv[1:] if argv is None else argv)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
