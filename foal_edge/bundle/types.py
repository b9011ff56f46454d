"""What a bundle's manifest holds, as dataclasses (the schema in schema.py checks the JSON
before these are built from it)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

SCHEMA_VERSION = 2  # 2: external data and demo files hashed; the manifest checked against a schema
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
    external_data: dict[str, str] = field(default_factory=dict)  # ONNX weight side files -> sha256
    # backend -> {"file", "sha256", "precision", "about"}: a file only that backend runs instead
    # (e.g. ONNX Runtime CUDA's optimised video graph with contrib ops; TensorRT builds from `file`)
    variants: dict[str, dict] = field(default_factory=dict)

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
    # {"audio": file, "frames": file, "fps": n, "expected": label, "sha256": {file: hash}}
    demo: dict | None = None
    created_by: str = "foal-edge"
    model_card: dict | None = None  # foal_edge/model_card.py's schema
    calibration: dict | None = None  # per-head temperatures (foal_edge/confidence.py)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        d = dict(d)
        d["graphs"] = {k: GraphInfo.from_dict(v) for k, v in d["graphs"].items()}
        return cls(**d)
