"""INT8 for CPU targets. The CPU's INT8 graphs are ONNX Runtime's alone (TensorRT and the GPU
build from the standard FP32 graph), so they are rewritten first into the form ONNX Runtime's
CPU kernels run fastest, then dynamically quantised (weights INT8 once, activations per call):

1. WavLM's convolutional front end as matrix multiplies (`convs_as_matmuls`): each strided
   Conv1d becomes im2col (k strided Slices, one Concat) and a MatMul, which the quantiser turns
   into an INT8 GEMM; ONNX Runtime has no fast INT8 convolution (ConvInteger ran 3.2x slower
   than the FP32 Conv it would replace), so as Convs these layers stayed FP32, a third of the
   INT8 audio graph's time.
2. ONNX Runtime's transformer optimizer (`fuse_for_cpu`): GELU (exported as
   x * (0.5 * (1 + erf(x / sqrt 2))), an order its session-time GeluFusion does not match, so it
   ran as four element-wise ops) into one Gelu, LayerNorm with the residual Add into
   SkipLayerNormalization, and, in the ViT, each layer's attention into one Attention node.
3. `quantize_dynamic`: every MatMul with a weight, and the fused Attention (QAttention: the
   query/key/value projection as one INT8 GEMM). The first convolution (on the raw waveform, 10
   taps) stays FP32: it is 0.1% of the work and the one layer whose input is the signal itself.

benchmarks/latency.py and benchmarks/int8_peer.py measure each step against eager FP32 and
against Hugging Face optimum's INT8 of the same architectures.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class _DropPreprocessAdvice(logging.Filter):
    """The quantiser advises "pre-processing" (symbolic shape inference + basic optimisation)
    on every call; our graphs come from the exporter already constant-folded, so the advice
    is noise in the build log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


# -- 1. strided Conv1d -> im2col + MatMul --------------------------------------------------
def _conv_as_matmul(node, weight: np.ndarray, bias: np.ndarray | None, stride: int, prefix: str):
    """Nodes and initializers computing Conv1d(X) (no padding, groups or dilation) as im2col
    and one MatMul, with X [B, C, T] in and [B, Cout, T_out] out as before:

        x = X^T [B, T, C];  T_out = (T - k) // s + 1
        cols[:, t] = x[:, s t], ..., x[:, s t + k - 1]           [B, T_out, k C]
        Y = (cols @ W' + b)^T,   W'[j C + c, o] = W[o, c, j]

    The first min(k, s) taps of every output frame are a plain reshape of x (rows of s
    samples; no copy), only taps past the stride (one for WavLM's kernel-3 stride-2 layers) are
    strided Slices, joined by one Concat. The transposes between layers cancel in ONNX Runtime's
    transpose optimizer (the layer norm and GELU between them act on the channel axis or
    element-wise)."""
    from onnx import helper, numpy_helper

    cout, cin, k = weight.shape
    n = lambda s: f"{prefix}/{s}"  # noqa: E731
    consts = {
        n("k"): np.array([k], np.int64), n("s"): np.array([stride], np.int64), n("axis"): np.array([1], np.int64),
        n("W"): np.ascontiguousarray(weight.transpose(2, 1, 0).reshape(k * cin, cout)),
    }
    nodes = [
        helper.make_node("Transpose", [node.input[0]], [n("x")], perm=[0, 2, 1]),
        helper.make_node("Shape", [n("x")], [n("T")], start=1, end=2),
        helper.make_node("Sub", [n("T"), n("k")], [n("T-k")]),
        helper.make_node("Div", [n("T-k"), n("s")], [n("q")]),  # T_out - 1 (integer division)
        helper.make_node("Mul", [n("q"), n("s")], [n("s(T_out-1)")]),
        helper.make_node("Add", [n("s(T_out-1)"), n("s")], [n("sT_out")]),
    ]
    cols, first_strided = [], 0
    if k >= stride:  # taps 0 .. s-1 of every frame: x cut into rows of s samples
        consts[n("zero")], consts[n("rows")] = np.array([0], np.int64), np.array([0, -1, stride * cin], np.int64)
        nodes += [helper.make_node("Slice", [n("x"), n("zero"), n("sT_out"), n("axis")], [n("head")]),
                  helper.make_node("Reshape", [n("head"), n("rows")], [n("row")])]
        cols, first_strided = [n("row")], stride
    for j in range(first_strided, k):  # the other taps: x[:, s t + j], t < T_out
        consts[n(f"start{j}")], consts[n(f"start{j}+1")] = np.array([j], np.int64), np.array([j + 1], np.int64)
        nodes.append(helper.make_node("Add", [n("s(T_out-1)"), n(f"start{j}+1")], [n(f"end{j}")]))
        nodes.append(helper.make_node("Slice", [n("x"), n(f"start{j}"), n(f"end{j}"), n("axis"), n("s")],
                                      [n(f"col{j}")]))
        cols.append(n(f"col{j}"))
    if len(cols) > 1:
        nodes.append(helper.make_node("Concat", cols, [n("cols")], axis=2))
    nodes.append(helper.make_node("MatMul", [n("cols") if len(cols) > 1 else cols[0], n("W")], [n("y")],
                                  name=n("matmul")))
    y = n("y")
    if bias is not None:
        consts[n("b")] = bias.astype(np.float32)
        nodes.append(helper.make_node("Add", [y, n("b")], [n("yb")]))
        y = n("yb")
    nodes.append(helper.make_node("Transpose", [y], [node.output[0]], perm=[0, 2, 1]))
    return nodes, [numpy_helper.from_array(v, name) for name, v in consts.items()]


