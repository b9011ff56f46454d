"""`python -m foal_edge batch BUNDLE INPUTS... --out results.jsonl`: many files, one results file.

Inputs are files or directories (searched recursively for audio and video files). Each file
becomes one line (JSON Lines) or row (CSV, by the output's suffix) as soon as it is done:
the label, every probability, the modalities used, the notes and the time it took, or the
error that stopped it (the batch goes on). Running the same command again skips the files
already in the output, so an interrupted batch resumes. Files run on `--workers` threads
sharing one Predictor (its sessions are thread-safe), with a progress bar (tqdm); with
`--engine ray`, on Ray Data instead: one Predictor per actor, files streamed through them, on
a local Ray or the cluster RAY_ADDRESS names, so the same command scales out.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from .errors import FoalEdgeError, InvalidInputError
from .media import VIDEO_SUFFIXES

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif")


def collect(inputs) -> list[Path]:
    """Media files among `inputs` (files as given; directories searched recursively), sorted."""
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in
                      AUDIO_SUFFIXES + VIDEO_SUFFIXES]
        elif path.is_file():
            files.append(path)
        else:
            raise InvalidInputError(f"{path}: no such file or directory")
    return list(dict.fromkeys(files))


def done_files(out: Path) -> set[str]:
    """Files already in an output (JSON Lines or CSV); a torn last line is ignored."""
    if not out.is_file():
        return set()
    done = set()
    with open(out, newline="", encoding="utf-8") as f:
        if out.suffix.lower() == ".csv":
            for row in csv.DictReader(f):
                if row.get("file"):
                    done.add(row["file"])
        else:
            for line in f:
                try:
                    done.add(json.loads(line)["file"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
    return done


def predict_one(predictor, path: Path, use_audio: bool, use_video: bool) -> dict:
    t0 = time.perf_counter()
    record = {"file": str(path)}
    try:
        is_video = path.suffix.lower() in VIDEO_SUFFIXES
        result = predictor.predict_files(audio_path=None if is_video else path, video_path=path if is_video else None,
                                         use_audio=use_audio or not is_video, use_video=use_video and is_video)
        record.update(label=result.label, probabilities=result.probabilities, modalities=list(result.modalities),
                      notes=list(result.notes))
        if result.attributes:
            record["attributes"] = result.attributes
    except FoalEdgeError as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
    record["ms"] = round(1e3 * (time.perf_counter() - t0), 1)
    return record


class Writer:
    """Appends records as they finish (flushed each time), JSON Lines or CSV."""

    def __init__(self, out: Path, labels: list[str]):
        self.csv = out.suffix.lower() == ".csv"
        fresh = not out.is_file() or out.stat().st_size == 0
        self.f = open(out, "a", newline="", encoding="utf-8")
        self.lock = threading.Lock()
        if self.csv:
            self.fields = ["file", "label"] + [f"p_{label}" for label in labels] + ["modalities", "notes", "ms", "error"]
            self.writer = csv.DictWriter(self.f, fieldnames=self.fields)
            if fresh:
                self.writer.writeheader()

    def write(self, record: dict) -> None:
        with self.lock:
            if self.csv:
                row = {"file": record["file"], "label": record.get("label", ""), "ms": record["ms"],
                       "modalities": "+".join(record.get("modalities", [])), "notes": " | ".join(record.get("notes", [])),
                       "error": record.get("error", "")}
                row.update({f"p_{k}": f"{v:.6f}" for k, v in record.get("probabilities", {}).items()})
                self.writer.writerow(row)
            else:
                self.f.write(json.dumps(record) + "\n")
            self.f.flush()

    def close(self) -> None:
        self.f.close()


def run(predictor, inputs, out: Path, workers: int = 1, use_audio: bool = True, use_video: bool = True,
        progress: bool = True, engine: str = "local") -> dict:
    """Predict every media file in `inputs` into `out`; returns counts. engine "local": threads
    sharing `predictor`; "ray": Ray Data, one Predictor per actor (the same bundle and options),
    on the Ray cluster RAY_ADDRESS names, or a local one."""
    from tqdm import tqdm

    files = collect(inputs)
    skip = done_files(out)
    todo = [f for f in files if str(f) not in skip]
    counts = {"files": len(files), "skipped": len(files) - len(todo), "done": 0, "failed": 0}
    writer = Writer(out, predictor.labels)
    bar = tqdm(total=len(todo), desc="batch", unit="file", disable=not progress, file=sys.stderr)
    records = _ray_records if engine == "ray" else _local_records
    try:
        for record in records(predictor, todo, max(1, workers), use_audio, use_video):
            writer.write(record)
            counts["failed" if "error" in record else "done"] += 1
            if "error" in record:
                bar.write(f"failed: {record['file']}: {record['error']}", file=sys.stderr)
            bar.update()
    finally:
        bar.close()
        writer.close()
    return counts


def _local_records(predictor, todo, workers, use_audio, use_video):
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(predict_one, predictor, f, use_audio, use_video) for f in todo]
        for future in as_completed(futures):
            yield future.result()


class RayWorker:
    """A Ray Data actor: one Predictor, files in, JSON records out."""

    def __init__(self, bundle: str, backend: str, vad, use_audio: bool, use_video: bool):
        from .predictor import Predictor

        self.predictor = Predictor(bundle, backend=backend, threads=1, vad=vad)
        self.use_audio, self.use_video = use_audio, use_video

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        records = [predict_one(self.predictor, Path(str(f)), self.use_audio, self.use_video) for f in batch["file"]]
        return {"record": np.array([json.dumps(r) for r in records], dtype=object)}


def _ray_records(predictor, todo, workers, use_audio, use_video):
    try:
        import ray
    except ImportError as exc:
        raise InvalidInputError("--engine ray needs Ray: pip install 'foal-edge[serve]'") from exc
    if not todo:
        return
    ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True, include_dashboard=False,
             logging_level="ERROR")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours counts files
    vad = predictor.vad is not None
    ds = ray.data.from_items([{"file": str(f)} for f in todo], override_num_blocks=len(todo))
    done = ds.map_batches(RayWorker, batch_size=1, concurrency=workers, num_cpus=1,
                          fn_constructor_kwargs=dict(bundle=str(predictor.bundle.resolve()), backend=predictor.backend,
                                                     vad=vad, use_audio=use_audio, use_video=use_video))
    for row in done.iter_rows():  # streamed: each file's record as it finishes
        yield json.loads(row["record"])
