"""Silero VAD against WebRTC's detector on speech in noise: frame-level F1 against the known
speech regions, and the cost per second of audio, side by side in one run.

    python -m benchmarks.vad --out benchmarks/results/vad-compare

Speech: espeak-ng sentences in several voices and rates (training.synthetic's speech when
espeak-ng is not installed), placed at random in a recording with 0.4-3 s pauses. The truth is
where the clean speech has energy (10 ms frames above -35 dB of its peak, pauses under 0.25 s
between words closed). Noise: "room" (pink noise with a 50 Hz hum) or "babble" (the sum of five
other espeak-ng talkers, running throughout), scaled to each SNR (speech power over its own
regions against the noise's). Each detector's decisions (Silero: probability above 0.5 until
below 0.35; WebRTC: mode 3) are put on a 10 ms grid and scored. Writes NAME.json and NAME.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import report

RATE = 16000
SENTENCES = [
    "The meeting started late because nobody could find the key to the room.",
    "I told you yesterday that the results would not be ready before Friday.",
    "Could you please pass me the salt and the pepper from the other table?",
    "She walked along the river for an hour, thinking about what he had said.",
    "We are going to need a much bigger boat if we want to cross the bay.",
    "Honestly, I did not expect the interview to go so well this morning.",
    "The train to the airport leaves every twenty minutes from platform four.",
    "Why would anyone paint a kitchen that colour? It looks terrible.",
    "My grandmother grew tomatoes, beans and potatoes in her little garden.",
    "After the storm, the whole street was covered in leaves and branches.",
    "Please remember to switch off the lights when you leave the office.",
    "That is the best news I have heard all year, thank you so much!",
]
VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb-scotland", "en-us+m5", "en+f2", "en-gb-x-rp+f4"]


def espeak(text: str, voice: str, speed: int) -> np.ndarray:
    import soundfile as sf

    from foal_edge.preprocess import resample

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True,
                       capture_output=True)
        wave, rate = sf.read(path, dtype="float32")
    return resample(wave, rate, RATE).astype(np.float32)


def utterances(count: int, seed: int) -> tuple[list[np.ndarray], str]:
    rng = np.random.default_rng(seed)
    if shutil.which("espeak-ng"):
        return [espeak(SENTENCES[rng.integers(len(SENTENCES))], VOICES[rng.integers(len(VOICES))],
                       int(rng.integers(130, 190))) for _ in range(count)], "espeak-ng"
    from training.synthetic import _speaker, speak

    return [speak(rng, _speaker(rng, "F" if i % 2 else "M"), str(rng.choice(["neu", "hap", "ang", "sad"])),
                  float(rng.uniform(1.5, 4))) for i in range(count)], "training.synthetic"


def speech_mask(wave: np.ndarray, step: int = RATE // 100) -> np.ndarray:
    """The truth on a 10 ms grid: frames whose energy is within 35 dB of the peak, with pauses
    shorter than 0.25 s closed."""
    n = len(wave) // step
    energy = (wave[: n * step].reshape(n, step) ** 2).mean(1)
    mask = energy > energy.max() * 10 ** (-35 / 10)
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    for end, start in zip(edges[1:-1:2], edges[2::2]):  # each gap between two speech runs
        if start - end < 25:
            mask[end:start] = True
    return mask


def recording(seconds: float, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Clean speech with pauses: (wave, truth on a 10 ms grid, speech source)."""
    rng = np.random.default_rng(seed)
    parts, source = utterances(int(seconds / 3) + 2, seed)
    wave = np.zeros(int(seconds * RATE), np.float32)
    pos = int(rng.uniform(0.5, 2) * RATE)
    for u in parts:
        if pos + len(u) > len(wave):
            break
        wave[pos:pos + len(u)] += u * rng.uniform(0.3, 1.0) / (np.abs(u).max() + 1e-9)
        pos += len(u) + int(rng.uniform(0.4, 3.0) * RATE)
    return wave, speech_mask(wave), source


