"""A kiosk developer's day: either modality alone, voice activity, streams that keep up,
`live --replay` with a recording, and `batch` over a folder."""

import json
import time

import numpy as np
import pytest

from foal_edge import Predictor, StreamingPredictor
from foal_edge.__main__ import main as cli

from .conftest import write_clip_video

pytest.importorskip("webrtcvad")


@pytest.fixture(scope="module")
def kiosk(tiny_bundle):
    """The predictor a kiosk runs: voice activity detection on."""
    return Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=True)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return {kind: write_clip_video(root / f"{kind or 'mute'}.mp4", audio=kind, seed=i)
            for i, kind in enumerate(("speech", "silence", "noise", None))}


def test_a_silent_video_is_predicted_from_its_frames(kiosk, videos):
    result = kiosk.predict_files(video_path=videos[None])
    assert result.modalities == ("video",) and any("no audio track" in n for n in result.notes)


@pytest.mark.parametrize("kind", ["silence", "noise"])
def test_a_microphone_without_speech_leaves_the_answer_to_the_video_head(kiosk, videos, kind):
    result = kiosk.predict_files(video_path=videos[kind])
    assert result.modalities == ("video",)
    assert any("no speech heard" in n and "video-only head answers" in n for n in result.notes)
    video_only = kiosk.predict_files(video_path=videos[kind], use_audio=False)
    assert result.probabilities == video_only.probabilities


def test_speech_is_what_wavlm_hears(kiosk, videos):
    result = kiosk.predict_files(video_path=videos["speech"])
    assert result.modalities == ("audio", "video")
    assert "vad" in result.timings_ms and result.timings_ms["vad"] < 50


def test_audio_only_and_video_only_files(kiosk, videos):
    assert kiosk.predict_files(video_path=videos["speech"], use_video=False).modalities == ("audio",)
    assert kiosk.predict_files(video_path=videos["speech"], use_audio=False).modalities == ("video",)


def test_streams_on_the_camera_alone_and_the_microphone_alone(kiosk):
    from training.synthetic import make_clip

    audio, frames, _ = make_clip(5, seconds=3.0, frames=90)
    camera = StreamingPredictor(kiosk, hop=1.0, audio=False)
    results = [camera.push_frame(f, timestamp=i / 30) for i, f in enumerate(frames)]
    results = [r for r in results if r is not None]
    assert len(results) == 2 and all(r.modalities == ("video",) for r in results)
    # Sampled on arrival: frames-per-clip per window are encoded, not 30 a second.
    assert camera.frames_seen == 90 and camera.frames_encoded <= kiosk.frames_per_clip + 1
    assert "video" in results[-1].timings_ms and "total" in results[-1].timings_ms
    microphone = StreamingPredictor(kiosk, hop=1.0, video=False)
    out = [microphone.push_audio(audio[i:i + 8000], 16000) for i in range(0, len(audio), 8000)]
    assert [r.modalities for r in out if r is not None] == [("audio",)] * 3
    silent = StreamingPredictor(kiosk, hop=1.0)
    for i, f in enumerate(frames[:45]):
        silent.push_frame(f, timestamp=i / 30)
        if i % 15 == 14:
            last = silent.push_audio(np.zeros(16000, np.float32), 16000)
    assert last.modalities == ("video",) and any("no speech heard" in n for n in last.notes)


def test_live_replay_records_labels_over_time(tiny_bundle, videos, tmp_path, capsys):
    import av

    record, jsonl = tmp_path / "live.mp4", tmp_path / "live.jsonl"
    assert cli(["live", str(tiny_bundle[1]), "--replay", str(videos["speech"]), "--speed", "0", "--hop", "0.5",
                "--record", str(record), "--jsonl", str(jsonl), "--no-window"]) == 0
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) >= 5 and all(r["label"] in r["probabilities"] for r in rows)
    assert [r["t"] for r in rows] == sorted(r["t"] for r in rows)
    assert capsys.readouterr().out.count("\n") == len(rows)
    with av.open(str(record)) as f:
        assert f.streams.audio and abs(float(f.streams.audio[0].duration * f.streams.audio[0].time_base) - 3.0) < 0.1
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    with av.open(str(videos["speech"])) as f:
        original = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    assert len(frames) == len(original) == 45
    # The panel is below the picture (a landscape frame), the picture itself left as it was.
    h, w = original[-1].shape[:2]
    assert frames[-1].shape[0] > h and frames[-1].shape[1] == w
    assert np.abs(frames[-1][:h].astype(int) - original[-1]).mean() < 6
    assert frames[-1][h + 4:].mean() < 80  # the dark panel with its bars
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.jsonl", "live.mp4"]  # no temporary or lock files


