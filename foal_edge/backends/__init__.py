"""Inference backends, one file each, all behind one interface (`base.Runner`): ONNX Runtime
(CPU or CUDA) and TensorRT. `open_runners` picks the backend for a bundle and opens one
runner per graph; the backend modules (and their libraries) are imported only here, lazily."""

from __future__ import annotations

from pathlib import Path

from ..errors import BackendUnavailableError, InvalidInputError
from .base import Runner

BACKENDS = ("auto", "onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt")


def open_runners(bundle: Path, manifest, backend: str = "auto", device: int = 0, threads: int | None = None,
                 cache_dir: Path | None = None, spin: bool = True) -> tuple[str, dict[str, Runner]]:
    """One runner per graph of the bundle: (the backend chosen, {graph: runner}).

    backend "auto": TensorRT when the bundle holds engines, else ONNX Runtime with CUDA where
    it is available, else on the CPU. "onnxruntime" picks CUDA or CPU the same way. On ONNX
    Runtime CUDA a graph's onnxruntime-cuda variant (fused contrib ops) runs instead of its
    standard file. cache_dir: where ONNX Runtime keeps optimised CPU graphs (None: nowhere).
    spin: whether ONNX Runtime's worker threads spin between runs (OnnxRuntimeRunner)."""
    formats = {g.format for g in manifest.graphs.values()}
    if backend == "auto":
        backend = "tensorrt" if formats == {"tensorrt"} else "onnxruntime"
    if backend == "tensorrt":
        return "tensorrt", _tensorrt(bundle, manifest, formats, device)
    if backend not in BACKENDS:
        raise InvalidInputError(f"unknown backend {backend!r}: use auto, onnxruntime, onnxruntime-cpu, "
                                "onnxruntime-cuda or tensorrt")
    if formats != {"onnx"}:
        raise BackendUnavailableError(f"{bundle} holds TensorRT engines; ONNX Runtime cannot run them: "
                                      "use backend='tensorrt' or build an ONNX bundle (--target onnx)")
    from .onnxruntime import OnnxRuntimeRunner, cuda_available

    if backend == "onnxruntime":
        backend = "onnxruntime-cuda" if cuda_available() else "onnxruntime-cpu"
    dev = backend.rsplit("-", 1)[1]

    def open_one(n, g):
        # A graph may have a file only ONNX Runtime CUDA runs (fused contrib ops): used there.
        variant = g.variants.get(backend)  # the manifest allows onnxruntime-cuda variants only
        file, precision, key = (variant["file"], variant["precision"], variant["sha256"]) if variant else \
            (g.file, g.precision, g.sha256)
        return OnnxRuntimeRunner(bundle / file, dev, device, threads, precision, exact_fp32=n == "preprocess",
                                 cache_key=key, cache_dir=cache_dir, spin=spin)

    return backend, _open_each(manifest, open_one)


def _tensorrt(bundle: Path, manifest, formats: set, device: int) -> dict[str, Runner]:
    if formats != {"tensorrt"}:
        raise BackendUnavailableError(f"{bundle} holds ONNX graphs, not TensorRT engines: "
                                      f"build engines with --target tensorrt, or use backend='onnxruntime'")
    from .tensorrt import TensorRTRunner

    rebuild = (f"rebuild it on this device with `python -m export.build_engine --checkpoint CHECKPOINT "
               f"--target tensorrt --out {bundle}`")
    return _open_each(manifest, lambda n, g: TensorRTRunner(bundle / g.file, device, g.tensorrt_version,
                                                            g.compute_capability, rebuild))


def _open_each(manifest, open_one) -> dict[str, Runner]:
    """open_one(name, graph) for every graph; if one fails, those already open are closed."""
    runners = {}
    try:
        for n, g in manifest.graphs.items():
            runners[n] = open_one(n, g)
    except BaseException:
        close_all(runners)
        raise
    return runners


def close_all(runners: dict[str, Runner]) -> None:
    for runner in runners.values():
        runner.close()


__all__ = ["Runner", "open_runners", "close_all", "BACKENDS"]
