"""The latency harness runs end to end on the library calls (export.build_bundle, the
Predictor's pipeline steps) and reports every stage of every backend beside eager."""

import json

import pytest


@pytest.mark.slow
def test_latency_harness_reports_every_stage_beside_eager(tmp_path):
    from benchmarks.latency import main as latency

    out = tmp_path / "cpu-tiny"
    latency(["--iters", "1", "--warmup", "0", "--backends", "eager,onnxruntime,tensorrt", "--frames", "2",
             "--audio-seconds", "1", "--threads", "1", "--out", str(out), "--bundle-dir", str(tmp_path / "b")])
    results = json.loads(out.with_suffix(".json").read_text())
    stages = {(r["backend"], r["stage"]) for r in results["rows"]}
    assert stages == {(b, s) for b in ("eager", "onnxruntime") for s in ("audio", "video[2]", "fusion", "end_to_end")}
    assert all(r["cosine_vs_eager"] > 0.999 for r in results["rows"])
    assert "tensorrt" in results["skipped"] and (tmp_path / "b" / "fp32" / "manifest.json").is_file()
    assert out.with_suffix(".md").is_file() and out.with_suffix(".png").is_file()
