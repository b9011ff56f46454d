"""The ablation: Foal-Net, without AVEL, without MEM, without both, and the two unimodal
baselines, each over every fold and several seeds.

    python -m training.synthetic --out build/ablation-corpus --seconds 1.0 2.0 --seed 2026
    python -m training.ablation --root build/ablation-corpus --init training/demo --freeze-video \\
        --objective paper --configs foalnet,no-avel,no-mem,no-avel-no-mem --seeds 1,2,3,4,5 \\
        --out benchmarks/results/training/ablation-paper

Every run's metrics.json is analysed by fold with the seeds nested (`training.ablation_analysis`:
fold-mean intervals, paired tests over the folds, Holm, power), after each run and on demand.

Resumable: a finished run (its metrics.json) is kept, an unfinished one continues from its
last epoch; run the same command again after an interruption. The corpus is read once and
the frozen video tower's frame embeddings are cached once for all runs. Writes
ablation.json (every run and the summary), ablation.md and ablation.png in --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .train import build_parser as train_parser
from .train import finished, make_config, read_corpus, train_fold

# name -> training flags (on top of the common ones)
CONFIGS = {
    "foalnet": [],
    "no-avel": ["--no-avel"],
    "no-mem": ["--no-mem"],
    "no-avel-no-mem": ["--no-avel", "--no-mem"],
    "audio-only": ["--modality", "audio"],
    "video-only": ["--modality", "video"],
    # VAVL's setting: 30% of training clips lose one modality; with and without reconstruction
    "missing30": ["--missing", "0.3"],
    "missing30-reconstruct": ["--missing", "0.3", "--reconstruct", "1"],
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.ablation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="the corpus (IEMOCAP layout; python -m training.synthetic writes one)")
    p.add_argument("--data", choices=("iemocap", "synthetic"), default="synthetic", help="corpus kind")
    p.add_argument("--out", type=Path, required=True, help="results directory (by-run/NAME/seedS/foldF/ below it)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--seeds", default="1,2,3", help="comma list of seeds")
    p.add_argument("--folds", default="1,2,3,4,5", help="comma list of test sessions")
    p.add_argument("--preset", default="tiny", help="architecture preset")
    p.add_argument("--init", default=None, help="checkpoint whose encoders every run starts from")
    p.add_argument("--epochs", type=int, default=12, help="epochs per run")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    p.add_argument("--batch-size", type=int, default=64, help="clips per optimiser step")
    p.add_argument("--objective", choices=("full", "paper"), default="paper",
                   help="paper: CE + AVEL + 0.1 MEM only; full: also the unimodal heads' CE and the CCC head")
    p.add_argument("--patience", type=int, default=0, help="early stopping patience in epochs (0: off)")
    p.add_argument("--mem-head", choices=("linear", "mlp"), default="linear", help="MEM's matching heads")
    p.add_argument("--schedule", choices=("constant", "cosine"), default="cosine", help="learning rate schedule")
    p.add_argument("--freeze-video", action="store_true",
                   help="freeze the video tower (cached embeddings), as the paper freezes CLIP")
    p.add_argument("--video-region", choices=("auto", "speaker", "full"), default="auto",
                   help="which part of the dialog frame the video tower sees (training.train --video-region)")
    p.add_argument("--plot-pooled", action="store_true",
                   help="also write ablation.png (every run pooled); analysis.png (by fold) is always written")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: leave a core to other work)")
    return p


def run_args(args, name: str, seed: int, out: Path) -> argparse.Namespace:
    flags = ["--data", args.data, "--root", str(args.root), "--preset", args.preset, "--epochs", str(args.epochs),
             "--lr", str(args.lr), "--batch-size", str(args.batch_size), "--schedule", args.schedule,
             "--objective", args.objective, "--patience", str(args.patience), "--mem-head", args.mem_head,
             "--seed", str(seed), "--out", str(out), "--resume", "--quiet", "--cache-audio-conv",
             "--cache", str(args.out / "embedding-cache"), "--video-region", args.video_region] + CONFIGS[name]
    if args.init:
        flags += ["--init", str(args.init)]
    if args.freeze_video:
        flags += ["--freeze-video"]
    return train_parser().parse_args(flags)


def summarise(runs: list[dict]) -> dict:
    """Per config: mean and standard deviation of test UA over all runs, and over seeds of
    each seed's fold-mean (the spread a single 5-fold experiment has)."""
    out = {}
    for name in CONFIGS:
        mine = [r for r in runs if r["config"] == name]
        if not mine:
            continue
        ua = np.array([r["UA"] for r in mine])
        per_seed = [np.mean([r["UA"] for r in mine if r["seed"] == s]) for s in sorted({r["seed"] for r in mine})]
        out[name] = {"runs": len(mine), "UA_mean": float(ua.mean()), "UA_std": float(ua.std(ddof=1)) if len(ua) > 1
                     else 0.0, "WA_mean": float(np.mean([r["WA"] for r in mine])),
                     "seed_means": [float(x) for x in per_seed],
                     "seed_mean_std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
                     "selected_epochs": [r["selected_epoch"] for r in mine]}
    return out


