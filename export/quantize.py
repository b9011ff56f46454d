"""INT8 for CPU targets: dynamic quantisation of the MatMul/Gemm weights (activations are
quantised per call), through ONNX Runtime's quantiser."""

from __future__ import annotations

import logging
from pathlib import Path


class _DropPreprocessAdvice(logging.Filter):
    """The quantiser advises "pre-processing" (symbolic shape inference + basic optimisation)
    on every call; our graphs come from the exporter already constant-folded, so the advice
    is noise in the build log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_int8(src: Path, dst: Path) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from .onnx_export import IR_VERSION

    quiet, root = _DropPreprocessAdvice(), logging.getLogger()  # the quantiser logs on the root logger
    root.addFilter(quiet)
    try:
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
    finally:
        root.removeFilter(quiet)
    model = onnx.load(str(dst))
    model.ir_version = IR_VERSION  # the quantiser may bump it; keep what old runtimes read
    onnx.save(model, str(dst))
    return Path(dst)
