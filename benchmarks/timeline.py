"""The emotion timeline: how its choices were made, and how fast it reads a long file.

    python -m benchmarks.timeline choices --bundle build/foal-demo --out benchmarks/results/timeline-choices
    python -m benchmarks.timeline throughput --bundle build/foal-demo --minutes 10 60 \
        --out benchmarks/results/timeline-throughput

choices: the merge gap on conversations with known turns (espeak-ng sentences from
tests/data/speech, 0.8-4 s of quiet or room noise between turns, pauses inside turns as the voice
makes them), each detector's decisions segmented with each gap: the turn-boundary F1 (a boundary
within 0.3 s of a true one) and the mean error of the boundaries found. The split overlap and the
video hop on training.synthetic's voice and faces (what the demo bundle knows): how often a
segment's label is the emotion of its turn (of the face, where nobody speaks), and the audio
heard.

throughput: MP4 files at 720p and 1080p of each of --minutes: a 2-minute synthetic conversation
(espeak-ng speech, faces scaled up from 320x240) encoded once as H.264 (libx264 ultrafast) at
25 fps with AAC audio, then looped to length by stream copy (`ffmpeg -stream_loop N -c copy`: an
hour costs a copy of the file, not an encode); the 1080p clip is the 720p one scaled by ffmpeg.
Each looped file's packet timestamps are checked to run on without a gap or a step back (the
largest step per stream is recorded). For each file, one after the other: the decode-only run
`ffmpeg -i FILE -f null -` and `python -m foal_edge timeline BUNDLE FILE`, each in a subprocess:
wall time, CPU time (all its threads) and peak RSS. Needs ffmpeg. Writes NAME.json and NAME.md.

profile: where the CPU time of `Predictor.timeline(FILE)` goes, in one process (the Predictor as
the timeline command opens it): CPU seconds per thread (FFmpeg's decoding threads by name, read
from /proc just before the file is closed; the decoding thread; the caller's thread) and, on the
caller's thread, per step (frames to RGB, normalisation, Silero, each graph), with per-thread CPU
timers around those functions. Also the seconds the caller's thread waited for the decoding
thread. Linux only (/proc).

    python -m benchmarks.timeline profile --bundle build/foal-demo --files FILE [FILE ...] \
        --out benchmarks/results/timeline-profile

scaler: how a decoded frame becomes CLIP's crop: frames with sharp detail (`textured`: a face
with one-pixel stripes and a patch of noise) at 1280x720 and 1920x1080, encoded as MPEG-4 at
20 Mbit/s and decoded; each way of converting them is compared with CLIP's crop of the picture
that was encoded (grey levels: mean absolute difference, 99th percentile, bias) and timed (CPU
milliseconds a frame, one thread, process CPU time): the whole frame converted by PyAV and
resized by Pillow (CLIP's transform), FFmpeg's scaler to twice the resize then Pillow, and
FFmpeg's scaler straight to the resize with several flag sets (decode.FrameScaler's is FLAGS).

    python -m benchmarks.timeline scaler --out benchmarks/results/frame-scaler
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RATE = 16000


SPEECH_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "speech"


def _utterances() -> list[np.ndarray]:
    import soundfile as sf

    return [sf.read(f, dtype="float32")[0] for f in sorted(SPEECH_DIR.glob("*.flac"))]


def _speech_edges(wave: np.ndarray) -> tuple[float, float, list[float]]:
    """(first, last speech time, pause midpoints) of a clean utterance, 10 ms resolution."""
    from .vad import speech_mask

    mask = speech_mask(wave)
    idx = np.flatnonzero(mask)
    n = len(wave) // 160
    energy = (wave[: n * 160].reshape(n, 160) ** 2).mean(1)
    words = energy > energy.max() * 10 ** (-35 / 10)  # the pauses between words, not closed
    edges = np.flatnonzero(np.diff(np.r_[0, words.astype(np.int8), 0]))
    pauses = [(a + b) / 200 for a, b in zip(edges[1:-1:2], edges[2::2]) if b - a >= 6 and a > 50]
    return idx[0] / 100, (idx[-1] + 1) / 100, pauses


def conversation(seconds: float, seed: int = 0, fps: float = 5.0, size=(96, 128), speech: str = "espeak",
                 noise_gaps: bool = True):
    """A recording with known structure: (audio float32 at 16 kHz, frames uint8 [N, H, W, 3] at
    `fps`, turns [(start, end)] of speech, face changes [(time, code)]).

    Turns: espeak-ng sentences (tests/data/speech; some cut at a pause to make short turns) or,
    with speech="synthetic", training.synthetic's voice; 0.8-4 s between turns, every other gap
    with room noise (pink, 26-40 dB below the speech peak) over a quiet room. The face changes
    expression at the start of each turn."""
    from PIL import Image

    from training.synthetic import _speaker, draw_face, speak

    rng = np.random.default_rng([seed, 24])
    speakers = [_speaker(rng, "F"), _speaker(rng, "M")]
    n = int(seconds * RATE)
    audio = (rng.normal(0, 0.001, n)).astype(np.float32)  # a quiet room
    pool = _utterances() if speech == "espeak" else None
    turns = []
    t = float(rng.uniform(1.0, 2.5))
    k = 0
    while True:
        code = str(rng.choice(["neu", "hap", "ang", "sad"]))
        if pool is not None:
            wave = pool[rng.integers(len(pool))]
            first, last, pauses = _speech_edges(wave)
            if pauses and rng.random() < 0.4:  # a short turn: the sentence up to a pause
                cut = float(rng.choice(pauses))
                wave = wave[: int(cut * RATE)]
                first, last, _ = _speech_edges(wave)
            wave = wave * rng.uniform(0.4, 1.0)
        else:
            length = float(rng.uniform(1.2, 5.0))
            wave = speak(rng, speakers[k % 2], code, length)
            first, last = 0.0, length
        if t + len(wave) / RATE > seconds - 1.0:
            break
        a = int(t * RATE)
        audio[a:a + len(wave)] += wave
        turns.append((t + first, t + last, code))
        gap = float(rng.uniform(0.8, 4.0))
        if noise_gaps and k % 2:  # room noise in this gap: a fan, a door, rustling
            b, c = a + len(wave), min(n, a + len(wave) + int(gap * RATE))
            if c - b > 16:
                spectrum = np.fft.rfft(rng.standard_normal(c - b))
                f = np.fft.rfftfreq(c - b, 1 / RATE)
                pink = np.fft.irfft(spectrum / np.sqrt(np.maximum(f, 20)), c - b)
                audio[b:c] += (pink / pink.std() * rng.uniform(0.005, 0.02)).astype(np.float32)
        t += len(wave) / RATE + gap
        k += 1
    # The face: each turn's expression from its start until the next turn starts.
    count = int(seconds * fps)
    times = np.arange(count) / fps
    codes = ["neu"] * count
    for i, (s, _, c) in enumerate(turns):
        e = turns[i + 1][0] if i + 1 < len(turns) else seconds
        for j in np.flatnonzero((times >= s) & (times < e)):
            codes[j] = c
    cache = {}
    h, w = size
    frames = np.empty((count, h, w, 3), np.uint8)
    for j, c in enumerate(codes):
        key = (c, j % 4)
        if key not in cache:
            face = draw_face(rng, speakers[0], c, 0.9, talking=True)
            cache[key] = np.asarray(Image.fromarray(face).resize((w, h)))
        frames[j] = cache[key]
    return audio, frames, [(s, e) for s, e, _ in turns], [(s, c) for s, _, c in turns]


def write_mp4(path: Path, audio: np.ndarray, frames: np.ndarray, fps: float, codec: str = "libx264",
              size: tuple[int, int] | None = None, repeat: int = 1, preset: str = "ultrafast") -> Path:
    """An MP4 with H.264 video (scaled to `size` (W, H)) and AAC audio; `repeat` loops the clip."""
    import av

    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=int(fps))
        h, w = frames.shape[1:3] if size is None else (size[1], size[0])
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            v.options = {"preset": preset, "crf": "28"}
        a = out.add_stream("aac", rate=RATE, layout="mono")
        scaled = _Scaled(frames, size)
        step = 1024
        per_frame = RATE / fps
        pos = 0
        for r in range(repeat):
            for j, f in enumerate(scaled):
                frame = av.VideoFrame.from_ndarray(f, format="rgb24")
                frame.pts = r * len(scaled) + j
                out.mux(v.encode(frame))
                until = int((r * len(scaled) + j + 1) * per_frame)
                while pos + step <= until:
                    chunk = audio[(pos % len(audio)):(pos % len(audio)) + step]
                    if len(chunk) < step:
                        chunk = np.concatenate([chunk, audio[:step - len(chunk)]])
                    af = av.AudioFrame.from_ndarray(chunk[None].astype(np.float32), format="fltp", layout="mono")
                    af.sample_rate, af.pts = RATE, pos
                    out.mux(a.encode(af))
                    pos += step
        out.mux(v.encode())
        out.mux(a.encode())
    return path


class _Scaled:
    """Frames scaled to `size` when read (a looped hour at 1080p is never held)."""

    def __init__(self, frames, size):
        self.frames, self.size, self._last = frames, size, (None, None)

    def __len__(self):
        return len(self.frames)

    def __iter__(self):
        from PIL import Image

        for f in self.frames:
            key = f[::8, ::8].tobytes()
            if key != self._last[0]:
                self._last = (key, np.asarray(Image.fromarray(f).resize(self.size)) if self.size else f)
            yield self._last[1]


def boundary_scores(found: list[tuple[float, float]], truth: list[tuple[float, float]], tolerance: float = 0.3):
    """Turn-boundary F1 (each true start/end matched to at most one found one within `tolerance`)
    and the mean absolute error of the matched ones."""
    def match(a, b):
        used, errors = set(), []
        for x in a:
            best = min((abs(x - y), i) for i, y in enumerate(b) if i not in used) if len(used) < len(b) else None
            if best is not None and best[0] <= tolerance:
                used.add(best[1])
                errors.append(best[0])
        return errors

    f_b = [s for s, _ in found] + [e for _, e in found]
    t_b = [s for s, _ in truth] + [e for _, e in truth]
    errors = match(t_b, f_b)
    precision = len(errors) / max(len(f_b), 1)
    recall = len(errors) / max(len(t_b), 1)
    return {"f1": 2 * precision * recall / max(precision + recall, 1e-9), "precision": precision, "recall": recall,
            "mean_error_s": float(np.mean(errors)) if errors else float("nan")}


def turns_of(segments) -> list[tuple[float, float]]:
    """Speech turns from segments: consecutive speech windows of one turn joined."""
    turns = []
    for s in segments:
        if s.kind != "speech":
            continue
        if turns and abs(turns[-1][1] - s.start) < 1e-6:
            turns[-1] = (turns[-1][0], s.end)
        else:
            turns.append((s.start, s.end))
    return turns


def choices(args) -> dict:
    from foal_edge import Predictor
    from foal_edge.timeline import Segmenter
    from foal_edge.vad import VoiceActivity

    p = Predictor(args.bundle, backend="onnxruntime-cpu", vad=False)
    rows = []
    recordings = [conversation(args.seconds, seed) for seed in range(args.recordings)]
    for kind in ("silero", "webrtc"):
        detector = VoiceActivity(RATE, kind)
        decisions = [detector.voiced(audio) for audio, *_ in recordings]
        for gap in args.merge_gaps:
            scores = []
            for voiced, (audio, frames, truth, _) in zip(decisions, recordings):
                seg = Segmenter(p.manifest.audio_seconds, detector.frame_seconds, video=False, merge_gap=gap)
                spans = seg.push(voiced) + seg.finish(len(audio) / RATE)
                found = []
                for s in spans:
                    if found and abs(found[-1][1] - s.start) < 1e-6:
                        found[-1] = (found[-1][0], s.end)
                    else:
                        found.append((s.start, s.end))
                scores.append(boundary_scores(found, truth))
            rows.append({"vad": kind, "merge_gap": gap, **{k: float(np.nanmean([s[k] for s in scores]))
                                                            for k in scores[0]}})
    # The split overlap and the video hop, on the voice and faces the demo bundle was trained on
    # (training.synthetic's, which Silero does not take for speech: WebRTC finds the turns, and
    # the gaps are quiet): how often a window's label is its turn's emotion, and what it costs.
    def code_at(faces, t):
        code = "neu"
        for start, c in faces:
            if start <= t:
                code = c
        return code

    label_of = {"neu": "neutral", "hap": "happy", "ang": "angry", "sad": "sad"}
    synthetic = [conversation(args.seconds, 100 + seed, speech="synthetic", noise_gaps=False)
                 for seed in range(args.recordings)]
    overlaps = []
    for overlap in args.overlaps:
        hits = total = 0
        heard = 0.0
        for audio, frames, truth, faces in synthetic:
            segments = p.timeline(audio=audio, sample_rate=RATE, frames=frames, fps=5.0, vad="webrtc", overlap=overlap)
            for s in segments:
                if s.kind == "speech":
                    total += 1
                    hits += s.label == label_of[code_at(faces, (s.start + s.end) / 2)]
                    heard += min(s.end - s.start + (overlap if "window" in " ".join(s.notes) else 0.0),
                                 p.manifest.audio_seconds)
        overlaps.append({"overlap": overlap, "speech_segments": total, "accuracy": hits / max(total, 1),
                         "audio_seconds_heard": heard})
    hops = []
    for hop in args.hops:
        hits = total = 0
        for audio, frames, truth, faces in synthetic:
            segments = p.timeline(audio=audio, sample_rate=RATE, frames=frames, fps=5.0, vad="webrtc", hop=hop)
            for s in segments:
                if s.kind == "video":
                    total += 1
                    hits += s.label == label_of[code_at(faces, (s.start + s.end) / 2)]
        hops.append({"hop": hop, "video_segments": total, "accuracy": hits / max(total, 1)})
    return {"merge_gap": rows, "overlap": overlaps, "hop": hops}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("choices")
    c.add_argument("--bundle", default="build/foal-demo")
    c.add_argument("--seconds", type=float, default=120.0)
    c.add_argument("--recordings", type=int, default=4)
    c.add_argument("--merge-gaps", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.7, 1.0, 1.5])
    c.add_argument("--overlaps", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    c.add_argument("--hops", type=float, nargs="+", default=[1.0, 1.5, 3.0])
    c.add_argument("--out", type=Path, default=Path("benchmarks/results/timeline-choices"))
    t = sub.add_parser("throughput")
    t.add_argument("--bundle", default="build/foal-demo")
    t.add_argument("--minutes", type=float, nargs="+", default=[10.0], help="file lengths (several: 10 60)")
    t.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"])
    t.add_argument("--fps", type=float, default=25.0)
    t.add_argument("--x264-preset", default="ultrafast",
                   help="libx264 preset of the files: ultrafast writes no B-frames (every frame decoded, the "
                        "worst case); veryfast and slower write B-frames, as cameras and phones do")
    t.add_argument("--files", type=Path, default=Path("/tmp/foal-timeline-bench"))
    t.add_argument("--out", type=Path, default=Path("benchmarks/results/timeline-throughput"))
    sc = sub.add_parser("scaler")
    sc.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"])
    sc.add_argument("--out", type=Path, default=Path("benchmarks/results/frame-scaler"))
    f = sub.add_parser("profile")
    f.add_argument("--bundle", default="build/foal-demo")
    f.add_argument("--files", type=Path, nargs="+", required=True)
    f.add_argument("--spin", action="store_true",
                   help="ONNX Runtime's threads spin between runs (its default; the timeline command lets them sleep)")
    f.add_argument("--out", type=Path, default=Path("benchmarks/results/timeline-profile"))
    args = p.parse_args(argv)
    return {"choices": choices_main, "throughput": throughput_main, "profile": profile_main,
            "scaler": scaler_main}[args.what](args)


def choices_main(args) -> dict:
    from . import report

    res = {"command": "python -m benchmarks.timeline " + " ".join(sys.argv[1:]), "load_average": os.getloadavg(),
           **choices(args)}

    def md(r):
        lines = ["# Timeline choices: merge gap, split overlap, video hop", "", f"Command: `{r['command']}`  ",
                 f"Load average while it ran: {r['load_average'][0]:.1f} (2 cores shared with other work).", "",
                 "Merge gap (espeak-ng turns, room noise in every other gap): boundary F1 with 0.3 s tolerance.", "",
                 "| VAD | merge gap s | boundary F1 (0.3 s) | precision | recall | mean error s |",
                 "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for row in r["merge_gap"]:
            lines.append(f"| {row['vad']} | {row['merge_gap']:g} | {row['f1']:.3f} | {row['precision']:.3f} | "
                         f"{row['recall']:.3f} | {row['mean_error_s']:.3f} |")
        lines += ["", "Split overlap (synthetic voice and faces, WebRTC VAD): a speech segment is right when its label "
                  "is its turn's emotion.", "",
                  "| split overlap s | speech segments | accuracy | audio seconds heard |",
                  "| ---: | ---: | ---: | ---: |"]
        for row in r["overlap"]:
            lines.append(f"| {row['overlap']:g} | {row['speech_segments']} | {row['accuracy']:.3f} | "
                         f"{row['audio_seconds_heard']:.0f} |")
        lines += ["", "Video hop (the same recordings): a segment without speech is right when its label is the "
                  "face's expression at its middle.", "", "| hop s | video segments | accuracy |",
                  "| ---: | ---: | ---: |"]
        for row in r["hop"]:
            lines.append(f"| {row['hop']:g} | {row['video_segments']} | {row['accuracy']:.3f} |")
        return "\n".join(lines) + "\n"

    return report.write(args.out, res, md)


def run_measured(cmd: list[str], env=None, cpu: bool = False):
    """Run `cmd`: (wall seconds, its peak RSS in MB[, its CPU seconds]). The RSS is sampled every
    20 ms with psutil (wait4's maximum would count the pages the child shared with this process
    between fork and exec); the CPU time (user + system, all its threads) comes from wait4."""
    import threading

    import psutil

    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak = [0]
    done = threading.Event()

    def sample():
        try:
            proc = psutil.Process(child.pid)
            time.sleep(0.05)  # past exec
            while not done.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.02)
        except psutil.Error:
            pass

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    done.set()
    wall = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {stderr[-2000:].decode(errors='replace')}")
    result = (wall, peak[0] / 2**20)
    return (*result, usage.ru_utime + usage.ru_stime) if cpu else result


def timestamp_steps(path: Path) -> dict:
    """The largest step between consecutive packet timestamps of each stream (demuxed only, in
    presentation order), and the last timestamp: a looped file must run on without a gap or a
    step back where one copy of the clip meets the next."""
    import av

    with av.open(str(path)) as c:
        times = {s.type: [] for s in c.streams if s.type in ("audio", "video")}
        for packet in c.demux():
            if packet.pts is not None and packet.stream.type in times:
                times[packet.stream.type].append(float(packet.pts * packet.time_base))
    out = {}
    for kind, t in times.items():
        t = np.sort(np.asarray(t))
        steps = np.diff(t)
        out[kind] = {"packets": len(t), "last_s": float(t[-1]), "max_step_s": float(steps.max()),
                     "median_step_s": float(np.median(steps))}
        if steps.max() > 2.5 * np.median(steps):
            raise SystemExit(f"{path}: {kind} timestamps jump by {steps.max():.3f} s (packets every "
                             f"{np.median(steps):.3f} s): the loop is not continuous")
    return out


def make_file(args, size: str, minutes: float, audio, frames, clip_seconds: float) -> Path:
    """The --minutes file at `size`: the 2-minute clip (encoded once per size) looped by stream
    copy."""
    w, h = (int(x) for x in size.split("x"))
    tag = "" if args.x264_preset == "ultrafast" else f"-{args.x264_preset}"
    path = args.files / f"talk-{h}p{tag}-{minutes:g}min.mp4"
    if path.exists():
        return path
    t0 = time.perf_counter()
    clip = args.files / f"talk-{h}p{tag}-clip.mp4"
    first = args.files / f"talk-{args.sizes[0].split('x')[1]}p{tag}-clip.mp4"
    if not clip.exists() and first.exists() and shutil.which("ffmpeg"):  # scale the first clip: faster
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(first), "-vf", f"scale={w}:{h}", "-c:v",
                        "libx264", "-preset", args.x264_preset, "-crf", "28", "-c:a", "copy", str(clip)], check=True)
    elif not clip.exists():
        write_mp4(clip, audio, frames, args.fps, size=(w, h), preset=args.x264_preset)
    seconds = minutes * 60
    loops = int(np.ceil(seconds / clip_seconds)) - 1  # the clip looped by stream copy: no re-encoding
    partial = path.with_name(f".{path.name}.part.mp4")  # renamed when whole: an interrupted copy is redone
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops), "-i", str(clip), "-c", "copy",
                    "-t", str(seconds), str(partial)], check=True)
    partial.rename(path)
    print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


def throughput_main(args) -> dict:
    from . import report

    if not shutil.which("ffmpeg"):
        raise SystemExit("the throughput benchmark needs the ffmpeg command (the decode-only reference and the loop)")
    args.files.mkdir(parents=True, exist_ok=True)
    clip_seconds = 120.0
    audio, frames, _, _ = conversation(clip_seconds, seed=7, fps=args.fps, size=(240, 320))
    rows = []
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    for minutes in args.minutes:
        seconds = minutes * 60
        for size in args.sizes:
            path = make_file(args, size, minutes, audio, frames, clip_seconds)
            steps = timestamp_steps(path)
            timeline = [sys.executable, "-m", "foal_edge", "timeline", args.bundle, str(path), "--out",
                        str(args.files / f"{path.stem}.jsonl"), "--no-progress", "--backend", "onnxruntime-cpu"]
            runs = {"ffmpeg_decode": ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
                    "timeline": timeline}
            row = {"file": path.name, "size": size, "fps": args.fps, "seconds": seconds,
                   "bytes": path.stat().st_size, "timestamps": steps, "load_before": os.getloadavg()[0]}
            for name, cmd in runs.items():
                wall, peak, cpu = run_measured(cmd, env, cpu=True)
                row[f"{name}_s"], row[f"{name}_peak_rss_mb"], row[f"{name}_cpu_s"] = wall, peak, cpu
            row["load_after"] = os.getloadavg()[0]
            row["timeline_over_decode"] = row["timeline_s"] / row["ffmpeg_decode_s"]
            row["timeline_over_decode_cpu"] = row["timeline_cpu_s"] / row["ffmpeg_decode_cpu_s"]
            row["decode_x_real_time"] = seconds / row["ffmpeg_decode_s"]
            row["timeline_x_real_time"] = seconds / row["timeline_s"]
            segments = [json.loads(x) for x in (args.files / f"{path.stem}.jsonl").read_text().splitlines()]
            row["segments"] = len(segments)
            row["last_segment_end_s"] = max(s["end"] for s in segments)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    res = {"command": "python -m benchmarks.timeline " + " ".join(sys.argv[1:]), "rows": rows,
           "cores": os.cpu_count(),
           "file": f"H.264 (libx264 {args.x264_preset}, crf 28) at {args.fps:g} fps + AAC 16 kHz mono: "
                   f"a {clip_seconds:g} s synthetic conversation looped by stream copy"}

    def md(r):
        lines = ["# Timeline throughput against decoding", "", f"Command: `{r['command']}`  ",
                 f"Files: {r['file']}. {r['cores']} cores (load average before/after each file in the table).", "",
                 "| file | length | decode (ffmpeg) wall s / CPU s | timeline wall s / CPU s | timeline / decode: "
                 "wall, CPU | x real time: decode, timeline | peak RSS MB: ffmpeg, timeline | segments | "
                 "load before / after |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for x in r["rows"]:
            lines.append(f"| {x['size']} {x['fps']:g} fps | {x['seconds'] / 60:g} min | "
                         f"{x['ffmpeg_decode_s']:.1f} / {x['ffmpeg_decode_cpu_s']:.1f} | "
                         f"{x['timeline_s']:.1f} / {x['timeline_cpu_s']:.1f} | {x['timeline_over_decode']:.2f}, "
                         f"{x['timeline_over_decode_cpu']:.2f} | {x.get('decode_x_real_time', 0):.1f}, "
                         f"{x['timeline_x_real_time']:.1f} | "
                         f"{x['ffmpeg_decode_peak_rss_mb']:.0f}, {x['timeline_peak_rss_mb']:.0f} | {x['segments']} | "
                         f"{x['load_before']:.1f} / {x['load_after']:.1f} |")
        return "\n".join(lines) + "\n"

    return report.write(args.out, res, md)


def textured(height: int, width: int, seed: int) -> np.ndarray:
    """A face scaled up to the frame, with sharp detail over it (one-pixel stripes, a patch of
    print-like noise): what makes one resize differ from another. uint8 RGB [height, width, 3]."""
    from PIL import Image

    from training.synthetic import _speaker, draw_face

    rng = np.random.default_rng(seed)
    face = draw_face(rng, _speaker(rng, "F"), "hap", 0.9, talking=True)
    frame = np.asarray(Image.fromarray(face).resize((width, height), Image.Resampling.BILINEAR)).copy()
    frame[:, ::7] //= 2  # one-pixel stripes
    patch = rng.integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
    frame[height // 8: height // 8 + len(patch), width // 2: width // 2 + patch.shape[1]] = patch
    return frame


SCALER_FLAGS = ["bicubic", "bicubic+full_chroma_int", "bicubic+accurate_rnd+full_chroma_int",
                "bilinear+accurate_rnd+full_chroma_int", "area+accurate_rnd+full_chroma_int"]


def scaler_main(args) -> dict:
    import fractions

    import av

    from benchmarks.latency import machine
    from foal_edge import preprocess
    from foal_edge.decode import FrameScaler

    from . import report

    size, count, repeats = 224, 6, 5
    rows = []
    for dims in args.sizes:
        w, h = (int(x) for x in dims.split("x"))
        pictures = [textured(h, w, k) for k in range(count)]
        enc = av.CodecContext.create("mpeg4", "w")
        enc.width, enc.height, enc.pix_fmt, enc.bit_rate = w, h, "yuv420p", 20_000_000
        enc.time_base = fractions.Fraction(1, 5)
        packets = []
        for k, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = k
            packets += enc.encode(frame)
        packets += enc.encode(None)
        dec = av.CodecContext.create("mpeg4", "r")
        frames = [f for p in packets for f in dec.decode(p)]
        nh, nw, top, left = preprocess.crop_box(h, w, size)
        truth = np.stack([preprocess.resize_and_crop(p, size) for p in pictures]).astype(int)

        def scaled(flags):
            scaler = FrameScaler(size)
            scaler.FLAGS = flags
            return lambda f: scaler(f, (0, False))

        def twice(f):
            shrunk = f.reformat(width=2 * nw, height=2 * nh, format="rgb24", interpolation="BICUBIC")
            return preprocess.resize_and_crop(shrunk.to_ndarray(), size)

        ways = {"whole frame (PyAV) + Pillow": lambda f: preprocess.resize_and_crop(f.to_ndarray(format="rgb24"), size),
                "FFmpeg bicubic to 2x the resize + Pillow": twice,
                **{f"FFmpeg {flags} to the resize": scaled(flags) for flags in SCALER_FLAGS}}
        for name, way in ways.items():
            out = np.stack([way(f) for f in frames]).astype(int) - truth
            t0 = time.process_time()
            for _ in range(repeats):
                for f in frames:
                    way(f)
            rows.append({"size": dims, "way": name, "used": name == f"FFmpeg {FrameScaler.FLAGS} to the resize",
                         "mean_abs": float(np.abs(out).mean()), "p99": float(np.percentile(np.abs(out), 99)),
                         "bias": float(out.mean()), "cpu_ms": 1e3 * (time.process_time() - t0) / (repeats * count)})
    res = {"command": "python -m benchmarks.timeline " + " ".join(sys.argv[1:]), "machine": machine(),
           "load_average": os.getloadavg()[0], "rows": rows}

    def md(r):
        m = r["machine"]
        lines = ["# A decoded frame to CLIP's crop: closeness to the picture, and CPU", "",
                 f"Command: `{r['command']}`  ",
                 f"Machine: {m['cpu']}, {m['cores']} cores, load average {r['load_average']:.1f}. Frames with stripes "
                 "and noise through MPEG-4 at 20 Mbit/s; grey levels against CLIP's crop (Pillow) of the picture "
                 "that was encoded. **Bold**: decode.FrameScaler.", "",
                 "| frame | way | mean abs | 99th percentile | bias | CPU ms a frame |",
                 "| --- | --- | ---: | ---: | ---: | ---: |"]
        for x in r["rows"]:
            way = f"**{x['way']}**" if x["used"] else x["way"]
            lines.append(f"| {x['size']} | {way} | {x['mean_abs']:.2f} | {x['p99']:.0f} | {x['bias']:+.2f} | "
                         f"{x['cpu_ms']:.2f} |")
        return "\n".join(lines) + "\n"

    return report.write(args.out, res, md)


def _task_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of each thread of this process: {tid: (name, seconds)} (Linux /proc)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            raw = Path(f"/proc/self/task/{tid}/stat").read_text()
        except FileNotFoundError:  # ended while listed
            continue
        fields = raw.rsplit(")", 1)[1].split()
        out[int(tid)] = (raw[raw.index("(") + 1:raw.rindex(")")], (int(fields[11]) + int(fields[12])) / tick)
    return out


def profile_file(bundle: str, path: Path, spin: bool = False) -> dict:
    """One timeline of `path` with CPU timers: see the module's docstring."""
    import queue
    import threading

    from foal_edge import Predictor, decode, pipeline, preprocess, vad

    steps: dict[str, float] = {}
    waited = [0.0]
    patches = []

    def timed(owner, name, step):
        original = getattr(owner, name)

        def wrapper(*a, **k):
            t0 = time.thread_time()
            try:
                return original(*a, **k)
            finally:
                steps[step] = steps.get(step, 0.0) + time.thread_time() - t0
        patches.append((owner, name, original))
        setattr(owner, name, wrapper)

    predictor = Predictor(bundle, backend="onnxruntime-cpu", vad=False, spin=spin, warm_up=False)  # as `timeline` does
    names = {threading.get_native_id(): "caller's thread"}
    at_close: dict = {}
    open_file = decode._open

    class Closing:  # the threads' CPU just before the file (and FFmpeg's threads with it) is closed
        def __init__(self, container):
            self.container = container

        def __enter__(self):
            return self.container.__enter__()

        def __exit__(self, *exc):
            at_close.update(_task_cpu())
            return self.container.__exit__(*exc)

    get = queue.Queue.get

    def waiting_get(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return get(self, *a, **k)
        finally:
            if threading.get_native_id() in names:
                waited[0] += time.perf_counter() - t0

    start_thread = threading.Thread.run

    def named_run(self):
        names[threading.get_native_id()] = "decoding thread" if self.name == "foal-edge-decode" else self.name
        start_thread(self)

    timed(decode.Decoder, "picture", "kept frames to RGB (FFmpeg's scaler)")
    timed(preprocess, "normalize_frames", "normalisation")
    timed(pipeline.Pipeline, "encode_audio", "audio encoder")
    timed(pipeline.Pipeline, "encode_frames", "video encoder")
    timed(pipeline.Pipeline, "fuse", "fusion head")
    patches += [(decode, "_open", open_file), (queue.Queue, "get", get), (threading.Thread, "run", start_thread)]
    decode._open = lambda p: Closing(open_file(p)) if p == path else open_file(p)
    queue.Queue.get = waiting_get
    threading.Thread.run = named_run
    stream = vad.SileroVoiceActivity.stream

    def timed_stream(self):  # Silero's decisions: the _judge of the stream it opens
        s = stream(self)
        timed(s, "_judge", "Silero VAD")
        return s
    vad.SileroVoiceActivity.stream = timed_stream
    patches.append((vad.SileroVoiceActivity, "stream", stream))
    try:
        before = _task_cpu()
        t0, c0 = time.perf_counter(), time.process_time()
        segments = predictor.timeline(path)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        after = _task_cpu()
    finally:
        for owner, name, original in reversed(patches):
            setattr(owner, name, original)
    threads: dict[str, float] = {}
    for tid, (name, seconds) in {**at_close, **after}.items():
        label = names.get(tid) or ("FFmpeg's decoding threads" if name.startswith("av:") else
                                   "other threads (ONNX Runtime's workers, ...)")
        threads[label] = threads.get(label, 0.0) + seconds - before.get(tid, (name, 0.0))[1]
    caller = threads.get("caller's thread", 0.0)
    steps["the rest (segmenting, queue, Python)"] = caller - sum(steps.values())
    return {"file": path.name, "seconds": float(segments[-1].end) if segments else 0.0, "segments": len(segments),
            "wall_s": wall, "cpu_s": cpu, "threads": threads, "caller_steps": steps,
            "caller_waited_s": waited[0]}


def profile_main(args) -> dict:
    from benchmarks.latency import machine

    from . import report

    res = {"command": "python -m benchmarks.timeline " + " ".join(sys.argv[1:]), "machine": machine(),
           "spin": args.spin, "load_before": os.getloadavg()[0],
           "rows": [profile_file(args.bundle, f, args.spin) for f in args.files],
           "load_after": os.getloadavg()[0]}

    def md(r):
        rows = r["rows"]
        m = r["machine"]
        lines = ["# Where a timeline's CPU time goes", "", f"Command: `{r['command']}`  ",
                 f"Machine: {m['cpu']}, {m['cores']} cores; load average {r['load_before']:.1f} before, "
                 f"{r['load_after']:.1f} after. ONNX Runtime's threads "
                 f"{'spin between runs' if r.get('spin') else 'sleep between runs (spin=False)'}.",
                 "", "| CPU seconds | " + " | ".join(x["file"] for x in rows) + " |",
                 "| --- |" + " ---: |" * len(rows)]
        keys = list(dict.fromkeys(k for x in rows for k in x["threads"]))
        for k in keys:
            lines.append(f"| thread: {k} | " + " | ".join(f"{x['threads'].get(k, 0):.2f}" for x in rows) + " |")
        for k in dict.fromkeys(k for x in rows for k in x["caller_steps"]):
            lines.append(f"| caller's thread: {k} | " + " | ".join(f"{x['caller_steps'].get(k, 0):.2f}" for x in rows)
                         + " |")
        lines.append("| **total (process)** | " + " | ".join(f"**{x['cpu_s']:.2f}**" for x in rows) + " |")
        lines.append("| wall seconds | " + " | ".join(f"{x['wall_s']:.2f}" for x in rows) + " |")
        lines.append("| the caller's thread waiting for the decoding thread, s | "
                     + " | ".join(f"{x['caller_waited_s']:.2f}" for x in rows) + " |")
        lines.append("| recording seconds, segments | "
                     + " | ".join(f"{x['seconds']:.0f}, {x['segments']}" for x in rows) + " |")
        return "\n".join(lines) + "\n"

    return report.write(args.out, res, md)


if __name__ == "__main__":
    main()
