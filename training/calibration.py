"""Calibration of the three emotion heads, fitted where the data is: the validation session.

    report = calibrate_fold(model, val_clips, test_clips, config, batch_size, device, out, fold)

Temperature scaling (Guo et al., 2017): one scalar T per head (fused, audio-only,
video-only) with probabilities softmax(logits / T), T chosen to minimise the negative
log-likelihood on the validation session (speakers training never saw). Dividing by a
positive T keeps every arg-max, so accuracy cannot change; what changes is whether
"happy 0.68" is right 68% of the time.

Late fusion (Atmaja & Akagi's multistage idea): a second stage over the final predictions
of the fused and the two unimodal heads, here multinomial logistic regression over the
three heads' calibrated log-probabilities, fitted on the same validation session and
started from (and pulled towards) the calibrated fused head.

Measured on the test session before and after: NLL, Brier score, expected calibration error
(15 equal-width confidence bins), UA and WA; a reliability diagram per fold.
`calibrate_fold` writes calibration.json beside model.safetensors (what export puts into the
bundle's manifest) and reliability-fold<N>.png, and returns what goes into metrics.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .config import EMOTION_LABELS
from .metrics import classification_report

HEADS = ("fused", "audio", "video")
ECE_BINS = 15
CALIBRATION_FILE = "calibration.json"
LOG_T_BOUNDS = (float(np.log(0.05)), float(np.log(20.0)))  # T in [0.05, 20]
LATE_FUSION_L2 = 1e-2  # pull towards the calibrated fused head, per clip-averaged NLL


# -- metrics --------------------------------------------------------------------------------
def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def nll(probs: np.ndarray, gold) -> float:
    """Mean negative log-likelihood of the gold labels."""
    gold = np.asarray(gold)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(gold)), gold], 1e-12, 1.0))))


def brier(probs: np.ndarray, gold) -> float:
    """Mean over clips of the squared distance to the one-hot gold label (0 best, 2 worst)."""
    gold = np.asarray(gold)
    onehot = np.eye(probs.shape[1])[gold]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def reliability(probs: np.ndarray, gold, bins: int = ECE_BINS) -> dict:
    """Per equal-width confidence bin: count, mean confidence, accuracy."""
    gold = np.asarray(gold)
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)  # (lo, hi]; 0 joins bin 0
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    hit_sum = np.bincount(which, weights=(pred == gold).astype(np.float64), minlength=bins)
    nz = np.maximum(count, 1)
    return {"edges": edges, "count": count, "confidence": conf_sum / nz, "accuracy": hit_sum / nz}


def ece(probs: np.ndarray, gold, bins: int = ECE_BINS) -> float:
    """Expected calibration error: sum over bins of (share of clips) x |accuracy - confidence|."""
    r = reliability(probs, gold, bins)
    return float(np.sum(r["count"] / max(len(gold), 1) * np.abs(r["accuracy"] - r["confidence"])))


def scores(probs: np.ndarray, gold) -> dict:
    rep = classification_report(list(np.asarray(gold)), probs.argmax(1), EMOTION_LABELS)
    return {"NLL": nll(probs, gold), "Brier": brier(probs, gold), "ECE": ece(probs, gold),
            "UA": rep["UA"], "WA": rep["WA"], "n": rep["n"]}


# -- fitting --------------------------------------------------------------------------------
def fit_temperature(logits: np.ndarray, gold) -> float:
    """The T in [0.05, 20] minimising NLL of softmax(logits / T): a bounded scalar search on
    log T (NLL is smooth in it and, for one scalar, a golden-section search needs no tuning)."""
    from scipy.optimize import minimize_scalar

    logits, gold = np.asarray(logits, np.float64), np.asarray(gold)
    if len(gold) == 0:
        return 1.0

    def loss(log_t: float) -> float:
        return -float(np.mean(log_softmax(logits, np.exp(log_t))[np.arange(len(gold)), gold]))

    res = minimize_scalar(loss, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-5})
    best = float(res.x) if loss(float(res.x)) <= loss(0.0) else 0.0  # never worse than leaving it alone
    return float(np.exp(best))


def late_fusion_features(logits: dict, temperatures: dict) -> np.ndarray:
    """[N, 3C]: the fused, audio-only and video-only heads' calibrated log-probabilities."""
    return np.concatenate([log_softmax(logits[h], temperatures[h]) for h in HEADS], axis=1)


