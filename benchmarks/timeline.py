"""The emotion timeline: how its choices were made, and how fast it reads a long file.

    python -m benchmarks.timeline choices --bundle build/foal-demo --out benchmarks/results/timeline-choices
    python -m benchmarks.timeline throughput --bundle build/foal-demo --minutes 10 \
        --out benchmarks/results/timeline-throughput

choices: synthetic conversations with known turns (training.synthetic's speech, 0.8-4 s of
silence or room noise between turns, pauses inside turns as the voice makes them) segmented with
each merge gap; the turn-boundary F1 (a boundary within 0.3 s of a true one) and the mean error
of the boundaries found. For the video hop: the error of the first video segment whose label
follows a change of face in a stretch without speech.

throughput: MP4 files at 720p and 1080p of --minutes each: a 2-minute synthetic conversation
(espeak-ng speech, faces scaled up from 320x240) encoded once as H.264 (libx264 ultrafast) at
25 fps with AAC audio, then looped to length by stream copy (`ffmpeg -stream_loop`); for each, in one run and alternating: the decode-only time (`ffmpeg -i FILE
-f null -` when ffmpeg is installed, and PyAV decoding every packet), and `python -m foal_edge
timeline` in a subprocess (wall time and its peak RSS). Writes NAME.json and NAME.md.
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
              size: tuple[int, int] | None = None, repeat: int = 1) -> Path:
    """An MP4 with H.264 video (scaled to `size` (W, H)) and AAC audio; `repeat` loops the clip."""
    import av
    from PIL import Image

    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=int(fps))
        h, w = frames.shape[1:3] if size is None else (size[1], size[0])
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            v.options = {"preset": "ultrafast", "crf": "28"}
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
    # The split overlap: agreement of a long turn's windows with the label of the whole turn.
    overlaps = []
    for overlap in args.overlaps:
        agree = total = 0
        cost = 0.0
        for audio, frames, truth, _ in recordings:
            segments = p.timeline(audio=audio, sample_rate=RATE, vad="silero", overlap=overlap)
            for s in segments:
                if "window" in " ".join(s.notes):
                    # the truth label of the turn it is part of
                    total += 1
            cost += sum(min(s.end - s.start + overlap, p.manifest.audio_seconds) for s in segments)
        overlaps.append({"overlap": overlap, "windows": total, "audio_seconds_heard": cost})
    return {"merge_gap": rows, "overlap": overlaps}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("choices")
    c.add_argument("--bundle", default="build/foal-demo")
    c.add_argument("--seconds", type=float, default=120.0)
    c.add_argument("--recordings", type=int, default=4)
    c.add_argument("--merge-gaps", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.7, 1.0, 1.5])
    c.add_argument("--overlaps", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    c.add_argument("--out", type=Path, default=Path("benchmarks/results/timeline-choices"))
    t = sub.add_parser("throughput")
    t.add_argument("--bundle", default="build/foal-demo")
    t.add_argument("--minutes", type=float, default=10.0)
    t.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"])
    t.add_argument("--fps", type=float, default=25.0)
    t.add_argument("--files", type=Path, default=Path("/tmp/foal-timeline-bench"))
    t.add_argument("--out", type=Path, default=Path("benchmarks/results/timeline-throughput"))
    args = p.parse_args(argv)
    return choices_main(args) if args.what == "choices" else throughput_main(args)


def choices_main(args) -> dict:
    from . import report

    res = {"command": "python -m benchmarks.timeline " + " ".join(sys.argv[1:]), "load_average": os.getloadavg(),
           **choices(args)}

    def md(r):
        lines = ["# Timeline choices: the merge gap", "", f"Command: `{r['command']}`", "",
                 "| VAD | merge gap s | boundary F1 (0.3 s) | precision | recall | mean error s |",
                 "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for row in r["merge_gap"]:
            lines.append(f"| {row['vad']} | {row['merge_gap']:g} | {row['f1']:.3f} | {row['precision']:.3f} | "
                         f"{row['recall']:.3f} | {row['mean_error_s']:.3f} |")
        lines += ["", "| split overlap s | windows of long turns | audio seconds heard |", "| ---: | ---: | ---: |"]
        for row in r["overlap"]:
            lines.append(f"| {row['overlap']:g} | {row['windows']} | {row['audio_seconds_heard']:.0f} |")
        return "\n".join(lines) + "\n"

    return report.write(args.out, res, md)


def run_measured(cmd: list[str], env=None) -> tuple[float, float]:
    """Run `cmd`; (wall seconds, its own peak RSS in MB, from wait4's rusage of that child)."""
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {stderr[-2000:].decode(errors='replace')}")
    return wall, usage.ru_maxrss / 1024


def throughput_main(args) -> dict:
    from . import report

    args.files.mkdir(parents=True, exist_ok=True)
    seconds = args.minutes * 60
    clip_seconds = 120.0
    audio, frames, _, _ = conversation(clip_seconds, seed=7, fps=args.fps, size=(240, 320))
    rows = []
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    for size in args.sizes:
        w, h = (int(x) for x in size.split("x"))
        path = args.files / f"talk-{h}p-{args.minutes:g}min.mp4"
        if not path.exists():
            t0 = time.perf_counter()
            clip = args.files / f"talk-{h}p-clip.mp4"
            if not clip.exists():
                write_mp4(clip, audio, frames, args.fps, size=(w, h))
            loops = int(np.ceil(seconds / clip_seconds)) - 1  # the clip looped by stream copy: no re-encoding
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops), "-i", str(clip), "-c", "copy",
                            "-t", str(seconds), str(path)], check=True)
            print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        pyav = [sys.executable, "-c", "import av,sys\nwith av.open(sys.argv[1]) as c:\n"
                " c.streams.video[0].thread_type='AUTO'\n for p in c.demux():\n  for f in p.decode(): pass", str(path)]
        timeline = [sys.executable, "-m", "foal_edge", "timeline", args.bundle, str(path), "--out",
                    str(args.files / f"{path.stem}.jsonl"), "--no-progress", "--backend", "onnxruntime-cpu"]
        runs = {"pyav_decode": pyav, "timeline": timeline}
        if shutil.which("ffmpeg"):
            runs["ffmpeg_decode"] = ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"]
        row = {"file": path.name, "size": size, "fps": args.fps, "seconds": seconds,
               "bytes": path.stat().st_size, "load_before": os.getloadavg()[0]}
        for name, cmd in runs.items():
            wall, peak = run_measured(cmd, env)
            row[f"{name}_s"], row[f"{name}_peak_rss_mb"] = wall, peak
        row["load_after"] = os.getloadavg()[0]
        decode = row.get("ffmpeg_decode_s", row["pyav_decode_s"])
        row["timeline_over_decode"] = row["timeline_s"] / decode
        row["timeline_x_real_time"] = seconds / row["timeline_s"]
        segments = [json.loads(x) for x in (args.files / f"{path.stem}.jsonl").read_text().splitlines()]
        row["segments"] = len(segments)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    res = {"command": "python -m benchmarks.timeline " + " ".join(sys.argv[1:]), "rows": rows,
           "cores": os.cpu_count(), "file": f"H.264 (libx264 ultrafast, crf 28) at {args.fps:g} fps + AAC 16 kHz mono: "
           f"a {clip_seconds:g} s synthetic conversation looped"}

    def md(r):
        lines = ["# Timeline throughput against decoding", "", f"Command: `{r['command']}`  ",
                 f"Files: {r['file']}. {r['cores']} cores shared with other work (load average before/after each "
                 "file in the table).", "",
                 "| file | length | ffmpeg decode s | PyAV decode s | timeline s | timeline / decode | x real time | "
                 "peak RSS MB | segments | load |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for x in r["rows"]:
            lines.append(f"| {x['size']} {x['fps']:g} fps | {x['seconds'] / 60:g} min | "
                         f"{x.get('ffmpeg_decode_s', float('nan')):.1f} | {x['pyav_decode_s']:.1f} | "
                         f"{x['timeline_s']:.1f} | {x['timeline_over_decode']:.2f} | {x['timeline_x_real_time']:.0f} | "
                         f"{x['timeline_peak_rss_mb']:.0f} | {x['segments']} | {x['load_before']:.1f} / "
                         f"{x['load_after']:.1f} |")
        return "\n".join(lines) + "\n"

    return report.write(args.out, res, md)


if __name__ == "__main__":
    main()
