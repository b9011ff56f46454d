"""INT8 for CPU targets. The CPU's INT8 graphs are ONNX Runtime's alone (TensorRT and the GPU
build from the standard FP32 graphs), so each is rewritten first into the form ONNX Runtime's CPU
kernels run fastest, then dynamically quantised (weights INT8 per output channel, once;
activations per call):

1. WavLM's convolutional front end as matrix multiplies (`convs_as_matmuls`): each strided
   Conv1d becomes im2col (a reshape, a strided Slice for the taps past the stride) and MatMuls,
   which the quantiser turns into INT8 GEMMs. ONNX Runtime has no fast INT8
   convolution, so as Convs these layers stayed FP32: a third of the INT8 audio graph's time.
   The INT8 front end is kept only where it keeps the graph's error small (quantize_int8).
2. ONNX Runtime's transformer optimizer (`fuse_for_cpu`): GELU, exported as
   x * (0.5 * (1 + erf(x / sqrt 2))), an order ONNX Runtime's session-time GeluFusion does not
   match (it ran as four element-wise ops, 2.3x slower than one Gelu node), into Gelu/BiasGelu.
3. Each attention (the ViT's, and WavLM's with its gated relative position bias) as one
   com.microsoft MultiHeadAttention node per layer (`attention_as_mha`).
4. `quantize_dynamic`: every MatMul with a constant weight. The attention's own matmuls (both
   inputs computed) stay FP32: quantising them as well (MatMulConstBOnly off) was slower on
   ViT-L/14 and WavLM Large.

Each step was kept because it measured faster side by side on ViT-L/14 and WavLM Large (1
thread); benchmarks/latency.py measures the whole graphs against eager FP32 and
benchmarks/int8_peer.py against Hugging Face optimum's INT8 of the same architectures
(docs/results.md).
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
    and MatMuls, with X [B, C, T] in and [B, Cout, T_out] out as before:

        x = X^T [B, T, C];  T_out = (T - k) // s + 1
        cols[:, t] = x[:, s t], ..., x[:, s t + k - 1]           [B, T_out, k C]
        Y = (cols @ W' + b)^T,   W'[j C + c, o] = W[o, c, j]

    The first s taps of every output frame are a plain reshape of x (rows of s samples), only
    taps past the stride (one for WavLM's kernel-3 stride-2 layers) are strided Slices, and each
    part multiplies its own rows of W' (no Concat copy). Returns (nodes, initializers, the
    MatMuls' names). The transposes between layers cancel in ONNX Runtime's
    transpose optimizer (the layer norm and GELU between them act on the channel axis or
    element-wise)."""
    from onnx import helper, numpy_helper

    cout, cin, k = weight.shape
    n = lambda s: f"{prefix}/{s}"  # noqa: E731
    consts = {n("k"): np.array([k], np.int64), n("s"): np.array([stride], np.int64), n("axis"): np.array([1], np.int64)}
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
    # cols @ W' as one MatMul per part of cols (the rows, each strided tap) over its rows of W',
    # summed: no Concat copy of cols (WavLM Large, kernel 3: 2 MatMuls and an Add instead).
    w = weight.transpose(2, 1, 0).reshape(k * cin, cout)  # W'
    first, matmuls, y = 0, [], None
    for i, part in enumerate(cols):
        width = (stride if part == n("row") else 1) * cin
        consts[n(f"W{i}")] = np.ascontiguousarray(w[first:first + width])
        first += width
        nodes.append(helper.make_node("MatMul", [part, n(f"W{i}")], [n(f"y{i}")], name=n(f"matmul{i}")))
        matmuls.append(n(f"matmul{i}"))
        if y is not None:
            nodes.append(helper.make_node("Add", [y, n(f"y{i}")], [n(f"sum{i}")]))
        y = n(f"sum{i}") if y is not None else n(f"y{i}")
    if bias is not None:
        consts[n("b")] = bias.astype(np.float32)
        nodes.append(helper.make_node("Add", [y, n("b")], [n("yb")]))
        y = n("yb")
    nodes.append(helper.make_node("Transpose", [y], [node.output[0]], perm=[0, 2, 1]))
    return nodes, [numpy_helper.from_array(v, name) for name, v in consts.items()], matmuls


