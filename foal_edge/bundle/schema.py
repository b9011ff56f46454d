"""The manifest's JSON schema, written once: one small checker per kind of value, each naming
the field it refuses (e.g. "graphs.audio.inputs[0].dtype") and the range it wanted.

A dependency-free layer: the runtime ships to Jetson without pydantic or jsonschema (and
their compiled cores), and the schema is 25 fields.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from .types import GRAPHS, OPTIONAL_GRAPHS, SCHEMA_VERSION, Manifest

MAX_MANIFEST_BYTES = 1 << 20  # a real manifest is a few kB
MAX_JSON_DEPTH = 12  # a real manifest nests 6 deep (graphs -> audio -> parity -> ... -> values)
DTYPES = ("float32", "float16", "int64", "int32", "uint8", "bool")


class SchemaError(Exception):
    """A value the schema refuses: `path` (keys and list indices, outermost first) and what
    was wanted. The loader turns it into a BundleError naming the manifest."""

    def __init__(self, wanted: str, path: tuple = ()):
        super().__init__(wanted)
        self.wanted, self.path = wanted, path

    def inside(self, key) -> "SchemaError":
        return SchemaError(self.wanted, (key,) + self.path)

    def __str__(self) -> str:
        name = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in self.path).lstrip(".")
        return f"{name}: {self.wanted}" if name else self.wanted


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(v, lo: int, hi: int) -> int:
    if not _is_int(v) or not lo <= v <= hi:
        raise SchemaError(f"an integer in {lo}..{hi}, not {_short(v)}")
    return v


def _num(v, lo: float, hi: float, open_low: bool = False) -> float:
    if not (_is_int(v) or isinstance(v, float)) or not (lo < v if open_low else lo <= v) or not v <= hi:
        raise SchemaError(f"a number in {'(' if open_low else '['}{lo:g}, {hi:g}], not {_short(v)}")
    return float(v)


def _str(v, max_len: int = 256, choices=None, pattern: str | None = None) -> str:
    if not isinstance(v, str) or not v or len(v) > max_len or "\x00" in v:
        raise SchemaError(f"a non-empty string of at most {max_len} characters, not {_short(v)}")
    if choices is not None and v not in choices:
        raise SchemaError(f"one of {list(choices)}, not {_short(v)}")
    if pattern is not None and not re.fullmatch(pattern, v):
        raise SchemaError(f"a string matching {pattern}, not {_short(v)}")
    return v


def _list(v, lo: int, hi: int, item, unique: bool = False) -> list:
    if not isinstance(v, list) or not lo <= len(v) <= hi:
        raise SchemaError(f"a list of {lo}..{hi} items, not {_short(v)}")
    out = []
    for i, x in enumerate(v):
        try:
            out.append(item(x))
        except SchemaError as exc:
            raise exc.inside(i) from None
    if unique and len(set(out)) != len(out):
        raise SchemaError(f"a list without repeats, not {_short(v)}")
    return out


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _object(v, fields: dict, optional: dict | None = None) -> dict:
    """Check a JSON object against {key: checker}: every required key present, no unknown keys."""
    optional = optional or {}
    if not isinstance(v, dict):
        raise SchemaError(f"an object, not {_short(v)}")
    unknown = sorted(set(v) - set(fields) - set(optional))
    if unknown:
        raise SchemaError(f"not a field of schema version {SCHEMA_VERSION}", (unknown[0],))
    out = {}
    for key, check in {**fields, **optional}.items():
        if key not in v:
            if key in fields:
                raise SchemaError("missing", (key,))
            continue
        try:
            out[key] = check(v[key])
        except SchemaError as exc:
            raise exc.inside(key) from None
    return out


def _entries(v, limit: int, check) -> dict:
    """A JSON object of at most `limit` entries, each value checked; keys are names."""
    if not isinstance(v, dict) or len(v) > limit:
        raise SchemaError(f"an object of at most {limit} entries, not {_short(v)}")
    out = {}
    for k, x in v.items():
        try:
            out[_str(k, 255)] = check(x)
        except SchemaError as exc:
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
        raise SchemaError("nested too deeply")
    if isinstance(v, dict):
        return {_str(k, 128): _json_value(x, depth + 1) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_value(x, depth + 1) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise SchemaError(f"plain JSON, not {_short(v)}")


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
                   {"about": lambda x: _str(x, 500), "external_data": lambda x: _entries(x, 256, _sha256)})


def _graphs(v):
    if not isinstance(v, dict):
        raise SchemaError(f"an object naming the graphs, not {_short(v)}")
    missing = [g for g in GRAPHS if g not in v]
    unknown = sorted(set(v) - set(GRAPHS) - set(OPTIONAL_GRAPHS))
    if missing:
        raise SchemaError(f"missing (a bundle has the graphs {list(GRAPHS)})", (missing[0],))
    if unknown:
        raise SchemaError(f"not a graph this runtime runs ({list(GRAPHS + OPTIONAL_GRAPHS)})", (unknown[0],))
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
                      "model_card": _nullable(lambda x: _model_card(x)),
                      "calibration": _nullable(lambda x: _calibration(x))}


def _model_card(v):  # the card's schema lives beside its reader (imported late: it imports this module)
    from ..model_card import check_card
    return check_card(v)


def _calibration(v):
    from ..confidence import check_calibration
    return check_calibration(v)


def check_manifest(raw) -> Manifest:
    """The manifest's JSON against the schema: a Manifest, or BundleError naming the field."""
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if isinstance(raw, dict) and (version != SCHEMA_VERSION or not _is_int(version)):
        raise SchemaError(f"manifest schema version {_short(version)}, this foal-edge reads version {SCHEMA_VERSION} "
                   "(or install the foal-edge that wrote it)", ("schema_version",))
    if not isinstance(raw, dict):
        raise SchemaError(f"a JSON object, not {type(raw).__name__}")
    d = _object(raw, _MANIFEST_FIELDS, _MANIFEST_OPTIONAL)
    if len(d["wavlm_conv_kernel"]) != len(d["wavlm_conv_stride"]):
        raise SchemaError("one stride per kernel", ("wavlm_conv_stride",))
    return Manifest.from_dict(d)


def read_json(path: Path):
    """The manifest's JSON: a regular file of bounded size and nesting."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise SchemaError("not a regular file")
        if st.st_size > MAX_MANIFEST_BYTES:
            raise SchemaError(f"{st.st_size} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have")
        data = f.read(MAX_MANIFEST_BYTES + 1)
    try:
        raw = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise SchemaError(f"not valid JSON ({exc})") from None
    except RecursionError:
        raise SchemaError(f"nested more than {MAX_JSON_DEPTH} levels deep") from None
    _depth(raw)
    return raw


def _depth(v, level: int = 0) -> None:
    if level > MAX_JSON_DEPTH:
        raise SchemaError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(v, dict):
        for x in v.values():
            _depth(x, level + 1)
    elif isinstance(v, list):
        for x in v:
            _depth(x, level + 1)
