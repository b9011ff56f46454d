"""ONNX Runtime backend: one InferenceSession per graph.

Full graph optimisation, intra-op threads = physical cores (or `threads`), CUDA provider
when asked and present. `InferenceSession.run` is thread-safe, so one runner serves
several threads.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, BundleError, InferenceError


def import_onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailableError("ONNX Runtime is not installed: pip install 'foal-edge[cpu]' "
                                      "(or 'foal-edge[gpu]' for CUDA)") from exc
    # Errors only: ONNX Runtime 1.31 warns "No registered plugin EP device found for
    # 'CUDAExecutionProvider'" at every CUDA session (it looks for plugin providers first);
    # the built-in CUDA provider is used all the same. Session creation failures still raise.
    ort.set_default_logger_severity(3)
    return ort


def physical_cores() -> int:
    """Distinct (socket, core) pairs in /proc/cpuinfo: hyperthreads only slow GEMMs down."""
    try:
        with open("/proc/cpuinfo") as f:
            cores, socket = set(), "0"
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "physical id":
                    socket = value.strip()
                elif key.strip() == "core id":
                    cores.add((socket, value.strip()))
        return len(cores) or os.cpu_count() or 1
    except OSError:
        return os.cpu_count() or 1


def _runtime_errors(ort) -> tuple[type[BaseException], ...]:
    """ONNX Runtime's own exception classes (Fail, InvalidArgument, RuntimeException, ...)."""
    state = getattr(getattr(ort, "capi", None), "onnxruntime_pybind11_state", None)
    found = tuple(v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception)) \
        if state is not None else ()
    return found or (RuntimeError,)


def cuda_available() -> bool:
    try:
        return "CUDAExecutionProvider" in import_onnxruntime().get_available_providers()
    except BackendUnavailableError:
        return False


class OnnxRuntimeRunner:
    def __init__(self, path, device: str = "cpu", device_id: int = 0, threads: int | None = None,
                 precision: str = "fp32", exact_fp32: bool = False):
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if device == "cpu" and precision == "fp16":
            # ONNX Runtime 1.31's CPU layout transforms crash (SIGSEGV) on FP16 convolutions;
            # FP16 is a GPU format anyway: on CPU run it with the extended level.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.intra_op_num_threads = threads or physical_cores()
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError("ONNX Runtime has no CUDA provider here: install onnxruntime-gpu "
                                              "(pip install 'foal-edge[gpu]') and the CUDA libraries it needs")
            cuda = {"device_id": device_id}
            if exact_fp32:  # no TF32 (10-bit mantissa) MatMuls: frame resampling must stay within a grey level
                cuda["use_tf32"] = "0"
            providers = [("CUDAExecutionProvider", cuda)] + providers
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf classes
            raise BundleError(f"{path}: ONNX Runtime cannot load this graph ({exc}); the file is corrupt or "
                              "from an incompatible export: rebuild the bundle") from exc
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.device, self.device_id = device, device_id
        self.path = Path(path)
        self._errors = _runtime_errors(ort)

    def run(self, feeds: dict, keep_on_device: bool = False) -> list:
        """Run the graph. Feeds are numpy arrays or OrtValues (outputs of another runner's
        `keep_on_device` call, already where this session runs: no copy back and forth).
        Returns numpy arrays, or OrtValues left on the session's device with keep_on_device."""
        try:
            if not keep_on_device and all(isinstance(feeds[n], np.ndarray) for n in self.inputs):
                return self.session.run(self.outputs, {n: feeds[n] for n in self.inputs})
            binding = self.session.io_binding()
            for n in self.inputs:
                if isinstance(feeds[n], np.ndarray):
                    binding.bind_cpu_input(n, feeds[n])
                else:
                    binding.bind_ortvalue_input(n, feeds[n])
            for n in self.outputs:
                if keep_on_device:
                    binding.bind_output(n, self.device, self.device_id)
                else:
                    binding.bind_output(n)
            self.session.run_with_iobinding(binding)
            return binding.get_outputs() if keep_on_device else binding.copy_outputs_to_cpu()
        except self._errors as exc:
            raise InferenceError(f"{self.path.name}: ONNX Runtime failed to run the graph ({exc})") from exc
