"""Command line: `python -m foal_edge predict | batch | live | info` (also installed as `foal-edge`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import wave
from pathlib import Path

import numpy as np

from . import confidence, model_card  # issue 25
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


EPILOG = """examples:
  python -m foal_edge predict build/foal-demo --demo
  python -m foal_edge predict build/foal-demo --video clip.mp4            (its own audio track)
  python -m foal_edge predict build/foal-demo --video clip.mp4 --video-only
  python -m foal_edge batch build/foal-demo recordings/ --out results.jsonl --workers 2
  python -m foal_edge live build/foal-demo --replay clip.mp4 --record annotated.mp4
  python -m foal_edge serve build/foal-demo --port 8000      (clients: foal_edge.Client or HTTP/JSON)
  python -m foal_edge info build/foal-demo
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m foal_edge", description="Foal-Net emotion recognition runtime: "
                                "predict a clip, a folder of files, or a live camera and microphone",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp, modality_help: str):
        sp.add_argument("bundle", type=Path, help="a bundle directory (python -m export.build_engine writes one)")
        sp.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "onnxruntime-cpu",
                                                              "onnxruntime-cuda", "tensorrt"),
                        help="auto: TensorRT engines if the bundle has them, else ONNX Runtime (CUDA if present)")
        only = sp.add_mutually_exclusive_group()
        only.add_argument("--audio-only", action="store_true", help=f"leave the video out: {modality_help}")
        only.add_argument("--video-only", action="store_true", help="leave the audio out: the video-only head answers")
        sp.add_argument("--no-vad", action="store_true",
                        help="no voice activity detection (default: on when webrtcvad is installed; a window "
                             "without speech is answered by the video head)")

    pr = sub.add_parser("predict", help="predict the emotion of one clip",
                        description="Predict one clip: an audio file, a video file (its own audio track is used "
                                    "unless --audio is given), both, or the demo clip inside the bundle.")
    common(pr, "the audio-only head answers")
    pr.add_argument("--audio", type=Path, help="audio file (any format soundfile reads: wav, flac, ogg, mp3)")
    pr.add_argument("--video", type=Path, help="video file (PyAV: mp4, avi, mkv, ...); an image works as one frame")
    pr.add_argument("--demo", action="store_true", help="the sample clip shipped inside the bundle")
    pr.add_argument("--json", action="store_true", help="print the prediction as JSON")

    ba = sub.add_parser("batch", help="predict many files into one results file",
                        description="Predict every audio and video file among INPUTS (directories searched "
                                    "recursively) into --out, JSON Lines or CSV by its suffix. Resumable: files "
                                    "already in --out are skipped. A file that fails is reported and skipped.")
    common(ba, "the audio-only head answers")
    ba.add_argument("inputs", nargs="+", type=Path, help="files and directories")
    ba.add_argument("--out", type=Path, required=True, help="results file: .jsonl or .csv")
    ba.add_argument("--workers", type=int, default=None, help="files predicted at once (default: one per core)")
    ba.add_argument("--no-progress", action="store_true", help="no progress bar")
    ba.add_argument("--engine", choices=("local", "ray"), default="local",
                    help="local: threads in this process; ray: Ray Data actors (one Predictor each) on a local Ray "
                         "or the cluster RAY_ADDRESS names (pip install 'foal-edge[serve]')")

    lv = sub.add_parser("live", help="a camera and microphone, or a replayed file, labelled as it plays",
                        description="Stream a webcam and microphone (pip install 'foal-edge[live]'), or a video "
                                    "file with --replay, through a StreamingPredictor: a line per prediction, a "
                                    "window with the label and probability bars where there is a display, and an "
                                    "annotated MP4 with --record.")
    common(lv, "a microphone-only stream")
    lv.add_argument("--replay", type=Path, help="play this video file as if it were live")
    lv.add_argument("--camera", type=int, default=0, help="camera index for OpenCV (without --replay)")
    lv.add_argument("--record", type=Path, help="write every frame, annotated, to this MP4")
    lv.add_argument("--jsonl", type=Path, help="write each prediction as a JSON line to this file")
    lv.add_argument("--hop", type=float, default=1.0, help="seconds between predictions")
    lv.add_argument("--speed", type=float, default=1.0, help="replay speed (1: real time; 0: as fast as it runs)")
    lv.add_argument("--no-window", action="store_true", help="no display window even where there is a display")

    sv = sub.add_parser("serve", help="serve a bundle over HTTP/JSON (Ray Serve, dynamic batching)",
                        description="Serve a bundle to many clients: POST /predict (foal_edge.wire's JSON; "
                                    "foal_edge.Client speaks it), GET /health. Requests arriving together are "
                                    "predicted as one batch. Needs pip install 'foal-edge[serve]'.")
    sv.add_argument("bundle", type=Path, help="a bundle directory")
    sv.add_argument("--backend", default="auto", help="as for predict")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    sv.add_argument("--port", type=int, default=8000, help="HTTP port")
    sv.add_argument("--replicas", type=int, default=1, help="Predictor replicas (each a Ray actor)")
    sv.add_argument("--max-batch", type=int, default=8, help="most clips predicted together")
    sv.add_argument("--batch-wait-ms", type=float, default=10.0,
                    help="how long a clip waits for others to fill a batch")
    sv.add_argument("--no-vad", action="store_true", help="no voice activity detection")

    inf = sub.add_parser("info", help="summarise a bundle and the backends available here")
    inf.add_argument("bundle", type=Path, help="a bundle directory")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "info":
            return info(args.bundle)
        if args.command == "batch":
            return batch(args)
        if args.command == "live":
            return live(args)
        if args.command == "serve":
            from .serve import serve_forever

            serve_forever(str(args.bundle.resolve()), host=args.host, port=args.port, backend=args.backend,
                          replicas=args.replicas, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
                          vad=False if args.no_vad else "auto")
            return 0
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
        for line in confidence.describe(result):  # issue 25: confidence, and whether voice and face agree
            print(line)
    return 0


