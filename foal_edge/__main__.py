"""Command line: `python -m foal_edge predict | batch | live | timeline | info` (also installed as `foal-edge`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np

from . import confidence, model_card
from .errors import FoalEdgeError, InvalidInputError, MediaError
from .media import read_wav  # noqa: F401 (the CLI's demo clip; also importable from here)


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
  python -m foal_edge batch build/foal-demo recordings/ --out segments.csv --timeline   (a row per segment)
  python -m foal_edge live build/foal-demo --replay clip.mp4 --record annotated.mp4
  python -m foal_edge timeline build/foal-demo interview.mp4 --out interview.vtt --plot interview.png
  python -m foal_edge serve build/foal-demo --port 8000      (clients: foal_edge.Client or HTTP/JSON)
  python -m foal_edge info build/foal-demo

batch exit status: 0 every file has a prediction; 1 some files have an error row (rerun to retry
them); 2 the command could not run (the message says why); 130 interrupted (rerun to resume).
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
    pr.add_argument("--vad", choices=("auto", "silero", "webrtc", "off"), default=None,
                    help="the voice activity detector (auto: webrtc when installed; silero is slower per window; "
                         "off is --no-vad)")

    ba = sub.add_parser("batch", help="predict many files into one results file",
                        description="Predict every audio, video and image file among INPUTS (directories "
                                    "searched recursively) into --out, JSON Lines or CSV by its suffix, one row per "
                                    "file. Resumable: a rerun predicts only the files without a row, and retries the "
                                    "files that failed (unless --no-retry-failed). One batch per --out at a time. "
                                    "Exit status: 0 every file predicted, 1 some failed, 2 could not run, 130 "
                                    "interrupted (rerun to resume).")
    common(ba, "the audio-only head answers")
    ba.add_argument("inputs", nargs="+", type=Path, help="files and directories")
    ba.add_argument("--out", type=Path, required=True, help="results file: .jsonl or .csv")
    ba.add_argument("--workers", type=int, default=None, help="files predicted at once (default: one per core)")
    ba.add_argument("--no-progress", action="store_true", help="no progress bar")
    ba.add_argument("--no-retry-failed", action="store_true",
                    help="keep the error rows of files that failed on an earlier run instead of retrying them")
    ba.add_argument("--engine", choices=("local", "ray"), default="local",
                    help="local: threads in this process; ray: Ray Data actors (one Predictor each) on a local Ray "
                         "or the cluster RAY_ADDRESS names (pip install 'foal-edge[serve]')")
    ba.add_argument("--timeline", action="store_true",
                    help="one row per segment of each file's emotion timeline (file, segment, segments, start, end, "
                         "kind, label, probabilities, ...; docs/timeline.md) instead of one row per file")
    ba.add_argument("--vad", choices=("silero", "webrtc"), default=None,
                    help="with --timeline: the voice activity detector (default: silero when installed, else webrtc)")
    ba.add_argument("--merge-gap", type=float, default=None,
                    help="with --timeline: seconds of non-speech that end a turn (0.5)")
    ba.add_argument("--overlap", type=float, default=None,
                    help="with --timeline: seconds by which a long turn's windows overlap (0.5)")
    ba.add_argument("--hop", type=float, default=None,
                    help="with --timeline: seconds per segment where nobody speaks (default: the bundle's window)")

    lv = sub.add_parser("live", help="a camera and microphone, or a replayed file, labelled as it plays",
                        description="Stream a webcam and microphone (pip install 'foal-edge[live]'), or a video "
                                    "file with --replay, through a StreamingPredictor: a line per prediction, a "
                                    "window with the label and probability bars where there is a display, and an "
                                    "annotated MP4 with --record.")
    common(lv, "a microphone-only stream")
    lv.add_argument("--replay", type=Path, help="play this video file as if it were live")
    lv.add_argument("--camera", type=int, default=0, help="camera index for OpenCV (without --replay)")
    lv.add_argument("--record", type=Path, help="write every frame shown, annotated, with the audio track, to this "
                    "video file (.mp4, .mkv, .mov or .avi)")
    lv.add_argument("--jsonl", type=Path, help="write each prediction as a JSON line to this file")
    lv.add_argument("--hop", type=float, default=1.0, help="seconds between predictions")
    lv.add_argument("--speed", type=float, default=1.0,
                    help="replay speed (1: real time, frames dropped when it falls behind; 0: every frame, as fast "
                         "as it runs)")
    lv.add_argument("--no-window", action="store_true", help="no display window even where there is a display")

    sv = sub.add_parser("serve", help="serve a bundle over HTTP/JSON (Ray Serve, dynamic batching)",
                        description="Serve a bundle to many clients: POST /predict (foal_edge.wire's JSON; "
                                    "foal_edge.Client speaks it), GET /health. Requests arriving together are "
                                    "predicted as one batch. Needs pip install 'foal-edge[serve]'.")
    sv.add_argument("bundle", type=Path, help="a bundle directory")
    sv.add_argument("--backend", default="auto", help="as for predict")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface; beyond "
                    "loopback a token is required, docs/serving.md)")
    sv.add_argument("--token", default=None, help="clients must send it (Authorization: Bearer TOKEN); default: "
                    "the FOAL_EDGE_TOKEN environment variable, which keeps it out of the process list")
    sv.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body in MB")
    sv.add_argument("--port", type=int, default=8000, help="HTTP port")
    sv.add_argument("--replicas", type=int, default=1, help="Predictor replicas (each a Ray actor)")
    sv.add_argument("--max-batch", type=int, default=8, help="most clips predicted together")
    sv.add_argument("--batch-wait-ms", type=float, default=10.0,
                    help="how long a clip waits for others to fill a batch")
    sv.add_argument("--no-vad", action="store_true", help="no voice activity detection")

    # -- timeline (foal_edge/timeline.py) --
    tl = sub.add_parser("timeline", help="an emotion timeline of a long recording: one row per speech turn",
                        description="Segment a recording into speech turns (voice activity; long turns cut into "
                                    "windows) and stretches without speech (the video head every --hop seconds), "
                                    "predict each in one streaming pass, and write the segments (docs/timeline.md).")
    common(tl, "no frames are read")
    tl.add_argument("file", type=Path, help="a video or audio file (PyAV reads it)")
    tl.add_argument("--out", type=Path, action="append", default=[],
                    help="write the segments: .jsonl, .csv or .vtt (WebVTT subtitles: a player shows the emotion "
                         "under the picture); repeat for several")
    tl.add_argument("--plot", type=Path, help="draw the probabilities over time, segments marked, to a PNG "
                                              "(needs matplotlib)")
    tl.add_argument("--vad", choices=("silero", "webrtc"), default=None,
                    help="the voice activity detector (default: silero when installed, else webrtc)")
    tl.add_argument("--merge-gap", type=float, default=None, help="seconds of non-speech that end a turn (0.5)")
    tl.add_argument("--overlap", type=float, default=None, help="seconds by which a long turn's windows overlap (0.5)")
    tl.add_argument("--hop", type=float, default=None,
                    help="seconds per segment where nobody speaks (default: the bundle's window)")
    tl.add_argument("--no-progress", action="store_true", help="no progress bar")

    inf = sub.add_parser("info", help="summarise a bundle and the backends available here")
    inf.add_argument("bundle", type=Path, help="a bundle directory")
    return p


def main(argv=None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit: a closed pipe is handled below
    except BrokenPipeError:  # `... | head`: the reader has what it wanted; stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 141  # what a shell reports for a command stopped by a closed pipe (128 + SIGPIPE)
    if code == INTERRUPTED and argv is None and threading.active_count() > 1:
        # Ctrl-C on the command line: workers still inside a prediction are not waited for
        # (their files have no row yet; a rerun predicts them). Everything written is closed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


def _main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "info":
            return info(args.bundle)
        if args.command == "batch":
            return batch(args)
        if args.command == "live":
            return live(args)
        if args.command == "timeline":
            return timeline(args)
        if args.command == "serve":
            from .serve import serve_forever

            serve_forever(str(args.bundle.resolve()), host=args.host, port=args.port, backend=args.backend,
                          replicas=args.replicas, max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
                          vad=False if args.no_vad else "auto", token=args.token, max_body_mb=args.max_body_mb)
            return 0
        result = predict(args)
    except FoalEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        raise
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
        for line in confidence.describe(result):  # confidence, and whether voice and face agree
            print(line)
    return 0


def open_predictor(args, threads=None):
    from . import vad as voice
    from .predictor import Predictor

    chosen = getattr(args, "vad", None)  # --vad where the command has it
    if args.no_vad and chosen not in (None, "off"):
        raise InvalidInputError(f"--vad {chosen} and --no-vad contradict each other: give one")
    kind = "off" if args.no_vad else (chosen or "auto")
    predictor = Predictor(args.bundle, backend=args.backend, threads=threads, vad=kind)
    if kind == "auto" and predictor.vad is None:  # said once, not silently off
        rate = predictor.manifest.sample_rate
        why = "webrtcvad is not installed (pip install 'foal-edge[vad]')" if not voice.available() else \
            f"WebRTC's detector does not take the bundle's {rate} Hz"
        print(f"note: voice activity detection is off: {why}; every window's audio goes to WavLM "
              "(--no-vad turns it off without this note)", file=sys.stderr)
    return predictor


def batch(args) -> int:
    from . import batch as runner
    from .backends.onnxruntime import physical_cores

    workers = physical_cores() if args.workers is None else args.workers
    if not 1 <= workers <= 256:
        raise InvalidInputError(f"--workers must be 1..256, not {workers}")
    if args.out.suffix.lower() not in (".jsonl", ".csv"):
        raise InvalidInputError(f"--out {args.out}: name a .jsonl or .csv file")
    from .bundle import load_manifest

    # Everything that can be refused is refused before the model loads: missing inputs, missing
    # packages, an --out that is an input, a FIFO or another batch's (its lock is taken here).
    options = {k: v for k, v in (("vad", args.vad), ("merge_gap", args.merge_gap), ("overlap", args.overlap),
                                 ("hop", args.hop)) if v is not None}
    if options and not args.timeline:
        named = "/".join(f"--{k.replace('_', '-')}" for k in options)
        raise InvalidInputError(f"{named} shape a timeline: add --timeline (or leave them out)")
    timeline = None
    if args.timeline:
        timeline = {k: v for k, v in options.items() if k != "vad"}
        timeline["vad"] = False if args.no_vad else (args.vad or "auto")
    files = runner.collect(args.inputs)
    runner.check_media_packages(files)
    manifest = load_manifest(args.bundle)
    rows = runner.open_rows(args.out, manifest.labels, files, timeline is not None, manifest.attributes).open()
    try:
        if timeline is None:
            predictor = open_predictor(args, threads=1 if workers > 1 else None)  # one core per worker
        else:  # the timeline runs its own voice activity detector
            from .predictor import Predictor

            predictor = Predictor(args.bundle, backend=args.backend, threads=1 if workers > 1 else None, vad=False,
                                  spin=False, warm_up=False)  # decoding shares the cores: ONNX Runtime's threads sleep
    except BaseException:
        rows.close()
        raise
    counts = runner.run(predictor, args.inputs, args.out, workers, use_audio=not args.video_only,
                        use_video=not args.audio_only, progress=not args.no_progress, engine=args.engine,
                        retry_failed=not args.no_retry_failed, rows=rows, timeline=timeline)
    kept = f", {counts['kept_failed']} failed earlier (kept, not retried)" if counts["kept_failed"] else ""
    segments = f" ({counts['segments']} segments)" if timeline is not None else ""
    print(f"{counts['done']} predicted{segments}, {counts['failed']} failed, {counts['skipped']} already in "
          f"{args.out}{kept}", file=sys.stderr)
    if counts["interrupted"]:
        missing = counts["files"] - counts["done"] - counts["failed"] - counts["skipped"] - counts["kept_failed"]
        print(f"interrupted: {missing} files not predicted yet; {args.out} holds every finished row; run the same "
              "command again to resume", file=sys.stderr)
        return INTERRUPTED
    return 0 if not counts["failed"] and not counts["kept_failed"] else 1


def live(args) -> int:
    from . import live as runner
    from .validate import check_finite

    speed = check_finite("--speed", args.speed, "a number >= 0 (1: real time; 0: as fast as it runs)", limit=1000)
    if speed < 0:
        raise InvalidInputError(f"--speed must be >= 0 (1: real time; 0: as fast as it runs), not {args.speed}")
    hop = check_finite("--hop", args.hop, "a number of seconds > 0", limit=1e6)
    if hop <= 0:
        raise InvalidInputError(f"--hop must be a number of seconds > 0, not {args.hop}")
    if args.camera < 0:
        raise InvalidInputError(f"--camera must be a camera index >= 0, not {args.camera}")
    plan = runner.check_outputs(replay=args.replay, record=args.record, jsonl=args.jsonl)
    predictor = open_predictor(args)
    if hop > predictor.manifest.audio_seconds:
        raise InvalidInputError(f"--hop must be at most the bundle's {predictor.manifest.audio_seconds:g} s window, "
                                f"not {args.hop}")
    runner.run(predictor, replay=args.replay, camera=args.camera, record=args.record, jsonl=args.jsonl, hop=hop,
               speed=speed, window=not args.no_window, use_audio=not args.video_only, use_video=not args.audio_only,
               plan=plan)
    return 0  # Ctrl-C (or q / Esc in the window) is how live ends: the outputs are finished and kept


def timeline(args) -> int:
    """`timeline BUNDLE FILE`: segments to --out files (and a --plot), with a progress bar."""
    from . import timeline as tl
    from .predictor import Predictor

    for out in args.out:
        if out.suffix.lower() not in tl.FORMATS:
            raise InvalidInputError(f"--out {out}: name a {', '.join(tl.FORMATS)} file")
    if args.plot is not None:
        tl.check_plotting()
    options = {k: v for k, v in (("merge_gap", args.merge_gap), ("overlap", args.overlap), ("hop", args.hop))
               if v is not None}
    options["vad"] = False if args.no_vad else (args.vad or "auto")
    # The timeline runs its own detector; decoding shares the cores, so ONNX Runtime's idle threads
    # sleep instead of spinning (docs/timeline.md).
    predictor = Predictor(args.bundle, backend=args.backend, vad=False, spin=False, warm_up=False)
    bar = tl.progress_bar(args.file.name, enabled=not args.no_progress)
    segments = predictor.timeline(args.file, use_audio=not args.video_only, use_video=not args.audio_only,
                                  progress=bar, **options)
    if bar is not None:
        bar.close()
    for out in args.out:
        tl.write(segments, out)
    if args.plot is not None:
        tl.plot(segments, args.plot, title=args.file.name)
    if not args.out:
        for s in segments:
            probs = ", ".join(f"{k} {v:.2f}" for k, v in sorted(s.probabilities.items(), key=lambda kv: -kv[1])[:3])
            print(f"{s.start:8.2f} {s.end:8.2f}  {s.label:<5} ({probs})  {'+'.join(s.modalities)}")
    speech = sum(s.end - s.start for s in segments if s.kind == "speech")
    print(f"{len(segments)} segments ({sum(s.kind == 'speech' for s in segments)} of speech, {speech:.1f} s)"
          + "".join(f"; wrote {o}" for o in args.out) + (f"; plotted {args.plot}" if args.plot else ""),
          file=sys.stderr)
    return 0


def predict(args):
    from .bundle import demo_file

    if args.video_only and args.video is None and not args.demo:
        raise InvalidInputError("--video-only predicts from a video's frames: give --video (only --audio was given; "
                                "drop --video-only to predict the audio)" if args.audio else
                                "--video-only predicts from a video's frames: give --video")
    if args.audio_only and args.audio is not None and args.video is not None:
        raise InvalidInputError("--audio-only with both --audio and --video would leave the video unused: give only "
                                "--audio")
    predictor = open_predictor(args)
    if model_card.notice(predictor.manifest.model_card):  # e.g. the demo's "synthetic data" line
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
    from .bundle import load_manifest

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
    print(*model_card.describe(m.model_card), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
