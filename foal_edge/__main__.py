"""Command line: `python -m foal_edge predict BUNDLE ...` and `python -m foal_edge info BUNDLE`."""

from __future__ import annotations

import argparse
import json
import sys
import wave
from pathlib import Path

import numpy as np

from .errors import FoalEdgeError


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV with the standard library (the demo clip needs no extra packages)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise FoalEdgeError(f"{path}: only 16-bit WAV is read without soundfile")
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
        return data.mean(axis=1).astype(np.int16) if w.getnchannels() > 1 else data[:, 0].copy(), w.getframerate()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m foal_edge", description="Foal-Net emotion recognition runtime")
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("predict", help="predict the emotion of a clip")
    pr.add_argument("bundle", type=Path)
    pr.add_argument("--audio", type=Path, help="audio file (any format soundfile reads)")
    pr.add_argument("--video", type=Path, help="video file (PyAV); its audio track is used without --audio")
    pr.add_argument("--demo", action="store_true", help="the sample clip shipped inside the bundle")
    pr.add_argument("--backend", default="auto")
    pr.add_argument("--json", action="store_true", help="print the prediction as JSON")
    inf = sub.add_parser("info", help="summarise a bundle and the backends available here")
    inf.add_argument("bundle", type=Path)
    args = p.parse_args(argv)

    from .predictor import Predictor

    try:
        if args.command == "info":
            return info(args.bundle)
        predictor = Predictor(args.bundle, backend=args.backend)
        if args.demo:
            demo = predictor.manifest.demo
            if not demo:
                raise FoalEdgeError(f"{args.bundle} ships no demo clip")
            audio, rate = read_wav(args.bundle / demo["audio"])
            frames = np.load(args.bundle / demo["frames"], allow_pickle=False)
            result = predictor.predict(audio=audio, sample_rate=rate, frames=frames, fps=demo.get("fps"))
        elif args.audio or args.video:
            result = predictor.predict_files(args.audio, args.video)
        else:
            raise FoalEdgeError("give --audio, --video or --demo")
    except FoalEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        probs = ", ".join(f"{k} {v:.2f}" for k, v in sorted(result.probabilities.items(), key=lambda kv: -kv[1]))
        print(f"{result.label}  ({probs})  from {'+'.join(result.modalities)} on {result.backend} "
              f"in {result.timings_ms['total']:.0f} ms")
        if result.attributes:
            print("  " + ", ".join(f"{k} {v:.2f}" for k, v in result.attributes.items()))
        for note in result.notes:
            print(f"  note: {note}")
    return 0


def info(bundle: Path) -> int:
    from .backends.onnxruntime import cuda_available
    from .manifest import load_manifest

    m = load_manifest(bundle)
    print(f"bundle {bundle}: preset {m.preset}, schema v{m.schema_version}")
    print(f"  labels: {', '.join(m.labels)}" + (f"; attributes: {', '.join(m.attributes)}" if m.attributes else ""))
    print(f"  audio window {m.audio_seconds:g} s at {m.sample_rate} Hz; {m.frames_per_clip} frames per clip "
          f"at {m.image_size}x{m.image_size}")
    for name, g in m.graphs.items():
        size = (bundle / g.file).stat().st_size / 1e6
        extra = f", TensorRT {g.tensorrt_version}, sm_{g.compute_capability}" if g.format == "tensorrt" else ""
        print(f"  {name:<7} {g.file} ({g.format}, {g.precision}, {size:.2f} MB{extra})")
    backends = []
    try:
        import onnxruntime

        backends.append(f"onnxruntime {onnxruntime.__version__} ({'CUDA' if cuda_available() else 'CPU'})")
    except ImportError:
        pass
    try:
        import tensorrt

        backends.append(f"tensorrt {tensorrt.__version__}")
    except ImportError:
        pass
    print(f"  backends here: {', '.join(backends) or 'none (pip install foal-edge[cpu])'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
