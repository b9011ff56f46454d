"""Export as a library: one call builds a bundle, refusals are typed ExportErrors (the
command line turns them into its exit message), and the precision rules live in one place."""

import pytest

from export import CheckpointError, ExportError, PrecisionError, TargetUnavailableError, build_bundle
from export.precision import convert_graph, graph_precision, resolve


def test_refusals_are_export_errors_not_exits(tmp_path):
    with pytest.raises(TargetUnavailableError, match="tensorrt"):
        build_bundle(out=tmp_path / "b", preset="tiny", random_weights=True, target="tensorrt")
    with pytest.raises(CheckpointError, match="need a preset"):
        build_bundle(out=tmp_path / "b", random_weights=True)
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        build_bundle(tmp_path / "no-such-checkpoint", tmp_path / "b")
    with pytest.raises(ExportError, match="target 'gpu'"):
        build_bundle(out=tmp_path / "b", preset="tiny", random_weights=True, target="gpu")
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_the_precision_rules():
    assert resolve("auto", "tensorrt") == "fp16" and resolve("auto", "onnx") == "cpu-auto"
    assert resolve("int8", "onnx") == "int8"
    with pytest.raises(PrecisionError, match="for TensorRT use fp16"):
        resolve("int8", "tensorrt")
    table = {p: [graph_precision(n, p) for n in ("audio", "video", "fusion", "preprocess")]
             for p in ("fp32", "fp16", "int8", "cpu-auto")}
    assert table == {"fp32": ["fp32"] * 4, "fp16": ["fp16", "fp16", "fp16", "fp32"],
                     "int8": ["int8", "int8", "int8", "fp32"], "cpu-auto": ["int8", "int8", "int8", "fp32"]}


def test_graphs_that_stay_fp32_are_not_converted(tmp_path):
    src = tmp_path / "fusion.onnx"
    assert convert_graph("preprocess", "int8", src, tmp_path) == src
    assert convert_graph("preprocess", "fp16", src, tmp_path) == src


def test_derive_bundle_refuses_what_it_cannot_make(tiny_bundle, tmp_path):
    from export.bundle import derive_bundle

    with pytest.raises(PrecisionError, match="fp16 or int8"):
        derive_bundle(tiny_bundle[1], tmp_path / "x", "fp32")
    int8 = derive_bundle(tiny_bundle[1], tmp_path / "int8", "int8")
    with pytest.raises(PrecisionError, match="needs an FP32 ONNX bundle"):
        derive_bundle(int8, tmp_path / "y", "fp16")