def paired(runs: list[dict], reference: str = "foalnet") -> dict:
    """Each configuration minus the reference on the same fold and seed: the folds differ far
    more than the configurations, so the comparison that can see a small effect is paired.
    Mean difference of test UA, its sd and a 95% t interval over the pairs."""
    from scipy import stats

    base = {(r["seed"], r["fold"]): r["UA"] for r in runs if r["config"] == reference}
    out = {}
    for name in CONFIGS:
        if name == reference:
            continue
        d = np.array([r["UA"] - base[(r["seed"], r["fold"])] for r in runs
                      if r["config"] == name and (r["seed"], r["fold"]) in base])
        if len(d) < 2:
            continue
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        out[name] = {"pairs": int(len(d)), "mean_diff": float(d.mean()), "sd_diff": float(d.std(ddof=1)),
                     "ci95": [float(d.mean() - half), float(d.mean() + half)]}
    return out


def write_reports(args, runs: list[dict], command: str, started: float) -> None:
    summary = summarise(runs)
    differences = paired(runs)
    report = {"command": command, "settings": {k: str(v) for k, v in vars(args).items()},
              "wall_seconds": round(time.time() - started, 1), "summary": summary,
              "paired_vs_foalnet": differences, "runs": runs}
    tmp = args.out / f"ablation.json.{os.getpid()}.tmp"  # several processes may share --out (disjoint configs)
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(args.out / "ablation.json")
    lines = ["# Ablation (test UA of the selected epoch; mean +- standard deviation)", "",
             f"Command: `{command}`", "",
             "| configuration | runs | test UA, mean +- sd over runs | sd of the 5-fold mean over seeds | test WA |",
             "| --- | ---: | --- | ---: | ---: |"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['runs']} | {s['UA_mean']:.3f} +- {s['UA_std']:.3f} | {s['seed_mean_std']:.3f} "
                     f"| {s['WA_mean']:.3f} |")
    if differences:
        lines += ["", "Paired with Foal-Net on the same fold and seed (test UA difference):", "",
                  "| configuration | pairs | mean difference | sd | 95% interval |", "| --- | ---: | ---: | ---: | --- |"]
        for name, d in differences.items():
            lines.append(f"| {name} | {d['pairs']} | {d['mean_diff']:+.3f} | {d['sd_diff']:.3f} "
                         f"| [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] |")
    folds = sorted({r["fold"] for r in runs})
    lines += ["", "Mean test UA per test session (over seeds):", "",
              "| configuration | " + " | ".join(f"session {f}" for f in folds) + " |",
              "| --- |" + " ---: |" * len(folds)]
    for name in summary:
        cells = [np.mean([r["UA"] for r in runs if r["config"] == name and r["fold"] == f] or [np.nan]) for f in folds]
        lines.append(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    (args.out / "ablation.md").write_text("\n".join(lines) + "\n")
    if args.plot_pooled:
        plot(summary, runs, args.out / "ablation.png")


def plot(summary: dict, runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, name in enumerate(names):
        ua = [r["UA"] for r in runs if r["config"] == name]
        ax.scatter(i + np.random.default_rng(i).uniform(-0.15, 0.15, len(ua)), ua, s=10, alpha=0.5, color="grey")
        ax.errorbar(i, summary[name]["UA_mean"], yerr=summary[name]["UA_std"], fmt="o", color="C0", capsize=4)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_ylabel("test UA (selected epoch)")
    ax.set_title("Ablation: every run (grey), mean +- sd (blue)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python -m training.ablation " + " ".join(sys.argv[1:] if argv is None else argv)
    names = [n.strip() for n in args.configs.split(",")]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"--configs: unknown {unknown}; known: {list(CONFIGS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    (args.out / "settings.json").write_text(json.dumps({"command": command, **{k: str(v) for k, v in vars(args).items()}},
                                                       indent=2))
    folds = [int(f) for f in args.folds.split(",")]

    from .data.clips import load_clips

    first = run_args(args, names[0], seeds[0], args.out)
    clips = load_clips(read_corpus(first).utterances, make_config(first), progress=False,
                       video_region=first.video_region)  # read_corpus resolves "auto"
    args.video_region = first.video_region
    started, runs = time.time(), []
    total = len(names) * len(seeds) * len(folds)
    # Seeds outermost: an interrupted ablation has whole seeds of every configuration.
    for seed in seeds:
        for name in names:
            for fold in folds:
                out = args.out / "by-run" / name / f"seed{seed}" / f"fold{fold}"
                done = out / "metrics.json"
                run = run_args(args, name, seed, out)
                if done.is_file() and finished(json.loads(done.read_text()), args.epochs):
                    metrics = json.loads(done.read_text())
                else:
                    t = time.time()
                    metrics = train_fold(run, make_config(run), clips, fold, out, 0, 1)
                    print(f"[ablation] {len(runs) + 1}/{total} {name} seed {seed} fold {fold}: test UA "
                          f"{metrics['test'][metrics['head']]['UA']:.3f} (epoch {metrics['selected_epoch']}) "
                          f"in {time.time() - t:.0f}s", flush=True)
                head = metrics["test"][metrics["head"]]
                runs.append({"config": name, "seed": seed, "fold": fold, "UA": head["UA"], "WA": head["WA"],
                             "selected_epoch": metrics["selected_epoch"],
                             "fused_UA": metrics["test"]["fused"]["UA"], "audio_UA": metrics["test"]["audio"]["UA"],
                             "video_UA": metrics["test"]["video"]["UA"], "wall_seconds": metrics["wall_seconds"]})
                write_reports(args, runs, command, started)
                from .ablation_analysis import write as analyse

                analyse(args.out, command=command)
    return summarise(runs)


if __name__ == "__main__":
    main()