def convs_as_matmuls(model):
    """Every Conv1d of `model` with constant weights, more than one input channel, stride > 1,
    no padding, groups or dilation (WavLM's feature encoder after its first layer) rewritten by
    _conv_as_matmul; returns (model, the names of the new MatMuls, in graph order). Other
    convolutions are left as they are: the first layer's, on the waveform itself (one channel:
    a GEMM with K = 10 ran 30 ms slower than the Conv on WavLM Large, and it is 0.1% of the
    work), WavLM's grouped positional convolution, the ViT's patch embedding."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    out_nodes, matmuls = [], []
    for i, node in enumerate(graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        plain = (w is not None and len(w.dims) == 3 and w.dims[1] > 1 and attrs.get("group", 1) == 1
                 and set(attrs.get("dilations", [1])) == {1} and set(attrs.get("pads", [0, 0])) == {0}
                 and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET") and attrs.get("strides", [1])[0] > 1)
        bias_name = node.input[2] if plain and len(node.input) > 2 and node.input[2] else None
        if not plain or (bias_name and bias_name not in weights):
            out_nodes.append(node)
            continue
        bias = numpy_helper.to_array(weights[bias_name]) if bias_name else None
        nodes, inits, names = _conv_as_matmul(node, numpy_helper.to_array(w), bias, attrs["strides"][0],
                                              f"im2col{i}")
        out_nodes.extend(nodes)
        graph.initializer.extend(inits)
        matmuls.extend(names)
    del graph.node[:]
    graph.node.extend(out_nodes)
    _drop_unused_initializers(graph)  # the convolutions' kernels and biases
    return model, matmuls


def _drop_unused_initializers(graph) -> None:
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


# -- 2. ONNX Runtime's transformer fusions ------------------------------------------------
def fuse_for_cpu(model):
    """GELU (with the bias Add before it) fused by onnxruntime.transformers' optimizer into one
    Gelu / BiasGelu node. Its other CPU fusions are off because they measured slower here: with
    SkipLayerNormalization and its fused attention (QAttention) as well, ViT-L/14's INT8 graph
    ran at 3.28x its FP32 graph against 3.64x without (4 frames, 1 thread; in ONNX Runtime's
    profile, 48 SkipLayerNormalization nodes took 258 ms where the LayerNormalization and Add
    they replace took about 80). Attention is attention_as_mha's."""
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


# -- 3. each attention as one MultiHeadAttention node ---------------------------------------
def _const(model_consts: dict, name: str) -> np.ndarray | None:
    t = model_consts.get(name)
    if t is None:
        return None
    from onnx import numpy_helper

    return numpy_helper.to_array(t)


