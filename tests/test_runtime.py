"""The runtime: equals the eager model, handles missing modalities, stays torch-free,
resamples correctly, streams like it predicts, and is thread-safe."""

import subprocess
import sys
import threading

import numpy as np
import pytest

from foal_edge import BundleError, InvalidInputError, Predictor, StreamingPredictor
from foal_edge import preprocess


def _clip(seed, seconds=2.0):
    from training.synthetic import make_clip

    audio, frames, _ = make_clip(seed, seconds=seconds, frames=10)
    return audio, frames


def test_predictor_equals_eager(tiny_bundle, predictor):
    import torch

    from training.model import FoalNet

    model = FoalNet.load(tiny_bundle[0]).eval()
    for seed in range(8):
        audio, frames = _clip(seed)
        got = predictor.predict(audio=audio, sample_rate=16000, frames=frames)
        x, _ = predictor.pipeline.prepare_frames(frames)
        with torch.inference_mode():
            logits = model(torch.from_numpy(audio[None]), torch.from_numpy(x)[None], torch.ones(1, len(x)))[0]
        expected = torch.softmax(logits, -1)[0].numpy()
        assert np.abs(np.array([got.probabilities[l] for l in predictor.labels]) - expected).max() <= 1e-4
        assert abs(sum(got.probabilities.values()) - 1) < 1e-6
        assert got.modalities == ("audio", "video") and got.backend == "onnxruntime-cpu"


def test_missing_modalities(predictor):
    audio, frames = _clip(1)
    a = predictor.predict(audio=audio, sample_rate=16000)
    v = predictor.predict(frames=frames)
    assert a.modalities == ("audio",) and v.modalities == ("video",)
    assert a.attributes is None and abs(sum(v.probabilities.values()) - 1) < 1e-6
    with pytest.raises(InvalidInputError, match="both are missing"):
        predictor.predict()


