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
    p.add_argument("--eager-preset", default=None,
                   help="also time this preset's video tower in eager PyTorch, FP32 and FP16 autocast, interleaved "
                        "(random weights: a timing reference, not an output one)")
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
    assert all(s.get_providers()[0] == "CUDAExecutionProvider" for s in sessions.values()), "no CUDA provider"
    name = sessions["ours-fp32"].get_inputs()[0].name
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((args.frames, 3, 224, 224)) if name == "frames"
         else 0.1 * rng.standard_normal((1, args.frames * 16000))).astype(np.float32)
    # Inputs and outputs stay on the GPU (IOBinding), as the Predictor runs them and as eager
    # PyTorch holds its tensors: the 108 MB host copy of 180 frames is not part of any row.
    device_x = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    out_name = sessions["ours-fp32"].get_outputs()[0].name

    def run_session(s):
        binding = s.io_binding()
        binding.bind_ortvalue_input(name, device_x)
        binding.bind_output(out_name, "cuda", 0)
        s.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return binding

    runs = {k: (lambda s=s: run_session(s)) for k, s in sessions.items()}
    eager = {}
    if args.eager_preset and name == "frames":
        import torch

        from training.model import FoalNet

        torch.manual_seed(0)
        tower = FoalNet.from_preset(args.eager_preset).video_encoder.cuda().eval()
        tx = torch.from_numpy(x).cuda()

        def eager_run(autocast):
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=autocast):
                out = tower(tx)
            torch.cuda.synchronize()
            return out

        runs["eager-fp32"] = lambda: eager_run(False)
        runs["eager-fp16-autocast"] = lambda: eager_run(True)
        eager = {"eager-fp32", "eager-fp16-autocast"}
    outs, times = {}, {k: [] for k in runs}
    for it in range(args.iters + 2):
        for k, fn in runs.items():
            t = time.perf_counter()
            result = fn()
            if it >= 2:
                times[k].append(time.perf_counter() - t)
            if k not in eager:
                outs[k] = result.copy_outputs_to_cpu()[0]
    ref = outs["ours-fp32"].astype(np.float64).ravel()
    rows = []
    for k in runs:
        row = {"variant": k, "p50_ms": 1e3 * float(np.median(times[k]))}
        if k in outs:
            o = outs[k].astype(np.float64).ravel()
            row["cosine_vs_ours_fp32"] = float(o @ ref / np.linalg.norm(o) / np.linalg.norm(ref))
        rows.append(row)
        print(f"[ort_fusion] {k:<20} {row['p50_ms']:8.1f} ms  cosine {row.get('cosine_vs_ours_fp32', float('nan')):.6f}",
              file=sys.stderr, flush=True)
    results = {"graph": str(args.onnx), "input": list(x.shape), "fused_operators": stats, "rows": rows,
               "onnxruntime": ort.__version__,
               "command": "python -m benchmarks.ort_fusion " + " ".join(sys.argv[1:] if argv is None else argv)}
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
