"""INT8 for CPU targets: dynamic quantisation of the MatMul/Gemm weights (activations are
quantised per call), through ONNX Runtime's quantiser."""

from __future__ import annotations

from pathlib import Path


def quantize_int8(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
    import onnx

    model = onnx.load(str(dst))
    from .onnx_export import IR_VERSION

    model.ir_version = IR_VERSION  # the quantiser may bump it; keep what old runtimes read
    onnx.save(model, str(dst))
    return Path(dst)
