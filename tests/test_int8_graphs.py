"""The CPU's INT8 graphs (export/quantize.py): WavLM's strided convolutions rewritten as im2col +
MatMul compute what the convolutions computed, GELU runs as one fused node, and the INT8 graphs
keep the FP32 graphs' labels on trained weights."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from foal_edge.backends.onnxruntime import OnnxRuntimeRunner


def _conv_model(k: int, stride: int, cin: int, cout: int, bias: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((cout, cin, k)).astype(np.float32), "W")]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b"))
    conv = helper.make_node("Conv", ["X", "W"] + (["b"] if bias else []), ["Y"], strides=[stride], kernel_shape=[k])
    relu = helper.make_node("Relu", ["Y"], ["Z"])  # something after it, as in WavLM
    graph = helper.make_graph([conv, relu], "conv",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["B", cin, "T"])],
                              [helper.make_tensor_value_info("Z", TensorProto.FLOAT, ["B", cout, "T_out"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


def _run(model, x):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"X": x})[0]


# WavLM's layers are (10, 5) on the waveform, (3, 2) and (2, 2); the others check the rewrite's
# general case (a kernel longer than twice its stride, one shorter than its stride).
@pytest.mark.parametrize("k,stride,cin,bias", [(10, 5, 2, True), (3, 2, 8, True), (2, 2, 8, False),
                                               (7, 3, 4, True), (1, 2, 3, True)])
def test_a_strided_convolution_as_im2col_and_matmul_computes_the_same(k, stride, cin, bias):
    from export.quantize import convs_as_matmuls

    model = _conv_model(k, stride, cin, cout=6, bias=bias)
    rewritten, matmuls = convs_as_matmuls(onnx.load_from_string(model.SerializeToString()))
    onnx.checker.check_model(rewritten)
    assert len(matmuls) >= 1 and not any(n.op_type == "Conv" for n in rewritten.graph.node)
    assert {t.name for t in rewritten.graph.initializer}.isdisjoint({"W", "b"})  # the kernel is not kept twice
    rng = np.random.default_rng(1)
    for length in (k, k + 1, stride * 9 + k - 1, 101, 1000):  # every remainder of the stride
        x = rng.standard_normal((2, cin, length)).astype(np.float32)
        want, got = _run(model, x), _run(rewritten, x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_padded_grouped_or_unstrided_convolution_is_left_alone():
    from export.quantize import convs_as_matmuls

    for attrs in ({"pads": [1, 1]}, {"group": 2}, {"strides": [1]}, {"dilations": [2]}, {"one channel": 1}):
        model = _conv_model(3, 2, 1 if "one channel" in attrs else 4, 4, bias=True)
        conv = model.graph.node[0]
        for name, value in attrs.items():
            if name == "one channel":
                continue
            for a in list(conv.attribute):
                if a.name == name:
                    conv.attribute.remove(a)
            conv.attribute.append(helper.make_attribute(name, value))
        if "group" in attrs:
            w = numpy_helper.to_array(model.graph.initializer[0])[:, :2]
            model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w), "W"))
        rewritten, matmuls = convs_as_matmuls(model)
        assert matmuls == [] and [n.op_type for n in rewritten.graph.node] == ["Conv", "Relu"], attrs


@pytest.fixture(scope="module")
def demo_int8(tmp_path_factory):
    """The demo checkpoint's (trained weights) FP32 bundle and the INT8 bundle derived from it."""
    from export import build_bundle
    from export.api import DEMO_CHECKPOINT
    from export.bundle import derive_bundle

    root = tmp_path_factory.mktemp("demo-int8")
    fp32 = build_bundle(DEMO_CHECKPOINT, root / "fp32", target="onnx", precision="fp32", parity_clips=0)
    return fp32, derive_bundle(fp32, root / "int8", "int8")


def _ops(path):
    return onnx.load(str(path)).graph.node


def test_gelu_runs_as_one_node_in_both_int8_encoders(demo_int8):
    from foal_edge.bundle import load_manifest

    _, int8 = demo_int8
    for name, g in load_manifest(int8).graphs.items():
        if name in ("audio", "video"):
            ops = [n.op_type for n in _ops(int8 / g.file)]
            assert "Erf" not in ops and ("Gelu" in ops or "BiasGelu" in ops), name


