"""Emotion metrics: WA (overall accuracy), UA (mean per-class recall), the confusion
matrix, and CCC per attribute."""

from __future__ import annotations

import numpy as np


def confusion(gold, pred, num_classes: int) -> np.ndarray:
    """[gold, pred] counts."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(gold), np.asarray(pred)), 1)
    return m


def classification_report(gold, pred, labels) -> dict:
    m = confusion(gold, pred, len(labels))
    support = m.sum(axis=1)
    recall = np.divide(np.diag(m), support, out=np.zeros(len(labels)), where=support > 0)
    present = support > 0  # UA averages the classes that occur
    return {
        "WA": float(np.trace(m) / max(m.sum(), 1)),
        "UA": float(recall[present].mean()) if present.any() else 0.0,
        "recall": {label: float(r) for label, r in zip(labels, recall)},
        "confusion": m.tolist(),
        "n": int(m.sum()),
    }


def ccc_report(pred: np.ndarray, gold: np.ndarray, names) -> dict:
    out = {}
    for k, name in enumerate(names):
        p, g = pred[:, k].astype(np.float64), gold[:, k].astype(np.float64)
        cov = np.mean((p - p.mean()) * (g - g.mean()))
        out[name] = float(2 * cov / (p.var() + g.var() + (p.mean() - g.mean()) ** 2 + 1e-12))
    return out


def plot_confusion(matrix, labels, path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix)
    rates = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=120)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=30)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{m[i, j]}", ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