def attention_as_mha(model):
    """Each attention of the exported encoders replaced by one com.microsoft MultiHeadAttention
    node on the query, key and value projections, which ONNX Runtime's CPU kernel runs without
    materialising the per-head transposes (ViT-L/14, 4 frames: 13.7 against 16.9 ms a layer,
    1 thread). Two exported forms are matched:

    - the ViT's (export/graphs.py SplitAttention): Softmax(MatMul(q, k^T) / c), c = sqrt(head size);
    - WavLM's (scaled_dot_product_attention with the gated relative position bias as its mask):
      Softmax(MatMul(q * c, k^T * c) + bias), c^2 = 1 / sqrt(head size); the bias [B, H, T, T]
      becomes the node's attention_bias.

    q, k and v are followed up from the scores through the exporter's Reshape/Transpose head
    splits to the projections [B, T, D]; after Softmax comes MatMul with v, then Transpose and
    Reshape back to [B, T, D]. Anything else is left as it is. Returns (model, number replaced)."""
    import collections

    from onnx import helper

    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    consts.update({n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == "Constant" and n.attribute})
    producer = {o: n for n in graph.node for o in n.output}
    consumers = collections.defaultdict(list)
    for n in graph.node:
        for i in n.input:
            consumers[i].append(n)

    def sole(name, op):  # the producer of `name` if it is an `op` whose output only that edge reads
        n = producer.get(name)
        return n if n is not None and n.op_type == op and len(consumers[name]) == 1 else None

    def projection(name):  # up through the head split (Reshape/Transpose only) to [B, T, D]
        walked = []
        while (n := producer.get(name)) is not None and n.op_type in ("Reshape", "Transpose") \
                and sum(c.op_type != "Shape" for c in consumers[name]) == 1:  # Shape: the split's own sizes
            walked.append(n)
            name = n.input[0]
        return (name, walked) if walked and walked[-1].op_type == "Reshape" else (None, [])

    def scalar(name):
        c = _const(consts, name)
        return float(c.reshape(-1)[0]) if c is not None and c.size == 1 else None

    def scaled(name):  # Mul(x, c) -> (x, c, node)
        n = sole(name, "Mul")
        if n is None:
            return None, None, None
        for x, c in ((n.input[0], n.input[1]), (n.input[1], n.input[0])):
            if scalar(c) is not None:
                return x, scalar(c), n
        return None, None, None

    drop, added = set(), []
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        pre = producer.get(softmax.input[0])
        bias, extra = "", []
        if pre is not None and pre.op_type == "Div" and scalar(pre.input[1]) and sole(softmax.input[0], "Div"):
            scores, scale = sole(pre.input[0], "MatMul"), 1.0 / scalar(pre.input[1])
            q_in, k_in = (scores.input[0], scores.input[1]) if scores else (None, None)
        elif pre is not None and pre.op_type == "Add" and sole(softmax.input[0], "Add"):
            scores = next((m for i in pre.input if (m := sole(i, "MatMul")) is not None), None)
            bias = next((i for i in pre.input if scores is None or i != scores.output[0]), "")
            (q_in, cq, mq), (k_in, ck, mk) = (scaled(i) for i in scores.input) if scores else ((None,) * 3,) * 2
            if scores is None or cq is None or ck is None or abs(cq - ck) > 1e-7 * abs(cq):
                continue
            scale, extra = cq * ck, [mq, mk]
        else:
            continue
        if scores is None:
            continue
        q, q_nodes = projection(q_in)
        k, k_nodes = projection(k_in)
        mix = _sole_consumer(consumers, softmax.output[0], "MatMul")
        mix = mix if mix is not None and mix.input[0] == softmax.output[0] else None
        v, v_nodes = projection(mix.input[1]) if mix else (None, [])
        t_out = mix and _sole_consumer(consumers, mix.output[0], "Transpose")
        r_out = t_out and _sole_consumer(consumers, t_out.output[0], "Reshape")
        if not (q and k and v and r_out) or [a.ints for a in t_out.attribute if a.name == "perm"] != [[0, 2, 1, 3]]:
            continue
        width = _projection_width(q, producer, consts)
        head_size = 1.0 / scale ** 2
        if width is None or abs(head_size - round(head_size)) > 1e-3 or width % round(head_size):
            continue
        inputs = [q, k, v] + (["", "", bias] if bias else [])
        added.append((r_out, helper.make_node("MultiHeadAttention", inputs, [r_out.output[0]], domain="com.microsoft",
                                              name=f"mha{len(added)}", num_heads=width // round(head_size),
                                              scale=scale)))
        drop.update(id(n) for n in [*q_nodes, *k_nodes, *extra, scores, pre, softmax, mix, *v_nodes, t_out, r_out])
    if added:
        replace = {id(old): new for old, new in added}
        nodes = _live([replace.get(id(n), n) for n in graph.node if id(n) not in drop or id(n) in replace],
                      {o.name for o in graph.output})
        known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
        known |= {o for n in nodes for o in n.output}
        if any(i not in known for n in nodes for i in n.input):  # something else read what would go
            return model, 0
        del graph.node[:]
        graph.node.extend(nodes)
        _drop_unused_initializers(graph)
        if not any(imp.domain == "com.microsoft" for imp in model.opset_import):
            model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model, len(added)


def _sole_consumer(consumers, name: str, op: str):
    after = consumers[name]
    return after[0] if len(after) == 1 and after[0].op_type == op else None


def _projection_width(name: str, producer: dict, consts: dict) -> int | None:
    """D of a projection x @ W (+ b): W's last dimension."""
    n = producer.get(name)
    for m in [n] + ([producer.get(i) for i in n.input] if n is not None else []):
        if m is not None and m.op_type == "MatMul":
            w = next((_const(consts, i) for i in m.input if _const(consts, i) is not None), None)
            if w is not None:
                return int(w.shape[-1])
    return None


