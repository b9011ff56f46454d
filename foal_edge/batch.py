"""`python -m foal_edge batch BUNDLE INPUTS... --out results.jsonl`: many files, one results file.

Inputs are files or directories (searched recursively for audio, video and image files).
Each file becomes one line (JSON Lines) or row (CSV, by the output's suffix) as soon as it
is done: the label, every probability, the modalities used, the notes and the time it took,
or the error that stopped it (the batch goes on). The output is a `ResumableRows`
(foal_edge/outputs.py): never one of the inputs, locked against a second writer, a torn last
row cut on the next run. Running the same command again predicts only what is missing: the
files without a row, and the files whose row is an error (unless `retry_failed=False`), so
each file has exactly one row in the end. Files run on `--workers` threads sharing one
Predictor (its sessions are thread-safe), each thread taking the next file only when it is
free, so Ctrl-C stops at once without predicting queued files; progress with tqdm where it
is installed. With `--engine ray`, on Ray Data instead: one Predictor per actor, files
streamed through them, on a local Ray or the cluster RAY_ADDRESS names.

With `timeline=` (the command's `--timeline`), each file becomes one row per segment of its
emotion timeline (foal_edge/timeline.py): file, segment (0, 1, ...), segments (how many the
file has), start, end, kind, label, the probabilities, attributes where the bundle has them,
modalities, notes, ms (the file's time); a file with no segment (silence, no frames) gets one
row with segments 0. A file's rows are written together (one write, then fsync), and a file
counts as done only when all `segments` of its rows are there: a run killed while writing a
file's rows leaves a torn group, whose rows the next run drops (rewriting the output
atomically) before predicting that file again, so every file ends with exactly one complete
group. Failed files get one error row and are retried as in plain batch.
"""

from __future__ import annotations

import json
import os
import queue
import stat
import sys
import threading
import time
from pathlib import Path

from .errors import FoalEdgeError, InvalidInputError, MediaError
from .media import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from .outputs import ResumableRows

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif")
MEDIA_SUFFIXES = AUDIO_SUFFIXES + VIDEO_SUFFIXES + IMAGE_SUFFIXES


def collect(inputs) -> list[Path]:
    """Media files among `inputs` (files as given; directories searched recursively for
    names with a media suffix), sorted. A named input that is missing or not a file or a
    directory (a FIFO, a device) is refused by name; inside a directory, such an entry with a
    media suffix is kept, to get its own error row."""
    files = []
    for item in inputs:
        path = Path(item)
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise InvalidInputError(f"{path}: no such file or directory") from None
        except OSError as exc:
            raise InvalidInputError(f"{path}: cannot read it ({exc.strerror})") from None
        if stat.S_ISDIR(mode):
            files += [p for p in sorted(path.rglob("*")) if p.suffix.lower() in MEDIA_SUFFIXES and not p.is_dir()]
        elif stat.S_ISREG(mode):
            files.append(path)
        else:
            kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or \
                stat.S_ISBLK(mode) else "not a regular file"
            raise InvalidInputError(f"{path}: is {kind}, not a media file or a directory; batch reads files "
                                    "(save the stream to a file first)")
    return list(dict.fromkeys(files))


def check_media_packages(files) -> None:
    """One error up front when the packages the files need are missing (not one per file)."""
    needed = set()
    for f in files:
        suffix = f.suffix.lower()
        needed |= {"soundfile"} if suffix in AUDIO_SUFFIXES else {"av"} if suffix in VIDEO_SUFFIXES else set()
    missing = []
    for module in sorted(needed):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MediaError(f"batch reads these files with {' and '.join(missing)}, not installed here: pip install "
                         "'foal-edge[media]'")


