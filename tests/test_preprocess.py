"""Frame preprocessing: the CPU path against CLIP's own transform on real photographs at
camera sizes, the preprocess graph against the CPU path, bounded memory for every frame size
the validator accepts, and decoding that reads only the frames it uses."""

import subprocess
import sys

import numpy as np
import pytest

from foal_edge import Predictor, media, preprocess

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
ONE_GREY_LEVEL = 1 / 255 / min(STD) + 1e-5  # in normalised units


def _photo(name):
    import matplotlib.cbook
    from PIL import Image

    return Image.open(matplotlib.cbook.get_sample_data(name)).convert("RGB")


def _camera_frames(sizes):
    """Real photographs (matplotlib's sample data) made into frames of camera sizes by Pillow."""
    from PIL import Image

    photos = [_photo("grace_hopper.jpg"), _photo("Minduka_Present_Blue_Pack.png")]
    return [np.asarray(p.resize((w, h), Image.Resampling.LANCZOS)) for p in photos for h, w in sizes]


@pytest.fixture(scope="module")
def clip_transform():
    import open_clip

    _, _, transform = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    return transform


@pytest.mark.parametrize("size", [(480, 640), (720, 1280), (1280, 720), (1080, 1920), (120, 160), (33, 2000),
                                  (448, 796)])  # (the size a timeline's 720p and 1080p frames come in at)
def test_cpu_path_equals_clips_transform_on_photographs(clip_transform, size):
    from PIL import Image

    for frame in _camera_frames([size]):
        expected = clip_transform(Image.fromarray(frame)).numpy()
        ours = preprocess.normalize_frames(preprocess.resize_and_crop(frame, 224)[None], MEAN, STD)[0]
        assert np.abs(ours - expected).max() <= ONE_GREY_LEVEL


@pytest.mark.parametrize("size", [(8, 8192), (8192, 8), (20, 3000)])
def test_extreme_aspect_frames_stay_within_one_grey_level(size):
    """Strips whose full resize would be huge take the crop-only matrix path."""
    from PIL import Image

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size + (3,), dtype=np.uint8)
    nh, nw, top, left = preprocess.crop_box(*size, 224)
    expected = np.asarray(Image.fromarray(frame).resize((nw, nh), Image.Resampling.BICUBIC))
    expected = expected[top:top + 224, left:left + 224]
    assert np.abs(preprocess.resize_and_crop(frame, 224).astype(int) - expected).max() <= 1


def test_threaded_resize_equals_one_thread():
    frames = np.stack(_camera_frames([(480, 640)]) * 3)
    one = preprocess.resize_frames(frames, 224, workers=1)
    many = preprocess.resize_frames(frames, 224, workers=4)
    assert np.array_equal(one, many)


def test_memory_is_bounded_for_every_accepted_frame_size():
    """The numpy resampling this replaced peaked at 21.6 GB on one 8x8192 frame."""
    code = (
        "import resource, numpy as np\n"
        "from foal_edge import preprocess\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for shape in [(8, 8192), (8192, 8), (8192, 8192), (8192, 3000), (8, 8)]:\n"
        "    preprocess.resize_and_crop(np.zeros(shape + (3,), np.uint8), 224)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)\n")
    grown_mb = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout)
    # The 8192x8192 frame itself is 192 MB; Pillow's RGBX copy of it 256 MB.
    assert grown_mb < 700


def test_preprocess_graph_equals_cpu_path(tiny_bundle):
    """The in-graph path (ONNX Runtime here, the GPU in deployment) against Pillow."""
    _, bundle = tiny_bundle
    cpu = Predictor(bundle, backend="onnxruntime-cpu", preprocess="cpu")
    graph = Predictor(bundle, backend="onnxruntime-cpu", preprocess="graph")
    assert (cpu.preprocess, graph.preprocess) == ("cpu", "graph")
    size = cpu.manifest.image_size
    for shape in [(480, 640), (720, 1280), (1280, 720)]:
        frames = np.stack(_camera_frames([shape]))
        wx, wy = preprocess.resize_matrices(*shape, size)
        pixels = graph.runners["preprocess"].run({"frames": frames, "resize_x": wx, "resize_y": wy})[0]
        assert np.abs(pixels - cpu.pipeline.preprocess_frames(frames)).max() <= ONE_GREY_LEVEL
        a = cpu.predict(frames=frames)
        b = graph.predict(frames=frames)
        assert a.label == b.label
        assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) < 1e-3


def test_auto_preprocessing_is_the_cpu_without_a_gpu(tiny_bundle):
    _, bundle = tiny_bundle
    assert Predictor(bundle, backend="onnxruntime-cpu").preprocess == "cpu"


def _write_video(path, seconds, fps, size=(240, 320)):
    """A video whose frame i shows its number (brightness i mod 256), with an audio track."""
    import av

    h, w = size
    with av.open(str(path), "w") as c:
        v = c.add_stream("mpeg4", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.gop_size = fps  # a keyframe a second, as cameras write
        a = c.add_stream("pcm_s16le", rate=16000, layout="mono")
        for i in range(int(seconds * fps)):
            img = np.full((h, w, 3), (i * 7) % 256, np.uint8)
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * 16000)) / 16000) * 32767).astype("<i2")
        for k in range(0, len(tone), 1600):
            af = av.AudioFrame.from_ndarray(tone[None, k:k + 1600], format="s16", layout="mono")
            af.sample_rate = 16000
            for p in a.encode(af):
                c.mux(p)
        for p in a.encode():
            c.mux(p)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "long.avi"
    _write_video(path, seconds=30, fps=10)
    return path


def test_reading_chosen_frames_equals_full_decode(long_video):
    every, fps = media.read_video(long_video)
    assert fps == 10 and len(every) == 300
    for indices in ([0, 3, 17], [250, 260, 299]):  # the second is far enough in to seek
        chosen, _ = media.read_video(long_video, indices)
        assert sorted(chosen) == indices
        for i in indices:
            assert np.array_equal(chosen[i], every[i])


@pytest.mark.parametrize("long_audio", ["head", "tail"])
def test_predict_files_uses_the_window_of_a_long_video(tiny_bundle, long_video, long_audio):
    """predict_files decodes only the window: it equals predict on the same window cut by hand."""
    _, bundle = tiny_bundle
    p = Predictor(bundle, backend="onnxruntime-cpu", long_audio=long_audio)
    every, fps = media.read_video(long_video)
    audio, rate, total = media.read_video_audio(long_video)
    assert abs(total - 30.0) < 0.05
    window = p.manifest.audio_seconds
    span = int(np.ceil(window * fps))
    if long_audio == "head":
        frames, wave = every[:span], audio[: int(window * rate)]
    else:
        frames, wave = every[-span:], audio[-int(window * rate):]
    expected = p.predict(audio=wave, sample_rate=rate, frames=frames)
    got = p.predict_files(video_path=long_video)
    assert got.label == expected.label
    assert max(abs(got.probabilities[k] - expected.probabilities[k]) for k in got.probabilities) < 1e-5
    assert any("cut from 30.00 s" in n for n in got.notes)
