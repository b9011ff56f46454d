"""Operators in an exported graph, as exported and after ONNX Runtime's transformer optimizer.

On a GPU every node is at least one kernel launch, so a graph whose arithmetic takes far less
than its launches is bound by its node count: WavLM Large on 6 s is 224 GFLOP (0.3 ms at the
H100's measured FP16 matmul peak) but ran in 9 ms on ONNX Runtime CUDA, FP32 and FP16 alike.
This counts the nodes, per operator and per encoder layer, so that a change that fuses them
(an optimiser, a fused attention) is measured by the launches it removes.

    python -m benchmarks.graph_ops build/bench/large-fp32/audio.onnx --model-type bert \\
        --heads 16 --hidden 1024 --layers 24 --out benchmarks/results/graph-ops-wavlm-large
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import time
from pathlib import Path


def op_counts(nodes) -> dict[str, int]:
    return dict(collections.Counter(n.op_type for n in nodes).most_common())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.graph_ops", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", type=Path, help="an FP32 graph from a bundle (audio.onnx or video.onnx)")
    p.add_argument("--model-type", default="bert", help="onnxruntime.transformers model type (bert, vit, clip)")
    p.add_argument("--heads", type=int, default=16, help="attention heads")
    p.add_argument("--hidden", type=int, default=1024, help="hidden width")
    p.add_argument("--layers", type=int, default=24, help="transformer layers (for the per-layer figure)")
    p.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)

    import onnx
    from onnxruntime.transformers import optimizer

    exported = onnx.load(str(args.onnx), load_external_data=False).graph.node
    quiet = logging.getLogger("onnxruntime.transformers")
    quiet.setLevel(logging.ERROR)
    t = time.time()
    model = optimizer.optimize_model(str(args.onnx), model_type=args.model_type, num_heads=args.heads,
                                     hidden_size=args.hidden, use_gpu=True)
    seconds = time.time() - t
    optimised = model.model.graph.node
    result = {
        "graph": str(args.onnx), "model_type": args.model_type, "layers": args.layers,
        "exported": {"nodes": len(exported), "ops": op_counts(exported)},
        "ort_optimized": {"nodes": len(optimised), "ops": op_counts(optimised),
                          "fused": {k: v for k, v in model.get_fused_operator_statistics().items() if v},
                          "seconds": round(seconds, 1)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    rows = sorted(set(result["exported"]["ops"]) | set(result["ort_optimized"]["ops"]),
                  key=lambda k: -result["exported"]["ops"].get(k, 0))
    lines = [f"# Nodes in `{args.onnx.name}` ({args.layers} layers)", "",
             "Command: `python -m benchmarks.graph_ops " + " ".join(sys.argv[1:] if argv is None else argv) + "`", "",
             "| | exported | ONNX Runtime optimizer |", "| --- | ---: | ---: |",
             f"| **nodes** | **{len(exported)}** | **{len(optimised)}** |",
             f"| per layer | {len(exported) / args.layers:.0f} | {len(optimised) / args.layers:.0f} |"]
    lines += [f"| {k} | {result['exported']['ops'].get(k, 0)} | {result['ort_optimized']['ops'].get(k, 0)} |"
              for k in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:8]))
    return result


if __name__ == "__main__":
    main()
