"""Every TensorRT name the code uses exists in TensorRT 10.3 (JetPack 6) and 11.4.

TensorRT cannot run here, so this static check is what keeps the builder and the runtime
honest: it walks the source, collects each attribute taken from a TensorRT object, and
looks it up in the name lists extracted from both versions' bindings (tests/data)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "export" / "tensorrt_build.py", ROOT / "foal_edge" / "backends" / "tensorrt.py"]
# Variables holding TensorRT objects in those files.
TRT_OBJECTS = {"trt", "builder", "network", "parser", "config", "profile", "engine", "context", "runtime",
               "logger", "cache"}
TRT_SELF_ATTRS = {"trt", "engine", "context", "runtime"}
# Names `strings` cannot see in the compiled bindings: Python-level module attributes
# (tensorrt/__init__.py defines nptype and __version__) and short class/enum names that
# the extraction missed (its README: "keep a small, commented allow-list").
ALLOWED_MISSING = {"__version__", "nptype", "Logger", "Builder", "Runtime", "num_errors", "INPUT", "serialize"}
# Names we use only where they exist (looked up by name, refused clearly otherwise).
VERSION_GUARDED = {"FP16"}  # BuilderFlag.FP16: TensorRT 10.x only


def names(version):
    return set((ROOT / "tests" / "data" / f"tensorrt-{version}.names").read_text().split())


def _root(node):
    while isinstance(node, ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id == "self":
            return "self." + node.attr
        node = node.value
    if isinstance(node, ast.Call):
        return _root(node.func)
    return node.id if isinstance(node, ast.Name) else None


def used_names():
    used = set()
    for path in FILES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                root = _root(node.value) if not (isinstance(node.value, ast.Name) and node.value.id == "self") else None
                if root in TRT_OBJECTS or (root or "").removeprefix("self.") in TRT_SELF_ATTRS and \
                        (root or "").startswith("self."):
                    used.add(node.attr)
            # getattr(trt.X, "NAME", ...) and getattr(trt, "NAME", ...)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
                    and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                    and _root(node.args[0]) in TRT_OBJECTS:
                used.add(node.args[1].value)
            # IProgressMonitor callbacks TensorRT calls by name
            if isinstance(node, ast.ClassDef) and node.name == "Monitor":
                used.update(f.name for f in node.body if isinstance(f, ast.FunctionDef) and f.name != "__init__")
    return used


def test_collector_sees_the_core_api():
    used = used_names()
    for expected in ("STRONGLY_TYPED", "set_memory_pool_limit", "build_serialized_network", "execute_async_v3",
                     "set_tensor_address", "set_input_shape", "num_io_tensors", "get_tensor_name",
                     "create_timing_cache", "phase_start"):
        assert expected in used


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0"])
def test_every_tensorrt_name_exists(version):
    known = names(version) | ALLOWED_MISSING
    missing = sorted(n for n in used_names() - known if n not in VERSION_GUARDED)
    assert not missing, f"not in TensorRT {version}: {missing}"


def test_fp16_flag_is_guarded_because_11_removed_it():
    assert "FP16" in names("10.3.0") and "FP16" not in names("11.4.0")
    assert "EXPLICIT_BATCH" not in used_names()  # gone in 11, and implicit since 10
    source = FILES[0].read_text()
    assert 'getattr(trt.BuilderFlag, "FP16", None)' in source


def test_every_file_that_holds_tensorrt_objects_is_checked():
    """TensorRT objects live in the two thin files above: any other file that imports TensorRT
    under a name would escape the check."""
    holders = {p for p in ROOT.rglob("*.py") if ".git" not in p.parts and
               "import tensorrt as" in p.read_text(errors="replace") and p.name != Path(__file__).name}
    assert holders == set(FILES), sorted(str(p.relative_to(ROOT)) for p in holders ^ set(FILES))
