"""Soak: many predictions, many threads, a long stream; RSS over time.

    python -m benchmarks.soak --bundle build/foal-demo --predictions 5000 --stream-minutes 10 \\
        --out benchmarks/results/soak-cpu

Three phases on one Predictor:
1. `--predictions` predictions over a few synthetic clips, RSS sampled as it goes; growth
   is measured from the end of warm-up (the first 10%) to the end.
2. `--threads` threads x `--per-thread` predictions, compared with serial results.
3. `--stream-minutes` of simulated camera (15 fps) and microphone (0.5 s chunks) through
   StreamingPredictor, pushed as fast as it runs; RSS and buffer sizes over time.
A phase given 0 (`--predictions 0`, `--threads 0`, `--stream-minutes 0`) is skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .latency import rss_mb


def clips(n: int, frames: int = 16):
    """Synthetic clips without torch: speech-like noise bursts and random camera frames."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        seconds = 1.5 + i % 3
        t = np.arange(int(seconds * 16000)) / 16000
        audio = (0.2 * np.sin(2 * np.pi * (120 + 40 * i) * t) * (np.sin(2 * np.pi * 3 * t) > 0)
                 + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
        out.append((audio, rng.integers(0, 255, (frames, 120, 160, 3), dtype=np.uint8)))
    return out


def soak_predictions(predictor, n: int, sample_every: int = 100) -> dict:
    data = clips(4)
    samples = []
    warmup = max(1, n // 10)
    start = time.perf_counter()
    for i in range(n):
        audio, frames = data[i % len(data)]
        predictor.predict(audio=audio, sample_rate=16000, frames=frames)
        if (i + 1) % sample_every == 0 or i + 1 == warmup:
            samples.append({"predictions": i + 1, "rss_mb": rss_mb(), "seconds": time.perf_counter() - start})
            if (i + 1) % (10 * sample_every) == 0:
                print(f"  {i + 1}/{n} predictions, RSS {samples[-1]['rss_mb']:.1f} MB", file=sys.stderr, flush=True)
    after_warmup = next(s["rss_mb"] for s in samples if s["predictions"] >= warmup)
    final = samples[-1]["rss_mb"]
    return {"predictions": n, "warmup": warmup, "rss_after_warmup_mb": after_warmup, "rss_final_mb": final,
            "growth_percent": 100 * (final - after_warmup) / after_warmup, "samples": samples,
            "per_second": n / (time.perf_counter() - start)}


def concurrency(predictor, threads: int, per_thread: int) -> dict:
    data = clips(4)
    serial = [predictor.predict(audio=a, sample_rate=16000, frames=f).probabilities for a, f in data]
    mismatches, errors = [], []

    def work(k):
        try:
            for i in range(per_thread):
                j = (k + i) % len(data)
                got = predictor.predict(audio=data[j][0], sample_rate=16000, frames=data[j][1]).probabilities
                if got != serial[j]:
                    mismatches.append((k, i))
        except Exception as exc:  # reported, and the check fails
            errors.append(repr(exc))

    start = time.perf_counter()
    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return {"threads": threads, "per_thread": per_thread, "mismatches": len(mismatches), "errors": errors,
            "seconds": time.perf_counter() - start}


def soak_stream(predictor, minutes: float, fps: float = 15.0, chunk: float = 0.5) -> dict:
    from foal_edge import StreamingPredictor

    stream = StreamingPredictor(predictor, hop=1.0)
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    audio = (0.05 * rng.standard_normal(int(chunk * 16000))).astype(np.float32)
    samples, predictions = [], 0
    steps = int(minutes * 60 / chunk)
    start = time.perf_counter()
    for step in range(steps):
        t0 = step * chunk
        for k in range(int(fps * chunk)):
            stream.push_frame(frame, timestamp=t0 + k / fps)
        predictions += stream.push_audio(audio, 16000) is not None
        if step % max(1, steps // 20) == 0 or step == steps - 1:
            samples.append({"stream_seconds": t0 + chunk, "rss_mb": rss_mb(), "frames_buffered": stream.buffered_frames,
                            "audio_buffered_s": stream.buffered_seconds})
    return {"minutes": minutes, "predictions": predictions, "wall_seconds": time.perf_counter() - start,
            "max_frames_buffered": max(s["frames_buffered"] for s in samples),
            "max_audio_buffered_s": max(s["audio_buffered_s"] for s in samples),
            "rss_growth_percent": 100 * (samples[-1]["rss_mb"] - samples[1]["rss_mb"]) / samples[1]["rss_mb"]
            if len(samples) > 1 else 0.0, "samples": samples}


def run(bundle, predictions: int, threads: int, per_thread: int, stream_minutes: float, backend: str = "auto") -> dict:
    from foal_edge import Predictor

    predictor = Predictor(bundle, backend=backend)
    report = {"bundle": str(bundle), "backend": predictor.backend}
    if predictions > 0:
        report["predictions"] = soak_predictions(predictor, predictions)
    if threads > 0 and per_thread > 0:
        report["concurrency"] = concurrency(predictor, threads, per_thread)
    if stream_minutes > 0:
        report["stream"] = soak_stream(predictor, stream_minutes)
    return report


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="build/foal-demo")
    p.add_argument("--backend", default="auto")
    p.add_argument("--predictions", type=int, default=5000)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--per-thread", type=int, default=100)
    p.add_argument("--stream-minutes", type=float, default=10.0)
    p.add_argument("--out", default=None, help="write the report as JSON here")
    args = p.parse_args(argv)
    report = run(args.bundle, args.predictions, args.threads, args.per_thread, args.stream_minutes, args.backend)
    report["command"] = "python -m benchmarks.soak " + " ".join(sys.argv[1:] if argv is None else argv)
    if "predictions" in report:
        pr = report["predictions"]
        print(f"{pr['predictions']} predictions ({pr['per_second']:.1f}/s): RSS {pr['rss_after_warmup_mb']:.1f} MB "
              f"after warm-up -> {pr['rss_final_mb']:.1f} MB ({pr['growth_percent']:+.2f}%)")
    if "concurrency" in report:
        cc = report["concurrency"]
        print(f"{cc['threads']} threads x {cc['per_thread']}: {cc['mismatches']} mismatches with serial, "
              f"{len(cc['errors'])} errors, {cc['seconds']:.1f} s")
    if "stream" in report:
        st = report["stream"]
        print(f"stream of {st['minutes']:g} min ({st['wall_seconds']:.0f} s wall): {st['predictions']} predictions, "
              f"at most {st['max_frames_buffered']} frames and {st['max_audio_buffered_s']:.1f} s audio buffered, "
              f"RSS {st['rss_growth_percent']:+.2f}%")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
