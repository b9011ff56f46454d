"""Loading a bundle, in four passes: the manifest read and checked against the schema; every
file it names confined to the bundle directory; (with verify) every one of them hashed; the
ONNX graphs' own external-data references, read from the checked files, confined and listed.
No file is run before all four pass."""

from __future__ import annotations

from pathlib import Path

from ..errors import BundleError
from .files import bundle_file, onnx_external_data, sha256_file
from .schema import SchemaError, check_manifest, read_json
from .types import MANIFEST, Manifest

REBUILD = "rebuild it with `python -m export.build_engine --checkpoint CKPT --out DIR`"


def load_manifest(bundle, verify: bool = True) -> Manifest:
    """Read and check a bundle's manifest against the schema; every file it names must be a
    regular file inside the bundle; with `verify`, every file's sha256 too (graphs, their
    external data, their variants), and no graph may name external data the manifest lacks.
    The demo clip is confined here and hashed when it is read (`demo_file`)."""
    bundle = Path(bundle)
    manifest = _read(bundle)
    hashes = _confine(bundle, manifest)
    if verify:
        for path, (relative, digest) in hashes.items():
            if sha256_file(path) != digest:
                raise BundleError(f"{path}: sha256 does not match the manifest (corrupt, truncated or swapped copy); "
                                  f"copy the bundle again or {REBUILD}")
    _check_external_data(bundle, manifest)
    return manifest


def _read(bundle: Path) -> Manifest:
    """Pass 1: manifest.json, a bounded regular file inside the bundle, against the schema."""
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: no such bundle directory; {REBUILD}")
    if not (bundle / MANIFEST).exists():
        raise BundleError(f"{bundle}: no {MANIFEST}, so this is not a foal-edge bundle; {REBUILD}")
    path = bundle_file(bundle, MANIFEST, "the manifest")
    try:
        return check_manifest(read_json(path))
    except SchemaError as exc:
        raise BundleError(f"{bundle / MANIFEST}: {exc}; {REBUILD}") from None
    except OSError as exc:
        raise BundleError(f"{bundle / MANIFEST}: cannot read it ({exc.strerror})") from None


def _confine(bundle: Path, manifest: Manifest) -> dict[Path, tuple[str, str]]:
    """Pass 2: every file the manifest names is a regular file inside the bundle.
    -> {resolved path: (name in the manifest, its sha256)} of the files a predictor may load."""
    hashes = {}
    for name, graph in manifest.graphs.items():
        hashes[bundle_file(bundle, graph.file, f"graph {name!r}")] = (graph.file, graph.sha256)
        for side, digest in graph.external_data.items():
            hashes[bundle_file(bundle, side, f"graph {name!r}'s external data")] = (side, digest)
        for backend, variant in graph.variants.items():
            if backend != "onnxruntime-cuda":
                raise BundleError(f"{bundle / MANIFEST}: graphs.{name}.variants.{backend}: only onnxruntime-cuda "
                                  "variants exist")
            path = bundle_file(bundle, variant["file"], f"graph {name!r}'s {backend} variant")
            hashes[path] = (variant["file"], variant["sha256"])
            # A variant is an ONNX file too: its weight side files are listed and hashed like the graph's.
            for side, digest in variant.get("external_data", {}).items():
                hashes[bundle_file(bundle, side, f"graph {name!r}'s {backend} variant's external data")] = (side, digest)
    if manifest.demo:
        for key in ("audio", "frames"):
            demo = manifest.demo[key]
            bundle_file(bundle, demo, f"the demo {key}")
            if demo not in manifest.demo["sha256"]:
                raise BundleError(f"{bundle / MANIFEST}: demo.sha256 has no hash for {demo}; {REBUILD}")
    return hashes


def _check_external_data(bundle: Path, manifest: Manifest) -> None:
    """Pass 4: the external data each ONNX graph and each variant names lies inside the bundle
    and is listed (with its sha256, checked in pass 3) in the manifest."""
    for name, graph in manifest.graphs.items():
        if graph.format != "onnx":
            continue
        _check_external(bundle, bundle_file(bundle, graph.file, f"graph {name!r}"), graph.external_data)
        for backend, variant in graph.variants.items():
            file = bundle_file(bundle, variant["file"], f"graph {name!r}'s {backend} variant")
            _check_external(bundle, file, variant.get("external_data", {}))


def _check_external(bundle: Path, file: Path, listed: dict) -> None:
    root = bundle.resolve()
    for location in onnx_external_data(file):
        relative = (file.parent / location).resolve()
        if root not in relative.parents:
            raise BundleError(f"{file}: external data {location!r} lies outside the bundle directory; "
                              "refusing to load it")
        if relative.relative_to(root).as_posix() not in listed:
            raise BundleError(f"{file}: external data {location!r} is not listed (with its sha256) in the "
                              f"manifest; {REBUILD}")


def demo_file(bundle, manifest: Manifest, key: str) -> Path:
    """The demo clip's audio or frames file, confined to the bundle and checked against its hash."""
    if not manifest.demo:
        raise BundleError(f"{bundle} ships no demo clip; rebuild it with `python -m export.build_engine`")
    name = manifest.demo[key]
    path = bundle_file(Path(bundle), name, f"the demo {key}")
    if sha256_file(path) != manifest.demo["sha256"].get(name):
        raise BundleError(f"{path}: sha256 does not match the manifest; copy the bundle again")
    return path
