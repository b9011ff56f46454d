"""Export: symbolic dimensions, pinned versions, the manifest, FP16 placement and parity."""

import json

import onnx
import pytest

from export.onnx_export import IR_VERSION, OPSET, symbolic_dims
from foal_edge.bundle import load_manifest, sha256_file


def test_dynamic_dimensions_stay_symbolic(tiny_bundle):
    _, bundle = tiny_bundle
    m = load_manifest(bundle)
    assert symbolic_dims(bundle / m.graphs["audio"].file) == {"waveform": ["batch", "samples"]}
    assert symbolic_dims(bundle / m.graphs["video"].file)["frames"][0] == "frames"
    fusion = symbolic_dims(bundle / m.graphs["fusion"].file)
    assert fusion["audio"][:2] == ["batch", "audio_frames"] and fusion["video"][:2] == ["batch", "video_frames"]
    assert fusion["audio_mask"] == ["batch", "audio_frames"] and fusion["video_mask"] == ["batch", "video_frames"]


def test_versions_pinned_and_manifest_complete(tiny_bundle):
    _, bundle = tiny_bundle
    m = load_manifest(bundle)
    assert m.labels == ["neutral", "happy", "angry", "sad"] and m.preset == "tiny"
    assert m.clip_mean == [0.48145466, 0.4578275, 0.40821073] and m.sample_rate == 16000
    assert set(m.graphs) == {"audio", "video", "fusion", "preprocess"}
    for name, g in m.graphs.items():
        model = onnx.load(str(bundle / g.file))
        assert model.ir_version == IR_VERSION and g.opset == OPSET
        assert {i.version for i in model.opset_import if i.domain in ("", "ai.onnx")} == {OPSET}
        assert g.sha256 == sha256_file(bundle / g.file)
        if name == "preprocess":  # checked against the runtime's CPU path (Pillow) on camera sizes
            assert g.precision == "fp32" and g.parity["vs_cpu_pillow"]["max_grey_levels"] <= 1.0 + 1e-3
            continue
        assert g.parity["fp32_vs_eager"]["max_abs_diff"] <= 1e-4
    raw = json.loads((bundle / "manifest.json").read_text())
    assert raw["schema_version"] == 2
    assert not list(bundle.glob("*.pkl")) and not list(bundle.glob("*.pt"))


def test_fp16_keeps_fragile_ops_in_fp32_and_agrees(tiny_bundle, tmp_path):
    from export import parity
    from export.fp16 import convert_file
    from foal_edge.backends.onnxruntime import OnnxRuntimeRunner
    from training.model import FoalNet

    ckpt, bundle = tiny_bundle
    m = load_manifest(bundle)
    fp32 = {n: bundle / g.file for n, g in m.graphs.items()}
    fp16 = {}
    for name, path in fp32.items():
        fp16[name] = tmp_path / f"{name}.fp16.onnx"
        convert_file(path, fp16[name])
        model = onnx.load(str(fp16[name]))
        types = {v.name: v.type.tensor_type.elem_type for v in
                 onnx.shape_inference.infer_shapes(model).graph.value_info}
        types.update({t.name: t.data_type for t in model.graph.initializer})
        for node in model.graph.node:
            if node.op_type in ("LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt"):
                assert all(types.get(i) != onnx.TensorProto.FLOAT16 for i in node.input if i), node.name
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
        assert [o.type.tensor_type.elem_type for o in model.graph.output] == [onnx.TensorProto.FLOAT] * len(
            model.graph.output)
    config = FoalNet.load(ckpt).config
    inputs = parity.clip_inputs(config, range(30))
    r32 = {n: OnnxRuntimeRunner(p) for n, p in fp32.items()}
    r16 = {n: OnnxRuntimeRunner(p, precision="fp16") for n, p in fp16.items()}
    report = parity.compare(lambda w, f: parity.run_sessions(r32, w, f),
                            lambda w, f: parity.run_sessions(r16, w, f), inputs)
    assert report["max_probability_diff"] <= 1e-2
    assert report["label_agreement"] >= 0.99
    assert report["min_cosine"]["audio"] >= 0.999 and report["min_cosine"]["video"] >= 0.999


