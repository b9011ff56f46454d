"""An ONNX Runtime CUDA-only variant of the video graph: ONNX Runtime's transformer optimizer
(fused Attention, SkipLayerNormalization and BiasGelu: com.microsoft contrib ops) on the FP32
graph, then FP16 with FP32 inputs and outputs. On an H100, ViT-L/14 on 180 frames: 71.6 ms
against 104.4 ms for eager FP16 autocast and 212 ms for our standard-op FP16 graph
(benchmarks/results/ort-fusion-video-split.json). TensorRT builds from the standard graph;
the manifest names this file as the onnxruntime-cuda variant of the video graph."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

VARIANT_FILE = "video.ort-cuda.fp16.onnx"


@contextlib.contextmanager
def quiet_optimizer():
    """ONNX Runtime's transformer optimizer at ERROR only ("symbolic shape inference disabled
    or failed" etc.), its level restored after."""
    log = logging.getLogger("onnxruntime.transformers")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def ort_cuda_video(fp32_onnx: Path, dst: Path, heads: int, hidden: int) -> dict:
    """Write the variant; returns the fused operator counts."""
    from onnxruntime.transformers import optimizer

    from .onnx_export import IR_VERSION

    with quiet_optimizer():
        model = optimizer.optimize_model(str(fp32_onnx), model_type="vit", num_heads=heads, hidden_size=hidden,
                                         use_gpu=True)
        fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
        model.convert_float_to_float16(keep_io_types=True)
        model.model.ir_version = IR_VERSION
        model.save_model_to_file(str(dst))
    return fused


def add_ort_cuda_variant(bundle: Path, entry, fp32_video: Path, heads: int, hidden: int) -> dict:
    """Write the variant into `bundle` and name it in the video graph's manifest `entry`
    (a GraphInfo) as the onnxruntime-cuda variant. Returns the fused operator counts."""
    from foal_edge.manifest import sha256_file

    dst = Path(bundle) / VARIANT_FILE
    fused = ort_cuda_video(fp32_video, dst, heads, hidden)
    entry.variants["onnxruntime-cuda"] = {
        "file": dst.name, "sha256": sha256_file(dst), "precision": "fp16",
        "about": "ONNX Runtime transformer optimizer (" + ", ".join(f"{v} {k}" for k, v in fused.items())
                 + "), FP16 with FP32 inputs/outputs; CUDA only"}
    return fused
