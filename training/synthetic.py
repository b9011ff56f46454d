"""A deterministic synthetic corpus in IEMOCAP's own layout, so that the real reader reads it.

    python -m training.synthetic --out data/synthetic-iemocap

5 sessions x 2 speakers (F, M), the four emotions, plus a few "excited" turns (merged into
happy by the reader) and "frustrated" turns (left out and reported).

The emotions form a 2 x 2 design, so that neither modality alone separates the four
classes well and fusion can:
- the voice carries AROUSAL (happy, angry: high; neutral, sad: low) through pitch level,
  pitch movement, syllable rate and brightness; WavLM's waveform normalisation removes
  loudness, so loudness is random;
- the drawn face carries VALENCE (happy, neutral: pleasant; angry, sad: unpleasant)
  through the mouth's curve and the brows' slant.
- and, weaker, the voice carries valence too (unpleasant syllables are breathy, or with
  `valence_cue="glide"` each syllable's pitch glides up when pleasant, down when not;
  `voice_valence`, 0 gives the first corpus, where the modalities shared nothing and
  AVEL/MEM had nothing to learn);
- with `face_arousal` > 0 the face shows arousal too (wider eyes, raised brows, a wider
  mouth when talking). The ablation's shared-cue corpus, where fusion beats each modality:
  `--voice-valence 0.15 --face-arousal 0.6 --seconds 1.0 2.0 --seed 2026`.
Every speaker has their own pitch, face colour, size and position, and every utterance
gets noise and random strength of its cues.

Two video layouts. "dialog" (`--layout dialog`) is IEMOCAP's own: 720x480 MPEG-4 (DivX-class)
AVI at 29.97 fps, the two actors side by side in every frame, the actor the dialog is named
after (F in Ses01F_impro01) on the left half and the other on the right, the speaker talking
with their turn's expression while the listener keeps their last one, silent. "single" (the
default, smaller and faster: what the demo and the ablations were trained on) draws only the
speaker, 160x120 at 15 fps. EmoEvaluation files carry IEMOCAP's lines: the turn line, the
categorical annotators' lines (C-E2: Neutral;) and the dimensional ones (A-E3: val 3; ...).
"""

from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
FPS = 15
WIDTH, HEIGHT = 160, 120
# IEMOCAP's dialog videos: 720x480, NTSC 29.97 fps, two actors side by side.
DIALOG_FPS = Fraction(30000, 1001)
DIALOG_WIDTH, DIALOG_HEIGHT = 720, 480
FULL_NAMES = {"neu": "Neutral", "hap": "Happiness", "exc": "Excited", "ang": "Anger", "sad": "Sadness",
              "fru": "Frustration"}
AROUSAL = {"neu": 0, "sad": 0, "hap": 1, "exc": 1, "ang": 1, "fru": 1}
PLEASANT = {"neu": 1, "hap": 1, "exc": 1, "sad": 0, "ang": 0, "fru": 0}
VAD = {"neu": (3.0, 2.5, 3.0), "hap": (4.0, 3.5, 3.0), "exc": (4.0, 4.0, 3.5),
       "ang": (1.5, 4.0, 4.0), "sad": (1.5, 2.0, 2.0), "fru": (2.0, 3.5, 3.5)}
# Turn labels drawn per dialog: the four classes evenly, a few excited/frustrated turns.
LABEL_POOL = ["neu"] * 6 + ["hap"] * 5 + ["exc"] + ["ang"] * 6 + ["sad"] * 6 + ["fru"]


def _speaker(rng: np.random.Generator, gender: str) -> dict:
    return {
        "f0": (205.0 if gender == "F" else 115.0) * rng.uniform(0.9, 1.1),
        "skin": rng.integers(150, 235, 3),
        "background": rng.integers(20, 110, 3),
        "scale": rng.uniform(0.85, 1.1),
        "offset": rng.integers(-8, 9, 2),
    }


VOICE_VALENCE = 0.5  # strength of the shared cue: valence in the voice as well as the face
# How the voice shows it. "breath" (unpleasant syllables are breathy) is learned by the tiny
# audio encoder in 8 epochs (audio-only UA 0.83 on fold 1); "glide" (pitch up/down within each
# syllable), the first try, was not (0.50, what arousal alone gives): README, ablation section.
VALENCE_CUE = "breath"


