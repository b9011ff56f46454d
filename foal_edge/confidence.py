"""How sure a prediction is: the bundle's calibration applied to the fusion graph's heads.

The fusion graph returns three heads' logits: the fused head (`logits`) and the audio-only
and video-only heads (`audio_logits`, `video_logits`). Training fits one temperature per head
on its validation session (training/calibration.py); the manifest's `calibration` carries
them, and probabilities are softmax(logits / T). The label's calibrated probability is the
prediction's `confidence`; with both modalities given, `per_modality` is what each head says
alone, so a caller can tell "voice and face agree" from "they disagree".

Numpy only: a few divisions and exponentials on four numbers per head.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidInputError
from .bundle.schema import _num, _object, _str

HEADS = {"fused": "logits", "audio": "audio_logits", "video": "video_logits"}  # head -> fusion output
T_RANGE = (0.05, 20.0)  # what training's search allows


def check_calibration(v) -> dict:
    """The manifest's `calibration`: {"method", "fitted_on", "temperatures": {head: T}}."""
    return _object(v, {"method": lambda x: _str(x, 200), "fitted_on": lambda x: _str(x, 200),
                       "temperatures": lambda x: _object(x, {h: lambda t: _num(t, *T_RANGE) for h in HEADS})})


def check_min_confidence(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"min_confidence must be a probability in [0, 1] or None (off), not {value!r}")
    return float(value)


def temperatures(calibration: dict | None) -> dict[str, float]:
    """head -> T (1.0 for every head of an uncalibrated bundle)."""
    return dict(calibration["temperatures"]) if calibration else {h: 1.0 for h in HEADS}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def head_probabilities(raw: dict, head: str, temps: dict[str, float]) -> np.ndarray:
    """One head's calibrated probabilities from the fusion graph's raw outputs for one clip."""
    return _softmax(raw[HEADS[head]].astype(np.float64) / temps[head])


def read_heads(raw: dict, has_audio: bool, has_video: bool, labels: list[str], temps: dict[str, float],
               min_confidence: float | None) -> dict:
    """-> the Prediction fields label, probabilities, confidence, low_confidence, per_modality.
    The head that answers is the fused one when both modalities were given, else the one
    modality's own."""
    head = "fused" if has_audio and has_video else ("audio" if has_audio else "video")
    probs = head_probabilities(raw, head, temps)
    best = int(probs.argmax())
    confidence = float(probs[best])
    per_modality = None
    if has_audio and has_video:
        per_modality = {}
        for m in ("audio", "video"):
            p = head_probabilities(raw, m, temps)
            k = int(p.argmax())
            per_modality[m] = {"label": labels[k], "confidence": float(p[k]),
                               "probabilities": {lab: float(x) for lab, x in zip(labels, p)}}
    return {"label": labels[best], "probabilities": {lab: float(x) for lab, x in zip(labels, probs)},
            "confidence": confidence,
            "low_confidence": min_confidence is not None and confidence < min_confidence,
            "per_modality": per_modality}


def describe(prediction) -> list[str]:
    """Lines for the CLI: the confidence (and the threshold verdict) and what each modality says."""
    conf = getattr(prediction, "confidence", None)
    if conf is None:
        return []
    lines = [f"  confidence {conf:.2f}" + (" (below the threshold: low confidence)" if prediction.low_confidence
                                         else "")]
    pm = prediction.per_modality
    if pm:
        a, v = pm["audio"], pm["video"]
        verdict = "agree" if a["label"] == v["label"] else "disagree"
        lines.append(f"  voice says {a['label']} {a['confidence']:.2f}, face says {v['label']} "
                     f"{v['confidence']:.2f}: they {verdict}")
    return lines


__all__ = ["HEADS", "check_calibration", "check_min_confidence", "read_heads", "temperatures", "describe"]
