"""The precision rules, in one place: what each graph of a bundle ships at, how it gets there,
and what `--precision auto` chooses.

- fp32: every graph as exported.
- fp16: the audio, video and fusion graphs converted (export/fp16.py keeps LayerNorm,
  Softmax, reductions and position arithmetic in FP32); TensorRT builds from them.
- int8: the audio, video and fusion graphs dynamically quantised (export/quantize.py rewrites
  the encoders first into the form ONNX Runtime's CPU kernels run fastest), for CPUs. Not a
  TensorRT precision.
- frame preprocessing stays FP32 whatever the precision: its weights must resolve 1/255
  (FP16 would move pixels by grey levels).
- auto: fp16 for TensorRT; for ONNX ("cpu-auto"), per graph (audio, video, fusion) the faster
  of FP32 and INT8 on this machine, INT8 only if its labels agree with FP32 on enough parity
  clips.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .errors import PrecisionError

PRECISIONS = ("auto", "fp32", "fp16", "int8")
# --precision auto on ONNX ships an INT8 encoder only when it is faster here and the labels hold.
MIN_INT8_AGREEMENT, MIN_INT8_CLIPS, MIN_INT8_SPEEDUP = 0.99, 100, 1.05


def resolve(precision: str, target: str) -> str:
    """The precision a build converts to: "fp32", "fp16", "int8", or "cpu-auto" (INT8
    candidates for the encoders, kept or not by choose_cpu_precision)."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if target == "tensorrt" and precision == "int8":
        raise PrecisionError("--precision int8 is the CPU (ONNX Runtime) variant; for TensorRT use fp16")
    if precision != "auto":
        return precision
    return "fp16" if target == "tensorrt" else "cpu-auto"


def graph_precision(name: str, precision: str) -> str:
    """The precision graph `name` ships at in a bundle of `precision` ("cpu-auto": its INT8
    candidate)."""
    return "fp32" if name == "preprocess" else "int8" if precision == "cpu-auto" else precision


def convert_graph(name: str, precision: str, fp32_onnx: Path, work: Path) -> Path:
    """Graph `name` at its precision: the FP32 file itself, or work/NAME.PRECISION.onnx."""
    target = graph_precision(name, precision)
    if target == "fp32":
        return fp32_onnx
    out = Path(work) / f"{name}.{target}.onnx"
    if target == "fp16":
        from .fp16 import convert_file

        convert_file(fp32_onnx, out)
    else:
        from .quantize import quantize_int8

        quantize_int8(fp32_onnx, out, name)
    return out


def choose_cpu_precision(fp32: dict, int8: dict | None, int8_parity: dict | None, inputs, rounds: int = 7) -> dict:
    """--precision auto on ONNX: per graph (audio, video, fusion), INT8 where it runs at least
    MIN_INT8_SPEEDUP x faster than FP32 on this machine (median of interleaved runs on a parity
    clip), and only if INT8 kept the labels of FP32 on enough parity clips."""
    keep = {"graphs": {"audio": "fp32", "video": "fp32", "fusion": "fp32"}, "speedup": {}}
    clips = int8_parity["clips"] if int8_parity else 0
    agreement = int8_parity["label_agreement"] if int8_parity else 0.0
    if clips < MIN_INT8_CLIPS or agreement < MIN_INT8_AGREEMENT:
        keep["why"] = (f"FP32: INT8 kept {100 * agreement:.1f}% of labels on {clips} clips "
                       f"(needs >= {100 * MIN_INT8_AGREEMENT:g}% of >= {MIN_INT8_CLIPS}; --parity-clips sets the count)")
        return keep
    wave, frames = max(inputs, key=lambda x: x[0].shape[1])
    hidden, emb = fp32["audio"].run({"waveform": wave})[0], fp32["video"].run({"frames": frames})[0]
    feeds = {"audio": {"waveform": wave}, "video": {"frames": frames},
             "fusion": {"audio": hidden, "audio_mask": np.ones(hidden.shape[:2], np.float32), "video": emb[None],
                        "video_mask": np.ones((1, emb.shape[0]), np.float32)}}
    for name in ("audio", "video", "fusion"):
        times = {"fp32": [], "int8": []}
        for r in range(rounds + 1):  # round 0 warms both sessions up
            for kind, runner in (("fp32", fp32[name]), ("int8", int8[name])):
                t = time.perf_counter()
                runner.run(feeds[name])
                if r:
                    times[kind].append(time.perf_counter() - t)
        speedup = float(np.median(times["fp32"]) / np.median(times["int8"]))
        keep["speedup"][name] = speedup
        if speedup >= MIN_INT8_SPEEDUP:
            keep["graphs"][name] = "int8"
    keep["why"] = (f"INT8 kept {100 * agreement:.1f}% of labels on {clips} clips; INT8/FP32 speed here: " +
                   ", ".join(f"{n} {v:.2f}x -> {keep['graphs'][n].upper()}" for n, v in keep["speedup"].items()))
    return keep
