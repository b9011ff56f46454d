"""Frame preprocessing cost per frame at camera sizes, side by side in one run:

- `numpy-before`: the dense-resampling-matrix resize the runtime used until this change
  (kept here, and only here, as the baseline),
- `pillow-resize`: Pillow's own bicubic resize of the whole frame, one thread (the reference
  the issue measures against: what CLIP's transform itself costs),
- `cpu-1-thread`: foal_edge's CPU path (Pillow resize + crop + normalise), one thread,
- `cpu-all-cores`: the same over a batch of frames on every core (per frame),
- `graph-onnxruntime-cpu`: the bundle's preprocess graph on ONNX Runtime's CPU provider
  (on a GPU, `python -m benchmarks.latency` measures it on CUDA).

Interleaved (A B C ... for every repetition); p50 per frame. Also each path's largest
difference from Pillow in grey levels.

    python -m benchmarks.preprocess --out benchmarks/results/preprocess-cpu
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

SIZES = ((240, 320), (480, 640), (720, 1280), (1080, 1920))


def numpy_before(image: np.ndarray, size: int) -> np.ndarray:
    """The runtime's resize until this change: dense [out, in] float resampling matrices."""
    def bicubic(x, a=-0.5):
        x = np.abs(x)
        return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                        np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))

    def matrix(in_size, out_size):
        scale = in_size / out_size
        support, fscale = 2.0 * max(scale, 1.0), max(scale, 1.0)
        m = np.zeros((out_size, in_size))
        for i in range(out_size):
            centre = (i + 0.5) * scale
            lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), in_size)
            w = bicubic((np.arange(lo, hi) - centre + 0.5) / fscale)
            m[i, lo:hi] = w / w.sum()
        return m.astype(np.float32)

    from foal_edge.preprocess import crop_box

    h, w = image.shape[:2]
    nh, nw, top, left = crop_box(h, w, size)
    x = np.clip(np.rint(np.matmul(matrix(w, nw)[None], image.astype(np.float32))), 0, 255)
    x = np.clip(np.rint(np.tensordot(matrix(h, nh), x, axes=(1, 0))), 0, 255).astype(np.uint8)
    return x[top:top + size, left:left + size]


def frames_of(h: int, w: int, n: int) -> np.ndarray:
    """A real photograph (matplotlib's sample) at camera size, n slightly different copies."""
    import matplotlib.cbook
    from PIL import Image

    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    base = np.asarray(photo.resize((w, h), Image.Resampling.LANCZOS))
    return np.stack([np.roll(base, 3 * i, axis=1) for i in range(n)])


