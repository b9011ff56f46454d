import logging

import pytest

logging.getLogger("training.encoders").setLevel(logging.ERROR)  # random-weight notices


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