def predict_one(predictor, path: Path, use_audio: bool, use_video: bool) -> dict:
    """One file's row: the prediction, or the error that stopped it (never raises for a file)."""
    t0 = time.perf_counter()
    record = {"file": str(path)}
    try:
        suffix = path.suffix.lower()
        is_video = suffix in VIDEO_SUFFIXES or suffix in IMAGE_SUFFIXES
        result = predictor.predict_files(audio_path=None if is_video else path, video_path=path if is_video else None,
                                         use_audio=use_audio or not is_video, use_video=use_video and is_video)
        record.update(label=result.label, probabilities=result.probabilities, modalities=list(result.modalities),
                      notes=list(result.notes))
        record.update(confidence=result.confidence, low_confidence=result.low_confidence)
        if result.per_modality:
            record["per_modality"] = result.per_modality
        if result.attributes:
            record["attributes"] = result.attributes
    except FoalEdgeError as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
    except MemoryError:
        record["error"] = "MemoryError: the file needs more memory than is free"
    except Exception as exc:  # a bug of ours: this file's row says so and the batch goes on
        record["error"] = f"internal error ({type(exc).__name__}: {exc}); please report it"
    record["ms"] = round(1e3 * (time.perf_counter() - t0), 1)
    return record


def timeline_one(predictor, path: Path, use_audio: bool, use_video: bool, options: dict) -> list[dict]:
    """One file's timeline rows (one per segment; one row with segments 0 when there is none),
    or its error row (never raises for a file)."""
    t0 = time.perf_counter()
    try:
        segments = predictor.timeline(path, use_audio=use_audio, use_video=use_video, **options)
        ms = round(1e3 * (time.perf_counter() - t0), 1)
        rows = []
        for i, segment in enumerate(segments):
            row = {"file": str(path), "segment": i, "segments": len(segments)}
            row.update(segment.to_dict())
            if row.get("attributes") is None:
                row.pop("attributes", None)
            row["ms"] = ms
            rows.append(row)
        return rows or [{"file": str(path), "segments": 0, "notes": ["no segment: no speech found and no frames"],
                         "ms": ms}]
    except FoalEdgeError as exc:
        error = f"{type(exc).__name__}: {exc}"
    except MemoryError:
        error = "MemoryError: the file needs more memory than is free"
    except Exception as exc:  # a bug of ours: this file's row says so and the batch goes on
        error = f"internal error ({type(exc).__name__}: {exc}); please report it"
    return [{"file": str(path), "error": error, "ms": round(1e3 * (time.perf_counter() - t0), 1)}]


def timeline_fields(labels, attributes=()) -> list[str]:
    return (["file", "segment", "segments", "start", "end", "kind", "label"] + [f"p_{label}" for label in labels]
            + [f"a_{name}" for name in attributes] + ["modalities", "notes", "ms", "error"])


def timeline_cells(record: dict) -> dict:
    row = {k: record.get(k, "") for k in ("file", "segment", "segments", "kind", "label", "ms", "error")}
    row.update(start=f"{record['start']:.3f}" if "start" in record else "",
               end=f"{record['end']:.3f}" if "end" in record else "",
               modalities="+".join(record.get("modalities", [])), notes=" | ".join(record.get("notes", [])))
    row.update({f"p_{k}": f"{v:.6f}" for k, v in record.get("probabilities", {}).items()})
    row.update({f"a_{k}": f"{v:.4f}" for k, v in (record.get("attributes") or {}).items()})
    return row


def complete_groups(rows) -> dict[str, int]:
    """file -> the index in `rows` of the first row of its first complete timeline group: the
    rows segment 0..n-1 of a file, consecutive, each saying segments n (or the one row of a file
    with segments 0). Rows read back from CSV are strings: compared as numbers."""
    found: dict[str, int] = {}
    i = 0
    while i < len(rows):
        row = rows[i]
        try:
            n = int(row.get("segments"))
        except (TypeError, ValueError):
            i += 1
            continue
        name = row["file"]
        group = rows[i:i + max(n, 1)]
        ok = len(group) == max(n, 1) and all(
            r.get("file") == name and not r.get("error") and str(r.get("segments")) == str(n)
            and (n == 0 or str(r.get("segment")) == str(j)) for j, r in enumerate(group))
        if ok:
            found.setdefault(name, i)
            i += len(group)
        else:
            i += 1
    return found


def csv_fields(labels) -> list[str]:
    return (["file", "label"] + [f"p_{label}" for label in labels]
            + ["confidence", "low_confidence", "audio_label", "video_label", "modalities", "notes", "ms", "error"])