def test_the_panel_sits_beside_the_picture_at_any_size(predictor):
    """Landscape: below; portrait: beside; the picture untouched, every bar inside the panel,
    the panel growing with the frame, even sides for H.264."""
    from foal_edge.live import annotate

    result = predictor.predict(frames=np.zeros((4, 120, 160, 3), np.uint8))
    sizes = {}
    for h, w in [(480, 640), (720, 1280), (1280, 720), (1920, 1080), (121, 97), (90, 160)]:
        frame = np.random.default_rng(h).integers(0, 255, (h, w, 3), dtype=np.uint8)
        shown = annotate(frame, result, 12.5, "audio ended at 3.0 s: frames alone")
        assert np.array_equal(shown[:h, :w], frame)  # nothing drawn over the face
        H, W = shown.shape[:2]
        assert H % 2 == 0 and W % 2 == 0
        if h > w:
            assert H == h + h % 2 and W > w  # beside
            panel = shown[:, w:]
        else:
            assert W == w + w % 2 and H > h  # below
            panel = shown[h:]
        # Nothing reaches the panel's far edge (the bars and text stop inside it).
        edge = panel[:, -2:] if h > w else panel[:, -2:]
        assert (edge == edge[0, 0]).all()
        sizes[(h, w)] = panel.shape[1] if h > w else panel.shape[0]
    assert sizes[(1920, 1080)] > sizes[(1280, 720)] and sizes[(720, 1280)] > sizes[(480, 640)]


def test_the_panel_marks_a_low_confidence_answer_and_shows_the_model_cards_notice(predictor):
    """A prediction under min_confidence is drawn in amber; the card's notice (the demo's
    synthetic-data line) gets its own row; the picture stays untouched."""
    import dataclasses

    from foal_edge.live import LOW_COLOUR, annotate

    result = predictor.predict(frames=np.zeros((4, 120, 160, 3), np.uint8))
    assert result.confidence is not None
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    sure = annotate(frame, dataclasses.replace(result, low_confidence=False), 1.0)
    unsure = annotate(frame, dataclasses.replace(result, low_confidence=True), 1.0)
    head = slice(480, 480 + 18 * 480 // 360)  # the panel's first row
    near = lambda img, colour: (np.abs(img[head].astype(int) - colour).sum(axis=-1) < 40).sum()  # noqa: E731
    assert near(unsure, LOW_COLOUR) > 20 and near(sure, LOW_COLOUR) == 0
    assert np.array_equal(unsure[:480], frame)
    noticed = annotate(frame, result, 1.0, notice="synthetic-data demo: labels on real media mean nothing")
    plain = annotate(frame, result, 1.0)
    assert noticed.shape[0] > plain.shape[0]  # one more row
    extra = noticed[plain.shape[0] - 4:]
    assert (extra != extra[0, 0]).any()  # with text in it


def test_live_goes_on_with_the_frames_when_the_audio_ends_first(tiny_bundle, tmp_path, capsys):
    from foal_edge import live
    from foal_edge.predictor import Predictor

    from .media_fixtures import short_audio_clip

    clip = short_audio_clip(tmp_path / "short.mp4", seconds=4.0, audio_seconds=1.5)
    p = Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=False)
    history = live.run(p, replay=clip, hop=0.5, speed=0, window=False, record=tmp_path / "rec.mp4")
    err = capsys.readouterr().err
    assert err.count("the audio ends at") == 1 and history.audio_ended is not None
    assert history[0]["modalities"] == ["audio", "video"]
    later = [r for r in history if r["t"] > history.audio_ended + 0.3]
    assert later and all(r["modalities"] == ["video"] for r in later) and later[-1]["t"] >= 3.5
    import av

    with av.open(str(tmp_path / "rec.mp4")) as f:
        assert abs(float(f.streams.audio[0].duration * f.streams.audio[0].time_base) - 1.5) < 0.1
        assert len(list(f.decode(video=0))) == 60


def test_a_replay_that_falls_behind_drops_frames_and_says_so(tiny_bundle, tmp_path, capsys):
    """720p at ten times real time with a recording: more than any CPU here keeps up with.
    Frames are dropped to stay on time (said once, counted at the end), the audio is kept
    whole, and the recording keeps each frame at its own time."""
    import av

    from foal_edge import live
    from foal_edge.predictor import Predictor

    from .media_fixtures import face, speech, write_video

    clip = write_video(tmp_path / "hd.mp4", [face(i % 3, (720, 1280)) for i in range(60)],
                       [i / 30 for i in range(60)], audio=speech(2.0))
    p = Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=False)
    t0 = time.monotonic()
    history = live.run(p, replay=clip, hop=1.0, speed=10, window=False, record=tmp_path / "rec.mp4")
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert history.frames == 60 and history.dropped > 0
    assert err.count("falling behind real time") == 1
    assert f"{history.dropped} of 60 frames dropped to stay in real time" in err
    assert took < 0.2 + 3.0  # 0.2 s of replay, plus the decoding every frame still costs
    with av.open(str(tmp_path / "rec.mp4")) as f:
        kept = [fr.time for fr in f.decode(video=0)]
        assert abs(float(f.streams.audio[0].duration * f.streams.audio[0].time_base) - 2.0) < 0.1
    assert len(kept) == 60 - history.dropped and kept == sorted(kept) and kept[-1] <= 2.0


