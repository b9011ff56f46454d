"""The optimum comparison (benchmarks/int8_peer.py): its peer is the same network as ours
(CLIPVisionModel mapped from our preset computes our image tower's output with its weights),
and the benchmark reports all four graphs of both encoders with sane cosines."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from benchmarks import int8_peer


@pytest.mark.parametrize("pool_type", ["avg", "tok"])
def test_clip_vision_model_with_mapped_weights_is_our_image_tower(pool_type, seeded):
    """The tiny tower as the demo has it (patch tokens averaged) and with CLIP's class token:
    same output to float rounding, same weights but the projection."""
    import torch

    from training.config import preset
    from training.encoders import VideoEncoder

    config = dataclasses.replace(preset("tiny").video, pool_type=pool_type)
    ours = VideoEncoder(config, frozen=True)
    peer = int8_peer.clip_peer(ours)
    frames = torch.randn(3, 3, config.image_size, config.image_size, generator=seeded)
    with torch.no_grad():
        want = ours(frames).numpy()
        got = peer(pixel_values=frames)
    visual = ours.visual
    head = {"pool_type": pool_type, "proj": visual.proj.detach().numpy(),
            "ln_weight": visual.ln_post.weight.detach().numpy(), "ln_bias": visual.ln_post.bias.detach().numpy()}
    embedding = int8_peer.peer_embedding(got.last_hidden_state.numpy(), got.pooler_output.numpy(), head)
    np.testing.assert_allclose(embedding, want, atol=1e-5, rtol=1e-4)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(peer) == count(ours) - visual.proj.numel()


def test_clip_config_of_the_large_preset_is_vit_l14():
    from training.config import preset

    video = preset("large").video
    c = int8_peer.clip_vision_config(video)
    assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads) == (1024, 4096, 24, 16)
    assert (c.image_size, c.patch_size, c.hidden_act, c.layer_norm_eps) == (224, 14, "gelu", 1e-5)
    quick = int8_peer.clip_vision_config(dataclasses.replace(video, quick_gelu=True))
    assert quick.hidden_act == "quick_gelu"


def test_convs_whose_weight_is_computed_are_the_ones_left_in_fp32(tmp_path):
    """A weight-normed conv (weight = g * v, computed in the graph) is named; a conv with an
    initializer weight is not."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 1, 3), np.float32), "w")
    g = numpy_helper.from_array(np.full((1, 1, 3), 0.5, np.float32), "g")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="plain"),
             helper.make_node("Mul", ["w", "g"], ["wn"], name="norm"),
             helper.make_node("Conv", ["x", "wn"], ["z"], name="normed")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "z")],
                              initializer=[w, g])
    onnx.save(helper.make_model(graph), tmp_path / "m.onnx")
    assert int8_peer.convs_without_weights(tmp_path / "m.onnx") == ["normed"]
    assert int8_peer.float_params(tmp_path / "m.onnx") == 6 + 3


@pytest.mark.slow
def test_benchmark_reports_four_graphs_of_each_encoder(tiny_bundle, tmp_path):
    python = int8_peer.find_peer_python()
    if python is None:
        pytest.skip("no Python with optimum-onnx: set FOAL_PEER_PYTHON or make build/optimum-venv "
                    "(docs/results.md, 'Against optimum')")
    checkpoint, bundle = tiny_bundle
    shutil.copytree(bundle, tmp_path / "bench" / "fp32")
    out = tmp_path / "int8-peer-tiny"
    int8_peer.main(["--checkpoint", str(checkpoint), "--bundle-dir", str(tmp_path / "bench"),
                    "--work-dir", str(tmp_path / "work"), "--peer-python", python, "--iters", "2",
                    "--threads", "1", "--audio-seconds", "2", "--frames", "2", "--out", str(out)])
    results = json.loads(out.with_suffix(".json").read_text())
    assert results["preset"] == "tiny" and results["machine"]["load_after"]
    assert results["peer_made_by"]["versions"]["optimum"]
    # WavLM's weight-norm positional conv, which ONNX Runtime's quantizer cannot take, stays FP32
    assert results["peer_made_by"]["excluded_from_int8"] == {"audio": ["/encoder/pos_conv_embed/conv/Conv"],
                                                             "video": []}
    for name, enc in results["encoders"].items():
        rows = {r["graph"]: r for r in enc["rows"]}
        assert tuple(rows) == int8_peer.ROWS
        assert all(len(r["times_ms"]) == 2 and r["p50_ms"] > 0 for r in rows.values())
        assert rows["ours-fp32"]["cosine_to_own_fp32"] == pytest.approx(1.0)
        assert rows["ours-int8"]["cosine_to_own_fp32"] > 0.99
        assert rows["optimum-int8"]["cosine_to_own_fp32"] > 0.99
        assert enc["cosine_ours_fp32_to_optimum_fp32"] > 0.9999  # the same weights, the same network
        assert enc["ours_int8_vs_optimum_int8"]["median"] > 0
        p = results["params"][name]
        assert abs(p["ours_fp32"] - p["optimum_fp32"] - p["projection"]) < 1e-3 * p["ours_fp32"]
    # The FP32 bundle it was given is read, never written.
    assert sorted(f.name for f in (tmp_path / "bench").iterdir()) == ["fp32"]
    assert "optimum-int8" in out.with_suffix(".md").read_text()


def test_a_given_int8_bundle_that_is_not_int8_is_refused(tiny_bundle, tmp_path):
    import argparse

    checkpoint, bundle = tiny_bundle
    shutil.copytree(bundle, tmp_path / "fp32")
    args = argparse.Namespace(bundle_dir=str(tmp_path), int8_bundle=str(bundle), work_dir=str(tmp_path),
                              audio_seconds=2.0)
    with pytest.raises(SystemExit, match="audio graph is fp32, not int8"):
        int8_peer.our_bundles(args, int8_peer.read_config(checkpoint), checkpoint)