def test_the_front_end_goes_int8_only_where_it_keeps_the_error_down(demo_int8, tmp_path, monkeypatch):
    """The demo's 32-channel front end in INT8 multiplies the audio graph's error by ~26 (the
    rule allows 3x): it stays FP32, as MatMuls. Where the rule lets it through (forced here),
    every convolution but the waveform's and the grouped positional one is an INT8 GEMM."""
    from export import quantize

    fp32, _ = demo_int8
    kept = quantize.quantize_int8(fp32 / "audio.onnx", tmp_path / "kept.onnx", "audio")
    im2col = [n for n in _ops(kept) if n.name.startswith("im2col")]
    ops = [n.op_type for n in im2col]
    assert ops.count("MatMul") == 10 and "DynamicQuantizeMatMul" not in ops  # 4 kernel-3 layers x 2, 2 x 1

    monkeypatch.setattr(quantize, "FRONT_END_ERROR_RATIO", 1e9)
    forced = quantize.quantize_int8(fp32 / "audio.onnx", tmp_path / "forced.onnx", "audio")
    nodes = _ops(forced)
    convs = [n for n in nodes if n.op_type == "Conv"]
    assert len(convs) == 2  # the waveform's (one channel) and the grouped positional convolution
    groups = sorted(next((a.i for a in c.attribute if a.name == "group"), 1) for c in convs)
    assert groups[0] == 1 and groups[1] > 1
    im2col = [n for n in nodes if n.name.startswith("im2col")]
    assert sum(n.op_type in ("DynamicQuantizeMatMul", "MatMulInteger", "MatMulIntegerToFloat") for n in im2col) == 10
    assert "MatMul" not in [n.op_type for n in im2col]


def test_the_int8_bundle_keeps_the_fp32_labels_on_trained_weights(demo_int8):
    from export import parity
    from foal_edge.bundle import load_manifest
    from training.model import FoalNet
    from export.api import DEMO_CHECKPOINT

    fp32, int8 = demo_int8
    runners = [{n: OnnxRuntimeRunner(b / g.file) for n, g in load_manifest(b).graphs.items()} for b in (fp32, int8)]
    inputs = parity.clip_inputs(FoalNet.load(DEMO_CHECKPOINT).config, range(100))
    report = parity.compare(lambda w, f: parity.run_sessions(runners[0], w, f),
                            lambda w, f: parity.run_sessions(runners[1], w, f), inputs)
    assert report["label_agreement"] >= 0.99
    assert report["min_cosine"]["audio"] >= 0.99 and report["min_cosine"]["video"] >= 0.99


@pytest.mark.parametrize("graph", ["audio", "video"])
def test_each_attention_becomes_one_node_per_layer_with_the_same_output(demo_int8, graph):
    """The ViT's attention and WavLM's (with its gated relative position bias as the node's
    attention_bias) each become one MultiHeadAttention node, computing what they computed."""
    import onnxruntime as ort

    from export.quantize import attention_as_mha, fuse_for_cpu
    from training.model import FoalNet
    from export.api import DEMO_CHECKPOINT

    fp32, _ = demo_int8
    fused, _ = fuse_for_cpu(onnx.load(str(fp32 / f"{graph}.onnx")))
    rewritten, count = attention_as_mha(onnx.load_from_string(fused.SerializeToString()))
    config = FoalNet.load(DEMO_CHECKPOINT).config
    assert count == (config.video.layers if graph == "video" else config.audio.num_hidden_layers)
    ops = [n.op_type for n in rewritten.graph.node]
    assert "Softmax" not in ops and ops.count("MultiHeadAttention") == count
    rng = np.random.default_rng(0)
    feed = ({"frames": rng.standard_normal((5, 3, 224, 224)).astype(np.float32)} if graph == "video" else
            {"waveform": (0.1 * rng.standard_normal((2, 27_000))).astype(np.float32)})  # a batch of two
    want, got = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
                 for m in (fused, rewritten))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    scale = next(a for n in rewritten.graph.node if n.op_type == "MultiHeadAttention" for a in n.attribute
                 if a.name == "scale")
    scale.f *= 2  # and the test can tell a wrong attention from a right one
    wrong = ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert np.abs(wrong - want).max() > 1e-3
