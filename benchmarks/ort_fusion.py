"""Does ONNX Runtime's transformer optimizer fuse our exported graphs, and what does that buy
on a GPU? Times one graph on ONNX Runtime CUDA, interleaved: our FP32 and FP16 ONNX as the
bundle ships them, and the optimizer's output (FP32 and converted to FP16), with the fused
operator counts and cosine to our FP32 output.

    python -m benchmarks.ort_fusion build/bench/gpu-large/fp32/video.onnx --model-type vit \\
        --heads 16 --hidden 1024 --frames 180 --out benchmarks/results/ort-fusion-video
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ort_fusion", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", type=Path, help="an FP32 graph from a bundle (video.onnx or audio.onnx)")
    p.add_argument("--model-type", default="vit", help="onnxruntime.transformers model type (vit, bert, clip)")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--frames", type=int, default=180, help="video: frames; audio: seconds x 16000 samples")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import onnxruntime as ort
    from onnxruntime.transformers import optimizer

    from export.fp16 import convert_file

    work = args.onnx.parent / "fusion-variants"
    work.mkdir(exist_ok=True)
    variants = {"ours-fp32": args.onnx}
    convert_file(args.onnx, work / "ours-fp16.onnx")
    variants["ours-fp16"] = work / "ours-fp16.onnx"
    fused = optimizer.optimize_model(str(args.onnx), model_type=args.model_type, num_heads=args.heads,
                                     hidden_size=args.hidden, use_gpu=True)
    stats = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
    fused.save_model_to_file(str(work / "ort-fused-fp32.onnx"))
    variants["ort-fused-fp32"] = work / "ort-fused-fp32.onnx"
    fused.convert_float_to_float16(keep_io_types=True)
    fused.save_model_to_file(str(work / "ort-fused-fp16.onnx"))
    variants["ort-fused-fp16"] = work / "ort-fused-fp16.onnx"
    print(f"[ort_fusion] fused operators: {stats}", file=sys.stderr, flush=True)

    sessions = {k: ort.InferenceSession(str(v), providers=["CUDAExecutionProvider"]) for k, v in variants.items()}
    name = sessions["ours-fp32"].get_inputs()[0].name
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((args.frames, 3, 224, 224)) if name == "frames"
         else 0.1 * rng.standard_normal((1, args.frames * 16000))).astype(np.float32)
    outs, times = {}, {k: [] for k in sessions}
    for it in range(args.iters + 2):
        for k, s in sessions.items():
            t = time.perf_counter()
            outs[k] = s.run(None, {name: x})[0]
            if it >= 2:
                times[k].append(time.perf_counter() - t)
    ref = outs["ours-fp32"].astype(np.float64).ravel()
    rows = []
    for k in sessions:
        o = outs[k].astype(np.float64).ravel()
        rows.append({"variant": k, "p50_ms": 1e3 * float(np.median(times[k])),
                     "cosine_vs_ours_fp32": float(o @ ref / np.linalg.norm(o) / np.linalg.norm(ref))})
        print(f"[ort_fusion] {k:<16} {rows[-1]['p50_ms']:8.1f} ms  cosine {rows[-1]['cosine_vs_ours_fp32']:.6f}",
              file=sys.stderr, flush=True)
    results = {"graph": str(args.onnx), "input": list(x.shape), "fused_operators": stats, "rows": rows,
               "onnxruntime": ort.__version__,
               "command": "python -m benchmarks.ort_fusion " + " ".join(sys.argv[1:] if argv is None else argv)}
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