def fit_late_fusion(logits: dict, temperatures: dict, gold, l2: float = LATE_FUSION_L2) -> dict:
    """Multinomial logistic regression over the three heads' calibrated log-probabilities,
    fitted by L-BFGS on the validation NLL plus l2 x |W - W0|^2, where W0 passes the fused
    head's log-probabilities through unchanged: with no evidence the second stage is the
    calibrated fused head. -> {"weights": [3C][C], "bias": [C]} (probabilities =
    softmax(features @ weights + bias))."""
    x = torch.tensor(late_fusion_features(logits, temperatures), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(gold), dtype=torch.long)
    c = x.shape[1] // len(HEADS)
    w0 = torch.zeros(x.shape[1], c, dtype=torch.float64)
    w0[:c] = torch.eye(c, dtype=torch.float64)
    w = w0.clone().requires_grad_(True)
    b = torch.zeros(c, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + l2 * ((w - w0) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return {"weights": w.detach().numpy().round(6).tolist(), "bias": b.detach().numpy().round(6).tolist(),
            "l2": l2}


def late_fusion_probs(logits: dict, temperatures: dict, stage: dict) -> np.ndarray:
    z = late_fusion_features(logits, temperatures) @ np.asarray(stage["weights"]) + np.asarray(stage["bias"])
    return softmax(z)


# -- one fold -------------------------------------------------------------------------------
@torch.inference_mode()
def collect_logits(model, clips, config, batch_size: int, device) -> tuple[dict, np.ndarray]:
    """The three heads' logits over `clips` (both modalities given): ({head: [N, C]}, gold [N])."""
    import dataclasses

    from .data.clips import collate

    model.eval()
    clips = [dataclasses.replace(c, has_audio=True, has_video=True) for c in clips]
    outs = {h: [] for h in HEADS}
    for i in range(0, len(clips), batch_size):
        batch = {k: v.to(device) for k, v in collate(clips[i:i + batch_size], config).items()}
        video = batch.get("video_embeddings", batch.get("frames"))
        res = model(batch["waveform"], video, batch["video_mask"], batch["audio_lengths"])
        for head, t in zip(HEADS, res):
            outs[head].append(t.float().cpu().numpy())
    return {h: np.concatenate(v) for h, v in outs.items()}, np.array([c.label for c in clips])


def calibrate(val_logits: dict, val_gold, test_logits: dict, test_gold) -> dict:
    """Fit on validation, score on test: temperatures, late-fusion stage and the report."""
    temps = {h: fit_temperature(val_logits[h], val_gold) for h in HEADS}
    stage = fit_late_fusion(val_logits, temps, val_gold)
    test = {"before": {h: scores(softmax(test_logits[h]), test_gold) for h in HEADS},
            "after": {h: scores(softmax(test_logits[h], temps[h]), test_gold) for h in HEADS},
            "late_fusion": scores(late_fusion_probs(test_logits, temps, stage), test_gold)}
    val = {"fused_calibrated": scores(softmax(val_logits["fused"], temps["fused"]), val_gold),
           "late_fusion": scores(late_fusion_probs(val_logits, temps, stage), val_gold)}
    return {"temperatures": {h: round(t, 6) for h, t in temps.items()}, "late_fusion": stage,
            "test": test, "validation": val}


def plot_reliability(test_logits: dict, test_gold, temperatures: dict, path: Path, title: str) -> None:
    """One panel per head: accuracy against confidence per bin, raw and calibrated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(HEADS), figsize=(10.5, 3.6), dpi=110, sharey=True)
    for ax, head in zip(axes, HEADS):
        width = 1.0 / ECE_BINS
        for t, colour, name, shift in ((1.0, "0.6", "raw", -0.25), (temperatures[head], "tab:blue",
                                                                   f"T = {temperatures[head]:.2f}", 0.25)):
            probs = softmax(test_logits[head], t)
            r = reliability(probs, test_gold)
            keep = r["count"] > 0
            centres = r["edges"][:-1] + width / 2
            ax.bar(centres[keep] + shift * width, r["accuracy"][keep], width=width / 2, color=colour,
                   label=f"{name}: ECE {ece(probs, test_gold):.3f}")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_title(f"{head} head", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("accuracy")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def calibrate_fold(model, val_clips, test_clips, config, batch_size: int, device, out, fold,
                   fitted_on: str) -> dict:
    """Fit on the validation clips, write calibration.json (beside the checkpoint's weights)
    and reliability-fold<N>.png into `out`; -> the report for metrics.json."""
    from .model import write_text

    out = Path(out)
    if not val_clips or not test_clips:
        return {"skipped": "no validation or no test clips: nothing to fit or to score"}
    val_logits, val_gold = collect_logits(model, val_clips, config, batch_size, device)
    test_logits, test_gold = collect_logits(model, test_clips, config, batch_size, device)
    report = calibrate(val_logits, val_gold, test_logits, test_gold)
    report = {"method": "temperature scaling per head, NLL on the validation clips",
              "fitted_on": f"{fitted_on} ({len(val_gold)} clips)", "ece_bins": ECE_BINS, **report}
    write_text(out / CALIBRATION_FILE, json.dumps(report, indent=2))
    plot_reliability(test_logits, test_gold, report["temperatures"], out / f"reliability-fold{fold}.png",
                     f"test session {fold}: reliability before (grey) and after (blue) temperature scaling, "
                     f"T fitted on {fitted_on}")
    return {k: v for k, v in report.items() if k != "late_fusion"}