def open_predictor(args, threads=None):
    from .predictor import Predictor

    return Predictor(args.bundle, backend=args.backend, threads=threads, vad=False if args.no_vad else "auto")


def batch(args) -> int:
    from . import batch as runner
    from .backends.onnxruntime import physical_cores

    workers = args.workers or physical_cores()
    if workers < 1 or workers > 256:
        raise InvalidInputError(f"--workers must be 1..256, not {workers}")
    if args.out.suffix.lower() not in (".jsonl", ".csv"):
        raise InvalidInputError(f"--out {args.out}: name a .jsonl or .csv file")
    predictor = open_predictor(args, threads=1 if workers > 1 else None)  # one core per worker
    counts = runner.run(predictor, args.inputs, args.out, workers, use_audio=not args.video_only,
                        use_video=not args.audio_only, progress=not args.no_progress, engine=args.engine)
    print(f"{counts['done']} predicted, {counts['failed']} failed, {counts['skipped']} already in {args.out}",
          file=sys.stderr)
    return 0 if not counts["failed"] else 1


def live(args) -> int:
    from . import live as runner

    if args.speed < 0:
        raise InvalidInputError(f"--speed must be >= 0, not {args.speed}")
    predictor = open_predictor(args)
    runner.run(predictor, replay=args.replay, camera=args.camera, record=args.record, jsonl=args.jsonl,
               hop=args.hop, speed=args.speed, window=not args.no_window, use_audio=not args.video_only,
               use_video=not args.audio_only)
    return 0


def predict(args):
    from .manifest import demo_file

    predictor = open_predictor(args)
    if model_card.notice(predictor.manifest.model_card):  # issue 25: e.g. the demo's "synthetic data" line
        print(f"NOTICE: {model_card.notice(predictor.manifest.model_card)}", file=sys.stderr)
    if args.demo:
        m = predictor.manifest
        audio, rate = read_wav(demo_file(args.bundle, m, "audio"))
        frames = read_frames_npy(demo_file(args.bundle, m, "frames"))
        return predictor.predict(audio=None if args.video_only else audio, sample_rate=rate,
                                 frames=None if args.audio_only else frames, fps=m.demo["fps"])
    if args.audio or args.video:
        return predictor.predict_files(args.audio, args.video, use_audio=not args.video_only,
                                       use_video=not args.audio_only)
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
    print(*model_card.describe(m.model_card), sep="\n")  # issue 25
    return 0


if __name__ == "__main__":
    sys.exit(main())
