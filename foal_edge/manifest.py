"""The bundle: a directory with `manifest.json` and the graph files it names.

Export writes it (export/bundle.py), the runtime reads and verifies it. The manifest is
plain versioned JSON, no pickle anywhere. Everything the runtime needs to preprocess
inputs and interpret outputs is in it, so the runtime never needs the training code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import BundleError, IncompatibleEngineError
from .integrity import bundle_file, onnx_external_data

SCHEMA_VERSION = 2  # 2: external data and demo files hashed; the manifest checked against a schema
MANIFEST = "manifest.json"
GRAPHS = ("audio", "video", "fusion")
OPTIONAL_GRAPHS = ("preprocess",)  # frame preprocessing where the graphs run (GPU); bundles may lack it
MAX_MANIFEST_BYTES = 1 << 20  # a real manifest is a few kB
MAX_JSON_DEPTH = 12  # a real manifest nests 6 deep (graphs -> audio -> parity -> ... -> values)

# What each graph is fed and must return (the Predictor feeds and reads these by name).
GRAPH_IO = {
    "audio": ({"waveform": 2}, {"hidden": 3}),
    "video": ({"frames": 4}, {"embeddings": 2}),
    "fusion": ({"audio": 3, "audio_mask": 2, "video": 3, "video_mask": 2},
               {"logits": 2, "audio_logits": 2, "video_logits": 2}),
    "preprocess": ({"frames": 4, "resize_x": 2, "resize_y": 2}, {"pixels": 4}),
}
OPTIONAL_OUTPUTS = {"fusion": {"attributes": 2}}
DTYPES = ("float32", "float16", "int64", "int32", "uint8", "bool")


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
    model_card: dict | None = None  # issue 25: foal_edge/model_card.py's schema
    calibration: dict | None = None  # issue 25: per-head temperatures (foal_edge/confidence.py)
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


# -- the schema ---------------------------------------------------------------------------
# One small checker per kind of value; each names the field it refuses (e.g.
# "graphs.audio.inputs[0].dtype") and the range it wanted. A dependency-free layer: the
# runtime ships to Jetson without pydantic or jsonschema (and their compiled cores), and the
# schema is 25 fields.
class _Bad(Exception):
    """A value the schema refuses: `path` (keys and list indices, outermost first) and what
    was wanted."""

    def __init__(self, wanted: str, path: tuple = ()):
        super().__init__(wanted)
        self.wanted, self.path = wanted, path

    def inside(self, key) -> "_Bad":
        return _Bad(self.wanted, (key,) + self.path)

    def __str__(self) -> str:
        name = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in self.path).lstrip(".")
        return f"{name}: {self.wanted}" if name else self.wanted


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(v, lo: int, hi: int) -> int:
    if not _is_int(v) or not lo <= v <= hi:
        raise _Bad(f"an integer in {lo}..{hi}, not {_short(v)}")
    return v


def _num(v, lo: float, hi: float, open_low: bool = False) -> float:
    if not (_is_int(v) or isinstance(v, float)) or not (lo < v if open_low else lo <= v) or not v <= hi:
        raise _Bad(f"a number in {'(' if open_low else '['}{lo:g}, {hi:g}], not {_short(v)}")
    return float(v)


def _str(v, max_len: int = 256, choices=None, pattern: str | None = None) -> str:
    if not isinstance(v, str) or not v or len(v) > max_len or "\x00" in v:
        raise _Bad(f"a non-empty string of at most {max_len} characters, not {_short(v)}")
    if choices is not None and v not in choices:
        raise _Bad(f"one of {list(choices)}, not {_short(v)}")
    if pattern is not None and not re.fullmatch(pattern, v):
        raise _Bad(f"a string matching {pattern}, not {_short(v)}")
    return v


def _list(v, lo: int, hi: int, item, unique: bool = False) -> list:
    if not isinstance(v, list) or not lo <= len(v) <= hi:
        raise _Bad(f"a list of {lo}..{hi} items, not {_short(v)}")
    out = []
    for i, x in enumerate(v):
        try:
            out.append(item(x))
        except _Bad as exc:
            raise exc.inside(i) from None
    if unique and len(set(out)) != len(out):
        raise _Bad(f"a list without repeats, not {_short(v)}")
    return out


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _object(v, fields: dict, optional: dict | None = None) -> dict:
    """Check a JSON object against {key: checker}: every required key present, no unknown keys."""
    optional = optional or {}
    if not isinstance(v, dict):
        raise _Bad(f"an object, not {_short(v)}")
    unknown = sorted(set(v) - set(fields) - set(optional))
    if unknown:
        raise _Bad(f"not a field of schema version {SCHEMA_VERSION}", (unknown[0],))
    out = {}
    for key, check in {**fields, **optional}.items():
        if key not in v:
            if key in fields:
                raise _Bad("missing", (key,))
            continue
        try:
            out[key] = check(v[key])
        except _Bad as exc:
            raise exc.inside(key) from None
    return out


def _entries(v, limit: int, check) -> dict:
    """A JSON object of at most `limit` entries, each value checked; keys are names."""
    if not isinstance(v, dict) or len(v) > limit:
        raise _Bad(f"an object of at most {limit} entries, not {_short(v)}")
    out = {}
    for k, x in v.items():
        try:
            out[_str(k, 255)] = check(x)
        except _Bad as exc:
            raise exc.inside(k) from None
    return out


def _nullable(check):
    return lambda v: None if v is None else check(v)


def _dim(v):
    if isinstance(v, str):
        return _str(v, 256)
    return _int(v, 0, 1 << 24)


def _tensor(v):
    return _object(v, {"name": lambda x: _str(x, 128), "dtype": lambda x: _str(x, choices=DTYPES),
                       "shape": lambda x: _list(x, 0, 8, _dim)})


def _json_value(v, depth: int = 0):
    """Free-form report data (parity): plain JSON, bounded."""
    if depth > MAX_JSON_DEPTH:
        raise _Bad("nested too deeply")
    if isinstance(v, dict):
        return {_str(k, 128): _json_value(x, depth + 1) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_value(x, depth + 1) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise _Bad(f"plain JSON, not {_short(v)}")


_SHA256 = r"[0-9a-f]{64}"


def _sha256(v) -> str:
    return _str(v, 64, pattern=_SHA256)


def _graph(v):
    profile = lambda x: _object(x, {k: lambda d: _list(d, 0, 8, lambda i: _int(i, 0, 1 << 24))  # noqa: E731
                                    for k in ("min", "opt", "max")})
    return _object(v, {
        "file": lambda x: _str(x, 255),
        "format": lambda x: _str(x, choices=("onnx", "tensorrt")),
        "precision": lambda x: _str(x, choices=("fp32", "fp16", "int8")),
        "sha256": _sha256,
        "inputs": lambda x: _list(x, 1, 16, _tensor),
        "outputs": lambda x: _list(x, 1, 16, _tensor),
    }, {
        "profiles": lambda x: _entries(x, 16, profile),
        "opset": _nullable(lambda x: _int(x, 7, 100)),
        "tensorrt_version": _nullable(lambda x: _str(x, 32, pattern=r"\d+(\.\d+){0,3}")),
        "compute_capability": _nullable(lambda x: _str(x, 8, pattern=r"\d+\.\d+")),
        "parity": _nullable(_json_value),
        "external_data": lambda x: _entries(x, 256, _sha256),
        "variants": lambda x: _entries(x, 4, _variant),
    })


def _variant(v):
    return _object(v, {"file": lambda x: _str(x, 255), "sha256": _sha256,
                       "precision": lambda x: _str(x, choices=("fp32", "fp16", "int8"))},
                   {"about": lambda x: _str(x, 500)})


def _graphs(v):
    if not isinstance(v, dict):
        raise _Bad(f"an object naming the graphs, not {_short(v)}")
    missing = [g for g in GRAPHS if g not in v]
    unknown = sorted(set(v) - set(GRAPHS) - set(OPTIONAL_GRAPHS))
    if missing:
        raise _Bad(f"missing (a bundle has the graphs {list(GRAPHS)})", (missing[0],))
    if unknown:
        raise _Bad(f"not a graph this runtime runs ({list(GRAPHS + OPTIONAL_GRAPHS)})", (unknown[0],))
    return _entries(v, 8, _graph)


def _demo(v):
    return _object(v, {"audio": lambda x: _str(x, 255), "frames": lambda x: _str(x, 255),
                       "fps": lambda x: _num(x, 0.0, 1000.0, open_low=True),
                       "sha256": lambda x: _entries(x, 8, _sha256)},
                   {"expected": lambda x: _str(x, 64)})


_LABEL = lambda x: _str(x, 64)  # noqa: E731
_MANIFEST_FIELDS = {
    "schema_version": lambda x: _int(x, SCHEMA_VERSION, SCHEMA_VERSION),
    "preset": lambda x: _str(x, 64),
    "labels": lambda x: _list(x, 2, 64, _LABEL, unique=True),
    "attributes": lambda x: _list(x, 0, 16, _LABEL, unique=True),
    "sample_rate": lambda x: _int(x, 8000, 48000),
    "audio_seconds": lambda x: _num(x, 0.1, 60.0),
    "frames_per_clip": lambda x: _int(x, 1, 1024),
    "image_size": lambda x: _int(x, 32, 1024),
    "clip_mean": lambda x: _list(x, 3, 3, lambda m: _num(m, 0.0, 1.0)),
    "clip_std": lambda x: _list(x, 3, 3, lambda m: _num(m, 1e-3, 1.0)),
    "wavlm_conv_kernel": lambda x: _list(x, 1, 16, lambda k: _int(k, 1, 1024)),
    "wavlm_conv_stride": lambda x: _list(x, 1, 16, lambda k: _int(k, 1, 1024)),
    "graphs": _graphs,
}
_MANIFEST_OPTIONAL = {"demo": _nullable(_demo), "created_by": lambda x: _str(x, 128),
                      "model_card": _nullable(lambda x: _model_card(x)),  # issue 25
                      "calibration": _nullable(lambda x: _calibration(x))}  # issue 25


def _model_card(v):  # issue 25: the schemas live beside their readers (imported late: they import this module)
    from .model_card import check_card
    return check_card(v)


def _calibration(v):  # issue 25
    from .confidence import check_calibration
    return check_calibration(v)


def check_manifest(raw) -> Manifest:
    """The manifest's JSON against the schema: a Manifest, or BundleError naming the field."""
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if isinstance(raw, dict) and (version != SCHEMA_VERSION or not _is_int(version)):
        raise _Bad(f"manifest schema version {_short(version)}, this foal-edge reads version {SCHEMA_VERSION} "
                   "(or install the foal-edge that wrote it)", ("schema_version",))
    if not isinstance(raw, dict):
        raise _Bad(f"a JSON object, not {type(raw).__name__}")
    d = _object(raw, _MANIFEST_FIELDS, _MANIFEST_OPTIONAL)
    if len(d["wavlm_conv_kernel"]) != len(d["wavlm_conv_stride"]):
        raise _Bad("one stride per kernel", ("wavlm_conv_stride",))
    return Manifest.from_dict(d)


