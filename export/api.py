"""Export as a library: `build_bundle` turns a trained checkpoint into a deployable bundle.

    from export import build_bundle
    build_bundle("runs/foal/fold1", "bundles/foal", precision="fp16")   # -> Path("bundles/foal")

The steps, in order: load the model; choose the target (TensorRT engines where TensorRT and a
GPU are here, ONNX otherwise); export the graphs to FP32 ONNX; convert them to the precision
(export/precision.py holds the rules); measure parity (FP32 ONNX vs eager, the shipped
precision vs FP32 ONNX) and, for --precision auto on ONNX, choose per encoder; write the
graphs or build engines from them; add ONNX Runtime CUDA's variants; write the demo clip,
the manifest and export_report.json. Failures raise export.errors.ExportError and kin.
`python -m export.build_engine` is the command-line shell over it.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import precision as rules
from .errors import CheckpointError, ExportError, ModelCardFileError, TargetUnavailableError

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "training" / "demo"
DEMO_OUT = Path("build/foal-demo")
TARGETS = ("auto", "onnx", "tensorrt")
EXPORTERS = ("dynamo", "legacy")


def log_step(msg: str) -> None:
    print(f"[build_engine] {msg}", file=sys.stderr, flush=True)


def progress(items, desc: str):
    """A progress bar on stderr (tqdm; shown on a terminal, one summary line otherwise)."""
    from tqdm import tqdm

    return tqdm(items, desc=f"[build_engine] {desc}", unit="clip", file=sys.stderr, leave=False,
                mininterval=1.0)


def build_bundle(checkpoint=None, out=DEMO_OUT, *, precision: str = "auto", target: str = "auto",
                 preset: str | None = None, random_weights: bool = False, frames: int | None = None,
                 max_audio_seconds: float | None = None, parity_clips: int | None = None,
                 exporter: str = "dynamo", opset: int | None = None, ort_cuda_variant: bool | None = None,
                 workspace_mb: int = 1024, timing_cache=None, weakly_typed: bool = False,
                 device: int = 0, model_card=None) -> Path:
    """Build a bundle at `out` from `checkpoint` (a training output directory; default the
    committed demo checkpoint) or, with random_weights, from random weights of `preset`.

    precision: "auto", "fp32", "fp16" or "int8" (see export/precision.py); target: "auto",
    "onnx" or "tensorrt"; frames / max_audio_seconds: frames per clip and the audio window
    (default: the checkpoint's); parity_clips: synthetic clips for the parity check (default
    200 for tiny, 4 otherwise; 0 skips); ort_cuda_variant: add ONNX Runtime CUDA's fused FP16
    encoder graphs (default: with fp16 on ONNX). TensorRT only: workspace_mb, timing_cache,
    weakly_typed, device. model_card: a JSON (or YAML) file with the card fields the checkpoint
    cannot know (licences, intended and prohibited uses, who built it; docs/confidence.md),
    checked before the long export. Returns `out`."""
    t_start = time.time()
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter {exporter!r}: choose one of {', '.join(EXPORTERS)}")
    model = load_model(checkpoint, preset, random_weights)
    config = model.config
    card, calibration = model_card_for(False if random_weights else checkpoint, model_card, config)
    if frames:
        config.frames_per_clip = frames
    if max_audio_seconds:
        config.audio_seconds = max_audio_seconds
    target, why = choose_target(target)
    plan = rules.resolve(precision, target)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from .onnx_export import OPSET

    opset = opset or OPSET
    n_parity = parity_clips if parity_clips is not None else (200 if config.preset == "tiny" else 4)
    _quiet_loggers()
    with tempfile.TemporaryDirectory(prefix="foal-export-") as tmp:
        work = Path(tmp)
        fp32 = export_graphs(model, work, opset, exporter)
        final = {name: rules.convert_graph(name, plan, path, work) for name, path in fp32.items()}
        if plan != "fp32":
            log_step(f"converted the graphs to {'int8 (candidates for auto)' if plan == 'cpu-auto' else plan}")
        report, ort32, shipped, inputs = measure_parity(model, fp32, final, plan, n_parity)
        precisions = {name: rules.graph_precision(name, plan) for name in fp32}
        choice, shipped_precision = None, plan
        if plan == "cpu-auto":
            choice = choose_auto(ort32, shipped, report, inputs, precisions, final, fp32)
            shipped_precision = "int8" if "int8" in choice["graphs"].values() else "fp32"
        entries = write_graphs(out, target, config, fp32, final, precisions, report, opset,
                               dict(device=device, workspace_mb=workspace_mb, timing_cache=timing_cache,
                                    weakly_typed=weakly_typed))
        variants = {}
        if target == "onnx" and (ort_cuda_variant or (ort_cuda_variant is None and shipped_precision == "fp16")):
            variants = add_variants(out, entries, fp32, config)
        write_bundle(out, config, entries, {
            "parity": report, "precision": shipped_precision, "auto_precision": choice, "target": target,
            "target_reason": why, "exporter": exporter, "opset": opset, "ort_cuda_variants": variants,
            "seconds": round(time.time() - t_start, 1)}, card, calibration)
    return out


def load_model(checkpoint=None, preset: str | None = None, random_weights: bool = False):
    from training.model import FoalNet

    if random_weights:
        if not preset:
            raise CheckpointError("random weights need a preset: large, base or tiny (--preset)")
        return FoalNet.from_preset(preset).eval()
    checkpoint = Path(checkpoint) if checkpoint is not None else DEMO_CHECKPOINT
    try:
        model = FoalNet.load(checkpoint).eval()
    except (FileNotFoundError, ValueError) as exc:
        raise CheckpointError(f"cannot load checkpoint: {exc}") from exc
    if preset and preset != model.config.preset:
        raise CheckpointError(f"{checkpoint} is a {model.config.preset!r} checkpoint, not {preset!r}")
    return model


def choose_target(target: str = "auto") -> tuple[str, str]:
    """("onnx" | "tensorrt", why)."""
    from .tensorrt_build import tensorrt_status

    if target not in TARGETS:
        raise ExportError(f"target {target!r}: choose one of {', '.join(TARGETS)}")
    usable, why = tensorrt_status()
    if target == "tensorrt" and not usable:
        raise TargetUnavailableError(f"--target tensorrt: {why}")
    if target == "onnx" or (target == "auto" and not usable):
        return "onnx", ("ONNX requested" if target == "onnx" else f"ONNX because {why}")
    return "tensorrt", f"TensorRT engines because {why}"


def _quiet_loggers() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # onnxscript's optimiser warns once per Split node ("Skipping constant folding for op Split
    # with multiple outputs"): nothing to act on, six lines per export.
    logging.getLogger("onnxscript.optimizer._constant_folding").setLevel(logging.ERROR)


def export_graphs(model, work: Path, opset: int, exporter: str) -> dict[str, Path]:
    """Every graph (GRAPHS + OPTIONAL_GRAPHS) to FP32 ONNX in `work`: {name: path}."""
    from foal_edge.bundle import GRAPHS, OPTIONAL_GRAPHS

    from . import graphs as graph_defs
    from .onnx_export import export_onnx

    specs, modules = graph_defs.specs(model), graph_defs.modules(model)
    fp32 = {}
    for name in GRAPHS + OPTIONAL_GRAPHS:
        t = time.time()
        fp32[name] = export_onnx(modules[name], graph_defs.example_inputs(model, name), specs[name],
                                 work / f"{name}.onnx", opset=opset, exporter=exporter)
        log_step(f"exported {name} graph to ONNX ({exporter}, opset {opset}) in {time.time() - t:.1f}s")
    return fp32


def measure_parity(model, fp32: dict, final: dict, plan: str, n_parity: int):
    """FP32 ONNX vs eager, and the shipped precision vs FP32 ONNX, on n_parity synthetic clips.
    -> (report, FP32 runners, shipped-precision runners or None, the clips' inputs)."""
    from foal_edge.backends.onnxruntime import OnnxRuntimeRunner
    from foal_edge.bundle import GRAPHS

    from . import parity

    config = model.config
    if n_parity:
        log_step(f"making {n_parity} synthetic parity clips")
    inputs = parity.clip_inputs(config, range(10_000, 10_000 + n_parity))
    ort32 = {n: OnnxRuntimeRunner(fp32[n]) for n in GRAPHS}
    report, shipped = {}, None
    if not n_parity:
        return report, ort32, shipped, inputs
    t = time.time()
    eager = lambda w, f: parity.run_eager(model, w, f)  # noqa: E731
    onnx32 = lambda w, f: parity.run_sessions(ort32, w, f)  # noqa: E731
    report["fp32_vs_eager"] = parity.compare(eager, onnx32, progress(inputs, "parity: FP32 ONNX vs eager"))
    if plan != "fp32":
        low = rules.graph_precision("audio", plan)
        shipped = {n: OnnxRuntimeRunner(final[n], precision=rules.graph_precision(n, plan)) for n in GRAPHS}
        report[f"{low}_vs_fp32"] = parity.compare(onnx32, lambda w, f: parity.run_sessions(shipped, w, f),
                                                  progress(inputs, f"parity: {low.upper()} vs FP32"))
        report[f"{low}_vs_fp32"]["encoder_cosine"] = parity.encoder_cosines(
            ort32, shipped, config, seconds=(1.0, 3.0, config.audio_seconds))
    log_step(f"parity on {n_parity} synthetic clips in {time.time() - t:.1f}s")
    return report, ort32, shipped, inputs


def choose_auto(ort32: dict, shipped: dict | None, report: dict, inputs, precisions: dict, final: dict,
                fp32: dict) -> dict:
    """--precision auto on ONNX: each encoder's pick goes into `precisions` and `final` (FP32
    picks ship the FP32 file); the INT8 parity in `report` is dropped when nothing ships INT8,
    and measured again on the mix when one encoder does."""
    from foal_edge.bundle import GRAPHS

    from . import parity

    choice = rules.choose_cpu_precision(ort32, shipped, report.get("int8_vs_fp32"), inputs)
    for name, pick in choice["graphs"].items():
        precisions[name] = pick
        if pick == "fp32":
            final[name] = fp32[name]
    picks = set(choice["graphs"].values())
    if picks == {"fp32"}:
        report.pop("int8_vs_fp32", None)
    elif len(picks) == 2:  # some graphs INT8, some FP32: measure the mix that ships
        mixed = {n: ort32[n] if choice["graphs"][n] == "fp32" else shipped[n] for n in GRAPHS}
        report["int8_vs_fp32"] = parity.compare(lambda w, f: parity.run_sessions(ort32, w, f),
                                                lambda w, f: parity.run_sessions(mixed, w, f), inputs)
    log_step(f"auto precision: {choice['why']}")
    return choice


def write_graphs(out: Path, target: str, config, fp32: dict, final: dict, precisions: dict, report: dict,
                 opset: int, tensorrt_options: dict) -> dict:
    """Each graph into the bundle (its ONNX file, or an engine built from it) with its parity:
    {name: GraphInfo}."""
    from foal_edge.bundle import GRAPHS

    from . import parity
    from .bundle import graph_info

    entries = {}
    for name in fp32:
        if target == "onnx":
            suffix = "" if precisions[name] == "fp32" else f".{precisions[name]}"
            dst = out / f"{name}{suffix}.onnx"
            shutil.copyfile(final[name], dst)
            entries[name] = graph_info(out, dst, "onnx", precisions[name], final[name], opset=opset)
        else:
            from .tensorrt_build import build_graph_engine

            entries[name] = build_graph_engine(name, config, fp32[name], final[name], out, precisions[name],
                                               opset=opset, log=log_step, **tensorrt_options)
        if name in GRAPHS:
            entries[name].parity = {k: _graph_parity(v, name) for k, v in report.items()} or None
        else:
            entries[name].parity = {"vs_cpu_pillow": parity.preprocess_parity(fp32[name], config)}
    return entries


def _graph_parity(report: dict, name: str) -> dict:
    out = {"clips": report["clips"], "max_abs_diff": report["max_abs_diff"][name]}
    if name == "fusion":
        out.update(max_probability_diff=report["max_probability_diff"], label_agreement=report["label_agreement"])
    else:
        out["min_cosine"] = report["min_cosine"][name]
    return out


def add_variants(out: Path, entries: dict, fp32: dict, config) -> dict:
    """ONNX Runtime CUDA's fused FP16 encoder graphs, each checked against FP32 on the CPU."""
    from .ort_optimize import add_ort_cuda_variants

    t = time.time()
    variants = add_ort_cuda_variants(out, entries, fp32, (config.video.heads, config.video.width))
    log_step("ONNX Runtime CUDA variants of the encoder graphs in " f"{time.time() - t:.1f}s: " + "; ".join(
        f"{name} {r['fused']}" + (f", cosine {r['vs_fp32_on_cpu']['cosine']:.6f} to FP32 on the CPU"
                                  if "vs_fp32_on_cpu" in r else "") for name, r in variants.items()))
    return variants


def model_card_for(checkpoint, card_file, config) -> tuple[dict, dict | None]:
    """The bundle's checked model card and calibration (export/model_card.py): what the
    checkpoint knows (default: the demo checkpoint's; None for random weights) and the file."""
    from foal_edge.errors import FoalEdgeError

    from .model_card import bundle_card

    source = None if checkpoint is False else Path(checkpoint) if checkpoint is not None else DEMO_CHECKPOINT
    try:
        return bundle_card(source, Path(card_file) if card_file is not None else None, config)
    except FoalEdgeError as exc:
        raise ModelCardFileError(str(exc)) from None


def write_bundle(out: Path, config, entries: dict, export_report: dict, card: dict | None = None,
                 calibration: dict | None = None) -> None:
    """The demo clip, manifest.json (written last, atomically) and export_report.json."""
    import dataclasses

    from .bundle import manifest_for, write_manifest

    demo_files = write_demo_clip(out, config)
    write_manifest(out, dataclasses.replace(manifest_for(config, entries, demo_files), model_card=card,
                                            calibration=calibration))
    (out / "export_report.json").write_text(json.dumps(export_report, indent=2))


def write_demo_clip(out: Path, config) -> dict:
    """A sample clip inside the bundle for `python -m foal_edge predict BUNDLE --demo`:
    16-bit WAV (read with the standard library) and frames as a plain .npy (no pickle)."""
    import wave

    from foal_edge.bundle import sha256_file
    from training.synthetic import make_clip

    seconds = min(3.0, config.audio_seconds)
    audio, frames, code = make_clip(2024, code="hap", seconds=seconds, frames=24)
    with wave.open(str(out / "demo.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(config.sample_rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    np.save(out / "demo_frames.npy", frames, allow_pickle=False)
    return {"audio": "demo.wav", "frames": "demo_frames.npy", "fps": len(frames) / seconds, "expected": "happy",
            "sha256": {f: sha256_file(out / f) for f in ("demo.wav", "demo_frames.npy")}}
