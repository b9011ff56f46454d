"""The IEMOCAP reader, for the real `IEMOCAP_full_release` layout:

    SessionN/dialog/EmoEvaluation/<dialog>.txt    turn lines: [start - end]<TAB>turn<TAB>emo<TAB>[V, A, D]
    SessionN/sentences/wav/<dialog>/<turn>.wav    one utterance, 16 kHz mono
    SessionN/dialog/avi/DivX/<dialog>.avi         the whole dialog's video; turns are cut by time

Four classes (neutral, happy, angry, sad); "excited" joins "happy" unless told otherwise.
Turns with any other label are counted per label and reported, never silently dropped.
Hidden files (names starting with ".", such as the `._Ses01F_impro01.txt` metadata files
that macOS leaves on shared drives) are skipped and listed in the corpus report.

The dialog videos are split-screen: 720x480 frames with the two actors side by side. The
dialog's name says which actor wears the motion-capture markers (F in Ses01F_impro01, M in
Ses05M_script01_1); that actor is on the LEFT half and the other actor on the RIGHT half
(the rule public IEMOCAP face-cropping code uses: IoannisKansizoglou/Iemocap-preprocess,
extractionmapCreator.py). `Utterance.video_side` is the half that shows the turn's speaker.
"""

from __future__ import annotations

import re
from collections import Counter
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..config import EMOTION_LABELS

log = logging.getLogger(__name__)
# The half of the split-screen frame that shows the actor wearing the markers (the one the
# dialog is named after); the other actor is on the other half.
MOCAP_ACTOR_SIDE = "left"

CODES = {"neu": "neutral", "hap": "happy", "ang": "angry", "sad": "sad", "exc": "excited",
         "fru": "frustrated", "sur": "surprised", "fea": "fearful", "dis": "disgusted",
         "oth": "other", "xxx": "no agreement"}

_TURN = re.compile(
    r"^\[(?P<start>\d+(?:\.\d+)?)\s*-\s*(?P<end>\d+(?:\.\d+)?)\]\t(?P<turn>\S+)\t(?P<emo>\w+)\t"
    r"\[(?P<v>[\d.]+),\s*(?P<a>[\d.]+),\s*(?P<d>[\d.]+)\]\s*$")


class IemocapFormatError(ValueError):
    """A file of the corpus that is missing or not in IEMOCAP's format."""


@dataclass(frozen=True)
class Utterance:
    id: str  # the turn name, e.g. Ses01F_impro01_F000
    session: int
    speaker: str  # e.g. Ses01F: the session and the speaker's gender
    dialog: str
    start: float  # seconds into the dialog video
    end: float
    label: str
    vad: tuple[float, float, float]  # valence, arousal, dominance on IEMOCAP's 1-5 scale
    wav: Path
    video: Path
    video_side: str | None = None  # the half of the dialog video that shows this turn's speaker

    @property
    def label_index(self) -> int:
        return EMOTION_LABELS.index(self.label)


@dataclass
class Corpus:
    utterances: list[Utterance]
    skipped: Counter = field(default_factory=Counter)  # other labels -> count
    hidden_files: list[Path] = field(default_factory=list)  # skipped dotfiles (macOS ._ files)

    def report(self) -> str:
        kept = Counter(u.label for u in self.utterances)
        lines = [f"{len(self.utterances)} utterances: " + ", ".join(f"{k} {kept[k]}" for k in EMOTION_LABELS)]
        if self.skipped:
            lines.append(f"left out {sum(self.skipped.values())} turns with other labels: "
                         + ", ".join(f"{k} {n}" for k, n in self.skipped.most_common()))
        if self.hidden_files:
            lines.append(f"skipped {len(self.hidden_files)} hidden files: "
                         + ", ".join(str(p) for p in self.hidden_files[:5])
                         + (" ..." if len(self.hidden_files) > 5 else ""))
        return "; ".join(lines)


