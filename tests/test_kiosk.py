"""A kiosk developer's day: either modality alone, voice activity, streams that keep up,
`live --replay` with a recording, and `batch` over a folder."""

import json

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
        frames = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    with av.open(str(videos["speech"])) as f:
        original = [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]
    assert len(frames) == len(original) == 45
    # The panel is drawn on every frame (dark, top left), the rest of the picture kept.
    assert frames[-1][:20, :60].mean() < original[-1][:20, :60].mean() - 10
    assert np.abs(frames[-1][-30:, -30:].astype(int) - original[-1][-30:, -30:]).mean() < 12


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
    assert cli(args) == 0 and len(out.read_text().splitlines()) == 5  # resumed: nothing twice
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
