"""Analysis of an ablation directory, by fold with seeds nested; re-runnable on partial results.

    python -m training.ablation_analysis benchmarks/results/training/ablation-paper

Reads every by-run/CONFIG/seedS/foldF/metrics.json under the directory (finished runs only)
and writes analysis.json, analysis.md and analysis.png beside them.

The unit of analysis is the test fold (a held-out IEMOCAP session): runs with several seeds
on one fold share its test clips and speakers, so they are not independent replications.
Each configuration's test UA is averaged over its seeds per fold; a comparison with the
reference configuration is the 5 per-fold differences of those means (over the seeds both
have finished), tested with a paired
t-test and an exact sign-flip permutation test over the folds (2^5 = 32 sign patterns),
Holm-corrected across the comparisons made. The power to detect a 2-point UA difference
follows from the measured SD of the per-fold differences (a paired t-test at alpha 0.05).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import numpy as np

LN2 = math.log(2)


def load_runs(directory: Path) -> list[dict]:
    runs = []
    for path in sorted(Path(directory).glob("by-run/*/seed*/fold*/metrics.json")):
        try:
            m = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # being written
        name, seed, fold = path.parts[-4], int(path.parts[-3][4:]), int(path.parts[-2][4:])
        head = m["test"][m["head"]]
        mem = [h["mem"] for h in m["history"] if "mem" in h]
        avel = [(h["avel"], h["avel_uniform"]) for h in m["history"] if "avel" in h]
        runs.append({"config": name, "seed": seed, "fold": fold, "UA": head["UA"], "WA": head["WA"],
                     "fused_UA": m["test"]["fused"]["UA"], "audio_UA": m["test"]["audio"]["UA"],
                     "video_UA": m["test"]["video"]["UA"],
                     "selected_epoch": m["selected_epoch"], "epochs_run": len(m["history"]),
                     "max_epochs": m.get("max_epochs"), "stopped_early": m.get("stopped_early", False),
                     "mem_first": mem[0] if mem else None, "mem_last": mem[-1] if mem else None,
                     "mem_min": min(mem) if mem else None,
                     "avel_last": avel[-1][0] if avel else None, "avel_uniform_last": avel[-1][1] if avel else None,
                     "wall_seconds": m.get("wall_seconds")})
    return runs


def fold_means(runs: list[dict], config: str, key: str = "UA") -> dict[int, float]:
    by_fold: dict[int, list[float]] = {}
    for r in runs:
        if r["config"] == config:
            by_fold.setdefault(r["fold"], []).append(r[key])
    return {f: float(np.mean(v)) for f, v in sorted(by_fold.items())}


def sign_flip_p(d: np.ndarray) -> float:
    """Exact two-sided sign-flip permutation p of the mean of paired differences."""
    observed = abs(d.mean())
    flips = [abs((d * np.array(s)).mean()) for s in itertools.product((1, -1), repeat=len(d))]
    return float(np.mean([f >= observed - 1e-12 for f in flips]))


def paired_t_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of a two-sided paired t-test with n pairs to detect a mean difference `effect`."""
    from scipy import stats

    if n < 2 or sd <= 0:
        return float("nan")
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = effect / (sd / math.sqrt(n))
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def pairs_for_power(effect: float, sd: float, power: float = 0.8, alpha: float = 0.05) -> int | None:
    for n in range(2, 10_000):
        if paired_t_power(effect, sd, n, alpha) >= power:
            return n
    return None


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values."""
    order = sorted(pvalues, key=pvalues.get)
    adjusted, running = {}, 0.0
    for i, name in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * pvalues[name]))
        adjusted[name] = running
    return adjusted


def compare(runs: list[dict], reference: str, others: list[str], effect: float = 0.02) -> dict:
    from scipy import stats

    ref = {(r["seed"], r["fold"]): r["UA"] for r in runs if r["config"] == reference}
    out = {}
    for name in others:
        # Per fold, the mean over the seeds both configurations have finished (paired seeds).
        mine = {(r["seed"], r["fold"]): r["UA"] for r in runs if r["config"] == name}
        common = set(ref) & set(mine)
        folds = sorted({f for _, f in common})
        if len(folds) < 2:
            continue
        d = np.array([np.mean([mine[k] - ref[k] for k in common if k[1] == f]) for f in folds])
        sd = float(d.std(ddof=1))
        half = float(stats.t.ppf(0.975, len(d) - 1) * sd / math.sqrt(len(d)))
        t_p = float(stats.ttest_1samp(d, 0.0).pvalue) if sd > 0 else float("nan")
        # the same fold and seed, for the spread a single pair has
        base = {(r["seed"], r["fold"]): r["UA"] for r in runs if r["config"] == reference}
        per_pair = np.array([r["UA"] - base[(r["seed"], r["fold"])] for r in runs
                             if r["config"] == name and (r["seed"], r["fold"]) in base])
        out[name] = {"folds": folds, "fold_differences": [float(x) for x in d], "mean_diff": float(d.mean()),
                     "sd_fold_diff": sd, "ci95": [float(d.mean() - half), float(d.mean() + half)],
                     "paired_t_p": t_p, "sign_flip_p": sign_flip_p(d),
                     "power_2pt": paired_t_power(effect, sd, len(d)),
                     "folds_for_80pct_power_2pt": pairs_for_power(effect, sd),
                     "seed_fold_pairs": int(len(per_pair)),
                     "sd_seed_fold_pair_diff": float(per_pair.std(ddof=1)) if len(per_pair) > 1 else None,
                     "pairs_better": int((per_pair > 0).sum()), "pairs_worse": int((per_pair < 0).sum())}
    adjusted = holm({k: v["paired_t_p"] for k, v in out.items() if not math.isnan(v["paired_t_p"])})
    adjusted_flip = holm({k: v["sign_flip_p"] for k, v in out.items()})
    for k, v in out.items():
        v["paired_t_p_holm"] = adjusted.get(k)
        v["sign_flip_p_holm"] = adjusted_flip.get(k)
    return out


def summary(runs: list[dict]) -> dict:
    out = {}
    for name in dict.fromkeys(r["config"] for r in runs):
        mine = [r for r in runs if r["config"] == name]
        fm = fold_means(runs, name)
        vals = np.array(list(fm.values()))
        mem_last = [r["mem_last"] for r in mine if r["mem_last"] is not None]
        mem_min = [r["mem_min"] for r in mine if r["mem_min"] is not None]
        out[name] = {
            "runs": len(mine), "seeds": sorted({r["seed"] for r in mine}), "folds": sorted(fm),
            "UA_fold_means": {str(k): v for k, v in fm.items()},
            "UA_mean_of_fold_means": float(vals.mean()),
            "UA_sd_of_fold_means": float(vals.std(ddof=1)) if len(vals) > 1 else None,
            "WA_mean": float(np.mean([r["WA"] for r in mine])),
            "selected_last_epoch": int(sum(r["selected_epoch"] == r["epochs_run"] for r in mine)),
            "stopped_early": int(sum(bool(r["stopped_early"]) for r in mine)),
            "selected_epoch_median": float(np.median([r["selected_epoch"] for r in mine])),
            "epochs_run_median": float(np.median([r["epochs_run"] for r in mine])),
            "mem_last_epoch_mean": float(np.mean(mem_last)) if mem_last else None,
            "mem_min_mean": float(np.mean(mem_min)) if mem_min else None,
            "mem_runs_below_0.65": int(sum(m < 0.65 for m in mem_min)) if mem_min else None,
            "avel_last_mean": float(np.mean([r["avel_last"] for r in mine if r["avel_last"] is not None]))
            if any(r["avel_last"] is not None for r in mine) else None,
            "avel_uniform_last_mean": float(np.mean([r["avel_uniform_last"] for r in mine
                                                     if r["avel_uniform_last"] is not None]))
            if any(r["avel_uniform_last"] is not None for r in mine) else None,
            "wall_seconds_mean": float(np.mean([r["wall_seconds"] for r in mine if r["wall_seconds"]])),
        }
    return out


def write(directory: Path, reference: str = "foalnet", command: str | None = None) -> dict:
    directory = Path(directory)
    runs = load_runs(directory)
    if not runs:
        raise SystemExit(f"{directory}: no finished runs (by-run/*/seed*/fold*/metrics.json)")
    configs = list(dict.fromkeys(r["config"] for r in runs))
    if reference not in configs:
        reference = configs[0]
    summ = summary(runs)
    comp = compare(runs, reference, [c for c in configs if c != reference])
    settings = directory / "settings.json"
    report = {"command": command or (json.loads(settings.read_text()).get("command") if settings.is_file() else None),
              "reference": reference, "summary": summ, "comparisons": comp, "runs": runs}
    (directory / "analysis.json").write_text(json.dumps(report, indent=2))
    lines = ["# Ablation analysis (test UA of the selected epoch)", ""]
    if report["command"]:
        lines += [f"Command: `{report['command']}`", ""]
    lines += [f"Analysis: `python -m training.ablation_analysis {directory}` "
              f"({len(runs)} finished runs; re-run as more finish).", "",
              "Per fold, the seeds' mean; a configuration's row is the mean and SD of its fold means.", "",
              "| configuration | runs (seeds x folds) | UA, mean of fold means | SD of fold means | WA | "
              "selected = last epoch | stopped early | median selected / run epochs | MEM at last epoch "
              "(ln 2 = 0.693) | runs with MEM < 0.65 | AVEL last / uniform |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |"]
    for name, s in summ.items():
        mem = f"{s['mem_last_epoch_mean']:.3f}" if s["mem_last_epoch_mean"] is not None else "off"
        below = f"{s['mem_runs_below_0.65']}" if s["mem_runs_below_0.65"] is not None else "-"
        avel = (f"{s['avel_last_mean']:.2f} / {s['avel_uniform_last_mean']:.2f}"
                if s["avel_last_mean"] is not None else "off")
        sd = f"{s['UA_sd_of_fold_means']:.3f}" if s["UA_sd_of_fold_means"] is not None else "-"
        lines.append(f"| {name} | {s['runs']} ({len(s['seeds'])} x {len(s['folds'])}) | "
                     f"{s['UA_mean_of_fold_means']:.3f} | {sd} | {s['WA_mean']:.3f} | {s['selected_last_epoch']} | "
                     f"{s['stopped_early']} | {s['selected_epoch_median']:.0f} / {s['epochs_run_median']:.0f} | "
                     f"{mem} | {below} | {avel} |")
    if comp:
        lines += ["", f"Each configuration minus {reference}, per fold (seed means), paired over the folds:", "",
                  "| configuration | folds | mean difference | 95% t interval | SD of fold differences | "
                  "paired t p (Holm) | sign-flip p (Holm) | power for 2 points | folds for 80% power | "
                  "seed-fold pairs better / worse |",
                  "| --- | ---: | ---: | --- | ---: | --- | --- | ---: | ---: | --- |"]
        for name, c in comp.items():
            lines.append(
                f"| {name} | {len(c['folds'])} | {c['mean_diff']:+.4f} | [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}] | "
                f"{c['sd_fold_diff']:.4f} | {c['paired_t_p']:.3f} ({_fmt(c['paired_t_p_holm'])}) | "
                f"{c['sign_flip_p']:.3f} ({_fmt(c['sign_flip_p_holm'])}) | {c['power_2pt']:.2f} | "
                f"{c['folds_for_80pct_power_2pt']} | {c['pairs_better']} / {c['pairs_worse']} |")
        lines += ["", "With 5 folds the smallest two-sided sign-flip p is 2/32 = 0.0625: the permutation test "
                  "alone cannot reach 0.05; the t-test assumes roughly normal fold differences.",
                  "Power: a paired t-test over the folds at alpha 0.05 (before Holm), for a true difference of "
                  "0.02 UA, with the SD of the fold differences measured here."]
    folds = sorted({r["fold"] for r in runs})
    lines += ["", "Fold means (test UA, mean over seeds):", "",
              "| configuration | " + " | ".join(f"fold {f}" for f in folds) + " |", "| --- |" + " ---: |" * len(folds)]
    for name in summ:
        fm = fold_means(runs, name)
        lines.append(f"| {name} | " + " | ".join(f"{fm[f]:.3f}" if f in fm else "-" for f in folds) + " |")
    (directory / "analysis.md").write_text("\n".join(lines) + "\n")
    plot(runs, summ, comp, reference, directory / "analysis.png")
    return report


def _fmt(p):
    return "-" if p is None else f"{p:.3f}"


def plot(runs, summ, comp, reference, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    folds = sorted({r["fold"] for r in runs})
    names = list(summ)
    for i, name in enumerate(names):
        fm = fold_means(runs, name)
        xs = [f + (i - (len(names) - 1) / 2) * 0.12 for f in folds if f in fm]
        left.plot(xs, [fm[f] for f in folds if f in fm], "o-", label=name, color=f"C{i}", alpha=0.85)
        seeds = [r for r in runs if r["config"] == name]
        left.scatter([r["fold"] + (i - (len(names) - 1) / 2) * 0.12 for r in seeds], [r["UA"] for r in seeds],
                     s=8, color=f"C{i}", alpha=0.3)
    left.set_xticks(folds, [f"fold {f}" for f in folds])
    left.set_ylabel("test UA (selected epoch)")
    left.set_title("Per fold: seed means (lines), each seed (dots)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    for j, (name, c) in enumerate(comp.items()):
        right.errorbar(c["mean_diff"], j, xerr=[[c["mean_diff"] - c["ci95"][0]], [c["ci95"][1] - c["mean_diff"]]],
                       fmt="o", color="C0", capsize=4)
        right.scatter(c["fold_differences"], [j] * len(c["fold_differences"]), s=12, color="grey", alpha=0.6)
    right.axvline(0, color="black", lw=0.8)
    for x in (-0.02, 0.02):
        right.axvline(x, color="red", lw=0.6, ls="--")
    right.set_yticks(range(len(comp)), [f"{n} - {reference}" for n in comp])
    right.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(5))
    right.set_xlabel("UA difference per fold (grey), mean and 95% t interval;\ndashed: +-2 points", fontsize=9)
    right.set_title("Paired over the folds")
    right.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.ablation_analysis", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", type=Path, help="the ablation's --out directory")
    p.add_argument("--reference", default="foalnet", help="the configuration every other is compared with")
    args = p.parse_args(argv)
    report = write(args.directory, args.reference)
    print((args.directory / "analysis.md").read_text())
    print(f"{len(report['runs'])} runs; wrote analysis.json, analysis.md, analysis.png in {args.directory}")


if __name__ == "__main__":
    main()