def _live(nodes: list, outputs: set) -> list:
    """`nodes` less those whose outputs nothing reads (the old attention's shape arithmetic)."""
    while True:
        read = {i for n in nodes for i in n.input} | outputs
        keep = [n for n in nodes if any(o in read for o in n.output)]
        if len(keep) == len(nodes):
            return keep
        nodes = keep


# -- 4. the whole INT8 graph --------------------------------------------------------------
FRONT_END_ERROR_RATIO = 3.0  # the INT8 front end may at most triple the INT8 graph's error


def probe_waveform(seconds: float = 4.0, rate: int = 16000) -> np.ndarray:
    """A fixed speech-like signal [1, samples]: the harmonics of a gliding pitch under
    syllable-rate envelopes, with a little noise (what the front-end check runs)."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(120 + 40 * np.sin(2 * np.pi * 0.7 * t)) / rate
    voiced = sum(np.sin(h * phase) / h for h in range(1, 20))
    envelope = (0.5 * (1 - np.cos(2 * np.pi * 4 * t))) ** 2
    noise = 0.02 * np.random.default_rng(0).standard_normal(t.size)
    return (0.3 * voiced * envelope + noise).astype(np.float32)[None]


def _quantize(model, dst: Path, exclude: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quiet, root = _DropPreprocessAdvice(), logging.getLogger()  # the quantiser logs on the root logger
    root.addFilter(quiet)
    try:
        quantize_dynamic(model, str(dst), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8,
                         per_channel=True, nodes_to_exclude=exclude)
    finally:
        root.removeFilter(quiet)


def _output(path: Path, feed: dict) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def _error(reference: np.ndarray, path: Path, feed: dict) -> float:
    """1 - cosine of `path`'s output to `reference`."""
    from .parity import cosine

    return 1 - cosine(reference, _output(path, feed))


def quantize_int8(src: Path, dst: Path, graph: str | None = None) -> Path:
    """The CPU INT8 graph of FP32 graph `src` at `dst`: rewritten and fused first when `graph`
    names an encoder ("audio" or "video"), quantised as it is otherwise (weights per output
    channel). The audio graph's convolutional front end goes INT8 only where that keeps the
    graph's error (1 - cosine to FP32 on probe_waveform) within FRONT_END_ERROR_RATIO x the
    error with the front end in FP32: it does on WavLM Large (0.00069 against 0.00037, random
    weights: 1.9x), not on the demo's 32-channel front end (0.00068 against 0.000026: 26x),
    which stays FP32 MatMuls. (On the demo checkpoint an INT8 front end changed 2.5% of the
    labels on 200 synthetic clips; FP32 there, 0.5%.)"""
    import copy
    import os
    import tempfile

    import onnx

    from .onnx_export import IR_VERSION

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    report: dict = {}
    matmuls: list[str] = []
    if graph == "audio":
        model, matmuls = convs_as_matmuls(model)
    if graph in ("audio", "video"):
        model, report["fused"] = fuse_for_cpu(model)
        model, report["attention_as_mha"] = attention_as_mha(model)
    _quantize(copy.deepcopy(model) if matmuls else model, dst, exclude=[])
    if matmuls:
        feed = {"waveform": probe_waveform()}
        reference = _output(src, feed)
        with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
            fp32_front = Path(tmp) / dst.name
            _quantize(model, fp32_front, exclude=matmuls)
            errors = {"int8": _error(reference, dst, feed), "fp32": _error(reference, fp32_front, feed)}
            keep = errors["int8"] <= FRONT_END_ERROR_RATIO * errors["fp32"]
            if not keep:
                os.replace(fp32_front, dst)
        report["front_end"] = {"precision": "int8" if keep else "fp32", "convs_as_matmuls": len(matmuls),
                               "error_int8_front_end": errors["int8"], "error_fp32_front_end": errors["fp32"]}
    out = onnx.load(str(dst))
    out.ir_version = IR_VERSION  # the quantiser may bump it; keep what old runtimes read
    onnx.save(out, str(dst))
    log.info("INT8 %s graph: %s", graph or "", report)
    return dst
