"""Summarise calibration over training folds: before/after NLL, Brier, ECE per head, accuracy
unchanged, late fusion against the calibrated fused head.

    python -m benchmarks.calibration_report RUN_DIR [RUN_DIR ...] --out benchmarks/results/training/calibration

Reads each RUN_DIR/fold*/metrics.json and calibration.json (written by training.train), copies
the reliability diagrams, and writes summary.json and summary.md into --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

HEADS = ("fused", "audio", "video")
SCORES = ("NLL", "Brier", "ECE")


def collect(runs: list[Path]) -> dict[int, dict]:
    folds = {}
    for run in runs:
        for metrics_file in sorted(Path(run).glob("fold*/metrics.json")):
            metrics = json.loads(metrics_file.read_text())
            if "calibration" not in metrics:
                continue
            cal = json.loads((metrics_file.parent / "calibration.json").read_text())
            folds[metrics["test_session"]] = {"dir": metrics_file.parent, "metrics": metrics, "calibration": cal}
    return dict(sorted(folds.items()))


def summarise(folds: dict[int, dict]) -> dict:
    rows = {}
    for session, f in folds.items():
        cal = f["calibration"]
        test = cal["test"]
        rows[session] = {
            "temperatures": cal["temperatures"],
            "fitted_on": cal["fitted_on"],
            "selected_epoch": f["metrics"]["selected_epoch"],
            "test_clips": f["metrics"]["test_clips"],
            "before": {h: {k: test["before"][h][k] for k in SCORES + ("UA", "WA")} for h in HEADS},
            "after": {h: {k: test["after"][h][k] for k in SCORES + ("UA", "WA")} for h in HEADS},
            "late_fusion": {k: test["late_fusion"][k] for k in SCORES + ("UA", "WA")},
            "accuracy_unchanged": all(test["before"][h][k] == test["after"][h][k] for h in HEADS for k in ("UA", "WA")),
        }
    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    sd = lambda xs: float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0  # noqa: E731
    agg = {}
    for when in ("before", "after"):
        agg[when] = {h: {k: {"mean": mean([r[when][h][k] for r in rows.values()]),
                             "sd": sd([r[when][h][k] for r in rows.values()])} for k in SCORES + ("UA", "WA")}
                     for h in HEADS}
    agg["late_fusion"] = {k: {"mean": mean([r["late_fusion"][k] for r in rows.values()]),
                              "sd": sd([r["late_fusion"][k] for r in rows.values()])} for k in SCORES + ("UA", "WA")}
    diff_ua = [r["late_fusion"]["UA"] - r["after"]["fused"]["UA"] for r in rows.values()]
    diff_nll = [r["late_fusion"]["NLL"] - r["after"]["fused"]["NLL"] for r in rows.values()]
    agg["late_fusion_minus_fused"] = {"UA": {"mean": mean(diff_ua), "sd": sd(diff_ua), "per_fold": diff_ua},
                                      "NLL": {"mean": mean(diff_nll), "sd": sd(diff_nll), "per_fold": diff_nll}}
    agg["late_fusion_wins"] = bool(mean(diff_ua) > 0 and mean(diff_nll) < 0)
    return {"folds": rows, "mean": agg, "n_folds": len(rows)}


def markdown(summary: dict) -> str:
    lines = ["| test session | head | T | NLL before -> after | Brier before -> after | ECE before -> after "
             "| UA (unchanged) |", "| --- | --- | ---: | --- | --- | --- | ---: |"]
    for session, r in summary["folds"].items():
        for h in HEADS:
            b, a = r["before"][h], r["after"][h]
            lines.append(f"| {session} | {h} | {r['temperatures'][h]:.2f} | {b['NLL']:.3f} -> {a['NLL']:.3f} | "
                         f"{b['Brier']:.3f} -> {a['Brier']:.3f} | {b['ECE']:.3f} -> {a['ECE']:.3f} | "
                         f"{a['UA']:.3f}{'' if b['UA'] == a['UA'] else ' (CHANGED)'} |")
    m = summary["mean"]
    for h in HEADS:
        b, a = m["before"][h], m["after"][h]
        lines.append(f"| **mean** | {h} | | {b['NLL']['mean']:.3f} -> {a['NLL']['mean']:.3f} | "
                     f"{b['Brier']['mean']:.3f} -> {a['Brier']['mean']:.3f} | {b['ECE']['mean']:.3f} -> "
                     f"{a['ECE']['mean']:.3f} | {a['UA']['mean']:.3f} |")
    lines += ["", "| test session | fused (calibrated) UA / NLL | late fusion UA / NLL | difference UA / NLL |",
              "| --- | --- | --- | --- |"]
    for session, r in summary["folds"].items():
        f, lf = r["after"]["fused"], r["late_fusion"]
        lines.append(f"| {session} | {f['UA']:.3f} / {f['NLL']:.3f} | {lf['UA']:.3f} / {lf['NLL']:.3f} | "
                     f"{lf['UA'] - f['UA']:+.3f} / {lf['NLL'] - f['NLL']:+.3f} |")
    d = m["late_fusion_minus_fused"]
    fused = m["after"]["fused"]
    lines.append(f"| **mean (sd)** | {fused['UA']['mean']:.3f} / {fused['NLL']['mean']:.3f} | "
                 f"{m['late_fusion']['UA']['mean']:.3f} / {m['late_fusion']['NLL']['mean']:.3f} | "
                 f"{d['UA']['mean']:+.3f} ({d['UA']['sd']:.3f}) / {d['NLL']['mean']:+.3f} ({d['NLL']['sd']:.3f}) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.calibration_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    folds = collect(args.runs)
    if not folds:
        raise SystemExit(f"no fold with calibration under {', '.join(map(str, args.runs))}")
    args.out.mkdir(parents=True, exist_ok=True)
    for session, f in folds.items():
        shutil.copyfile(f["dir"] / f"reliability-fold{session}.png", args.out / f"reliability-fold{session}.png")
        shutil.copyfile(f["dir"] / "calibration.json", args.out / f"calibration-fold{session}.json")
    summary = summarise(folds)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    (args.out / "summary.md").write_text(markdown(summary))
    print(markdown(summary))
    return summary


if __name__ == "__main__":
    main()
