import json
import logging
import os
import shutil

import pytest

logging.getLogger("training.encoders").setLevel(logging.ERROR)  # random-weight notices


@pytest.fixture(scope="session", autouse=True)
def graph_cache(tmp_path_factory):
    """Predictors cache optimised graphs here, not in the user's ~/.cache."""
    old = os.environ.get("FOAL_EDGE_CACHE")
    os.environ["FOAL_EDGE_CACHE"] = str(tmp_path_factory.mktemp("graph-cache"))
    yield os.environ["FOAL_EDGE_CACHE"]
    if old is None:
        os.environ.pop("FOAL_EDGE_CACHE", None)
    else:
        os.environ["FOAL_EDGE_CACHE"] = old


@pytest.fixture
def seeded():
    import torch

    torch.manual_seed(0)
    return torch.Generator().manual_seed(0)


@pytest.fixture
def tiny_model(seeded):
    from training.model import FoalNet

    return FoalNet.from_preset("tiny").eval()


def make_batch(model, batch=4, seconds=1.0, frames=3, labels=None, seed=0):
    """A random training batch for `model` with frames (not cached embeddings)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    size = model.config.video.image_size
    samples = int(seconds * model.config.sample_rate)
    labels = torch.arange(batch) % 4 if labels is None else torch.as_tensor(labels)
    return {
        "waveform": torch.randn(batch, samples, generator=g),
        "audio_lengths": torch.full((batch,), samples),
        "frames": torch.randn(batch, frames, 3, size, size, generator=g),
        "video_mask": torch.ones(batch, frames),
        "labels": labels,
        "attributes": 1 + 4 * torch.rand(batch, 3, generator=g),
    }


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A tiny checkpoint (random weights, seed 0) and the FP32 ONNX bundle built from it
    by the library call the build command runs: (checkpoint_dir, bundle_dir)."""
    import torch

    from export import build_bundle
    from training.model import FoalNet

    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    FoalNet.from_preset("tiny").save(root / "ckpt")
    build_bundle(root / "ckpt", root / "bundle", target="onnx", precision="fp32", parity_clips=3)
    return root / "ckpt", root / "bundle"


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    """A copy of the tiny bundle to damage."""
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle[1], dst)
    return dst


def edit_manifest(bundle, fn):
    """Apply fn to the bundle's manifest JSON (a dict) in place."""
    m = json.loads((bundle / "manifest.json").read_text())
    fn(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


@pytest.fixture(scope="session")
def predictor(tiny_bundle):
    """One CPU Predictor of the tiny bundle, shared (predictors are thread-safe and keep no
    state); no voice activity detection, so it computes exactly what the eager model does."""
    from foal_edge import Predictor

    return Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=False)


def write_clip_video(path, seconds=3.0, fps=15, size=(120, 160), audio="speech", seed=0, code="hap"):
    """An MP4 like a kiosk records: synthetic faces at `size` (H, W), and an AAC track of
    synthetic speech ("speech"), digital silence ("silence"), room noise ("noise") or none (None)."""
    import av
    import numpy as np
    from PIL import Image

    from training.synthetic import make_clip

    n = int(round(seconds * fps))
    voice, faces, _ = make_clip(seed, code=code, seconds=seconds, frames=n)
    rate = 16000
    track = {"speech": voice, "silence": np.zeros(int(seconds * rate), np.float32),
             "noise": (0.01 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32),
             None: None}[audio]
    h, w = size
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        stream = out.add_stream("aac", rate=rate, layout="mono") if track is not None else None
        for face in faces:
            frame = np.asarray(Image.fromarray(face).resize((w, h)))
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(video.encode())
        if stream is not None:
            for start in range(0, len(track), 1024):
                frame = av.AudioFrame.from_ndarray(track[None, start:start + 1024].astype(np.float32), format="fltp",
                                                   layout="mono")
                frame.sample_rate, frame.pts = rate, start
                out.mux(stream.encode(frame))
            out.mux(stream.encode())
    return path