def convs_as_matmuls(model):
    """Every Conv1d of `model` with constant weights, stride > 1, no padding, groups or
    dilation (WavLM's feature encoder) rewritten by _conv_as_matmul; returns (model, the names
    of the new MatMuls, in graph order). Other convolutions (WavLM's grouped positional conv,
    the ViT's patch embedding) are left as they are."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    out_nodes, matmuls, used = [], [], set()
    for i, node in enumerate(graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        plain = (w is not None and len(w.dims) == 3 and attrs.get("group", 1) == 1
                 and set(attrs.get("dilations", [1])) == {1} and set(attrs.get("pads", [0, 0])) == {0}
                 and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET") and attrs.get("strides", [1])[0] > 1)
        bias_name = node.input[2] if plain and len(node.input) > 2 and node.input[2] else None
        if not plain or (bias_name and bias_name not in weights):
            out_nodes.append(node)
            continue
        bias = numpy_helper.to_array(weights[bias_name]) if bias_name else None
        nodes, inits = _conv_as_matmul(node, numpy_helper.to_array(w), bias, attrs["strides"][0], f"im2col{i}")
        out_nodes.extend(nodes)
        graph.initializer.extend(inits)
        matmuls.append(nodes[-3 if bias is not None else -2].name)
        used.update(filter(None, [node.input[1], bias_name]))
    del graph.node[:]
    graph.node.extend(out_nodes)
    still_used = {name for n in graph.node for name in n.input}
    keep = [t for t in graph.initializer if t.name not in used or t.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return model, matmuls


# -- 2. ONNX Runtime's transformer fusions ------------------------------------------------
def fuse_for_cpu(model):
    """GELU (with the bias Add before it) fused by onnxruntime.transformers' optimizer into one
    Gelu / BiasGelu node, and LayerNorm exported as its pieces into LayerNormalization. Its other
    CPU fusions were measured slower here (ViT-L/14 and WavLM Large, 1 thread, INT8 afterwards):
    SkipLayerNormalization ran about 6x slower per element than LayerNormalization and the Add it
    absorbs, and the fused ViT attention (QAttention) no faster than MatMul/Softmax, so both stay
    off; WavLM's attention (a gated relative position bias) matches none of its patterns anyway."""
    import onnx
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    from .ort_optimize import quiet_optimizer

    options = FusionOptions("bert")
    options.enable_attention = options.enable_skip_layer_norm = options.enable_bias_skip_layer_norm = False
    with quiet_optimizer():
        fused = optimizer.optimize_model(model, model_type="bert", num_heads=0, hidden_size=0,
                                         optimization_options=options, opt_level=0, use_gpu=False)
    model = fused.model
    if not any(imp.domain == "com.microsoft" for imp in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return model, {k: v for k, v in fused.get_fused_operator_statistics().items() if v}


# -- 3. the whole INT8 graph --------------------------------------------------------------
def quantize_int8(src: Path, dst: Path, graph: str | None = None) -> Path:
    """The CPU INT8 graph of FP32 graph `src` at `dst`: rewritten and fused first when `graph`
    names an encoder ("audio" or "video"), quantised as it is otherwise."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .onnx_export import IR_VERSION

    model = onnx.load(str(src))
    report: dict = {}
    exclude: list[str] = []
    if graph == "audio":
        model, matmuls = convs_as_matmuls(model)
        report["convs_as_matmuls"] = len(matmuls)
        exclude = matmuls[:1]  # the first convolution, on the waveform itself, stays FP32
    if graph in ("audio", "video"):
        model, report["fused"] = fuse_for_cpu(model)
    quiet, root = _DropPreprocessAdvice(), logging.getLogger()  # the quantiser logs on the root logger
    root.addFilter(quiet)
    try:
        quantize_dynamic(model, str(dst), op_types_to_quantize=["MatMul", "Gemm"],
                         weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
    finally:
        root.removeFilter(quiet)
    out = onnx.load(str(dst))
    out.ir_version = IR_VERSION  # the quantiser may bump it; keep what old runtimes read
    onnx.save(out, str(dst))
    log.info("INT8 %s graph: %s", graph or "", report)
    return Path(dst)
