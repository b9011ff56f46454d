"""Files as people have them, and outputs that never lose a row: media read as a player
shows it (rotation, variable frame rates, stills, huge frames, truncated audio, stray
names), batch outputs that are never inputs, one writer each, resumed exactly once after a
torn row, a failure or Ctrl-C, and the small things (pipes, FIFOs, missing packages)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from foal_edge import media
from foal_edge.__main__ import main as cli
from foal_edge.errors import InvalidInputError, MediaError
from foal_edge.outputs import AtomicFile, ResumableRows

from . import media_fixtures as mf

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args, **kw):
    """The command as a user runs it: its own process, this checkout first on the path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "foal_edge", *map(str, args)], capture_output=True, env=env,
                          **kw)


def ctrl_c_as_in_a_terminal():
    """For a child that the test interrupts: SIGINT as a terminal's foreground command has it.
    A runner that started the tests in the background (`cmd &` in a script without job control)
    left SIGINT ignored, and children inherit that across exec."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen_cli(args, code=None, **kw):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-c", code, *map(str, args)] if code else [sys.executable, "-m", "foal_edge", *args]
    return subprocess.Popen([str(c) for c in cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=ctrl_c_as_in_a_terminal, **kw)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    vfr, times = mf.vfr_clip(root / "vfr.mp4")
    return {"phone": mf.phone_clip(root / "phone.mp4"), "vfr": vfr, "vfr_times": times,
            "short": mf.short_audio_clip(root / "short.mp4"), "stills": mf.stills(root / "stills"),
            "wav": mf.write_wav(root / "speech.wav"), "root": root}


def rows_of(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
            return list(csv.DictReader(f))
    return [json.loads(line) for line in path.read_bytes().decode("ascii").splitlines()]


# -- media as a player shows it -------------------------------------------------------------
def test_a_phone_portrait_clip_is_read_upright_with_a_note(predictor, clips):
    info = media.probe_video(clips["phone"])
    assert (info.width, info.height, info.rotation) == (160, 90, 90)
    frames, _ = media.read_video(clips["phone"])
    assert frames.shape[1:] == (160, 90, 3)  # portrait, as the phone showed it
    # The block stored top-left is top-right once turned clockwise.
    assert frames[0][:15, -15:, 0].mean() > 200 and frames[0][:15, :15, 0].mean() < 200
    result = predictor.predict_files(video_path=clips["phone"])
    assert any("rotated 90 degrees clockwise" in n and "display matrix" in n for n in result.notes)
    upright = predictor.predict_files(video_path=clips["phone"], use_audio=False)
    by_hand = predictor.predict(frames=frames[: int(np.ceil(3 * info.fps))], fps=info.fps)
    assert max(abs(upright.probabilities[k] - by_hand.probabilities[k]) for k in by_hand.probabilities) < 1e-5


def test_variable_frame_rate_frames_are_chosen_by_time(predictor, clips):
    """5 fps for 3 s then 30 fps: by index at the average rate, a 3 s window reaches into the
    30 fps part; by time, every frame used was shown in the first 3 s."""
    path, times = clips["vfr"], clips["vfr_times"]
    fps, count = media.video_info(path)
    assert 17 < fps < 18 and count == 105
    every, _ = media.read_video(path)
    assert len(every) == len(times)
    indices = list(range(int(np.ceil(3.0 * fps))))
    chosen, _ = media.read_video(path, indices)
    for i in indices:
        shown = max(j for j, t in enumerate(times) if t <= (i + 0.5) / fps)  # on screen at i / fps (+ half a frame)
        assert np.array_equal(chosen[i], every[shown]), i
    # Brightness is 40 x the time a frame was shown: nothing from after 3 s; by index, the
    # last of them would have been the frame shown at 4.2 s.
    assert max(f.mean() for f in chosen.values()) < 40 * 3.05
    assert every[indices[-1]].mean() > 40 * 4
    # predict_files uses exactly those frames.
    sampled = [chosen[i] for i in sorted(chosen)]
    from foal_edge.preprocess import sample_frame_indices

    keep = sample_frame_indices(len(sampled), predictor.frames_per_clip)
    expected = predictor.predict(frames=np.stack([sampled[k] for k in keep]))
    got = predictor.predict_files(video_path=path)
    assert max(abs(got.probabilities[k] - expected.probabilities[k]) for k in got.probabilities) < 1e-5


@pytest.mark.parametrize("kind", ["png", "jpg", "webp", "bmp"])
def test_a_still_in_any_format_pillow_reads_is_one_frame(tiny_bundle, predictor, clips, kind, capsys):
    path = clips["stills"][kind]
    frames, fps = media.read_video(path)
    assert frames.shape == (1, 120, 160, 3) and fps == 0.0
    result = predictor.predict_files(video_path=path)
    assert result.modalities == ("video",)
    assert cli(["predict", str(tiny_bundle[1]), "--video", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["modalities"] == ["video"]


def test_a_still_turned_by_exif_is_shown_upright(predictor, clips):
    frames, _ = media.read_video(clips["stills"]["exif"])
    assert frames.shape == (1, 160, 120, 3) and frames[0][:15, -15:, 0].mean() > 200
    notes = predictor.predict_files(video_path=clips["stills"]["exif"]).notes
    assert any("EXIF orientation" in n for n in notes)


def test_huge_frames_are_refused_from_the_header_before_decoding(tmp_path):
    """A 16000x16000 MJPEG and PNG, a few KB each: refused without the GBs a decode takes."""
    png, avi = mf.huge_png(tmp_path / "huge.png"), mf.huge_mjpeg(tmp_path / "huge.avi")
    assert avi.stat().st_size < 50_000
    code = ("import resource, sys\nfrom foal_edge import media\nbase = resource.getrusage(resource.RUSAGE_SELF)"
            ".ru_maxrss\nfor p in sys.argv[1:]:\n    try:\n        media.read_video(p)\n    except media.MediaError"
            " as e:\n        print(e)\nprint((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)\n")
    proc = popen_cli([avi, png], code=code)
    out, err = proc.communicate(timeout=120)
    lines = out.decode().splitlines()
    assert proc.returncode == 0, err.decode()
    assert "16000x16000" in lines[0] and "megapixel limit" in lines[0]
    assert "megapixel limit" in lines[1]
    assert float(lines[-1]) < 100  # MB grown: nothing decoded


def test_a_truncated_wav_is_refused_saying_what_is_missing(tiny_bundle, predictor, tmp_path, capsys):
    cut = mf.truncated_wav(tmp_path / "cut.wav", seconds=2.0, keep=0.5)
    with pytest.raises(MediaError, match=r"truncated WAV: the header says 32000 samples \(2.00 s\), the file holds "
                                         r"16000 \(1.00 s\)"):
        predictor.predict_files(audio_path=cut)
    assert cli(["predict", str(tiny_bundle[1]), "--audio", str(cut)]) == 2
    assert "truncated WAV" in capsys.readouterr().err
    whole = mf.write_wav(tmp_path / "whole.wav")  # the same file uncut reads
    assert predictor.predict_files(audio_path=whole).modalities == ("audio",)


def test_a_truncated_flac_is_refused_too(predictor, tmp_path):
    import soundfile as sf

    whole = tmp_path / "whole.flac"
    sf.write(str(whole), mf.speech(2.0), mf.RATE)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(MediaError, match="cut.flac"):
        predictor.predict_files(audio_path=cut)


def test_decoder_errors_are_words_not_errno_numbers(predictor, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    with pytest.raises(MediaError) as info:
        predictor.predict_files(video_path=broken)
    assert "[Errno" not in str(info.value) and "broken.mp4" in str(info.value)
    assert "Invalid data" in str(info.value) or "cannot" in str(info.value)


def test_a_fifo_is_named_as_a_fifo_everywhere(tiny_bundle, predictor, tmp_path, capsys):
    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    with pytest.raises(MediaError, match="named pipe"):
        predictor.predict_files(audio_path=fifo)
    assert cli(["predict", str(tiny_bundle[1]), "--audio", str(fifo)]) == 2
    assert "named pipe (FIFO)" in capsys.readouterr().err
    out = tmp_path / "r.jsonl"
    assert cli(["batch", str(tiny_bundle[1]), str(fifo), "--out", str(out), "--no-progress"]) == 2
    assert "named pipe (FIFO)" in capsys.readouterr().err and not out.exists()


def test_audio_shorter_than_video_is_predicted_over_the_audio(predictor, clips):
    result = predictor.predict_files(video_path=clips["short"])
    assert result.modalities == ("audio", "video")


# -- outputs that are never inputs ----------------------------------------------------------
@pytest.fixture
def folder(clips, tmp_path):
    """A folder as a user has it: audio, a video, a still, a name that is not UTF-8, a name
    with a comma, quotes and a newline, and a broken file."""
    root = tmp_path / "in"
    root.mkdir()
    wav = clips["wav"].read_bytes()
    (root / "a.wav").write_bytes(wav)
    mf.non_utf8_name(root).write_bytes(wav)
    (root / 'odd, "quoted"\nname.wav').write_bytes(wav)
    (root / "phone.mp4").write_bytes(clips["phone"].read_bytes())
    (root / "face.png").write_bytes(clips["stills"]["png"].read_bytes())
    (root / "broken.mp4").write_bytes(b"not a video")
    return root


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_every_name_round_trips_and_a_torn_tail_is_predicted_once(tiny_bundle, folder, tmp_path, suffix, capsys):
    out = tmp_path / f"results{suffix}"
    args = ["batch", str(tiny_bundle[1]), str(folder), "--out", str(out), "--no-progress", "--workers", "2"]
    assert cli(args) == 1  # broken.mp4 failed
    rows = rows_of(out)
    names = {os.fsencode(r["file"]) for r in rows}
    assert names == {os.fsencode(p) for p in folder.iterdir()}  # every name, byte for byte
    assert os.fsencode(folder / mf.non_utf8_name(folder).name) in names
    if suffix == ".jsonl":
        out.read_bytes().decode("ascii")  # JSON Lines stay ASCII whatever the names
    # A writer killed mid-row: the last row torn.
    data = out.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    torn = rows_of(out)[-1]["file"]
    out.write_bytes(data[: last + (len(data) - last) // 2])
    capsys.readouterr()
    assert cli(args) == 1  # the torn file predicted again, broken.mp4 retried (still broken)
    assert "cut a torn last row" in capsys.readouterr().err
    again = rows_of(out)
    files = [r["file"] for r in again]
    assert sorted(files) == sorted(set(files)) and len(files) == 6  # each file exactly once
    assert torn in files
    good = [r for r in again if not r.get("error")]
    assert len(good) == 5 and all(r["label"] for r in good)


def test_an_output_that_is_an_input_is_refused_and_the_input_kept(tiny_bundle, clips, tmp_path, capsys):
    wav = tmp_path / "clip.wav"
    wav.write_bytes(clips["wav"].read_bytes())
    before = wav.read_bytes()
    hard = tmp_path / "hard.jsonl"
    os.link(wav, hard)
    soft = tmp_path / "soft.csv"
    soft.symlink_to(wav)
    named = tmp_path / "clip.csv"  # a media file that happens to be named .csv, given as input
    named.write_bytes(before)
    for inputs, out in [([wav], hard), ([wav], soft), ([named], named), ([tmp_path], soft)]:
        code = cli(["batch", str(tiny_bundle[1]), *map(str, inputs), "--out", str(out), "--no-progress"])
        assert code == 2 and "writing it would destroy what is read" in capsys.readouterr().err
    assert wav.read_bytes() == before and named.read_bytes() == before
    video = tmp_path / "v.mp4"
    video.write_bytes(clips["phone"].read_bytes())
    os.link(video, tmp_path / "v-link.jsonl")
    (tmp_path / "prev.mp4").write_bytes(b"an earlier recording")
    os.link(tmp_path / "prev.mp4", tmp_path / "prev-link.jsonl")
    for extra in (["--record", str(video)], ["--jsonl", str(tmp_path / "v-link.jsonl")],
                  ["--record", str(tmp_path / "prev.mp4"), "--jsonl", str(tmp_path / "prev-link.jsonl")]):
        assert cli(["live", str(tiny_bundle[1]), "--replay", str(video), "--no-window", *extra]) == 2
        assert "writing it would destroy what is read" in capsys.readouterr().err
    assert video.read_bytes() == clips["phone"].read_bytes()
    assert (tmp_path / "prev.mp4").read_bytes() == b"an earlier recording"


def test_a_fifo_or_a_device_as_output_is_refused_at_once(tiny_bundle, clips, tmp_path, capsys):
    fifo = tmp_path / "out.jsonl"
    os.mkfifo(fifo)
    device = tmp_path / "device.csv"
    device.symlink_to("/dev/null")
    t0 = time.monotonic()
    for out, kind in ((fifo, "named pipe (FIFO)"), (device, "a device")):
        assert cli(["batch", str(tiny_bundle[1]), str(clips["wav"]), "--out", str(out), "--no-progress"]) == 2
        assert kind in capsys.readouterr().err
    rec = tmp_path / "rec.mp4"
    os.mkfifo(rec)
    assert cli(["live", str(tiny_bundle[1]), "--replay", str(clips["phone"]), "--record", str(rec), "--no-window"]) == 2
    assert "named pipe (FIFO)" in capsys.readouterr().err
    assert time.monotonic() - t0 < 30  # refused, not blocked on the pipe


def test_failed_files_are_retried_on_a_rerun_unless_told_not_to(tiny_bundle, clips, tmp_path, capsys):
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.wav").write_bytes(clips["wav"].read_bytes())
    (root / "late.wav").write_bytes(b"RIFF....WAVE not yet copied")
    out = tmp_path / "r.jsonl"
    args = ["batch", str(tiny_bundle[1]), str(root), "--out", str(out), "--no-progress"]
    assert cli(args) == 1
    assert "error" in {r["file"]: r for r in rows_of(out)}[str(root / "late.wav")]
    (root / "late.wav").write_bytes(clips["wav"].read_bytes())  # the copy finished
    assert cli(args + ["--no-retry-failed"]) == 1  # kept as failed: the exit status still says so
    assert "1 failed earlier (kept, not retried)" in capsys.readouterr().err
    assert cli(args) == 0  # retried: every file has a prediction
    rows = rows_of(out)
    assert len(rows) == 2 and not any("error" in r for r in rows)
    assert cli(args) == 0 and len(rows_of(out)) == 2  # nothing to do, nothing twice


def test_ctrl_c_stops_within_a_second_and_a_rerun_completes_exactly_once(tiny_bundle, clips, tmp_path):
    """Two batches on one --out: the second is refused by the lock while the first runs.
    Ctrl-C halfway: the first stops within about a second (queued files are not predicted),
    its output parses, and the rerun predicts each remaining file once."""
    root = tmp_path / "many"
    root.mkdir()
    for i in range(300):
        os.link(clips["wav"], root / f"take{i:03d}.wav")
    out = tmp_path / "r.jsonl"
    args = ["batch", tiny_bundle[1], root, "--out", out, "--no-progress", "--workers", "1"]
    # The second batch starts first and waits, imported, for the first to take the lock (its
    # pid written in the lock file): it runs into it within milliseconds, however fast this
    # machine predicts.
    waiting = ("import os, sys, time\nfrom foal_edge.__main__ import main\n"
               "while not (os.path.exists(sys.argv[1]) and os.path.getsize(sys.argv[1])):\n"
               "    time.sleep(0.002)\nsys.exit(main(sys.argv[2:]))\n")
    second = popen_cli([tmp_path / "r.jsonl.lock", *args], code=waiting)
    time.sleep(1.0)
    first = popen_cli(args)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2 and b"another process (pid" in err, err
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < 5):
        time.sleep(0.01)
    assert first.poll() is None, first.communicate()[1].decode()
    first.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _, err = first.communicate(timeout=30)
    stopped = time.monotonic() - t0
    assert first.returncode == 130, err.decode()
    assert stopped < 2.0, f"took {stopped:.2f} s to stop"
    assert b"rerun" in err or b"run the same command again" in err
    done = rows_of(out)
    assert 5 <= len(done) < 300 and len({r["file"] for r in done}) == len(done)
    assert not (tmp_path / "r.jsonl.lock").exists()
    rerun = run_cli(args, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()
    rows = rows_of(out)
    assert sorted(r["file"] for r in rows) == sorted(str(p) for p in root.iterdir())  # each exactly once


def test_the_rows_writer_is_reusable(tmp_path):
    """The class batch writes with (and a timeline's one row per segment would): keys,
    resume, retry by dropping rows, one writer at a time."""
    out = tmp_path / "segments.csv"
    fields = ["segment", "label", "error"]
    with ResumableRows(out, fields=fields, key="segment") as rows:
        assert rows.rows == []
        rows.append({"segment": "0-3", "label": "happy"})
        rows.append({"segment": "3-6", "error": "too short"})
        with pytest.raises(InvalidInputError, match="another process"):
            ResumableRows(out, fields=fields, key="segment").open()
    with ResumableRows(out, fields=fields, key="segment") as rows:
        assert [r["segment"] for r in rows.rows] == ["0-3", "3-6"]
        assert rows.keep(lambda r: not r["error"]) == 1
        rows.append({"segment": "3-6", "label": "sad"})
    with open(out, "ab") as f:
        f.write(b'"6-9",ha')  # torn
    with ResumableRows(out, fields=fields, key="segment") as rows:
        assert rows.repaired == 8 and [r["label"] for r in rows.rows] == ["happy", "sad"]
    with pytest.raises(InvalidInputError, match="columns"):
        ResumableRows(out, fields=["other"], key="other").open()


def test_a_whole_file_is_replaced_only_when_complete(tmp_path):
    target = tmp_path / "video.mp4"
    target.write_bytes(b"the previous recording")
    with pytest.raises(RuntimeError):
        with AtomicFile(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("the writer died")
    assert target.read_bytes() == b"the previous recording"
    assert [p.name for p in tmp_path.iterdir()] == ["video.mp4"]  # no temporary file left
    with AtomicFile(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"


# -- small ones -----------------------------------------------------------------------------
def test_info_into_head_exits_quietly(tiny_bundle):
    proc = popen_cli(["info", tiny_bundle[1]])
    proc.stdout.close()  # the reader went away before the first line, as `| head -0` would
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert b"Traceback" not in err and b"BrokenPipe" not in err and err == b""
    assert proc.returncode == 141


def test_video_only_with_only_audio_names_the_flags(tiny_bundle, clips, capsys):
    assert cli(["predict", str(tiny_bundle[1]), "--audio", str(clips["wav"]), "--video-only"]) == 2
    err = capsys.readouterr().err
    assert "--video-only" in err and "--video" in err and "use_audio" not in err
    assert cli(["predict", str(tiny_bundle[1]), "--audio", str(clips["wav"]), "--video", str(clips["phone"]),
                "--audio-only"]) == 2
    assert "give only --audio" in capsys.readouterr().err


def test_batch_without_tqdm_or_webrtcvad_says_so_once_and_runs(tiny_bundle, clips, tmp_path):
    """A runtime install with the media extra but neither tqdm nor webrtcvad: the batch runs,
    and each missing piece is said once (not an internal error, not silently off)."""
    root = tmp_path / "in"
    root.mkdir()
    for i in range(3):
        os.link(clips["wav"], root / f"{i}.wav")
    out = tmp_path / "r.jsonl"
    code = ("import sys\nsys.modules['tqdm'] = None\nsys.modules['webrtcvad'] = None\n"
            "from foal_edge.__main__ import main\nsys.exit(main(sys.argv[1:]))\n")
    proc = popen_cli(["batch", tiny_bundle[1], root, "--out", out], code=code)
    _, err = proc.communicate(timeout=180)
    err = err.decode()
    assert proc.returncode == 0, err
    assert err.count("tqdm is not installed") == 1 and err.count("webrtcvad is not installed") == 1
    assert len(rows_of(out)) == 3


def test_batch_without_pyav_says_it_once_up_front(tiny_bundle, clips, tmp_path):
    out = tmp_path / "r.jsonl"
    code = ("import sys\nsys.modules['av'] = None\n"
            "from foal_edge.__main__ import main\nsys.exit(main(sys.argv[1:]))\n")
    proc = popen_cli(["batch", tiny_bundle[1], clips["phone"], clips["short"], "--out", out, "--no-progress"],
                     code=code)
    _, err = proc.communicate(timeout=180)
    err = err.decode()
    assert proc.returncode == 2 and err.count("pip install 'foal-edge[media]'") == 1, err
    assert "internal error" not in err and not out.exists()


def test_the_webcam_names_a_missing_portaudio_and_only_real_flags(tiny_bundle):
    """sounddevice installed but its PortAudio library missing (an OSError on import)."""
    code = ("import sys, importlib.abc\n"
            "class NoPortAudio(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'sounddevice':\n"
            "            raise OSError('PortAudio library not found')\n"
            "sys.meta_path.insert(0, NoPortAudio())\n"
            "sys.modules['cv2'] = None\n"
            "from foal_edge.__main__ import main\nsys.exit(main(sys.argv[1:]))\n")
    proc = popen_cli(["live", tiny_bundle[1], "--no-window"], code=code)
    _, err = proc.communicate(timeout=180)
    err = err.decode()
    assert proc.returncode == 2 and "PortAudio" in err and "internal error" not in err, err
    from foal_edge.__main__ import build_parser

    live = build_parser()._subparsers._group_actions[0].choices["live"]
    known = {s for a in live._actions for s in a.option_strings}
    import re

    suggested = set(re.findall(r"--[a-z][a-z-]+", err))
    assert suggested and suggested <= known, suggested - known