def speaker_side(dialog: str, speaker_gender: str, mocap_side: str = MOCAP_ACTOR_SIDE) -> str | None:
    """The half ("left" / "right") of `dialog`'s split-screen video that shows the actor of
    gender `speaker_gender` ("F" / "M"): the dialog's named actor (Ses01F_... -> F) is on
    `mocap_side`, the other actor on the other half."""
    named = dialog[5:6]
    if named not in ("F", "M") or speaker_gender not in ("F", "M"):
        return None  # not IEMOCAP's naming: only --video-region full can read this dialog
    other = "right" if mocap_side == "left" else "left"
    return mocap_side if speaker_gender == named else other


def parse_evaluation(path: Path) -> list[tuple[float, float, str, str, tuple[float, float, float]]]:
    """The turn lines of one EmoEvaluation file: (start, end, turn, code, (v, a, d))."""
    turns = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.startswith("["):
            continue  # header, blank lines, per-annotator lines (C-E1:, A-F2:, ...)
        m = _TURN.match(line)
        if m is None:
            raise IemocapFormatError(f"{path}:{number}: not a turn line "
                                     f"('[start - end]<TAB>turn<TAB>emotion<TAB>[V, A, D]'): {line!r}")
        start, end = float(m["start"]), float(m["end"])
        if end <= start:
            raise IemocapFormatError(f"{path}:{number}: turn ends ({end}) before it starts ({start})")
        if m["emo"] not in CODES:
            raise IemocapFormatError(f"{path}:{number}: unknown emotion code {m['emo']!r}")
        turns.append((start, end, m["turn"], m["emo"], (float(m["v"]), float(m["a"]), float(m["d"]))))
    return turns


def read_iemocap(root, sessions=None, merge_excited: bool = True, mocap_side: str = MOCAP_ACTOR_SIDE) -> Corpus:
    """Read `sessions` (default: every SessionN directory under root; IEMOCAP has 1-5)."""
    root = Path(root)
    if not root.is_dir():
        raise IemocapFormatError(f"{root}: no such directory (expected IEMOCAP_full_release)")
    if sessions is None:
        sessions = sorted(int(d.name[len("Session"):]) for d in root.iterdir()
                          if d.name.startswith("Session") and d.is_dir() and d.name[len("Session"):].isdigit())
        if not sessions:
            raise IemocapFormatError(f"{root}: no Session1..Session5 directories; is this IEMOCAP_full_release?")
    corpus = Corpus([])
    for session in sessions:
        sdir = root / f"Session{session}"
        found = sorted((sdir / "dialog" / "EmoEvaluation").glob("*.txt"))
        hidden = [p for p in found if p.name.startswith(".")]  # glob matches dotfiles: ._Ses01F_impro01.txt
        if hidden:
            log.warning("%s: skipping %d hidden files (%s)", sdir / "dialog" / "EmoEvaluation", len(hidden),
                        ", ".join(p.name for p in hidden[:3]) + (" ..." if len(hidden) > 3 else ""))
            corpus.hidden_files.extend(hidden)
        evaluations = [p for p in found if not p.name.startswith(".")]
        if not evaluations:
            raise IemocapFormatError(f"{sdir / 'dialog' / 'EmoEvaluation'}: no evaluation files")
        for evaluation in evaluations:
            dialog = evaluation.stem
            video = sdir / "dialog" / "avi" / "DivX" / f"{dialog}.avi"
            if not video.is_file():
                raise IemocapFormatError(f"{evaluation}: the dialog video {video} is missing")
            for start, end, turn, code, vad in parse_evaluation(evaluation):
                label = CODES[code]
                if label == "excited" and merge_excited:
                    label = "happy"
                if label not in EMOTION_LABELS:
                    corpus.skipped[label] += 1
                    continue
                wav = sdir / "sentences" / "wav" / dialog / f"{turn}.wav"
                if not wav.is_file():
                    raise IemocapFormatError(f"{evaluation}: turn {turn}: its audio {wav} is missing")
                # Turn names end in F000 / M012: the gender of who speaks.
                gender = turn.rsplit('_', 1)[-1][0]
                speaker = f"Ses{session:02d}{gender}"
                corpus.utterances.append(Utterance(turn, session, speaker, dialog, start, end, label, vad, wav, video,
                                                   speaker_side(dialog, gender, mocap_side)))
    return corpus
