"""Operators in an exported graph: as exported, after ONNX Runtime's transformer optimizer,
and after onnxscript's ONNX Runtime fusions (what the audio graph's onnxruntime-cuda variant
is built from, export.ort_optimize).

On a GPU every node is at least one kernel launch, so a graph whose arithmetic takes far less
than its launches is bound by its node count: WavLM Large on 6 s is 224 GFLOP (0.3 ms at the
H100's measured FP16 matmul peak) but ran in 9 ms on ONNX Runtime CUDA, FP32 and FP16 alike.
This counts the nodes, per operator and per encoder layer, so that a change that fuses them
(an optimiser, a fused attention) is measured by the launches it removes.

    python -m benchmarks.graph_ops build/bench/large-fp32/audio.onnx --model-type bert \\
        --heads 16 --hidden 1024 --layers 24 --fix batch=1 --fix samples=96000 \\
        --out benchmarks/results/graph-ops-wavlm-large
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

from . import report


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
    p.add_argument("--fix", action="append", default=[], metavar="DIM=SIZE",
                   help="also count the fused graph as ONNX Runtime runs it with these symbolic dimensions "
                        "fixed (e.g. batch=1 samples=96000: a stream's full window), after its basic "
                        "optimisations, which fold the shape and position arithmetic a fixed size makes constant")
    p.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)

    import onnx
    from onnxruntime.transformers import optimizer

    from export.ort_optimize import onnxscript_fused, quiet_optimizer

    exported = onnx.load(str(args.onnx), load_external_data=False).graph.node
    t = time.time()
    with quiet_optimizer():
        model = optimizer.optimize_model(str(args.onnx), model_type=args.model_type, num_heads=args.heads,
                                         hidden_size=args.hidden, use_gpu=True)
    seconds = time.time() - t
    optimised = model.model.graph.node
    t = time.time()
    fused_model = onnxscript_fused(args.onnx)
    fused = list(fused_model.graph.all_nodes())
    fused_seconds = time.time() - t
    result = {
        "graph": str(args.onnx), "model_type": args.model_type, "layers": args.layers,
        "exported": {"nodes": len(exported), "ops": op_counts(exported)},
        "ort_optimized": {"nodes": len(optimised), "ops": op_counts(optimised),
                          "fused": {k: v for k, v in model.get_fused_operator_statistics().items() if v},
                          "seconds": round(seconds, 1)},
        "onnxscript_fused": {"nodes": len(fused), "ops": op_counts(fused), "seconds": round(fused_seconds, 1)},
    }
    if args.fix:
        fixed = fixed_size_nodes(fused_model, dict(f.split("=", 1) for f in args.fix))
        result["fused_fixed"] = {"nodes": len(fixed), "ops": op_counts(fixed), "dims": args.fix}
    command = "python -m benchmarks.graph_ops " + " ".join(sys.argv[1:] if argv is None else argv)
    return report.write(args.out, result, lambda r: markdown(r, command))


def fixed_size_nodes(fused_model, dims: dict[str, str]) -> list:
    """The nodes of onnxscript's fused graph (an onnx_ir Model) after ONNX Runtime's basic
    (provider-independent) optimisations with `dims` fixed."""
    import tempfile

    import onnx
    import onnx_ir as ir
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        fused, optimised = Path(tmp) / "fused.onnx", Path(tmp) / "optimised.onnx"
        ir.save(fused_model, str(fused), external_data="fused.data")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.log_severity_level = 3
        for name, size in dims.items():
            options.add_free_dimension_override_by_name(name, int(size))
        options.optimized_model_filepath = str(optimised)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "optimised.data")
        ort.InferenceSession(str(fused), options, providers=["CPUExecutionProvider"])
        return list(onnx.load(str(optimised), load_external_data=False).graph.node)


def markdown(result: dict, command: str) -> str:
    columns = {"exported": "exported", "ort_optimized": "ONNX Runtime optimizer",
               "onnxscript_fused": "onnxscript fusions"}
    if "fused_fixed" in result:
        columns["fused_fixed"] = "fused, ONNX Runtime at " + ", ".join(result["fused_fixed"]["dims"])
    columns = {k: v for k, v in columns.items() if k in result}
    layers, first = result["layers"], result["exported"]["ops"]
    rows = sorted(set().union(*(result[k]["ops"] for k in columns)), key=lambda k: -first.get(k, 0))
    cell = lambda f: " | ".join(f(result[k]) for k in columns)  # noqa: E731
    lines = [f"# Nodes in `{Path(result['graph']).name}` ({layers} layers)", "", f"Command: `{command}`", "",
             "| | " + " | ".join(columns.values()) + " |", "| --- |" + " ---: |" * len(columns),
             "| **nodes** | " + cell(lambda r: f"**{r['nodes']}**") + " |",
             "| per layer | " + cell(lambda r: f"{r['nodes'] / layers:.0f}") + " |"]
    lines += [f"| {op} | " + cell(lambda r, op=op: str(r["ops"].get(op, 0))) + " |" for op in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
