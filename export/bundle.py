"""Writes a bundle: the graph files plus the manifest that foal_edge.bundle defines."""

from __future__ import annotations

from pathlib import Path

import onnx

from foal_edge.bundle import MANIFEST, GraphInfo, Manifest, TensorInfo, onnx_external_data, sha256_file

_ONNX_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
                onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32", onnx.TensorProto.BOOL: "bool",
                onnx.TensorProto.UINT8: "uint8"}


def onnx_io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    model = onnx.load(str(path), load_external_data=False)

    def info(v):
        t = v.type.tensor_type
        return TensorInfo(v.name, _ONNX_DTYPES.get(t.elem_type, str(t.elem_type)),
                          [d.dim_param or d.dim_value for d in t.shape.dim])

    return [info(v) for v in model.graph.input], [info(v) for v in model.graph.output]


def external_data(bundle: Path, file: Path) -> dict[str, str]:
    """The weight side files an ONNX file inside `bundle` names -> their sha256 (relative to
    the bundle), hashed like the graph so a swapped one is caught; a graph's or a variant's."""
    out = {}
    for location in onnx_external_data(file):
        side = (Path(file).parent / location).resolve()
        out[side.relative_to(Path(bundle).resolve()).as_posix()] = sha256_file(side)
    return out


def graph_info(bundle: Path, file: Path, fmt: str, precision: str, onnx_path: Path, **extra) -> GraphInfo:
    """Manifest entry for `file` (inside `bundle`); I/O read from the ONNX it came from."""
    inputs, outputs = onnx_io(onnx_path)
    external = external_data(bundle, file) if fmt == "onnx" else {}
    return GraphInfo(file=file.relative_to(bundle).as_posix(), format=fmt, precision=precision,
                     sha256=sha256_file(file), inputs=inputs, outputs=outputs, external_data=external, **extra)


def manifest_for(config, graphs: dict[str, GraphInfo], demo: dict | None = None) -> Manifest:
    """The manifest of a model config: labels and preprocessing come from training.config."""
    from training.config import ATTRIBUTE_NAMES

    return Manifest(
        preset=config.preset,
        labels=list(config.labels),
        attributes=list(ATTRIBUTE_NAMES) if config.fusion.attributes else [],
        sample_rate=config.sample_rate,
        audio_seconds=config.audio_seconds,
        frames_per_clip=config.frames_per_clip,
        image_size=config.video.image_size,
        clip_mean=list(config.clip_mean),
        clip_std=list(config.clip_std),
        wavlm_conv_kernel=list(config.audio.conv_kernel),
        wavlm_conv_stride=list(config.audio.conv_stride),
        graphs=graphs,
        demo=demo,
    )


def write_manifest(bundle: Path, manifest: Manifest) -> Path:
    path = Path(bundle) / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(manifest.to_json())
    tmp.replace(path)
    return path


def derive_bundle(src: Path, dst: Path, precision: str, vit_shape: tuple[int, int] | None = None) -> Path:
    """An FP16 or INT8 ONNX bundle from an FP32 ONNX bundle, without exporting again, by the
    rules of export/precision.py. FP16 with `vit_shape` (the video tower's attention heads and
    width) also gets the encoder graphs' onnxruntime-cuda variants, as `build_engine
    --precision fp16 --target onnx` does."""
    import shutil

    from foal_edge.bundle import load_manifest

    from .errors import PrecisionError
    from .precision import convert_graph, graph_precision

    if precision not in ("fp16", "int8"):
        raise PrecisionError(f"derive_bundle makes fp16 or int8 bundles, not {precision!r}")
    src, dst = Path(src), Path(dst)
    manifest = load_manifest(src)
    if any(g.format != "onnx" or g.precision != "fp32" for g in manifest.graphs.values()):
        raise PrecisionError(f"{src}: derive_bundle needs an FP32 ONNX bundle")
    dst.mkdir(parents=True, exist_ok=True)
    fp32 = {name: src / manifest.graphs[name].file for name in ("audio", "video")}
    for name, g in manifest.graphs.items():
        target = convert_graph(name, precision, src / g.file, dst)
        if target == src / g.file:  # stays FP32: copied as it is
            target = dst / g.file
            shutil.copyfile(src / g.file, target)
        manifest.graphs[name] = graph_info(dst, target, "onnx", graph_precision(name, precision), target,
                                           opset=g.opset)
    if precision == "fp16" and vit_shape:
        from .ort_optimize import add_ort_cuda_variants

        add_ort_cuda_variants(dst, manifest.graphs, fp32, vit_shape)
    for key in ("audio", "frames"):
        if manifest.demo:
            shutil.copyfile(src / manifest.demo[key], dst / manifest.demo[key])
    write_manifest(dst, manifest)
    return dst
