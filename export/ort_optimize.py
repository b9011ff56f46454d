"""ONNX Runtime CUDA-only variants of the encoder graphs: fused com.microsoft contrib ops
(Attention, SkipLayerNormalization, BiasGelu) on the FP32 graph, then FP16 with FP32 inputs
and outputs. TensorRT and the CPU build from the standard graphs; the manifest names each of
these files as its graph's onnxruntime-cuda variant.

- video: ONNX Runtime's transformer optimizer (model type vit). On an H100, ViT-L/14 on 180
  frames: 71.6 ms against 104.4 ms for eager FP16 autocast and 212 ms for our standard-op FP16
  graph (benchmarks/results/ort-fusion-video-split.json).
- audio: WavLM's attention adds a gated relative position bias before the softmax, which none
  of the transformer optimizer's attention patterns matches (it fused no attention in WavLM
  Large: benchmarks/results/graph-ops-wavlm-large.md). onnxscript's ONNX Runtime fusions match
  scaled dot-product attention with an additive mask, the form export.graphs writes WavLM's
  attention in, and turn each layer's attention into one Attention node whose attention_bias
  input is that gated bias: WavLM Large keeps about half its nodes (1306 after the transformer
  optimizer, 655 here), on a stage that is bound by kernel launches. Not yet timed on a GPU.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)

VARIANT_FILES = {"audio": "audio.ort-cuda.fp16.onnx", "video": "video.ort-cuda.fp16.onnx"}


@contextlib.contextmanager
def quiet_optimizer():
    """The graph optimizers at ERROR only (ONNX Runtime's "symbolic shape inference disabled
    or failed", onnxscript's "skipping constant folding for op Split"), their levels
    restored after."""
    loggers = [logging.getLogger(name) for name in ("onnxruntime.transformers", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _to_fp16(model, dst: Path, **kwargs) -> None:
    """An onnxruntime.transformers OnnxModel to FP16 (FP32 inputs and outputs) at `dst`."""
    from .onnx_export import IR_VERSION

    model.convert_float_to_float16(keep_io_types=True, **kwargs)
    model.model.ir_version = IR_VERSION
    model.save_model_to_file(str(dst))


def ort_cuda_video(fp32_onnx: Path, dst: Path, heads: int, hidden: int) -> dict:
    """Write the video variant; returns the fused operator counts."""
    from onnxruntime.transformers import optimizer

    with quiet_optimizer():
        model = optimizer.optimize_model(str(fp32_onnx), model_type="vit", num_heads=heads, hidden_size=hidden,
                                         use_gpu=True)
        fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
        _to_fp16(model, dst)
    return fused


def onnxscript_fused(fp32_onnx: Path):
    """`fp32_onnx` through onnxscript's ONNX Runtime fusions, as an onnx_ir Model. The fused
    Attention nodes take their packed query/key/value weights from Concat nodes over the three
    projections' weights; folding those into initializers (beyond onnxscript's default size
    limit) keeps them from being concatenated again, and cast, at every run."""
    import onnx_ir as ir
    import onnx_ir.passes.common as common_passes
    from onnxscript.optimizer import fold_constants
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    with quiet_optimizer():
        model, _ = optimize_for_ort(ir.load(str(fp32_onnx)))
        fold_constants(model, input_size_limit=1 << 31, output_size_limit=1 << 31)
        common_passes.RemoveUnusedNodesPass()(model)
        common_passes.RemoveUnusedOpsetsPass()(model)
    return model


def _fused_audio(fp32_onnx: Path):
    """onnxscript_fused as an ONNX ModelProto with our IR version, and the counts of the fused
    operators in it."""
    import collections

    import onnx_ir as ir

    from .onnx_export import IR_VERSION

    model = onnxscript_fused(fp32_onnx)
    fused = collections.Counter(n.op_type for n in model.graph.all_nodes() if n.domain == "com.microsoft")
    proto = ir.to_proto(model)
    proto.ir_version = IR_VERSION
    return proto, dict(fused)


def fuse_audio(fp32_onnx: Path, dst: Path) -> dict:
    """The audio graph with onnxscript's ONNX Runtime fusions, still FP32 (ONNX Runtime's CPU
    provider runs it, so tests compare it with the standard graph). Returns the counts of
    the fused operators in the result."""
    import onnx

    proto, fused = _fused_audio(fp32_onnx)
    onnx.save(proto, str(dst))
    return fused


def ort_cuda_audio(fp32_onnx: Path, dst: Path) -> dict:
    """Write the audio variant; returns the fused operator counts. The position arithmetic
    (relative distances, log-spaced buckets: nodes that do not depend on the waveform) stays
    FP32, as in export.fp16."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    from .fp16 import activation_values

    model, fused = _fused_audio(fp32_onnx)
    live = activation_values(model.graph)
    static = [n.name for n in model.graph.node if not any(o in live for o in n.output)]
    with quiet_optimizer():
        _to_fp16(OnnxModel(model), dst, node_block_list=static)
    return fused