def speak(rng: np.random.Generator, speaker: dict, code: str, seconds: float,
          voice_valence: float = VOICE_VALENCE, valence_cue: str = VALENCE_CUE) -> np.ndarray:
    """A voiced, syllabic signal whose pitch level, movement, rate and brightness follow
    arousal; with `voice_valence` > 0 each syllable's pitch also glides up (pleasant) or
    down (unpleasant), a weaker cue that the face shows strongly: the cue both modalities
    share, which gives audio-video alignment (AVEL) and label matching (MEM) something to
    learn, as speech and faces share emotion in real data. valence_cue "breath" instead makes
    unpleasant syllables breathy (aspiration noise under the syllable's envelope): a cue
    present in every frame, where the glide is a direction in time."""
    high = AROUSAL[code]
    # (no draw at 0, so the first corpus is reproduced exactly)
    glide = voice_valence * (1 if PLEASANT[code] else -1) * 0.25 * rng.uniform(0.3, 1.0) \
        if voice_valence and valence_cue == "glide" else 0.0
    strength = rng.uniform(0.6, 1.0)  # how clearly this utterance shows its arousal
    f0 = speaker["f0"] * (1 + (0.5 if high else 0.0) * strength) * rng.uniform(0.95, 1.05)
    rate = (5.5 if high else 2.8) * rng.uniform(0.85, 1.15)  # syllables per second
    swing = (0.22 if high else 0.04) * strength  # pitch movement within a syllable
    tilt = 0.55 if high else 0.25  # harmonic amplitude ratio: brighter when aroused
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    out = np.zeros(n)
    pos = rng.uniform(0.02, 0.1)
    while pos < seconds - 0.1:
        length = min(rng.uniform(0.6, 1.0) / rate, seconds - pos)
        seg = (t >= pos) & (t < pos + length)
        u = (t[seg] - pos) / length
        contour = f0 * (1 + swing * np.sin(np.pi * u) * rng.choice([-1, 1])) * (1 + glide * (u - 0.5))
        phase = 2 * np.pi * np.cumsum(contour) / SAMPLE_RATE
        voice = sum(tilt ** (h - 1) * np.sin(h * phase) for h in range(1, 9))
        envelope = np.sin(np.pi * u) ** 2
        out[seg] += voice * envelope  # syllable envelope
        if valence_cue == "breath" and voice_valence and not PLEASANT[code]:
            out[seg] += voice_valence * 1.5 * rng.uniform(0.5, 1.0) * rng.normal(0, 1, seg.sum()) * envelope
        pos += length + rng.uniform(0.2, 0.6) / rate
    out /= np.abs(out).max() + 1e-9
    out += rng.normal(0, rng.uniform(0.02, 0.08), n)  # room noise
    return (out * rng.uniform(0.1, 0.6)).astype(np.float32)


FACE_AROUSAL = 0.0  # strength of arousal in the face (wide eyes, raised brows, open mouth); 0: none


