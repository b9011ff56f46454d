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

from .errors import ExportError

MAX_ENGINE_FRAME = (720, 1280)  # the largest camera frame the TensorRT preprocess engine takes


class EngineBuildError(ExportError, RuntimeError):
    """TensorRT could not parse or build a graph."""


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


def profiles_for(name: str, model_config, manifest_frames: int, max_seconds: float) -> dict[str, Profile]:
    """min / opt / max shapes per input of one graph (batch 1 at opt; up to 4 clips)."""
    from foal_edge.preprocess import min_samples, wavlm_frames

    rate = model_config.sample_rate
    kernels, strides = model_config.audio.conv_kernel, model_config.audio.conv_stride
    s_min, s_opt, s_max = min_samples(kernels, strides), int(min(6.0, max_seconds) * rate), int(max_seconds * rate)
    t_min, t_opt, t_max = (wavlm_frames(s, kernels, strides) for s in (s_min, s_opt, s_max))
    size, d_a, d_v = model_config.video.image_size, model_config.audio.hidden_size, model_config.video.embed_dim
    if name == "audio":
        return {"waveform": Profile((1, s_min), (1, s_opt), (4, s_max))}
    if name == "video":
        return {"frames": Profile((1, 3, size, size), (manifest_frames, 3, size, size),
                                  (4 * manifest_frames, 3, size, size))}
    if name == "preprocess":  # one clip of landscape camera frames up to 1280x720 (others: the CPU path)
        h, w = MAX_ENGINE_FRAME
        return {"frames": Profile((1, 8, 8, 3), (manifest_frames, 480, 640, 3), (manifest_frames, h, w, 3)),
                "resize_x": Profile((size, 8), (size, 640), (size, w)),
                "resize_y": Profile((size, 8), (size, 480), (size, h))}
    return {"audio": Profile((1, t_min, d_a), (1, t_opt, d_a), (4, t_max, d_a)),
            "audio_mask": Profile((1, t_min), (1, t_opt), (4, t_max)),
            "video": Profile((1, 1, d_v), (1, manifest_frames, d_v), (4, manifest_frames, d_v)),
            "video_mask": Profile((1, 1), (1, manifest_frames), (4, manifest_frames))}


def build_graph_engine(name: str, model_config, fp32_onnx: Path, final_onnx: Path, out: Path, precision: str, *,
                       opset: int, device: int = 0, workspace_mb: int = 1024, timing_cache=None,
                       weakly_typed: bool = False, log=print):
    """Graph `name`'s engine for this GPU in the bundle `out`: its manifest entry (GraphInfo)."""
    import tensorrt as trt

    from foal_edge.cuda import open_cuda

    from .bundle import graph_info

    cc = open_cuda(device).compute_capability()
    engine_file = out / f"{name}.{precision}.trt{trt.__version__}.sm{cc.replace('.', '')}.engine"
    profiles = profiles_for(name, model_config, model_config.frames_per_clip, model_config.audio_seconds)
    weak = weakly_typed and precision == "fp16"
    log(f"building the {name} TensorRT engine ({'weakly typed + FP16 flag' if weak else 'strongly typed'})")
    t = time.time()
    build_engine(fp32_onnx if weak else final_onnx, engine_file, profiles, strongly_typed=not weak, fp16_flag=weak,
                 workspace_mb=workspace_mb, timing_cache=timing_cache)
    log(f"built {engine_file.name} in {time.time() - t:.0f}s")
    return graph_info(out, engine_file, "tensorrt", precision, final_onnx, opset=opset,
                      tensorrt_version=trt.__version__, compute_capability=cc,
                      profiles={k: {"min": list(p.min), "opt": list(p.opt), "max": list(p.max)}
                                for k, p in profiles.items()})