def test_int8_bundle_quantises_the_encoders_and_runs(tiny_bundle, tmp_path):
    from export.bundle import derive_bundle
    from foal_edge import Predictor
    from training.synthetic import make_clip

    _, bundle = tiny_bundle
    int8 = derive_bundle(bundle, tmp_path / "int8", "int8")
    m = load_manifest(int8)
    assert [m.graphs[n].precision for n in ("audio", "video", "fusion", "preprocess")] == ["int8"] * 3 + ["fp32"]
    for name in ("audio", "video", "fusion"):
        ops = {n.op_type for n in onnx.load(str(int8 / m.graphs[name].file)).graph.node}
        assert "MatMulInteger" in ops or "DynamicQuantizeLinear" in ops
    a, b = Predictor(bundle), Predictor(int8)
    for seed in range(5):
        audio, frames, _ = make_clip(seed)
        pa = a.predict(audio=audio, sample_rate=16000, frames=frames).probabilities
        pb = b.predict(audio=audio, sample_rate=16000, frames=frames).probabilities
        assert max(abs(pa[k] - pb[k]) for k in pa) < 0.1


def test_build_engine_refuses_tensorrt_without_it(tmp_path, capsys):
    from export.build_engine import main

    with pytest.raises(SystemExit, match="tensorrt"):
        main(["--preset", "tiny", "--random-weights", "--target", "tensorrt", "--out", str(tmp_path)])


def test_build_engine_help_explains_every_flag(capsys):
    from export.build_engine import build_parser

    text = build_parser().format_help()
    for flag in ("--checkpoint", "--preset", "--random-weights", "--precision", "--target", "--out", "--frames",
                 "--max-audio-seconds", "--workspace-mb", "--timing-cache", "--opset"):
        assert flag in text
    assert all(a.help for a in build_parser()._actions)


def test_auto_precision_picks_int8_only_where_it_is_faster_and_keeps_labels(tiny_bundle, tmp_path):
    from export import parity
    from export.precision import MIN_INT8_CLIPS, MIN_INT8_SPEEDUP, choose_cpu_precision
    from export.bundle import derive_bundle
    from foal_edge.backends.onnxruntime import OnnxRuntimeRunner
    from training.model import FoalNet

    ckpt, bundle = tiny_bundle
    int8 = derive_bundle(bundle, tmp_path / "int8", "int8")
    r32 = {n: OnnxRuntimeRunner(bundle / g.file) for n, g in load_manifest(bundle).graphs.items()}
    r8 = {n: OnnxRuntimeRunner(int8 / g.file) for n, g in load_manifest(int8).graphs.items()}
    inputs = parity.clip_inputs(FoalNet.load(ckpt).config, range(3))
    good = {"clips": MIN_INT8_CLIPS, "label_agreement": 1.0}
    # Labels not kept, or not measured on enough clips: FP32 everywhere, and the log says why.
    for report in ({"clips": MIN_INT8_CLIPS, "label_agreement": 0.98}, {"clips": 3, "label_agreement": 1.0}, None):
        choice = choose_cpu_precision(r32, r8, report, inputs)
        assert choice["graphs"] == {"audio": "fp32", "video": "fp32", "fusion": "fp32"}
        assert "FP32" in choice["why"]
    # Labels kept: each graph goes INT8 exactly when it measured faster here.
    choice = choose_cpu_precision(r32, r8, good, inputs, rounds=3)
    for name in ("audio", "video", "fusion"):
        assert choice["graphs"][name] == ("int8" if choice["speedup"][name] >= MIN_INT8_SPEEDUP else "fp32")


def test_an_onnxruntime_cuda_variant_is_hashed_and_used_only_there(tiny_bundle, tmp_path):
    """FP16 ONNX bundles carry ONNX Runtime CUDA's optimised encoder graphs (fused attention):
    the manifest names each as its graph's variant for that backend, they are hashed like any
    graph, and the CPU runs the standard graphs. (tests/test_gpu.py runs the variants on CUDA.)"""
    from export.build_engine import main as build
    from foal_edge import BundleError, Predictor

    out = tmp_path / "fp16"
    build(["--checkpoint", str(tiny_bundle[0]), "--out", str(out), "--target", "onnx", "--precision", "fp16",
           "--parity-clips", "0"])
    m = load_manifest(out)
    for name in ("audio", "video"):
        variant = m.graphs[name].variants["onnxruntime-cuda"]
        ops = {n.op_type for n in onnx.load(str(out / variant["file"])).graph.node}
        assert "Attention" in ops and variant["precision"] == "fp16" and "Attention" in variant["about"]
    cpu = Predictor(out, backend="onnxruntime-cpu")
    assert {n: cpu.runners[n].path.name for n in ("audio", "video")} == \
        {n: m.graphs[n].file for n in ("audio", "video")}
    data = bytearray((out / variant["file"]).read_bytes())
    data[-5] ^= 1
    (out / variant["file"]).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="ort-cuda.fp16.onnx: sha256 does not match"):
        Predictor(out)