def csv_cells(record: dict) -> dict:
    row = {"file": record["file"], "label": record.get("label", ""), "ms": record.get("ms", ""),
           "modalities": "+".join(record.get("modalities", [])), "notes": " | ".join(record.get("notes", [])),
           "error": record.get("error", "")}
    row.update({f"p_{k}": f"{v:.6f}" for k, v in record.get("probabilities", {}).items()})
    conf, per = record.get("confidence"), record.get("per_modality") or {}
    row.update(confidence="" if conf is None else f"{conf:.6f}",
               low_confidence=int(record["low_confidence"]) if "low_confidence" in record else "",
               audio_label=per.get("audio", {}).get("label", ""), video_label=per.get("video", {}).get("label", ""))
    return row


def open_rows(out: Path, labels, inputs=(), timeline: bool = False, attributes=()) -> ResumableRows:
    """The batch's results file (not yet opened); `timeline`: one row per segment."""
    if timeline:
        return ResumableRows(out, fields=timeline_fields(labels, attributes), key="file", flatten=timeline_cells,
                             inputs=inputs)
    return ResumableRows(out, fields=csv_fields(labels), key="file", flatten=csv_cells, inputs=inputs)


class _Progress:
    """tqdm's bar where tqdm is installed; without it, failures are still printed (and the
    missing bar said once)."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc="batch", unit="file", file=sys.stderr)
            except ImportError:
                print("note: no progress bar (tqdm is not installed: pip install tqdm)", file=sys.stderr)

    def write(self, text: str) -> None:
        (self.bar.write if self.bar is not None else lambda t: print(t, file=sys.stderr, flush=True))(text)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(predictor, inputs, out: Path, workers: int = 1, use_audio: bool = True, use_video: bool = True,
        progress: bool = True, engine: str = "local", retry_failed: bool = True,
        rows: ResumableRows | None = None, timeline: dict | None = None) -> dict:
    """Predict every media file in `inputs` into `out`; returns counts: files, done (predicted
    now), failed (failed now), skipped (already predicted), kept_failed (failed before, not
    retried), repaired (bytes of a torn last row cut), redone (files whose torn group of
    timeline rows was dropped to predict them again), segments (timeline rows written now),
    interrupted (Ctrl-C: the output holds every finished row and a rerun resumes). engine
    "local": threads sharing `predictor`; "ray": Ray Data, one Predictor per actor. `rows`: the
    output already opened (the command line takes the lock before loading the model); closed
    here. `timeline`: None for one row per file, else a dict of timeline options (vad,
    merge_gap, overlap, hop; {} for the defaults) for one row per segment."""
    files = collect(inputs)
    if timeline is not None:
        from .timeline import TimelineCore, _check_options

        try:  # bad options (or a detector not installed) are refused before any file
            _check_options(timeline)
            TimelineCore(predictor, audio=use_audio, video=use_video, **timeline)
        except BaseException:
            if rows is not None:
                rows.close()
            raise
    if rows is None:
        check_media_packages(files)
        rows = open_rows(out, predictor.labels, files, timeline is not None, predictor.manifest.attributes).open()
    counts = {"files": len(files), "skipped": 0, "done": 0, "failed": 0, "kept_failed": 0,
              "repaired": rows.repaired, "redone": 0, "segments": 0, "interrupted": False}
    bar = None
    try:
        wanted = {str(f) for f in files}
        chosen: set[int] = set()  # timeline: the rows of each file's first whole group
        if timeline is None:
            good = {r["file"] for r in rows.rows if not r.get("error")}
        else:  # a file is done when one whole group of its rows is there
            groups = complete_groups(rows.rows)
            good = set(groups)
            for i in groups.values():
                chosen.update(range(i, i + max(int(rows.rows[i]["segments"]), 1)))
            torn = {r["file"] for r in rows.rows if not r.get("error") and r["file"] not in good}
            counts["redone"] = len(torn & wanted)
        seen: set[str] = set()
        position = iter(range(len(rows.rows)))

        def keep(row) -> bool:  # one row (group) per file: the prediction, else (unless retried) the last error
            i = next(position)
            name = row["file"]
            if timeline is not None and not row.get("error"):
                return i in chosen  # rows of a torn group, or a second group, are dropped
            if name in seen or (row.get("error") and name in good):
                return False
            if row.get("error") and retry_failed and name in wanted:
                return False
            seen.add(name)
            return True

        rows.keep(keep)
        done = {r["file"] for r in rows.rows}
        todo = [f for f in files if str(f) not in done]
        counts["skipped"] = sum(1 for f in files if str(f) in good)
        counts["kept_failed"] = len(files) - len(todo) - counts["skipped"]
        bar = _Progress(len(todo), progress)
        if rows.repaired:
            bar.write(f"note: {out}: cut a torn last row ({rows.repaired} bytes) left by an interrupted run")
        if counts["redone"]:
            bar.write(f"note: {out}: dropped the incomplete rows of {counts['redone']} file(s) left by an interrupted "
                      "run; predicting them again")
        records = _ray_records if engine == "ray" else _local_records
        stream = records(predictor, todo, max(1, workers), use_audio, use_video, timeline)
        try:
            for group in stream:
                if timeline is None:
                    rows.append(group[0])
                else:
                    rows.append_group(group)
                record = group[0]
                counts["failed" if "error" in record else "done"] += 1
                if "error" in record:
                    bar.write(f"failed: {record['file']}: {record['error']}")
                elif timeline is not None:
                    counts["segments"] += len(group) if record.get("segments") else 0
                bar.update()
        except KeyboardInterrupt:
            counts["interrupted"] = True
        finally:
            stream.close()  # stops the workers: nothing queued is predicted
    finally:
        if bar is not None:
            bar.close()
        rows.close()
    return counts


def _job(predictor, path, use_audio, use_video, timeline) -> list[dict]:
    """One file's rows: [its row], or with `timeline` its segments' rows."""
    if timeline is None:
        return [predict_one(predictor, path, use_audio, use_video)]
    return timeline_one(predictor, path, use_audio, use_video, timeline)


_DONE = object()


def _local_records(predictor, todo, workers, use_audio, use_video, timeline=None):
    """Each file's rows (a list), as the files finish. Each thread takes the next file only when it is free; closing
    the generator (Ctrl-C) stops them taking more, and does not wait for the ones running
    (their results are not written; a rerun predicts those files)."""
    tasks = iter(todo)
    take = threading.Lock()
    stop = threading.Event()
    results: queue.Queue = queue.Queue()

    def work():
        try:
            while not stop.is_set():
                with take:
                    path = next(tasks, None)
                if path is None:
                    break
                results.put(_job(predictor, path, use_audio, use_video, timeline))
        finally:
            results.put(_DONE)

    threads = [threading.Thread(target=work, name=f"batch-{i}", daemon=True) for i in range(min(workers, len(todo)))]
    for t in threads:
        t.start()
    running = len(threads)
    try:
        while running:
            try:
                item = results.get(timeout=0.1)  # short waits: Ctrl-C is seen at once
            except queue.Empty:
                continue
            if item is _DONE:
                running -= 1
            else:
                yield item
    finally:
        stop.set()


class RayWorker:
    """A Ray Data actor: one Predictor, files in, each file's rows out (a JSON list)."""

    def __init__(self, bundle: str, backend: str, vad, use_audio: bool, use_video: bool, timeline=None):
        from .predictor import Predictor

        # A timeline's audio is resampled by FFmpeg: scipy's resampler need not be warmed up.
        self.predictor = Predictor(bundle, backend=backend, threads=1, vad=vad, warm_up=timeline is None)
        self.use_audio, self.use_video, self.timeline = use_audio, use_video, timeline

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        # Names travel as bytes (os.fsencode): Arrow strings must be UTF-8, a file name need not be.
        records = [_job(self.predictor, Path(os.fsdecode(bytes(f))), self.use_audio, self.use_video, self.timeline)
                   for f in batch["path"]]
        return {"record": np.array([json.dumps(r) for r in records], dtype=object)}


def _ray_records(predictor, todo, workers, use_audio, use_video, timeline=None):
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
    vad = predictor.vad.kind if predictor.vad is not None else "off"  # the workers use the detector chosen here
    ds = ray.data.from_items([{"path": os.fsencode(f)} for f in todo], override_num_blocks=len(todo))
    done = ds.map_batches(RayWorker, batch_size=1, concurrency=min(workers, len(todo)), num_cpus=1,
                          fn_constructor_kwargs=dict(bundle=str(predictor.bundle.resolve()), backend=predictor.backend,
                                                     vad=vad, use_audio=use_audio, use_video=use_video,
                                                     timeline=timeline))
    for row in done.iter_rows():  # streamed: each file's record as it finishes
        yield json.loads(row["record"])
