"""FP32 ONNX -> FP16 ONNX that keeps FP32 where FP16 is known to break.

Kept in FP32:
- LayerNormalization, Softmax, every Reduce*, Pow, Sqrt, Reciprocal, Exp, Log, Erf
  (variance, normalisation and exponentials overflow or lose too much in half precision);
- every node that does not depend on an input activation: shape and position arithmetic,
  in particular WavLM's relative position buckets (log-spaced distances), which are
  computed from the sequence length alone.
Everything else (the MatMuls, convolutions, adds, activations) runs in FP16; Cast nodes
are inserted where the two meet. Graph inputs and outputs stay FP32, so the runtime
feeds and reads both variants alike. TensorRT builds the result strongly typed: the
types in the file are the types it runs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

KEEP_FP32 = {"LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceL2", "ReduceMax", "ReduceMin",
             "ReduceProd", "ReduceSumSquare", "ReduceLogSumExp", "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Erf",
             "Range", "CumSum", "GroupNormalization", "InstanceNormalization"}
# Ops whose float inputs/outputs simply follow the data (may run in either precision).
F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


def _float_values(model: onnx.ModelProto) -> set[str]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    floats = {v.name for v in list(g.value_info) + list(g.input) + list(g.output)
              if v.type.tensor_type.elem_type == F32}
    floats |= {t.name for t in g.initializer if t.data_type == F32}
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == F32:
                    floats.add(node.output[0])
    return floats


def activation_values(graph: onnx.GraphProto) -> set[str]:
    """Values that depend on a graph input's data (Shape/Size outputs do not)."""
    live = {i.name for i in graph.input}
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type in ("Shape", "Size"):
            continue
        if any(i in live for i in node.input if i):
            live.update(node.output)
    return live


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    if any(n.op_type in ("If", "Loop", "Scan") for n in model.graph.node) or model.functions:
        raise ValueError("FP16 conversion expects a flat graph (no functions or control flow); "
                         "export with the optimised dynamo or the legacy exporter")
    floats = _float_values(model)
    g = model.graph
    live = activation_values(g)
    half_nodes = set()
    for idx, node in enumerate(g.node):
        if node.op_type in KEEP_FP32 or not any(o in live for o in node.output):
            continue
        touches_float = any(v in floats for v in list(node.input) + list(node.output))
        if touches_float or (node.op_type == "Cast" and any(
                a.name == "to" and a.i == F32 for a in node.attribute)):
            half_nodes.add(idx)

    # Precision of every float value after conversion, starting from the producers.
    precision = {i.name: F32 for i in g.input}
    init_consumers: dict[str, set[int]] = {}
    for idx, node in enumerate(g.node):
        for i in node.input:
            init_consumers.setdefault(i, set()).add(idx)
    initializers = {t.name: t for t in g.initializer}
    for name, t in initializers.items():
        if t.data_type == F32 and init_consumers.get(name) and init_consumers[name] <= half_nodes:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), name))
            precision[name] = F16
        elif t.data_type == F32:
            precision[name] = F32

    new_nodes, cast_cache = [], {}

    def cast(value: str, to: int) -> str:
        key = (value, to)
        if key not in cast_cache:
            out = f"{value}__to_{'fp16' if to == F16 else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [value], [out], to=to, name=f"Cast_{out}"))
            cast_cache[key] = out
        return cast_cache[key]

    for idx, node in enumerate(g.node):
        want = F16 if idx in half_nodes else F32
        for k, name in enumerate(node.input):
            if name and name in floats and precision.get(name, F32) != want:
                # Cast's own input may be anything; its 'to' decides the output type.
                if node.op_type != "Cast":
                    node.input[k] = cast(name, want)
        if idx in half_nodes:
            if node.op_type == "Cast":
                for a in node.attribute:
                    if a.name == "to" and a.i == F32:
                        a.i = F16
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value" and a.t.data_type == F32:
                        a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16)))
            if node.op_type == "ConstantOfShape":
                for a in node.attribute:
                    if a.name == "value" and a.t.data_type == F32:
                        a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16)))
        for o in node.output:
            if o in floats:
                precision[o] = want
        new_nodes.append(node)

    # Graph outputs stay FP32.
    for out in g.output:
        if out.name in floats and precision.get(out.name) == F16:
            inner = out.name + "__fp16"
            for node in new_nodes:
                node.output[:] = [inner if o == out.name else o for o in node.output]
                node.input[:] = [inner if i == out.name else i for i in node.input]
            new_nodes.append(helper.make_node("Cast", [inner], [out.name], to=F32, name=f"Cast_{out.name}_out"))

    # Topological order: casts go right after their producers.
    del g.node[:]
    g.node.extend(_toposort(new_nodes, {i.name for i in g.input} | set(initializers)))
    del g.value_info[:]  # stale types; consumers re-infer
    onnx.checker.check_model(model)
    return model


def _toposort(nodes, available: set[str]):
    available = set(available) | {""}
    ordered, pending = [], list(nodes)
    while pending:
        progressed, rest = False, []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
                progressed = True
            else:
                rest.append(node)
        if not progressed:
            raise RuntimeError("FP16 conversion produced a cycle: " + ", ".join(n.name for n in rest[:5]))
        pending = rest
    return ordered


def convert_file(src, dst) -> None:
    model = onnx.load(str(src))
    onnx.save(convert_to_fp16(model), str(dst))
