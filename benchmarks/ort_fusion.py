"""What do fused graphs buy? Times one encoder graph on ONNX Runtime, interleaved: our FP32 and
FP16 ONNX as the bundle ships them, ONNX Runtime's transformer optimizer's output (FP32 and
FP16), and for the audio graph onnxscript's fusions (FP32, and the FP16 onnxruntime-cuda
variant the bundle ships, export.ort_optimize), with the fused operator counts and cosine to
our FP32 output; optionally the eager PyTorch tower beside them.

    python -m benchmarks.ort_fusion build/bench/gpu-large/fp32/video.onnx --model-type vit \\
        --heads 16 --hidden 1024 --frames 180 --eager-preset large --out benchmarks/results/ort-fusion-video
    python -m benchmarks.ort_fusion build/bench/gpu-large/fp32/audio.onnx --model-type bert \\
        --heads 16 --hidden 1024 --frames 6 --eager-preset large --out benchmarks/results/ort-fusion-audio

--device cpu times the FP32 rows on ONNX Runtime's CPU provider (FP16 has no fast CPU kernels);
--int8 adds the INT8 graphs the CPU default runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def build_variants(onnx: Path, audio: bool, model_type: str, heads: int, hidden: int, fp16: bool) -> tuple[dict, dict]:
    """{row name: ONNX file} and {row name: fused operator counts}, written next to `onnx`."""
    from onnxruntime.transformers import optimizer

    from export.fp16 import convert_file
    from export.ort_optimize import fuse_audio, ort_cuda_audio, quiet_optimizer

    work = onnx.parent / "fusion-variants"
    work.mkdir(exist_ok=True)
    variants, stats = {"ours-fp32": onnx}, {}
    if fp16:
        variants["ours-fp16"] = work / "ours-fp16.onnx"
        convert_file(onnx, variants["ours-fp16"])
    with quiet_optimizer():
        fused = optimizer.optimize_model(str(onnx), model_type=model_type, num_heads=heads, hidden_size=hidden,
                                         use_gpu=True)
        stats["ort-optimizer"] = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
        variants["ort-fused-fp32"] = work / "ort-fused-fp32.onnx"
        fused.save_model_to_file(str(variants["ort-fused-fp32"]))
        if fp16:
            variants["ort-fused-fp16"] = work / "ort-fused-fp16.onnx"
            fused.convert_float_to_float16(keep_io_types=True)
            fused.save_model_to_file(str(variants["ort-fused-fp16"]))
    if audio:
        variants["onnxscript-fused-fp32"] = work / "onnxscript-fused-fp32.onnx"
        stats["onnxscript"] = fuse_audio(onnx, variants["onnxscript-fused-fp32"])
        if fp16:
            variants["bundle-variant-fp16"] = work / "audio.ort-cuda.fp16.onnx"
            ort_cuda_audio(onnx, variants["bundle-variant-fp16"])
    return variants, stats


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ort_fusion", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", type=Path, help="an FP32 graph from a bundle (video.onnx or audio.onnx)")
    p.add_argument("--model-type", default="vit", help="onnxruntime.transformers model type (vit, bert, clip)")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--frames", type=int, default=180, help="video: frames; audio: seconds (x 16000 samples)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--threads", type=int, default=0, help="CPU: intra-op threads for ONNX Runtime and torch "
                                                         "(0: ONNX Runtime's default)")
    p.add_argument("--eager-preset", default=None,
                   help="also time this preset's tower in eager PyTorch (FP32, and FP16 autocast on CUDA), "
                        "interleaved (random weights: a timing reference, not an output one)")
    p.add_argument("--int8", action="store_true",
                   help="also our graph (and each --also graph) quantised as the CPU default ships it (INT8)")
    p.add_argument("--also", type=Path, action="append", default=[],
                   help="another FP32 export of the same graph to time beside ours (e.g. one built at an "
                        "earlier commit), row 'also:<parent dir>' (timed, not compared: its weights may differ)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    import onnx
    import onnxruntime as ort

    audio = onnx.load(str(args.onnx), load_external_data=False).graph.input[0].name == "waveform"
    cuda = args.device == "cuda"
    variants, stats = build_variants(args.onnx, audio, args.model_type, args.heads, args.hidden, fp16=cuda)
    variants.update({f"also:{path.parent.name}": path for path in args.also})
    if args.int8:
        from export.quantize import quantize_int8

        for k in list(variants):
            if k == "ours-fp32" or k.startswith("also:"):
                name = "ours-int8" if k == "ours-fp32" else f"{k}-int8"
                variants[name] = quantize_int8(variants[k], args.onnx.parent / "fusion-variants" /
                                               f"{name.replace(':', '-')}.onnx")
    print(f"[ort_fusion] fused operators: {stats}", file=sys.stderr, flush=True)

    provider = "CUDAExecutionProvider" if cuda else "CPUExecutionProvider"
    options = ort.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
    sessions = {k: ort.InferenceSession(str(v), options, providers=[provider]) for k, v in variants.items()}
    assert all(s.get_providers()[0] == provider for s in sessions.values()), f"no {provider}"
    name = sessions["ours-fp32"].get_inputs()[0].name
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((1, args.frames * 16000)) if audio
         else rng.standard_normal((args.frames, 3, 224, 224))).astype(np.float32)
    # Inputs and outputs stay on the device (IOBinding), as the Predictor runs them and as eager
    # PyTorch holds its tensors: the 108 MB host copy of 180 frames is not part of any row.
    device_x = ort.OrtValue.ortvalue_from_numpy(x, args.device, 0)
    out_name = sessions["ours-fp32"].get_outputs()[0].name

    def run_session(s):
        binding = s.io_binding()
        binding.bind_ortvalue_input(name, device_x)
        binding.bind_output(out_name, args.device, 0)
        s.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return binding

    runs = {k: (lambda s=s: run_session(s)) for k, s in sessions.items()}
    eager = {}
    if args.eager_preset:
        import torch

        from training.model import FoalNet

        if args.threads and not cuda:
            torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        model = FoalNet.from_preset(args.eager_preset)
        tower = (model.audio_encoder if audio else model.video_encoder).to(args.device).eval()
        tx = torch.from_numpy(x).to(args.device)

        def eager_run(autocast):
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=autocast):
                out = tower(tx)
            if cuda:
                torch.cuda.synchronize()
            return out

        runs["eager-fp32"] = lambda: eager_run(False)
        eager = {"eager-fp32"}
        if cuda:
            runs["eager-fp16-autocast"] = lambda: eager_run(True)
            eager.add("eager-fp16-autocast")
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
        row = {"variant": k, "p50_ms": 1e3 * float(np.median(times[k])), "nodes": None}
        if k in outs:
            row["nodes"] = len(onnx.load(str(variants[k]), load_external_data=False).graph.node)
        if k in outs and not k.startswith("also:"):  # another export may hold other (random) weights
            o = outs[k].astype(np.float64).ravel()
            row["cosine_vs_ours_fp32"] = float(o @ ref / np.linalg.norm(o) / np.linalg.norm(ref))
        rows.append(row)
        print(f"[ort_fusion] {k:<22} {row['p50_ms']:8.1f} ms  cosine {row.get('cosine_vs_ours_fp32', float('nan')):.6f}"
              f"  nodes {row['nodes']}", file=sys.stderr, flush=True)
    results = {"graph": str(args.onnx), "input": list(x.shape), "device": args.device, "threads": args.threads,
               "fused_operators": stats, "rows": rows, "onnxruntime": ort.__version__,
               "command": "python -m benchmarks.ort_fusion " + " ".join(sys.argv[1:] if argv is None else argv)}
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
