"""Start-up time of a Predictor, with and without the cache of optimised graphs, each in a
fresh process (as a kiosk starts), and the steady-state prediction time after it.

    python -m benchmarks.startup build/bench/large-fp32 build/bench/large-int8 --out benchmarks/results/startup-cpu

Per bundle and round, three fresh processes: no cache (ONNX Runtime optimises every graph),
an empty cache (optimises and writes it), the filled cache (loads the optimised graphs).
Rounds interleave the modes, so drift hits all alike. Writes NAME.json and NAME.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import report
from .latency import machine

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from foal_edge import Predictor
import numpy as np
bundle, cache, verify = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
t1 = time.perf_counter()
p = Predictor(bundle, backend="onnxruntime-cpu", graph_cache=None if cache == "-" else cache, verify=verify)
t2 = time.perf_counter()
rng = np.random.default_rng(0)
audio = (0.1 * rng.standard_normal(int(p.manifest.audio_seconds * p.manifest.sample_rate))).astype(np.float32)
frames = rng.integers(0, 256, (4, 480, 640, 3), dtype=np.uint8)
times = []
for _ in range(3):
    t = time.perf_counter()
    p.predict(audio=audio, sample_rate=p.manifest.sample_rate, frames=frames)
    times.append(time.perf_counter() - t)
print(json.dumps({"import_s": t1 - t0, "predictor_s": t2 - t1, "first_predict_s": times[0],
                  "predict_s": float(np.median(times[1:])), "cached": sorted({str(r.cached) for r in p.runners.values()})}))
"""


def run_child(bundle: Path, cache: str, verify: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(bundle), cache, "1" if verify else "0"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="+", type=Path, help="ONNX bundles to start")
    p.add_argument("--rounds", type=int, default=3, help="fresh processes per bundle and mode")
    p.add_argument("--out", type=Path, required=True, help="output path without extension: .json and .md")
    args = p.parse_args(argv)

    results = {"machine": machine(), "command": "python -m benchmarks.startup " + " ".join(sys.argv[1:]),
               "bundles": {}}
    for bundle in args.bundles:
        size = sum(f.stat().st_size for f in bundle.iterdir() if f.suffix == ".onnx" or f.name.endswith(".data"))
        runs = {"no cache": [], "cache written": [], "cache hit": [], "cache hit, verify=False": []}
        for r in range(args.rounds):
            with tempfile.TemporaryDirectory() as cache:
                runs["no cache"].append(run_child(bundle, "-", True))
                runs["cache written"].append(run_child(bundle, cache, True))
                runs["cache hit"].append(run_child(bundle, cache, True))
                # verify=False skips the sha256 check and with it the cache: start-up without hashing
                runs["cache hit, verify=False"].append(run_child(bundle, cache, False))
            print(f"[startup] {bundle.name} round {r + 1}/{args.rounds}: " + ", ".join(
                f"{k} {v[-1]['predictor_s']:.2f}s" for k, v in runs.items()), file=sys.stderr, flush=True)
        results["bundles"][bundle.name] = {
            "graph_mb": size / 1e6,
            "modes": {k: {field: float(np.median([x[field] for x in v]))
                          for field in ("predictor_s", "first_predict_s", "predict_s")} | {"cached": v[-1]["cached"]}
                      for k, v in runs.items()}}
    return report.write(args.out, results, markdown)


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = ["# Predictor start-up: the cache of optimised graphs", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; onnxruntime {m['onnxruntime']}, Python {m['python']}. "
             "Medians of fresh processes.", "", f"Command: `{results['command']}`", "",
             "| bundle | graphs MB | mode | Predictor() s | first predict s | predict s |",
             "| --- | ---: | --- | ---: | ---: | ---: |"]
    for name, b in results["bundles"].items():
        for mode, r in b["modes"].items():
            lines.append(f"| {name} | {b['graph_mb']:.0f} | {mode} (runners: {', '.join(r['cached'])}) "
                         f"| {r['predictor_s']:.2f} | {r['first_predict_s']:.2f} | {r['predict_s']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
