"""Command line: `python -m foal_edge predict BUNDLE ...` and `python -m foal_edge info BUNDLE`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import wave
from pathlib import Path

import numpy as np

from .errors import FoalEdgeError, InvalidInputError, MediaError


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV with the standard library (the demo clip needs no extra packages)."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise MediaError(f"{path}: only 16-bit WAV is read without soundfile")
            raw = w.readframes(w.getnframes())
            channels = w.getnchannels()
            usable = len(raw) // (2 * channels) * 2 * channels
            if usable < len(raw) or usable < 2 * channels * w.getnframes():
                raise MediaError(f"{path}: truncated WAV (header says {w.getnframes()} frames, "
                                 f"{usable // (2 * channels)} present)")
            data = np.frombuffer(raw, "<i2").reshape(-1, channels)
            return data.mean(axis=1).astype(np.int16) if channels > 1 else data[:, 0].copy(), w.getframerate()
    except (OSError, EOFError, wave.Error) as exc:
        raise MediaError(f"{path}: cannot read the WAV file ({exc})") from None


def read_frames_npy(path: Path) -> np.ndarray:
    """Frames saved with numpy, never unpickled."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise MediaError(f"{path}: cannot read the frames file ({exc})") from None


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

    try:
        if args.command == "info":
            return info(args.bundle)
        result = predict(args)
    except FoalEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as exc:  # the machine, not the input: still one line
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug of ours: one line for the user, the traceback on request
        if os.environ.get("FOAL_EDGE_DEBUG"):
            raise
        print(f"error: internal error ({type(exc).__name__}: {exc}); please report it with the command you ran "
              "(FOAL_EDGE_DEBUG=1 shows the traceback)", file=sys.stderr)
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


def predict(args):
    from .manifest import demo_file
    from .predictor import Predictor

    predictor = Predictor(args.bundle, backend=args.backend)
    if args.demo:
        m = predictor.manifest
        audio, rate = read_wav(demo_file(args.bundle, m, "audio"))
        frames = read_frames_npy(demo_file(args.bundle, m, "frames"))
        return predictor.predict(audio=audio, sample_rate=rate, frames=frames, fps=m.demo["fps"])
    if args.audio or args.video:
        return predictor.predict_files(args.audio, args.video)
    raise InvalidInputError("give --audio, --video or --demo")


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