def draw_face(rng: np.random.Generator, speaker: dict, code: str | None, strength: float, talking: bool,
              face_arousal: float = FACE_AROUSAL, width: int = WIDTH, height: int = HEIGHT):
    """One RGB frame of the speaker; `code` None draws an empty room (between turns).
    With `face_arousal` > 0 an aroused face also opens its eyes wider, raises its brows and
    opens its mouth further: arousal, the voice's strong cue, shows weakly in the face."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), tuple(int(c) for c in speaker["background"]))
    if code is not None:
        d = ImageDraw.Draw(img)
        s = speaker["scale"]
        cx = width / 2 + speaker["offset"][0] + rng.integers(-3, 4)
        cy = height / 2 + speaker["offset"][1] + rng.integers(-3, 4)
        rx, ry = 34 * s, 44 * s
        d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=tuple(int(c) for c in speaker["skin"]))
        valence = 1 if PLEASANT[code] else -1
        wide = face_arousal * AROUSAL[code]  # 0 for calm faces and for the face_arousal=0 corpus
        for side in (-1, 1):
            ex, ey = cx + side * 14 * s, cy - 10 * s
            d.ellipse([ex - 4 * s, ey - 3 * s * (1 + wide), ex + 4 * s, ey + 3 * s * (1 + wide)], fill=(30, 30, 30))
            # Brows: level-arched when pleasant, inner ends pulled down when not; raised when aroused.
            tilt = -valence * 6 * s * strength
            lift = 5 * s * wide
            d.line([ex - side * 3 * s, ey - 9 * s + tilt - lift, ex + side * 11 * s, ey - 11 * s - lift],
                   fill=(40, 25, 20), width=max(2, int(5 * s)))
        # Mouth: a wide, thick parabola, corners up (pleasant) or down (unpleasant).
        xs = np.linspace(-22, 22, 23) * s
        curve = valence * strength * 16 * s * (xs / (22 * s)) ** 2
        ys = cy + 20 * s - curve + valence * 5 * s
        opening = rng.uniform(1, 5) * s * (1 + 1.5 * wide) if talking else 0.0
        d.line(list(zip(cx + xs, ys - opening / 2)), fill=(120, 20, 30), width=max(2, int(8 * s)))
        if opening:
            d.line(list(zip(cx + xs, ys + opening / 2)), fill=(120, 20, 30), width=max(2, int(5 * s)))
    frame = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (height, width, 3))
    return np.clip(frame, 0, 255).astype(np.uint8)


def draw_dialog_frame(rng: np.random.Generator, speakers: dict, lead: str, faces: dict, talker: str | None,
                      face_arousal: float = FACE_AROUSAL) -> np.ndarray:
    """One 720x480 split-screen frame: the dialog's named actor (`lead`) on the left half,
    the other on the right. faces: gender -> (code, strength), each actor's current
    expression; `talker` (a gender or None) is the one speaking. Each half is drawn at
    120x160 and scaled by 3, so that CLIP's centre crop of a half frames the face as the
    single layout's crop does."""
    from PIL import Image

    halves = []
    for gender in (lead, "M" if lead == "F" else "F"):
        code, strength = faces[gender]
        small = draw_face(rng, speakers[gender], code, strength, talking=gender == talker,
                          face_arousal=face_arousal, width=DIALOG_WIDTH // 6, height=DIALOG_HEIGHT // 3)
        halves.append(np.asarray(Image.fromarray(small).resize((DIALOG_WIDTH // 2, DIALOG_HEIGHT), Image.BILINEAR)))
    return np.concatenate(halves, axis=1)


def evaluation_lines(start: float, end: float, turn: str, code: str, vad) -> list[str]:
    """One turn in IEMOCAP's EmoEvaluation format: the turn line, the categorical annotators'
    lines and the dimensional annotators' lines, then a blank line."""
    v, a, d = vad
    name = FULL_NAMES.get(code, "Other")
    dims = lambda x, y, z: f"val {int(round(x))}; act {int(round(y))}; dom  {int(round(z))};"  # noqa: E731
    return [f"[{start:.4f} - {end:.4f}]\t{turn}\t{code}\t[{v:.4f}, {a:.4f}, {d:.4f}]",
            f"C-E2:\t{name};\t()", f"C-E3:\t{name};\t()", f"C-E4:\t{name};\t()", f"C-F1:\t{name};\t()",
            f"A-E3:\t{dims(v, a, d)}\t()", f"A-F1:\t{dims(v, a, d)}\t()", ""]


def write_dialog(root: Path, rng: np.random.Generator, session: int, lead: str, index: int,
                 speakers: dict, turns: int, voice_valence: float = VOICE_VALENCE,
                 seconds: tuple[float, float] = (1.6, 3.2), valence_cue: str = VALENCE_CUE,
                 face_arousal: float = FACE_AROUSAL, layout: str = "single") -> None:
    import av
    import soundfile as sf

    dialog = f"Ses{session:02d}{lead}_impro{index:02d}"
    sdir = root / f"Session{session}"
    wav_dir = sdir / "sentences" / "wav" / dialog
    eval_dir = sdir / "dialog" / "EmoEvaluation"
    avi_dir = sdir / "dialog" / "avi" / "DivX"
    for d in (wav_dir, eval_dir, avi_dir):
        d.mkdir(parents=True, exist_ok=True)

    codes = rng.permutation(LABEL_POOL * (turns // len(LABEL_POOL) + 1))[:turns]
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    schedule = []  # (start, end, gender, code, strength)
    clock = rng.uniform(0.5, 1.5)
    counts = {"F": 0, "M": 0}
    for i, code in enumerate(codes):
        gender = "FM"[(i + (lead == "M")) % 2]
        length = float(rng.uniform(*seconds))
        turn = f"{dialog}_{gender}{counts[gender]:03d}"
        counts[gender] += 1
        sf.write(str(wav_dir / f"{turn}.wav"), speak(rng, speakers[gender], code, length, voice_valence, valence_cue),
                 SAMPLE_RATE, subtype="PCM_16")
        v, a, dd = (min(5.0, max(1.0, x + rng.choice([-0.5, 0.0, 0.0, 0.5]))) for x in VAD[code])
        start, end = clock, clock + length
        lines += evaluation_lines(start, end, turn, code, (v, a, dd))
        schedule.append((start, end, gender, code, float(rng.uniform(0.5, 1.0))))
        clock = end + rng.uniform(0.2, 0.8)
    (eval_dir / f"{dialog}.txt").write_text("\n".join(lines) + "\n")

    dialog_layout = layout == "dialog"
    fps = DIALOG_FPS if dialog_layout else FPS
    with av.open(str(avi_dir / f"{dialog}.avi"), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = (DIALOG_WIDTH, DIALOG_HEIGHT) if dialog_layout else (WIDTH, HEIGHT)
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 2_000_000 if dialog_layout else 400_000
        stream.thread_count = 1  # deterministic output
        current = 0
        faces = {"F": ("neu", 0.3), "M": ("neu", 0.3)}  # each actor's expression (dialog layout)
        for i in range(int((clock + 0.5) * float(fps))):
            t = i / float(fps)
            while current < len(schedule) - 1 and t >= schedule[current][1]:
                current += 1
            start, end, gender, code, strength = schedule[current]
            inside = start <= t < end
            if dialog_layout:
                if inside:
                    faces[gender] = (code, strength)  # the listener keeps their last expression
                frame = draw_dialog_frame(rng, speakers, lead, faces, gender if inside else None, face_arousal)
            else:
                frame = draw_face(rng, speakers[gender], code if inside else None, strength, talking=inside,
                                  face_arousal=face_arousal)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_corpus(out, sessions: int = 5, dialogs_per_session: int = 2, turns_per_dialog: int = 60,
                seed: int = 1234, voice_valence: float = VOICE_VALENCE,
                seconds: tuple[float, float] = (1.6, 3.2), valence_cue: str = VALENCE_CUE,
                face_arousal: float = FACE_AROUSAL, layout: str = "single") -> Path:
    if layout not in ("single", "dialog"):
        raise ValueError(f"layout must be 'single' or 'dialog', not {layout!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # What the reader's --video-region auto needs to know (real IEMOCAP is always "dialog").
    (out / "synthetic.json").write_text(json.dumps({"layout": layout, "seed": seed}) + "\n")
    for session in range(1, sessions + 1):
        rng = np.random.default_rng([seed, session])
        speakers = {g: _speaker(rng, g) for g in "FM"}
        for index in range(1, dialogs_per_session + 1):
            write_dialog(out, rng, session, "FM"[(index - 1) % 2], index, speakers, turns_per_dialog,
                         voice_valence, seconds, valence_cue, face_arousal, layout)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.synthetic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory to write the corpus into (IEMOCAP layout)")
    p.add_argument("--sessions", type=int, default=5, help="sessions (IEMOCAP has 5; one test fold each)")
    p.add_argument("--dialogs", type=int, default=2, help="dialogs per session (one video file each)")
    p.add_argument("--turns", type=int, default=60, help="turns per dialog")
    p.add_argument("--seconds", type=float, nargs=2, default=(1.6, 3.2), metavar=("MIN", "MAX"),
                   help="turn length range in seconds")
    p.add_argument("--voice-valence", type=float, default=VOICE_VALENCE,
                   help="strength of valence in the voice, the cue both modalities share (0: none)")
    p.add_argument("--valence-cue", choices=("glide", "breath"), default=VALENCE_CUE,
                   help="how the voice shows valence: pitch glides up/down in each syllable, or unpleasant "
                        "syllables are breathy")
    p.add_argument("--face-arousal", type=float, default=FACE_AROUSAL,
                   help="strength of arousal in the face (wider eyes, raised brows, open mouth; 0: none)")
    p.add_argument("--layout", choices=("single", "dialog"), default="single",
                   help="dialog: IEMOCAP's 720x480 29.97 fps split-screen videos with both actors; single: the "
                        "speaker alone, 160x120 at 15 fps (smaller, faster)")
    p.add_argument("--seed", type=int, default=1234, help="corpus seed (speakers, labels, noise)")
    args = p.parse_args(argv)
    make_corpus(args.out, args.sessions, args.dialogs, args.turns, args.seed, args.voice_valence,
                tuple(args.seconds), args.valence_cue, args.face_arousal, args.layout)
    from .data.iemocap import read_iemocap

    print(f"wrote {args.out}: " + read_iemocap(args.out, sessions=range(1, args.sessions + 1)).report())


if __name__ == "__main__":
    main()


def make_clip(seed: int, code: str | None = None, seconds: float | None = None, frames: int = 8):
    """One in-memory clip like the corpus's: (audio float32 [S] at 16 kHz, frames uint8
    [frames, H, W, 3], code). For parity checks, tests and the bundle's demo clip."""
    rng = np.random.default_rng([seed, 7])
    code = code or str(rng.choice(["neu", "hap", "ang", "sad"]))
    seconds = seconds or float(rng.uniform(1.6, 3.2))
    speaker = _speaker(rng, str(rng.choice(["F", "M"])))
    strength = float(rng.uniform(0.5, 1.0))
    audio = speak(rng, speaker, code, seconds)
    video = np.stack([draw_face(rng, speaker, code, strength, talking=True) for _ in range(frames)])
    return audio, video, code