def run(args) -> dict:
    from PIL import Image

    from export.graphs import PREPROCESS_SPEC, PreprocessGraph
    from export.onnx_export import export_onnx
    from foal_edge import preprocess
    from foal_edge.backends.onnxruntime import OnnxRuntimeRunner

    import torch

    size, mean, std = 224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    graph_path = Path(args.work) / "preprocess.onnx"
    if not graph_path.is_file():
        wx, wy = preprocess.resize_matrices(485, 679, size)
        export_onnx(PreprocessGraph(mean, std).eval(),
                    (torch.randint(0, 256, (2, 485, 679, 3), dtype=torch.uint8), torch.from_numpy(wx),
                     torch.from_numpy(wy)), PREPROCESS_SPEC, graph_path)
    graph = OnnxRuntimeRunner(graph_path, threads=args.threads)
    cores = os.cpu_count() or 1

    rows = []
    for h, w in args.sizes:
        frames = frames_of(h, w, args.batch)
        nh, nw, top, left = preprocess.crop_box(h, w, size)
        wx, wy = preprocess.resize_matrices(h, w, size)
        reference = np.stack([np.asarray(Image.fromarray(f).resize((nw, nh), Image.Resampling.BICUBIC))
                              [top:top + size, left:left + size] for f in frames])
        paths = {
            "numpy-before": (lambda: np.stack([numpy_before(f, size) for f in frames[:1]]), 1),
            "pillow-resize": (lambda: [Image.fromarray(f).resize((nw, nh), Image.Resampling.BICUBIC)
                                       for f in frames[:1]], 1),
            "cpu-1-thread": (lambda: preprocess.normalize_frames(
                preprocess.resize_frames(frames[:1], size, workers=1), mean, std), 1),
            "cpu-all-cores": (lambda: preprocess.normalize_frames(
                preprocess.resize_frames(frames, size, workers=cores), mean, std), len(frames)),
            "graph-onnxruntime-cpu": (lambda: graph.run({"frames": frames, "resize_x": wx, "resize_y": wy})[0],
                                      len(frames)),
        }
        if (h, w) not in [tuple(s) for s in args.before_sizes]:
            paths.pop("numpy-before")
        times = {k: [] for k in paths}
        for it in range(args.warmup + args.iters):
            for name, (fn, n) in paths.items():
                t = time.perf_counter()
                fn()
                if it >= args.warmup:
                    times[name].append((time.perf_counter() - t) / n)
        # Accuracy against Pillow (grey levels of the uint8 crop).
        diffs = {"numpy-before": np.abs(numpy_before(frames[0], size).astype(int) - reference[0]).max()
                 if "numpy-before" in paths else None,
                 "cpu-1-thread": np.abs(preprocess.resize_and_crop(frames[0], size).astype(int)
                                        - reference[0]).max(),
                 "graph-onnxruntime-cpu": float((np.abs(
                     graph.run({"frames": frames, "resize_x": wx, "resize_y": wy})[0]
                     - preprocess.normalize_frames(reference, mean, std))
                     * np.asarray(std, np.float32)[None, :, None, None] * 255).max())}
        pillow = float(np.median(times["pillow-resize"]))
        for name, t in times.items():
            p50 = float(np.median(t))
            row = {"size": f"{w}x{h}", "path": name, "p50_ms_per_frame": 1e3 * p50,
                   "p90_ms_per_frame": 1e3 * float(np.percentile(t, 90)), "vs_pillow_resize": p50 / pillow,
                   "max_grey_levels_vs_pillow": None if diffs.get(name) is None else float(diffs[name])}
            rows.append(row)
            print(f"[preprocess] {w}x{h} {name:<22} {row['p50_ms_per_frame']:8.2f} ms/frame "
                  f"({row['vs_pillow_resize']:.2f}x Pillow's resize)", file=sys.stderr, flush=True)
    return {"rows": rows}


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = ["# Frame preprocessing per frame, CPU", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; Pillow {m['pillow']}, numpy {m['numpy']}, "
             f"onnxruntime {m['onnxruntime']}. Batch of {results['batch']} frames for the all-core and graph rows; "
             f"{results['iters']} interleaved repetitions.", "", f"Command: `{results['command']}`", "",
             "| frame | path | p50 ms/frame | p90 ms/frame | x Pillow's resize | max grey levels vs Pillow |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in results["rows"]:
        g = "-" if r["max_grey_levels_vs_pillow"] is None else f"{r['max_grey_levels_vs_pillow']:.2f}"
        lines.append(f"| {r['size']} | {r['path']} | {r['p50_ms_per_frame']:.2f} | {r['p90_ms_per_frame']:.2f} "
                     f"| {r['vs_pillow_resize']:.2f} | {g} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.preprocess", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=",".join(f"{h}x{w}" for h, w in SIZES), help="HxW list")
    p.add_argument("--before-sizes", default="240x320,480x640,720x1280",
                   help="sizes at which the old numpy path is also timed (it is slow)")
    p.add_argument("--batch", type=int, default=16, help="frames per call for the all-core and graph paths")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=7)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--work", default="build/bench/preprocess")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    parse = lambda s: [tuple(int(v) for v in x.split("x")) for x in s.split(",") if x]  # noqa: E731
    args.sizes, args.before_sizes = parse(args.sizes), parse(args.before_sizes)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    import PIL
    import onnxruntime

    from benchmarks.latency import machine

    results = run(args)
    results.update(machine={**machine(), "pillow": PIL.__version__}, batch=args.batch, iters=args.iters,
                   command="python -m benchmarks.preprocess " + " ".join(sys.argv[1:] if argv is None else argv))
    results["machine"]["onnxruntime"] = onnxruntime.__version__
    from benchmarks.report import write

    return write(Path(args.out), results, markdown)


if __name__ == "__main__":
    main()