def _read_json(path: Path):
    """The manifest's JSON: a regular file of bounded size and nesting."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise _Bad("not a regular file")
        if st.st_size > MAX_MANIFEST_BYTES:
            raise _Bad(f"{st.st_size} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have")
        data = f.read(MAX_MANIFEST_BYTES + 1)
    try:
        raw = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise _Bad(f"not valid JSON ({exc})") from None
    except RecursionError:
        raise _Bad(f"nested more than {MAX_JSON_DEPTH} levels deep") from None
    _depth(raw)
    return raw


def _depth(v, level: int = 0) -> None:
    if level > MAX_JSON_DEPTH:
        raise _Bad(f"nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(v, dict):
        for x in v.values():
            _depth(x, level + 1)
    elif isinstance(v, list):
        for x in v:
            _depth(x, level + 1)


def load_manifest(bundle, verify: bool = True) -> Manifest:
    """Read and check a bundle's manifest against the schema; every file it names must be a
    regular file inside the bundle; with `verify`, every file's sha256 too (graphs, their
    external data, the demo clip), and no graph may name external data the manifest lacks."""
    bundle = Path(bundle)
    rebuild = "rebuild it with `python -m export.build_engine --checkpoint CKPT --out DIR`"
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: no such bundle directory; {rebuild}")
    if not (bundle / MANIFEST).exists():
        raise BundleError(f"{bundle}: no {MANIFEST}, so this is not a foal-edge bundle; {rebuild}")
    path = bundle_file(bundle, MANIFEST, "the manifest")
    try:
        manifest = check_manifest(_read_json(path))
    except _Bad as exc:
        raise BundleError(f"{bundle / MANIFEST}: {exc}; {rebuild}") from None
    except OSError as exc:
        raise BundleError(f"{bundle / MANIFEST}: cannot read it ({exc.strerror})") from None
    for name, graph in manifest.graphs.items():
        file = bundle_file(bundle, graph.file, f"graph {name!r}")
        expected = {}
        for side, digest in graph.external_data.items():
            bundle_file(bundle, side, f"graph {name!r}'s external data")
            expected[side] = digest
        if verify and sha256_file(file) != graph.sha256:
            raise BundleError(f"{file}: sha256 does not match the manifest (corrupt, truncated or swapped copy); "
                              f"copy the bundle again or {rebuild}")
        if graph.format == "onnx":
            root = file.parent
            for location in onnx_external_data(file):
                relative = (root / location).resolve()
                if bundle.resolve() not in relative.parents:
                    raise BundleError(f"{file}: external data {location!r} lies outside the bundle directory; "
                                      "refusing to load it")
                key = relative.relative_to(bundle.resolve()).as_posix()
                if key not in graph.external_data:
                    raise BundleError(f"{file}: external data {location!r} is not listed (with its sha256) in the "
                                      f"manifest; {rebuild}")
        for backend, variant in graph.variants.items():
            if backend != "onnxruntime-cuda":
                raise BundleError(f"{bundle / MANIFEST}: graphs.{name}.variants.{backend}: only onnxruntime-cuda "
                                  "variants exist")
            bundle_file(bundle, variant["file"], f"graph {name!r}'s {backend} variant")
            expected[variant["file"]] = variant["sha256"]
        if verify:
            for relative, digest in expected.items():
                if sha256_file(bundle_file(bundle, relative, f"graph {name!r}")) != digest:
                    raise BundleError(f"{bundle / relative}: sha256 does not match the manifest (corrupt, truncated "
                                      f"or swapped copy); copy the bundle again or {rebuild}")
    if manifest.demo:
        for key in ("audio", "frames"):
            demo_file = manifest.demo[key]
            bundle_file(bundle, demo_file, f"the demo {key}")
            if demo_file not in manifest.demo["sha256"]:
                raise BundleError(f"{bundle / MANIFEST}: demo.sha256 has no hash for {demo_file}; {rebuild}")
    return manifest


def demo_file(bundle, manifest: Manifest, key: str) -> Path:
    """The demo clip's audio or frames file, confined to the bundle and checked against its hash."""
    if not manifest.demo:
        raise BundleError(f"{bundle} ships no demo clip; rebuild it with `python -m export.build_engine`")
    name = manifest.demo[key]
    path = bundle_file(Path(bundle), name, f"the demo {key}")
    if sha256_file(path) != manifest.demo["sha256"].get(name):
        raise BundleError(f"{path}: sha256 does not match the manifest; copy the bundle again")
    return path


