"""PyTorch sub-module -> ONNX file, with the pins every consumer needs.

Opset 18 and IR version 8: TensorRT 10.3 (JetPack 6) parses opsets up to 20, ONNX Runtime
1.16 runs IR <= 9 and opset <= 19, and ONNX Runtime 1.31 refuses IR 14, which the
current onnx package writes by default. Opset 18 is the lowest the dynamo exporter emits
natively (it would otherwise down-convert), and it has LayerNormalization (17+) as one
op, which the FP16 pass can keep in FP32 as a whole.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch

from .graphs import GraphSpec

log = logging.getLogger(__name__)

OPSET = 18
IR_VERSION = 8


def remove_weight_norm(module: torch.nn.Module) -> int:
    """Fold weight-norm parametrizations into plain weights (WavLM's positional conv);
    otherwise the exported graph recomputes the norm of the whole kernel on every call."""
    from torch.nn.utils import parametrize

    folded = 0
    for m in module.modules():
        if parametrize.is_parametrized(m):
            for name in list(m.parametrizations.keys()):
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
                folded += 1
        if hasattr(m, "weight_g") and hasattr(m, "weight_v"):  # old-style torch.nn.utils.weight_norm
            torch.nn.utils.remove_weight_norm(m)
            folded += 1
    return folded


def pin_versions(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    model.ir_version = IR_VERSION
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version != opset:
            raise RuntimeError(f"exported opset {imp.version}, wanted {opset}")
    return model


def export_onnx(module: torch.nn.Module, example: tuple, spec: GraphSpec, path: Path,
                opset: int = OPSET, exporter: str = "dynamo") -> Path:
    """Export `module` with symbolic dimensions named as in `spec.dynamic`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    remove_weight_norm(module)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            from torch.export import Dim

            dims: dict[str, Dim] = {}
            shapes = {}
            for name in spec.inputs:
                axes = spec.dynamic.get(name, {})
                shapes[name] = {a: dims.setdefault(d, Dim(d, min=1)) for a, d in axes.items()} or None
            program = torch.onnx.export(module, example, input_names=list(spec.inputs),
                                        output_names=list(spec.outputs), dynamic_shapes=shapes,
                                        opset_version=opset, dynamo=True, external_data=False)
            program.optimize()
            model = program.model_proto
        elif exporter == "legacy":
            # nn.MultiheadAttention's inference fast path (open_clip) has no ONNX symbolic;
            # the switch is process-wide, so it is put back afterwards.
            fastpath = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
            buffer = io.BytesIO()
            try:
                torch.onnx.export(module, example, buffer, input_names=list(spec.inputs),
                                  output_names=list(spec.outputs), dynamic_axes=spec.dynamic,
                                  opset_version=opset, dynamo=False, do_constant_folding=True)
            finally:
                torch.backends.mha.set_fastpath_enabled(fastpath)
            model = onnx.load_from_string(buffer.getvalue())
        else:
            raise ValueError(f"exporter must be 'dynamo' or 'legacy', not {exporter!r}")
    model = pin_versions(model, opset)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def symbolic_dims(path: Path) -> dict[str, list]:
    """Each input's dimensions as written in the file: ints for fixed, names for symbolic."""
    model = onnx.load(str(path), load_external_data=False)
    return {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
