"""What the runtime may read from a bundle: regular files inside the bundle directory (after
resolving symlinks), each with a hash in the manifest, and no ONNX external data that the
manifest does not list.

ONNX keeps large weights in side files named by each tensor's `external_data` "location".
Which ONNX Runtime versions refuse locations outside the model's directory varies, so the
locations are read here, from the protobuf wire format, without the `onnx` package (not a
runtime dependency) and without copying the weights: the file is memory-mapped and every
length-delimited field that is not on the path to a tensor is skipped.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import stat
from pathlib import Path

from ..errors import BundleError

MAX_NESTING = 64  # graphs inside attributes inside nodes inside graphs...


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bundle_file(bundle: Path, relative, what: str) -> Path:
    """`relative` resolved inside `bundle`: a regular file, symlinks followed and confined."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise BundleError(f"{bundle}: {what} names {relative!r}, not a file name inside the bundle")
    root = Path(bundle).resolve()
    path = (root / relative).resolve()
    if root not in path.parents:
        raise BundleError(f"{bundle}: {what} names {relative!r}, outside the bundle directory; refusing to read it")
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise BundleError(f"{bundle}: {what} {relative} is missing; copy the bundle again or rebuild it") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise BundleError(f"{bundle}: {what} {relative} is {kind}, not a regular file; copy the bundle again "
                          "or rebuild it")
    return path


# ONNX field numbers (onnx/onnx.proto): only those on the way to a TensorProto.
_MODEL_GRAPH, _MODEL_FUNCTIONS, _MODEL_TRAINING = 7, 25, 20
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE = 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_FUNCTION_NODE = 7
_TRAINING_GRAPHS = (1, 2)  # initialization, algorithm
_TENSOR_EXTERNAL = 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


class _Malformed(Exception):
    pass


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, start, end) of each length-delimited field in buf[start:end]; other wire
    types are skipped."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(buf, pos, end)
            if pos + size > end:
                raise _Malformed("field runs past its message")
            yield number, pos, pos + size
            pos += size
        else:
            raise _Malformed(f"wire type {wire}")
    if pos != end:
        raise _Malformed("message runs past its end")


def _tensor(buf, s, e, out: list) -> None:
    for number, a, b in _fields(buf, s, e):
        if number == _TENSOR_EXTERNAL:
            entry = {n: bytes(buf[x:y]) for n, x, y in _fields(buf, a, b)}
            if entry.get(_ENTRY_KEY) == b"location":
                out.append(entry.get(_ENTRY_VALUE, b"").decode("utf-8", "replace"))


def _sparse(buf, s, e, out) -> None:
    for number, a, b in _fields(buf, s, e):
        if number in (_SPARSE_VALUES, _SPARSE_INDICES):
            _tensor(buf, a, b, out)


def _nodes(buf, s, e, out, depth, node_field) -> None:
    for number, a, b in _fields(buf, s, e):
        if number == node_field:
            for n2, c, d in _fields(buf, a, b):
                if n2 == _NODE_ATTRIBUTE:
                    _attribute(buf, c, d, out, depth)


def _attribute(buf, s, e, out, depth) -> None:
    for number, a, b in _fields(buf, s, e):
        if number in (_ATTR_T, _ATTR_TENSORS):
            _tensor(buf, a, b, out)
        elif number in (_ATTR_SPARSE, _ATTR_SPARSES):
            _sparse(buf, a, b, out)
        elif number in (_ATTR_G, _ATTR_GRAPHS):
            _graph(buf, a, b, out, depth + 1)


def _graph(buf, s, e, out, depth) -> None:
    if depth > MAX_NESTING:
        raise _Malformed(f"subgraphs nested deeper than {MAX_NESTING}")
    for number, a, b in _fields(buf, s, e):
        if number == _GRAPH_INITIALIZER:
            _tensor(buf, a, b, out)
        elif number == _GRAPH_SPARSE:
            _sparse(buf, a, b, out)
    _nodes(buf, s, e, out, depth, _GRAPH_NODE)


def onnx_external_data(path: Path) -> list[str]:
    """The external-data locations an ONNX file names (relative to its directory), in order."""
    out: list[str] = []
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise BundleError(f"{path}: empty file, not an ONNX graph; copy the bundle again or rebuild it")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                for number, a, b in _fields(buf, 0, len(buf)):
                    if number == _MODEL_GRAPH:
                        _graph(buf, a, b, out, 0)
                    elif number == _MODEL_FUNCTIONS:
                        _nodes(buf, a, b, out, 0, _FUNCTION_NODE)
                    elif number == _MODEL_TRAINING:
                        for n2, c, d in _fields(buf, a, b):
                            if n2 in _TRAINING_GRAPHS:
                                _graph(buf, c, d, out, 0)
            except _Malformed as exc:
                raise BundleError(f"{path}: not a valid ONNX file ({exc}); copy the bundle again or rebuild it") \
                    from None
    return list(dict.fromkeys(out))
