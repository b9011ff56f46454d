"""ONNX -> serialized TensorRT engine. Thin on purpose: TensorRT cannot run on the
development machines, so every TensorRT name used here is checked statically against the
10.3 (JetPack 6) and 11.4 APIs by tests/test_tensorrt_names.py.

Two ways to get FP16, both one code path:
- strongly typed (default, TensorRT 10.3 and 11.x): build from the FP16 ONNX with the
  STRONGLY_TYPED network flag; the types in the file are the types that run. TensorRT 11
  has only this (the FP16 builder flag is gone).
- weakly typed (TensorRT 10.x only): build from the FP32 ONNX with BuilderFlag.FP16 and
  let TensorRT choose per layer. Looked up by name, refused clearly where absent.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path


class EngineBuildError(RuntimeError):
    pass


@dataclass
class Profile:
    """min / opt / max shape of one dynamic input."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def _progress_monitor(trt, stream=sys.stderr):
    """A TensorRT IProgressMonitor that prints build phases (None where unsupported)."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class Monitor(base):
        def __init__(self):
            base.__init__(self)
            self.start = time.time()

        def phase_start(self, phase_name, parent_phase, num_steps):
            depth = 0 if parent_phase is None else 1
            if depth == 0:
                print(f"  [{time.time() - self.start:6.1f}s] {phase_name} ({num_steps} steps)", file=stream,
                      flush=True)

        def step_complete(self, phase_name, step):
            return True  # True = keep building

        def phase_finish(self, phase_name):
            pass

    return Monitor()


def build_engine(onnx_path, engine_path, profiles: dict[str, Profile], *, strongly_typed: bool = True,
                 fp16_flag: bool = False, workspace_mb: int = 1024, timing_cache: str | Path | None = None,
                 verbose: bool = False) -> Path:
    """Parse `onnx_path`, build with one optimisation profile, write `engine_path`.
    Raises EngineBuildError with the parser's or builder's messages on failure."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(f"  {parser.get_error(i)}" for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path}:\n{errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16_flag:
        if strongly_typed:
            raise EngineBuildError("the FP16 builder flag and a strongly typed network exclude each other")
        flag = getattr(trt.BuilderFlag, "FP16", None)
        if flag is None:
            raise EngineBuildError(f"TensorRT {trt.__version__} has no FP16 builder flag (removed in 11): "
                                   "build strongly typed from the FP16 ONNX instead (--precision fp16)")
        config.set_flag(flag)

    profile = builder.create_optimization_profile()
    for name, p in profiles.items():
        profile.set_shape(name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)

    cache_bytes = b""
    if timing_cache and Path(timing_cache).is_file():
        cache_bytes = Path(timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)
    monitor = _progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path} (see the log above); "
                               "a larger --workspace-mb or smaller profile maxima may help")
    engine_path = Path(engine_path)
    tmp = engine_path.with_suffix(".tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(engine_path)
    if timing_cache:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    return engine_path


def tensorrt_status() -> tuple[bool, str]:
    """(usable, why): TensorRT importable and a CUDA GPU present."""
    try:
        import tensorrt as trt
    except ImportError:
        return False, "TensorRT is not installed"
    try:
        from foal_edge.cuda import open_cuda

        cc = open_cuda(0).compute_capability()
    except Exception as exc:
        return False, f"TensorRT {trt.__version__} is installed but no CUDA GPU is usable ({exc})"
    return True, f"TensorRT {trt.__version__} on a GPU with compute capability {cc}"