@pytest.mark.parametrize("flags, text", [
    (["--speed", "nan"], "--speed must be"), (["--speed", "-1"], "--speed must be"),
    (["--speed", "inf"], "--speed must be"), (["--hop", "0"], "--hop must be"), (["--hop", "nan"], "--hop must be"),
    (["--hop", "60"], "--hop must be at most"), (["--camera", "-1"], "--camera must be"),
    (["--record", "x.txt"], "name it .mp4, .mkv, .mov or .avi"), (["--jsonl", "x.json"], "name a .jsonl file"),
    (["--record", "missing-dir/x.mp4"], "does not exist"),
])
def test_every_live_flag_is_checked_up_front(tiny_bundle, videos, tmp_path, monkeypatch, flags, text, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli(["live", str(tiny_bundle[1]), "--replay", str(videos["speech"]), "--no-window", *flags]) == 2
    err = capsys.readouterr().err
    assert text in err and "internal error" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("flags, text", [(["--workers", "0"], "--workers must be 1..256"),
                                         (["--workers", "-3"], "--workers must be 1..256"),
                                         (["--out", "r.txt"], "name a .jsonl or .csv")])
def test_batch_flags_are_checked(tiny_bundle, videos, tmp_path, monkeypatch, flags, text, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["batch", str(tiny_bundle[1]), str(videos["speech"]), "--out", "r.jsonl", *flags]
    assert cli(args) == 2 and text in capsys.readouterr().err


def test_batch_over_a_folder_resumes_and_reports_failures(tiny_bundle, videos, tmp_path, capsys):
    folder = tmp_path / "sessions"
    folder.mkdir()
    for kind, path in videos.items():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "results.jsonl"
    args = ["batch", str(tiny_bundle[1]), str(folder), "--out", str(out), "--workers", "2", "--no-progress"]
    assert cli(args) == 1  # one file failed
    rows = {json.loads(line)["file"]: json.loads(line) for line in out.read_text().splitlines()}
    assert len(rows) == 5 and "error" in rows[str(folder / "broken.mp4")]
    assert rows[str(folder / "mute.mp4")]["modalities"] == ["video"]
    assert "1 failed" in capsys.readouterr().err
    # Resumed: only the failed file is tried again (still broken: status 1), nothing twice.
    assert cli(args) == 1 and len(out.read_text().splitlines()) == 5
    assert "0 predicted, 1 failed, 4 already in" in capsys.readouterr().err
    csv_out = tmp_path / "results.csv"
    assert cli(["batch", str(tiny_bundle[1]), str(folder / "speech.mp4"), "--out", str(csv_out), "--no-progress"]) == 0
    header, row = csv_out.read_text().splitlines()
    assert header.startswith("file,label,p_neutral") and row.startswith(str(folder / "speech.mp4"))


def test_cli_points_to_the_right_flag(tiny_bundle, videos, tmp_path, capsys):
    import soundfile as sf

    wav = tmp_path / "angry.wav"
    sf.write(str(wav), np.zeros(16000, np.float32), 16000)
    assert cli(["predict", str(tiny_bundle[1]), "--video", str(wav)]) == 2
    assert "pass it as audio: --audio" in capsys.readouterr().err
    assert cli(["predict", str(tiny_bundle[1]), "--audio", str(videos["speech"])]) == 2
    assert "pass it as video (--video)" in capsys.readouterr().err
    assert cli(["predict", str(tiny_bundle[1]), "--video", str(videos["speech"]), "--video-only", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["modalities"] == ["video"]


def test_ctrl_c_ends_live_with_a_finished_recording(tiny_bundle, tmp_path):
    """Ctrl-C is how live ends: within a second, with the recording and the JSON lines
    finished under their own names (nothing half-written left beside them)."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import av

    from .media_fixtures import short_audio_clip
    from .test_files import ctrl_c_as_in_a_terminal

    clip = short_audio_clip(tmp_path / "clip.mp4", seconds=6.0, audio_seconds=6.0)
    out = tmp_path / "out"
    out.mkdir()
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "foal_edge", "live", str(tiny_bundle[1]), "--replay", str(clip),
                             "--hop", "0.5", "--record", str(out / "rec.mp4"), "--jsonl", str(out / "rows.jsonl"),
                             "--no-window"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=ctrl_c_as_in_a_terminal)
    first = proc.stdout.readline()  # the first prediction: it is running in real time
    assert first, proc.stderr.read().decode()
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert time.monotonic() - t0 < 2.0
    assert sorted(p.name for p in out.iterdir()) == ["rec.mp4", "rows.jsonl"]
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["t"] < 6.0
    with av.open(str(out / "rec.mp4")) as f:
        assert f.streams.audio and len(list(f.decode(video=0))) > 5