def test_import_leaves_torch_unimported():
    code = ("import foal_edge, sys; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'open_clip')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("rate", [44100, 8000])
def test_resampling_keeps_a_tone_in_place(rate):
    t = np.arange(int(rate * 1.0)) / rate
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    out = preprocess.resample(tone, rate, 16000)
    assert abs(len(out) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    peak = np.fft.rfftfreq(len(out), 1 / 16000)[spectrum.argmax()]
    assert abs(peak - 440) <= 2


def test_clip_preprocessing_matches_open_clip_on_a_real_image():
    import matplotlib.cbook
    import open_clip
    from PIL import Image

    image = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")
    _, _, transform = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    expected = transform(image).numpy()
    ours = preprocess.normalize_frames(preprocess.resize_and_crop(np.asarray(image), 224)[None],
                                       (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))[0]
    # PIL resamples in 8-bit fixed point: allow one or two levels of rounding (1/255/std ~ 0.015).
    assert np.abs(ours - expected).max() <= 0.031
    assert np.abs(ours - expected).mean() <= 0.003


def test_streaming_equals_predict_on_the_same_window(predictor):
    """A camera at exactly the rate the stream samples (frames-per-clip a window): every frame
    is encoded and the stream's answer is predict's on the same window."""
    audio, frames = _clip(3, seconds=3.0)
    frames = frames[: predictor.frames_per_clip]
    stream = StreamingPredictor(predictor, window=3.0, hop=1.0)
    fps = len(frames) / 3.0
    result = None
    for i in range(3):  # one second of audio and its frames at a time
        for k in range(len(frames)):
            if i <= k / fps < i + 1:
                stream.push_frame(frames[k], timestamp=k / fps)
        result = stream.push_audio(audio[i * 16000:(i + 1) * 16000], 16000) or result
    direct = predictor.predict(audio=audio, sample_rate=16000, frames=frames)
    assert stream.latest() is result
    for label in predictor.labels:
        assert abs(result.probabilities[label] - direct.probabilities[label]) <= 1e-5


def test_streaming_memory_is_bounded(predictor):
    stream = StreamingPredictor(predictor, window=2.0, hop=0.5)
    frame = np.zeros((48, 64, 3), np.uint8)
    for step in range(120):  # a minute of 0.5 s chunks, 4 frames each
        for k in range(4):
            stream.push_frame(frame, timestamp=step * 0.5 + k * 0.125)
        stream.push_audio(np.random.default_rng(step).normal(0, 0.1, 8000).astype(np.float32), 16000)
    assert stream.buffered_seconds <= 2.0 and stream.buffered_frames <= 2.0 * 8 + 1


def test_eight_threads_match_serial(predictor):
    clips = [_clip(s) for s in range(8)]
    serial = [predictor.predict(audio=a, sample_rate=16000, frames=f).probabilities for a, f in clips]
    results = [None] * 8

    def work(i):
        a, f = clips[i]
        results[i] = predictor.predict(audio=a, sample_rate=16000, frames=f).probabilities

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == serial


def test_predict_batch_matches_single(predictor):
    clips = [_clip(s, seconds=1.5 + s * 0.4) for s in range(3)]
    batch = predictor.predict_batch([{"audio": a, "sample_rate": 16000, "frames": f} for a, f in clips])
    for (a, f), b in zip(clips, batch):
        single = predictor.predict(audio=a, sample_rate=16000, frames=f)
        for label in predictor.labels:
            assert abs(single.probabilities[label] - b.probabilities[label]) <= 1e-5


def test_long_audio_policy_is_visible(predictor, tiny_bundle):
    audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 5).astype(np.float32)
    result = predictor.predict(audio=audio, sample_rate=16000)
    assert any("cut from 5.00 s" in n for n in result.notes)
    strict = Predictor(tiny_bundle[1], long_audio="error")
    with pytest.raises(InvalidInputError, match="longer than"):
        strict.predict(audio=audio, sample_rate=16000)


def test_damaged_bundles_are_refused(tiny_bundle, tmp_path):
    import json
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle[1], bundle)
    data = bytearray((bundle / "fusion.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "fusion.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        Predictor(bundle)
    manifest = json.loads((tiny_bundle[1] / "manifest.json").read_text())
    shutil.copyfile(tiny_bundle[1] / "fusion.onnx", bundle / "fusion.onnx")
    manifest["schema_version"] = 99
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema version"):
        Predictor(bundle)
    manifest["schema_version"] = 2
    manifest["graphs"]["audio"]["file"] = "../../etc/passwd"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="outside the bundle"):
        Predictor(bundle)
    with pytest.raises(BundleError, match="no such bundle"):
        Predictor(tmp_path / "nowhere")


def _write_video(path, codec, sample_format, left, right, rate=16000, fps=10, frames=20):
    """A small video with a stereo audio track, written with PyAV."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = out.add_stream(codec, rate=rate, layout="stereo")
        audio.format = sample_format
        for i in range(frames):
            image = np.zeros((48, 64, 3), np.uint8)
            image[:, : 3 * i + 1] = (200, 120, 40)
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(video.encode())
        for start in range(0, len(left), 1024):
            pair = np.stack([left[start:start + 1024], right[start:start + 1024]])
            data = (pair.T.reshape(1, -1) * 32767).astype(np.int16) if sample_format == "s16" else pair
            frame = av.AudioFrame.from_ndarray(data, format=sample_format, layout="stereo")
            frame.sample_rate, frame.pts = rate, start
            out.mux(audio.encode(frame))
        out.mux(audio.encode())


@pytest.mark.parametrize("codec,sample_format", [("pcm_s16le", "s16"), ("aac", "fltp")])
def test_a_videos_stereo_track_is_mixed_to_mono(predictor, tmp_path, codec, sample_format):
    """Packed (interleaved) PCM and planar AAC tracks both come back as one mono channel of
    the right length, and predict_files equals predict on the same decoded data."""
    from foal_edge import media

    t = np.arange(32000) / 16000
    left = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    right = (0.25 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    path = tmp_path / ("clip.avi" if codec.startswith("pcm") else "clip.mp4")
    _write_video(path, codec, sample_format, left, right)

    audio, rate, _ = media.read_video_audio(path)
    mono = (left + right) / 2
    assert rate == 16000 and audio.ndim == 1 and audio.dtype == np.float32
    if codec.startswith("pcm"):  # lossless: sample for sample
        assert audio.shape == mono.shape and np.abs(audio - mono).max() < 1e-4
    else:  # AAC pads the last packet; the signal itself lines up
        assert 32000 <= audio.size <= 32000 + 2048
        assert np.corrcoef(audio[2048:30000], mono[2048:30000])[0, 1] > 0.999

    frames, fps = media.read_video(path)
    got = predictor.predict_files(video_path=path)
    want = predictor.predict(audio=audio, sample_rate=rate, frames=frames, fps=fps)
    assert got.modalities == ("audio", "video") and got.probabilities == want.probabilities


def test_optimised_graphs_are_cached_and_give_the_same_answer(tiny_bundle, tmp_path):
    cache = tmp_path / "cache"
    audio, frames = _clip(3)
    fresh = Predictor(tiny_bundle[1], backend="onnxruntime-cpu", graph_cache=None)
    first = Predictor(tiny_bundle[1], backend="onnxruntime-cpu", graph_cache=cache)
    again = Predictor(tiny_bundle[1], backend="onnxruntime-cpu", graph_cache=cache)
    assert {r.cached for r in fresh.runners.values()} == {None}
    assert {r.cached for r in first.runners.values()} == {"written"}
    assert {r.cached for r in again.runners.values()} == {"hit"}
    want = fresh.predict(audio=audio, sample_rate=16000, frames=frames).probabilities
    for p in (first, again):
        got = p.predict(audio=audio, sample_rate=16000, frames=frames).probabilities
        assert max(abs(got[k] - want[k]) for k in want) <= 1e-6
    # A damaged entry is dropped and written again, not trusted and not fatal.
    for model in cache.glob("ort-optimized/*/model.onnx"):
        model.write_bytes(b"not a graph")
    healed = Predictor(tiny_bundle[1], backend="onnxruntime-cpu", graph_cache=cache)
    assert {r.cached for r in healed.runners.values()} == {"written"}
    got = healed.predict(audio=audio, sample_rate=16000, frames=frames).probabilities
    assert max(abs(got[k] - want[k]) for k in want) <= 1e-6
    # Without the hash check there is no key to trust: no cache.
    unverified = Predictor(tiny_bundle[1], backend="onnxruntime-cpu", graph_cache=cache, verify=False)
    assert {r.cached for r in unverified.runners.values()} == {None}