def test_a_derived_fp16_bundle_carries_the_same_cuda_variant(tiny_bundle, tmp_path):
    """The latency harness derives its FP16 bundle from the FP32 one: with the ViT's shape it
    gets the onnxruntime-cuda variant too, so GPU benchmarks time what build_engine ships."""
    from export.bundle import derive_bundle
    from training.config import preset

    vit = preset("tiny").video
    out = derive_bundle(tiny_bundle[1], tmp_path / "fp16", "fp16", (vit.heads, vit.width))
    for name in ("audio", "video"):
        variant = load_manifest(out).graphs[name].variants["onnxruntime-cuda"]
        assert "Attention" in {n.op_type for n in onnx.load(str(out / variant["file"])).graph.node}
    plain = load_manifest(derive_bundle(tiny_bundle[1], tmp_path / "plain", "fp16"))
    assert not plain.graphs["video"].variants and not plain.graphs["audio"].variants


def test_the_audio_variant_fuses_each_wavlm_attention_into_one_node_and_agrees(tiny_bundle, tmp_path):
    """WavLM's attention (gated relative position bias added before the softmax) becomes one
    com.microsoft Attention node per layer with that bias as its attention_bias input: FP32,
    the same answer as the standard graph to float rounding; FP16, as close as our FP16
    graph is, with the log-spaced position buckets still computed in FP32 (ONNX Runtime's
    CPU provider runs both)."""
    import numpy as np
    import onnxruntime as ort

    from export.ort_optimize import fuse_audio, ort_cuda_audio
    from foal_edge.bundle import load_manifest as manifest
    from training.config import preset

    layers = preset("tiny").audio.num_hidden_layers
    standard = tiny_bundle[1] / manifest(tiny_bundle[1]).graphs["audio"].file
    fused = fuse_audio(standard, tmp_path / "fused.onnx")
    assert fused["Attention"] == layers
    ort_cuda_audio(standard, tmp_path / "fused.fp16.onnx")
    half = onnx.load(str(tmp_path / "fused.fp16.onnx"))
    attention = [n for n in half.graph.node if n.op_type == "Attention"]
    assert len(attention) == layers and all(len(n.input) > 5 and n.input[5] for n in attention)
    types = {v.name: v.type.tensor_type.elem_type for v in half.graph.value_info}
    assert all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in half.graph.node if n.op_type == "Log")
    assert all(types[n.input[0]] == onnx.TensorProto.FLOAT16 for n in attention)

    wave = {"waveform": np.random.default_rng(3).standard_normal((1, 40_000)).astype(np.float32)}
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, wave)[0]  # noqa: E731
    ref = run(standard)
    assert np.abs(run(tmp_path / "fused.onnx") - ref).max() <= 1e-4
    out = run(tmp_path / "fused.fp16.onnx")
    cosine = (out * ref).sum() / np.linalg.norm(out) / np.linalg.norm(ref)
    assert cosine > 0.9999 and np.abs(out - ref).max() <= 0.02 * np.abs(ref).max()