def check_graph_io(bundle, name: str, graph: GraphInfo, actual: dict) -> None:
    """The manifest's description of a graph against the graph file itself (`actual`: name ->
    (dtype, shape) as the backend read it): the same names, dtypes, ranks and fixed dims, and
    the names the runtime feeds and reads all present. Outputs are then read by name."""
    fix = f"the manifest does not describe {graph.file}: copy the bundle again or rebuild it"
    inputs, outputs = GRAPH_IO[name]
    declared = {t.name: t for t in graph.inputs + graph.outputs}
    if len(declared) != len(graph.inputs) + len(graph.outputs):
        raise BundleError(f"{bundle}: graphs.{name} declares a tensor name twice; {fix}")
    for role, want, listed in (("input", inputs, graph.inputs), ("output", outputs, graph.outputs)):
        names = {t.name for t in listed}
        allowed = set(want) | (set(OPTIONAL_OUTPUTS.get(name, {})) if role == "output" else set())
        for n in sorted(set(want) - names):
            raise BundleError(f"{bundle}: graphs.{name} has no {role} {n!r} (the {name} graph's {role}s are "
                              f"{sorted(allowed)}); {fix}")
        for n in sorted(names - allowed):
            raise BundleError(f"{bundle}: graphs.{name} {role} {n!r} is not one the runtime knows "
                              f"({sorted(allowed)}); {fix}")
    for n in sorted(set(declared) ^ set(actual)):
        where = "the manifest" if n in declared else graph.file
        raise BundleError(f"{bundle}: graphs.{name}: tensor {n!r} is in {where} only; {fix}")
    ranks = {**inputs, **outputs, **OPTIONAL_OUTPUTS.get(name, {})}
    for n, t in declared.items():
        dtype, shape = actual[n]
        if t.dtype != dtype:
            raise BundleError(f"{bundle}: graphs.{name} tensor {n!r} is {dtype} in {graph.file}, the manifest says "
                              f"{t.dtype}; {fix}")
        if len(t.shape) != len(shape) or len(shape) != ranks[n]:
            raise BundleError(f"{bundle}: graphs.{name} tensor {n!r} has rank {len(shape)} in {graph.file}, the "
                              f"manifest says {len(t.shape)} and the runtime needs {ranks[n]}; {fix}")
        for i, (a, b) in enumerate(zip(t.shape, shape)):
            if isinstance(a, int) and isinstance(b, int) and a != b:
                raise BundleError(f"{bundle}: graphs.{name} tensor {n!r} dim {i} is {b} in {graph.file}, the "
                                  f"manifest says {a}; {fix}")
    expected = {"float32"} if name != "preprocess" else {"float32", "uint8"}
    for n, (dtype, _) in actual.items():
        if n in dict(inputs) and dtype not in expected:
            raise BundleError(f"{bundle}: graphs.{name} input {n!r} is {dtype}; the runtime feeds "
                              f"{' or '.join(sorted(expected))}; {fix}")


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
