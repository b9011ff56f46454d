"""The little CUDA the TensorRT backend needs (device buffers, pinned host buffers, one
stream), behind one interface with two implementations: cuda-python (what NVIDIA's own
TensorRT samples use now) first, pycuda as the alternative. Every call goes through one
checker that turns an error code into a readable exception; every resource frees itself.
"""

from __future__ import annotations

import contextlib
import ctypes

import numpy as np

from .errors import BackendUnavailableError, InferenceError


class CudaError(InferenceError):
    """A CUDA runtime call failed."""


def _import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


class CudaPython:
    name = "cuda-python"

    def __init__(self, device: int = 0):
        self.rt = _import_cudart()
        self.check(self.rt.cudaSetDevice(device))
        self.device = device

    def check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            _, name = self.rt.cudaGetErrorName(err)
            raise CudaError(f"CUDA error {int(err)} ({name.decode() if isinstance(name, bytes) else name})")
        return rest[0] if len(rest) == 1 else (rest or None)

    @contextlib.contextmanager
    def active(self):
        """Make this device current for the calling thread (the runtime API's device is per thread)."""
        self.check(self.rt.cudaSetDevice(self.device))
        yield

    def compute_capability(self) -> str:
        attr = self.rt.cudaDeviceAttr
        major = self.check(self.rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, self.device))
        minor = self.check(self.rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, self.device))
        return f"{major}.{minor}"

    def malloc(self, nbytes: int) -> int:
        return int(self.check(self.rt.cudaMalloc(max(nbytes, 1))))

    def free(self, ptr: int) -> None:
        self.check(self.rt.cudaFree(ptr))

    def pinned_empty(self, shape, dtype) -> tuple[np.ndarray, int]:
        """A page-locked host array (and its pointer, to free it)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        ptr = int(self.check(self.rt.cudaMallocHost(max(nbytes, 1))))
        raw = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8)), shape=(max(nbytes, 1),))
        return raw[:nbytes].view(dtype).reshape(shape), ptr

    def free_pinned(self, ptr: int) -> None:
        self.check(self.rt.cudaFreeHost(ptr))

    def stream(self) -> int:
        return int(self.check(self.rt.cudaStreamCreate()))

    def destroy_stream(self, stream: int) -> None:
        self.check(self.rt.cudaStreamDestroy(stream))

    def htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.check(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream))

    def dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.check(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream))

    def synchronize(self, stream: int) -> None:
        self.check(self.rt.cudaStreamSynchronize(stream))


class PyCuda:
    name = "pycuda"

    def __init__(self, device: int = 0):
        import pycuda.driver as drv

        self.drv = drv
        drv.init()
        self.dev = drv.Device(device)
        self.ctx = self.dev.retain_primary_context()
        self.ctx.push()
        self._allocs, self._streams = {}, {}

    @contextlib.contextmanager
    def active(self):
        """Push this device's context for the calling thread (pycuda contexts are per thread)."""
        self.ctx.push()
        try:
            yield
        finally:
            self.drv.Context.pop()

    def compute_capability(self) -> str:
        major, minor = self.dev.compute_capability()
        return f"{major}.{minor}"

    def malloc(self, nbytes: int) -> int:
        alloc = self.drv.mem_alloc(max(nbytes, 1))
        self._allocs[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        self._allocs.pop(ptr).free()

    def pinned_empty(self, shape, dtype):
        arr = self.drv.pagelocked_empty(shape, dtype)
        self._allocs[arr.ctypes.data] = arr
        return arr, arr.ctypes.data

    def free_pinned(self, ptr: int) -> None:
        self._allocs.pop(ptr, None)

    def stream(self) -> int:
        s = self.drv.Stream()
        self._streams[s.handle] = s
        return s.handle

    def destroy_stream(self, stream: int) -> None:
        self._streams.pop(stream, None)

    def htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        self.drv.memcpy_htod_async(dst, src, self._streams[stream])

    def dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        self.drv.memcpy_dtoh_async(dst, src, self._streams[stream])

    def synchronize(self, stream: int) -> None:
        self._streams[stream].synchronize()


def open_cuda(device: int = 0):
    """cuda-python if importable, else pycuda; BackendUnavailableError if neither (or no GPU)."""
    errors = []
    for cls in (CudaPython, PyCuda):
        try:
            return cls(device)
        except ImportError as exc:
            errors.append(f"{cls.name}: not installed ({exc.name})")
        except Exception as exc:  # no driver, no device
            errors.append(f"{cls.name}: {exc}")
    raise BackendUnavailableError("no usable CUDA binding: " + "; ".join(errors)
                                  + ". Install one: pip install 'foal-edge[cuda]' (or [pycuda])")