def room_noise(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    pink = np.fft.irfft(spectrum / np.sqrt(np.maximum(f, 20)), n)
    hum = 0.3 * np.sin(2 * np.pi * 50 * np.arange(n) / RATE) * pink.std()
    return (pink + hum).astype(np.float32)


def babble(n: int, seed: int, talkers: int = 5) -> np.ndarray:
    out = np.zeros(n, np.float32)
    for t in range(talkers):
        parts, _ = utterances(int(n / RATE / 3) + 2, 1000 * seed + t)
        stream = np.concatenate([p / (p.std() + 1e-9) for p in parts])
        while len(stream) < n:
            stream = np.concatenate([stream, stream])
        shift = np.random.default_rng([seed, t]).integers(len(stream))
        out += np.roll(stream, shift)[:n]
    return out


def mix(wave: np.ndarray, truth: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    speech = np.repeat(truth, RATE // 100)[: len(wave)]
    p_speech = (wave[: len(speech)][speech] ** 2).mean()
    p_noise = (noise ** 2).mean()
    out = wave + noise * np.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    return (out / max(1.0, np.abs(out).max())).astype(np.float32)


def on_grid(voiced: np.ndarray, frame_seconds: float, cells: int) -> np.ndarray:
    """Frame decisions -> a 10 ms grid (each cell takes the frame that holds its centre)."""
    centre = (np.arange(cells) + 0.5) * 0.01
    index = np.minimum((centre / frame_seconds).astype(int), max(len(voiced) - 1, 0))
    return voiced[index] if len(voiced) else np.zeros(cells, bool)


def f1(pred: np.ndarray, truth: np.ndarray) -> dict:
    tp = float((pred & truth).sum())
    precision = tp / max(pred.sum(), 1)
    recall = tp / max(truth.sum(), 1)
    return {"f1": 2 * precision * recall / max(precision + recall, 1e-9), "precision": precision, "recall": recall}


def main(argv=None) -> dict:
    from foal_edge.vad import VoiceActivity

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="length of each recording")
    p.add_argument("--recordings", type=int, default=3)
    p.add_argument("--snr", type=float, nargs="+", default=[20.0, 10.0, 5.0, 0.0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/vad-compare"))
    args = p.parse_args(argv)

    detectors = {kind: VoiceActivity(RATE, kind) for kind in ("silero", "webrtc")}
    scores = {(k, noise, snr): [] for k in detectors for noise in ("room", "babble") for snr in args.snr}
    cost = {k: 0.0 for k in detectors}
    audio_seconds = 0.0
    source = None
    for r in range(args.recordings):
        wave, truth, source = recording(args.seconds, seed=r)
        noises = {"room": room_noise(len(wave), r), "babble": babble(len(wave), r)}
        for noise, signal in noises.items():
            for snr in args.snr:
                mixed = mix(wave, truth, signal, snr)
                order = list(detectors) if (r + len(scores)) % 2 else list(detectors)[::-1]  # alternate who runs first
                for kind in order:
                    detector = detectors[kind]
                    t0 = time.process_time()
                    voiced = detector.voiced(mixed)
                    cost[kind] += time.process_time() - t0
                    scores[(kind, noise, snr)].append(f1(on_grid(voiced, detector.frame_seconds, len(truth)), truth))
                audio_seconds += len(mixed) / RATE
    rows = []
    for (kind, noise, snr), runs in scores.items():
        rows.append({"detector": kind, "noise": noise, "snr_db": snr,
                     **{m: float(np.mean([x[m] for x in runs])) for m in ("f1", "precision", "recall")}})
    load = os.getloadavg()
    results = {
        "command": "python -m benchmarks.vad " + " ".join(sys.argv[1:] if argv is None else argv),
        "speech": source, "recordings": args.recordings, "seconds_each": args.seconds,
        "load_average_1_5_15": load, "cores": os.cpu_count(),
        "rows": rows,
    }
    per_second = {k: 1e3 * c / audio_seconds for k, c in cost.items()}
    results["cpu_ms_per_audio_second"] = per_second

    def markdown(res):
        lines = ["# Voice activity: Silero VAD (ONNX Runtime) against WebRTC's detector", "",
                 f"Command: `{res['command']}`  ", f"Speech: {res['speech']} sentences, {res['recordings']} recordings "
                 f"of {res['seconds_each']:g} s with 0.4-3 s pauses; noise: room (pink + 50 Hz hum) and babble (5 "
                 "other talkers).  ", f"Load average while it ran: {res['load_average_1_5_15'][0]:.2f} "
                 f"({res['cores']} cores shared with other work).", "",
                 "| noise | SNR dB | Silero F1 | WebRTC F1 | Silero P / R | WebRTC P / R |",
                 "| --- | ---: | ---: | ---: | --- | --- |"]
        by = {(r["detector"], r["noise"], r["snr_db"]): r for r in res["rows"]}
        for noise in ("room", "babble"):
            for snr in sorted({r["snr_db"] for r in res["rows"]}, reverse=True):
                s, w = by[("silero", noise, snr)], by[("webrtc", noise, snr)]
                lines.append(f"| {noise} | {snr:g} | **{s['f1']:.3f}** | {w['f1']:.3f} | {s['precision']:.2f} / "
                             f"{s['recall']:.2f} | {w['precision']:.2f} / {w['recall']:.2f} |"
                             if s["f1"] >= w["f1"] else
                             f"| {noise} | {snr:g} | {s['f1']:.3f} | **{w['f1']:.3f}** | {s['precision']:.2f} / "
                             f"{s['recall']:.2f} | {w['precision']:.2f} / {w['recall']:.2f} |")
        c = res["cpu_ms_per_audio_second"]
        lines += ["", f"CPU cost (process time, both in the same run, order alternated): Silero "
                  f"{c['silero']:.2f} ms, WebRTC {c['webrtc']:.2f} ms per second of audio "
                  f"(Silero {c['silero'] / c['webrtc']:.0f}x WebRTC; both well under 2% of one core).", ""]
        return "\n".join(lines)

    return report.write(args.out, results, markdown)


if __name__ == "__main__":
    main()
