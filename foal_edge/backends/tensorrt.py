"""Native TensorRT backend: one engine, name-based I/O, one stream.

Device buffers are allocated once at each input's profile maximum (and the matching
output maximum), host buffers are pinned; each call sets the real input shapes with
`set_input_shape`. Calls are serialised with a lock, so one runner is safe to share
between threads. Works with TensorRT 10.x and 11.x (names checked against both in tests).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..cuda import open_cuda
from ..errors import BackendUnavailableError, IncompatibleEngineError, InferenceError, InvalidInputError
from .base import Runner


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailableError(
            "TensorRT is not installed: on Jetson use JetPack's (a virtual environment made with "
            "--system-site-packages), on x86 `pip install 'foal-edge[tensorrt]'`") from exc
    return trt


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


class TensorRTRunner(Runner):
    """Outputs come back to the host (float32) after every run: keep_on_device is accepted and
    has no effect, so a preprocess engine's pixels cross to the host and back to the video engine."""

    def __init__(self, engine_path, device: int = 0, expect_version: str | None = None,
                 expect_capability: str | None = None, rebuild_hint: str = ""):
        trt = import_tensorrt()
        self.trt = trt
        self.path = Path(engine_path)
        self.device = "cuda"
        self.cuda = open_cuda(device)
        check_engine(engine_path, expect_version, expect_capability, trt.__version__,
                     self.cuda.compute_capability(), rebuild_hint)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with open(engine_path, "rb") as f:
            self.engine = self.runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise IncompatibleEngineError(f"{engine_path}: TensorRT could not deserialize the engine; {rebuild_hint}")
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.stream()
        self.lock = threading.Lock()
        self.inputs, self.outputs = [], []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in self.inputs + self.outputs}
        # What the engine itself declares: {name: (dtype, shape with None for dynamic)}
        self.io = {n: (self.dtypes[n].name, [None if d < 0 else int(d) for d in self.engine.get_tensor_shape(n)])
                   for n in self.inputs + self.outputs}
        # Largest shapes: each input's profile max; outputs from setting every input to its max.
        self.max_shapes = {n: tuple(self.engine.get_tensor_profile_shape(n, 0)[2]) for n in self.inputs}
        for n, shape in self.max_shapes.items():
            self.context.set_input_shape(n, shape)
        for n in self.outputs:
            self.max_shapes[n] = tuple(self.context.get_tensor_shape(n))
        self.device_ptrs, self.host, self._pinned = {}, {}, []
        for n, shape in self.max_shapes.items():
            nbytes = int(np.prod(shape)) * self.dtypes[n].itemsize
            self.device_ptrs[n] = self.cuda.malloc(nbytes)
            self.host[n], ptr = self.cuda.pinned_empty((int(np.prod(shape)),), self.dtypes[n])
            self._pinned.append(ptr)
            self.context.set_tensor_address(n, self.device_ptrs[n])

    def run(self, feeds: dict[str, np.ndarray], keep_on_device: bool = False) -> list[np.ndarray]:
        with self.lock, self.cuda.active():
            if self.stream is None:
                raise InferenceError(f"{self.path.name}: the runner is closed")
            for n in self.inputs:
                x = np.ascontiguousarray(feeds[n], dtype=self.dtypes[n])
                limit = self.max_shapes[n]
                if x.ndim != len(limit) or any(d > m for d, m in zip(x.shape, limit)):
                    raise InvalidInputError(f"input {n!r} of shape {x.shape} exceeds the engine's profile "
                                            f"maximum {limit}; rebuild with a larger --max-audio-seconds/--frames")
                staged = self.host[n][: x.size].reshape(x.shape)
                staged[...] = x
                self.context.set_input_shape(n, x.shape)
                self.cuda.htod(self.device_ptrs[n], staged, self.stream)
            if not self.context.execute_async_v3(self.stream):
                raise InferenceError(f"{self.path.name}: TensorRT execute_async_v3 failed (see the TensorRT log "
                                     "above); check free GPU memory, or rebuild the engine on this device")
            results = []
            for n in self.outputs:
                shape = tuple(self.context.get_tensor_shape(n))
                out = self.host[n][: int(np.prod(shape))].reshape(shape)
                self.cuda.dtoh(out, self.device_ptrs[n], self.stream)
                results.append(out)
            self.cuda.synchronize(self.stream)
            return [r.astype(np.float32, copy=True) for r in results]

    def close(self) -> None:
        for ptr in getattr(self, "device_ptrs", {}).values():
            self.cuda.free(ptr)
        for ptr in getattr(self, "_pinned", []):
            self.cuda.free_pinned(ptr)
        if getattr(self, "stream", None) is not None:
            self.cuda.destroy_stream(self.stream)
        self.device_ptrs, self._pinned, self.stream = {}, [], None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
