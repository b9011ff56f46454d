"""What calibrated confidence costs a prediction, measured side by side in one run.

    python -m benchmarks.confidence_cost BUNDLE [--rounds 200] [--out results.json] [--calibration FILE]

Two Predictors of the same bundle, interleaved clip by clip: one reading its heads as the
runtime does (temperatures applied, confidence, min_confidence, per-modality heads), one whose
prediction step is the raw softmax of the answering head only (what a prediction cost before
calibration existed). Reported: the median end-to-end prediction time of each, and the time of the step
that differs (reading the fusion graph's outputs) on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def _raw_softmax_step(raw: dict, labels: list[str]) -> dict:
    """The step as it was: the fused head's softmax, nothing else."""
    x = raw["logits"].astype(np.float64)
    e = np.exp(x - x.max())
    p = e / e.sum()
    return {"label": labels[int(p.argmax())], "probabilities": {k: float(v) for k, v in zip(labels, p)}}


def main(argv=None) -> dict:
    from foal_edge import Prediction, Predictor, confidence
    from training.synthetic import make_clip

    p = argparse.ArgumentParser(prog="python -m benchmarks.confidence_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle")
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--out", default=None)
    p.add_argument("--calibration", default=None,
                   help="a training calibration.json whose temperatures to apply (for a bundle without its own)")
    args = p.parse_args(argv)

    calibrated = Predictor(args.bundle, backend="onnxruntime-cpu", vad=False, threads=1, min_confidence=0.5)
    if args.calibration:
        with open(args.calibration) as f:
            calibrated.temperatures = {h: float(t) for h, t in json.load(f)["temperatures"].items()}
    class RawPredictor(Predictor):
        """The prediction step as it was before calibration: the answering head's raw softmax."""

        def _prediction(self, raw, has_audio, has_video, timings, notes):
            key = "logits" if has_audio and has_video else ("audio_logits" if has_audio else "video_logits")
            step = _raw_softmax_step({"logits": raw[key]}, self.labels)
            attributes = ({n: float(x) for n, x in zip(self.manifest.attributes, raw["attributes"])}
                          if "attributes" in raw and has_audio and has_video else None)
            modalities = tuple(m for m, present in (("audio", has_audio), ("video", has_video)) if present)
            return Prediction(step["label"], step["probabilities"], attributes, modalities, timings, self.backend,
                              tuple(notes))

    plain = RawPredictor(args.bundle, backend="onnxruntime-cpu", vad=False, threads=1)
    audio, frames, _ = make_clip(3, seconds=2.0, frames=8)
    for _ in range(3):
        calibrated.predict(audio=audio, sample_rate=16000, frames=frames)
        plain.predict(audio=audio, sample_rate=16000, frames=frames)
    end_to_end = {"calibrated": [], "raw": []}
    for i in range(args.rounds):
        order = (("calibrated", calibrated), ("raw", plain)) if i % 2 else (("raw", plain), ("calibrated", calibrated))
        for name, predictor in order:
            t0 = time.perf_counter()
            predictor.predict(audio=audio, sample_rate=16000, frames=frames)
            end_to_end[name].append(1e3 * (time.perf_counter() - t0))
    # The step that differs, on its own: the fusion graph's outputs for one clip -> the fields.
    raw = calibrated.fuse([calibrated.encode_audio(audio)], [calibrated.embed_frames(frames)[0]])[0]
    step = {"calibrated": [], "raw": []}
    labels, temps = calibrated.labels, calibrated.temperatures
    for i in range(20 * args.rounds):
        t0 = time.perf_counter()
        if i % 2:
            confidence.read_heads(raw, True, True, labels, temps, 0.5)
            step["calibrated"].append(1e6 * (time.perf_counter() - t0))
        else:
            _raw_softmax_step(raw, labels)
            step["raw"].append(1e6 * (time.perf_counter() - t0))
    result = {
        "bundle": args.bundle, "temperatures": temps, "rounds": args.rounds,
        "end_to_end_ms_median": {k: float(np.median(v)) for k, v in end_to_end.items()},
        "end_to_end_ms_iqr": {k: [float(np.percentile(v, 25)), float(np.percentile(v, 75))]
                              for k, v in end_to_end.items()},
        "reading_heads_us_median": {k: float(np.median(v)) for k, v in step.items()},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }
    result["end_to_end_ratio"] = result["end_to_end_ms_median"]["calibrated"] / result["end_to_end_ms_median"]["raw"]
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
