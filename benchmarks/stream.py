"""Can a StreamingPredictor keep up with a camera and a microphone? A 30 fps camera at camera
sizes and 0.1 s microphone chunks pushed as fast as the stream takes them: the real-time
factor (wall time / stream time; under 1 keeps up), the frames encoded of those seen, and
each prediction's timings. Also the cost of voice activity detection per window.

    python -m benchmarks.stream --bundle build/foal-demo --seconds 30 --out benchmarks/results/stream-cpu

Sizes 640x480 and 1280x720 (--sizes), with VAD on and off, side by side in one run.
Writes NAME.json and NAME.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from . import report
from .latency import machine


def camera_frames(size: tuple[int, int], count: int, seed: int = 0) -> list[np.ndarray]:
    """Synthetic faces scaled to a camera size (a few distinct frames, cycled)."""
    from PIL import Image

    from training.synthetic import make_clip

    h, w = size
    _, faces, _ = make_clip(seed, frames=min(count, 12))
    return [np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR)) for f in faces]


def run_stream(predictor, frames, seconds: float, fps: float, chunk: float = 0.1) -> dict:
    from foal_edge import StreamingPredictor
    from training.synthetic import make_clip

    audio, _, _ = make_clip(1, seconds=seconds, frames=1)
    stream = StreamingPredictor(predictor, hop=1.0)
    timings = []
    n_chunk = int(chunk * 16000)
    start = time.perf_counter()
    frame_t = 0.0
    for i in range(0, len(audio), n_chunk):
        result = stream.push_audio(audio[i:i + n_chunk], 16000)
        if result is not None:
            timings.append(result.timings_ms)
        now = (i + n_chunk) / 16000
        while frame_t < now:  # the frames of this chunk's time
            stream.push_frame(frames[int(frame_t * fps) % len(frames)], timestamp=frame_t)
            frame_t += 1 / fps
    wall = time.perf_counter() - start
    keys = sorted({k for t in timings for k in t})
    return {"stream_seconds": seconds, "wall_seconds": wall, "rtf": wall / seconds, "predictions": len(timings),
            "frames_seen": stream.frames_seen, "frames_encoded": stream.frames_encoded,
            "timings_ms_p50": {k: float(np.median([t.get(k, 0.0) for t in timings])) for k in keys}}


def vad_cost(rate: int = 16000, repeats: int = 50) -> dict:
    from foal_edge.vad import VoiceActivity
    from training.synthetic import make_clip

    vad = VoiceActivity(rate)
    audio, _, _ = make_clip(2, seconds=3.0, frames=1)
    vad.speech(audio)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        vad.speech(audio)
        times.append(time.perf_counter() - t)
    return {"window_seconds": 3.0, "p50_ms": 1e3 * float(np.median(times))}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stream", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=Path("build/foal-demo"), help="the bundle to stream through")
    p.add_argument("--seconds", type=float, default=30.0, help="stream seconds per setting")
    p.add_argument("--fps", type=float, default=30.0, help="camera frames per second")
    p.add_argument("--sizes", default="480x640,720x1280", help="camera sizes HxW, comma separated")
    p.add_argument("--threads", type=int, default=None, help="predictor threads (default: one per core)")
    p.add_argument("--out", type=Path, required=True, help="output path without extension")
    args = p.parse_args(argv)

    from foal_edge import Predictor

    results = {"machine": machine(), "command": "python -m benchmarks.stream " + " ".join(sys.argv[1:]),
               "bundle": str(args.bundle), "fps": args.fps, "runs": [], "vad": vad_cost()}
    predictors = {vad: Predictor(args.bundle, backend="onnxruntime-cpu", threads=args.threads, vad=vad)
                  for vad in (True, False)}
    for size in args.sizes.split(","):
        h, w = (int(x) for x in size.split("x"))
        frames = camera_frames((h, w), 12)
        for vad, predictor in predictors.items():
            run = run_stream(predictor, frames, args.seconds, args.fps)
            run.update(size=f"{w}x{h}", vad=vad)
            results["runs"].append(run)
            print(f"[stream] {w}x{h} vad={vad}: RTF {run['rtf']:.3f}, {run['frames_encoded']}/{run['frames_seen']} "
                  f"frames encoded", file=sys.stderr, flush=True)
    return report.write(args.out, results, markdown)


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"# Streaming at camera rate ({results['fps']:g} fps, 0.1 s audio chunks, hop 1 s)", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; onnxruntime {m['onnxruntime']}. Bundle: `{results['bundle']}`.",
             f"Voice activity detection: {results['vad']['p50_ms']:.2f} ms per {results['vad']['window_seconds']:g} s "
             "window (p50).", "", f"Command: `{results['command']}`", "",
             "| camera | VAD | real-time factor | frames encoded / seen | predictions | p50 ms per prediction: "
             "frames encoded since the last | audio | fusion | total |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results["runs"]:
        t = r["timings_ms_p50"]
        lines.append(f"| {r['size']} | {'on' if r['vad'] else 'off'} | {r['rtf']:.3f} | {r['frames_encoded']} / "
                     f"{r['frames_seen']} | {r['predictions']} | {t.get('video', 0):.1f} | {t.get('audio', 0):.1f} "
                     f"| {t.get('fusion', 0):.1f} | {t.get('total', 0):.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