MIN_COSINE = 0.999  # a variant further than this from the FP32 graph is not shipped


def check_on_cpu(fp32_onnx: Path, variant: Path, seed: int = 0) -> dict:
    """The variant against the FP32 graph on ONNX Runtime's CPU provider, on one random input
    (2 s of audio, or 2 frames): what the fusion and the FP16 placement compute, before any
    GPU sees the file. Basic graph optimisations only: ONNX Runtime's CPU layout transforms
    have crashed on FP16 convolutions (see foal_edge.backends.onnxruntime)."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    sessions = [ort.InferenceSession(str(f), options, providers=["CPUExecutionProvider"])
                for f in (fp32_onnx, variant)]
    (spec,) = sessions[0].get_inputs()
    rng = np.random.default_rng(seed)
    shape = (1, 32_000) if spec.name == "waveform" else (2, 3, spec.shape[2], spec.shape[3])
    x = (0.1 if spec.name == "waveform" else 1.0) * rng.standard_normal(shape).astype(np.float32)
    ref, out = (s.run(None, {spec.name: x})[0].astype(np.float64).ravel() for s in sessions)
    return {"cosine": float(ref @ out / np.linalg.norm(ref) / np.linalg.norm(out)),
            "max_abs_diff": float(np.abs(ref - out).max()), "max_abs_fp32": float(np.abs(ref).max())}


def add_ort_cuda_variants(bundle: Path, entries: dict, fp32: dict[str, Path], vit_shape: tuple[int, int]) -> dict:
    """Write both variants into `bundle` and name each in its graph's manifest entry (a
    GraphInfo in `entries`) as the onnxruntime-cuda variant. `fp32` holds the FP32 audio and
    video graphs; `vit_shape` is the ViT's (heads, width). A variant is left out, with a
    warning, where no attention fused (the legacy exporter's graphs) or where it disagrees
    with the FP32 graph on the CPU. Returns per graph the fused operator counts and the check."""
    from foal_edge.bundle import sha256_file

    report = {}
    for name in ("audio", "video"):
        dst = Path(bundle) / VARIANT_FILES[name]
        fused = (ort_cuda_audio(fp32["audio"], dst) if name == "audio"
                 else ort_cuda_video(fp32["video"], dst, *vit_shape))
        report[name] = {"fused": fused}
        if "Attention" not in fused:  # e.g. the legacy exporter's attention: no pattern matches it
            log.warning("%s graph: no attention fused, so no onnxruntime-cuda variant for it "
                        "(export with --exporter dynamo for one)", name)
            dst.unlink()
            continue
        check = report[name]["vs_fp32_on_cpu"] = check_on_cpu(fp32[name], dst)
        if not check["cosine"] >= MIN_COSINE:
            log.warning("%s graph: its onnxruntime-cuda variant is left out: cosine %.6f to the FP32 graph on "
                        "the CPU (at least %s wanted)", name, check["cosine"], MIN_COSINE)
            dst.unlink()
            continue
        from .bundle import external_data

        entries[name].variants["onnxruntime-cuda"] = {
            "file": dst.name, "sha256": sha256_file(dst), "precision": "fp16",
            **({"external_data": side} if (side := external_data(bundle, dst)) else {}),
            "about": ("onnxscript's ONNX Runtime fusions" if name == "audio" else "ONNX Runtime transformer optimizer")
            + " (" + ", ".join(f"{v} {k}" for k, v in fused.items())
            + f"), FP16 with FP32 inputs/outputs; cosine {check['cosine']:.6f} to the FP32 graph on the CPU; "
            "CUDA only"}
    return report
