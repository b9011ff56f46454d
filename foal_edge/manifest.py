"""The bundle: a directory with `manifest.json` and the graph files it names.

Export writes it (export/bundle.py), the runtime reads and verifies it. The manifest is
plain versioned JSON, no pickle anywhere. Everything the runtime needs to preprocess
inputs and interpret outputs is in it, so the runtime never needs the training code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import BundleError, IncompatibleEngineError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
GRAPHS = ("audio", "video", "fusion")
OPTIONAL_GRAPHS = ("preprocess",)  # frame preprocessing where the graphs run (GPU); bundles may lack it


@dataclass
class TensorInfo:
    name: str
    dtype: str  # numpy dtype name: float32, float16, int64
    shape: list  # ints for fixed dimensions, names for dynamic ones


@dataclass
class GraphInfo:
    file: str
    format: str  # "onnx" | "tensorrt"
    precision: str  # "fp32" | "fp16" | "int8"
    sha256: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    # input name -> {"min": [...], "opt": [...], "max": [...]}
    profiles: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    opset: int | None = None
    tensorrt_version: str | None = None  # engines only
    compute_capability: str | None = None  # engines only, e.g. "8.7"
    parity: dict | None = None  # what export measured against eager PyTorch

    @classmethod
    def from_dict(cls, d: dict) -> "GraphInfo":
        d = dict(d)
        d["inputs"] = [TensorInfo(**t) for t in d["inputs"]]
        d["outputs"] = [TensorInfo(**t) for t in d["outputs"]]
        return cls(**d)


@dataclass
class Manifest:
    preset: str
    labels: list[str]
    attributes: list[str]  # empty when the model has no attribute head
    sample_rate: int
    audio_seconds: float  # the window the model was trained on
    frames_per_clip: int
    image_size: int
    clip_mean: list[float]
    clip_std: list[float]
    wavlm_conv_kernel: list[int]
    wavlm_conv_stride: list[int]
    graphs: dict[str, GraphInfo]
    demo: dict | None = None  # {"audio": file, "video": file} shipped in the bundle
    created_by: str = "foal-edge"
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        d = dict(d)
        d["graphs"] = {k: GraphInfo.from_dict(v) for k, v in d["graphs"].items()}
        return cls(**d)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_manifest(bundle, verify: bool = True) -> Manifest:
    """Read and check a bundle's manifest; with `verify`, every graph file's sha256 too."""
    bundle = Path(bundle)
    rebuild = "rebuild it with `python -m export.build_engine --checkpoint CKPT --out DIR`"
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: no such bundle directory; {rebuild}")
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle}: no {MANIFEST}, so this is not a foal-edge bundle; {rebuild}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); {rebuild}") from exc
    if not isinstance(raw, dict):
        raise BundleError(f"{path}: expected a JSON object; {rebuild}")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{path}: manifest schema version {version!r}, this foal-edge reads version "
                          f"{SCHEMA_VERSION}; {rebuild} (or install the foal-edge that wrote it)")
    try:
        manifest = Manifest.from_dict(raw)
    except (TypeError, KeyError, AttributeError) as exc:
        raise BundleError(f"{path}: missing or unexpected fields ({exc}); {rebuild}") from exc
    missing = [g for g in GRAPHS if g not in manifest.graphs]
    if missing:
        raise BundleError(f"{path}: no entry for graph(s) {missing}; {rebuild}")
    root = bundle.resolve()
    for name, graph in manifest.graphs.items():
        file = (bundle / graph.file).resolve()
        if root not in file.parents:
            raise BundleError(f"{path}: graph {name!r} names {graph.file!r}, outside the bundle directory; "
                              "refusing to read it")
        if not file.is_file():
            raise BundleError(f"{bundle}: graph file {graph.file} ({name}) is missing; {rebuild}")
        if verify and sha256_file(file) != graph.sha256:
            raise BundleError(f"{file}: sha256 does not match the manifest (corrupt or truncated copy); "
                              f"copy the bundle again or {rebuild}")
    return manifest


def check_engine(path, built_version: str | None, built_capability: str | None, here_version: str,
                 here_capability: str, rebuild: str) -> None:
    """Engines run only on the TensorRT version and GPU they were built for: refuse others
    with the command that rebuilds them."""
    if built_version and built_version != here_version:
        raise IncompatibleEngineError(
            f"{path}: engine built with TensorRT {built_version}, this machine has TensorRT {here_version}; "
            f"engines are not portable across TensorRT versions: {rebuild}")
    if built_capability and built_capability != here_capability:
        raise IncompatibleEngineError(
            f"{path}: engine built for sm_{built_capability.replace('.', '')}, this GPU is "
            f"sm_{here_capability.replace('.', '')}; engines are not portable across GPUs: {rebuild}")