def test_wavlm_attention_in_the_exported_form_equals_transformers(tiny_model):
    """export.graphs writes WavLM's attention batch first through scaled_dot_product_attention
    (the form the fusions match); a padded batch through it gives transformers' own features."""
    import torch

    from export.graphs import sdpa_attention

    encoder = tiny_model.audio_encoder
    wave = torch.randn(3, 24_000, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([24_000, 17_000, 9_000])
    with torch.no_grad():
        theirs = encoder(wave, lengths)
        with sdpa_attention(encoder):
            ours = encoder(wave, lengths)
            assert encoder.wavlm.encoder.layers[0].attention.torch_multi_head_self_attention.__name__ == \
                "_sdpa_self_attention"
    assert encoder.wavlm.encoder.layers[0].attention.torch_multi_head_self_attention.__name__ == \
        "torch_multi_head_self_attention"  # put back
    for i, n in enumerate(encoder.frame_lengths(lengths).tolist()):
        assert torch.allclose(ours[i, :n], theirs[i, :n], atol=1e-5)


def test_graph_ops_counts_the_nodes_the_optimizer_leaves(tiny_bundle, tmp_path):
    """benchmarks.graph_ops, the launch count of a graph: the exported count is the graph's own,
    ONNX Runtime's optimizer only removes nodes (it fuses GELU and LayerNorm here), and
    onnxscript's fusions (the audio variant's) leave one Attention node and no Softmax per layer,
    and with the window fixed ONNX Runtime folds every shape and position computation."""
    from benchmarks.graph_ops import main as graph_ops
    from training.config import preset

    audio = preset("tiny").audio
    graph = tiny_bundle[1] / load_manifest(tiny_bundle[1]).graphs["audio"].file
    r = graph_ops([str(graph), "--heads", str(audio.num_attention_heads), "--hidden", str(audio.hidden_size),
                   "--layers", str(audio.num_hidden_layers), "--fix", "batch=1", "--fix", "samples=48000",
                   "--out", str(tmp_path / "ops")])
    assert r["exported"]["nodes"] == len(onnx.load(str(graph), load_external_data=False).graph.node)
    assert r["ort_optimized"]["nodes"] < r["exported"]["nodes"] and r["ort_optimized"]["fused"]
    fused = r["onnxscript_fused"]
    assert fused["nodes"] < r["ort_optimized"]["nodes"]
    assert fused["ops"]["Attention"] == audio.num_hidden_layers and "Softmax" not in fused["ops"]
    # At a fixed window the shape and position arithmetic is constant: none of it is left to run.
    fixed = r["fused_fixed"]["ops"]
    assert fixed["Attention"] == audio.num_hidden_layers and not {"Shape", "Range", "Log", "Concat"} & set(fixed)
    assert "| **nodes** |" in (tmp_path / "ops.md").read_text()


def test_ort_fusion_times_the_shipped_audio_variant_beside_the_standard_graph(tiny_bundle, tmp_path):
    """benchmarks.ort_fusion on the CPU provider: every ONNX row computes the standard graph's
    answer, and onnxscript's fused graph has the fewest nodes (the GPU run uses the same rows)."""
    import shutil

    from benchmarks.ort_fusion import main as ort_fusion
    from training.config import preset

    audio = preset("tiny").audio
    graph = tmp_path / "audio.onnx"
    shutil.copyfile(tiny_bundle[1] / load_manifest(tiny_bundle[1]).graphs["audio"].file, graph)
    r = ort_fusion([str(graph), "--model-type", "bert", "--heads", str(audio.num_attention_heads),
                    "--hidden", str(audio.hidden_size), "--frames", "2", "--device", "cpu", "--threads", "1",
                    "--iters", "1", "--out", str(tmp_path / "fusion")])
    rows = {row["variant"]: row for row in r["rows"]}
    assert set(rows) == {"ours-fp32", "ort-fused-fp32", "onnxscript-fused-fp32"}
    assert all(row["cosine_vs_ours_fp32"] > 0.99999 for row in rows.values())
    assert rows["onnxscript-fused-fp32"]["nodes"] < rows["ort-fused-fp32"]["nodes"] < rows["ours-fp32"]["nodes"]
    assert r["fused_operators"]["onnxscript"]["Attention"] == audio.num_hidden_layers


def test_a_legacy_export_ships_no_audio_variant_it_cannot_fuse(tiny_bundle, tmp_path, caplog):
    """The legacy exporter writes attention in a form onnxscript's fusions do not match: the
    bundle then has no audio variant (it would be the standard graph again) and says why."""
    from export.build_engine import main as build

    out = tmp_path / "legacy"
    with caplog.at_level("WARNING", logger="export.ort_optimize"):
        build(["--checkpoint", str(tiny_bundle[0]), "--out", str(out), "--target", "onnx", "--precision", "fp16",
               "--parity-clips", "0", "--exporter", "legacy"])
    m = load_manifest(out)
    assert not m.graphs["audio"].variants and "onnxruntime-cuda" in m.graphs["video"].variants
    assert not (out / "audio.ort-cuda.fp16.onnx").exists() and "--exporter dynamo" in caplog.text


def test_a_variant_that_disagrees_with_fp32_on_the_cpu_is_not_shipped(tiny_bundle, tmp_path, caplog, monkeypatch):
    """Each variant is run on the CPU against the FP32 graph before it goes into the manifest;
    one below the bar is left out with a warning."""
    from export import ort_optimize
    from foal_edge.bundle import load_manifest as manifest
    from training.config import preset

    src = manifest(tiny_bundle[1])
    fp32 = {n: tiny_bundle[1] / src.graphs[n].file for n in ("audio", "video")}
    vit = preset("tiny").video
    report = ort_optimize.add_ort_cuda_variants(tmp_path, src.graphs, fp32, (vit.heads, vit.width))
    assert all(r["vs_fp32_on_cpu"]["cosine"] >= ort_optimize.MIN_COSINE for r in report.values())
    assert all("onnxruntime-cuda" in src.graphs[n].variants for n in ("audio", "video"))

    again = manifest(tiny_bundle[1])
    monkeypatch.setattr(ort_optimize, "MIN_COSINE", 1.5)  # no cosine reaches it
    with caplog.at_level("WARNING", logger="export.ort_optimize"):
        ort_optimize.add_ort_cuda_variants(tmp_path, again.graphs, fp32, (vit.heads, vit.width))
    assert not any(again.graphs[n].variants for n in ("audio", "video"))
    assert not list(tmp_path.glob("*.ort-cuda.*")) and caplog.text.count("is left out") == 2
