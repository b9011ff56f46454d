"""The analytic FLOP counts (benchmarks/flops.py) against torch's FlopCounterMode on the real
towers. The counter sees every matmul and convolution (bias, norms, activations and softmax are
not counted by either) once the fused paths it cannot see into are off: nn.MultiheadAttention's
fast path (open_clip's attention under inference) and the CPU flash kernel of
scaled_dot_product_attention, whose Q K^T and attention x V it does not count."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import pytest

torch = pytest.importorskip("torch")

from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks import flops  # noqa: E402
from training.config import preset  # noqa: E402

TOLERANCE = 1e-3  # relative; the counts agree exactly on torch 2.14 (the stages are all matmuls and convs)


@contextmanager
def no_fused_attention():
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def counted(fn) -> int:
    with no_fused_attention(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def build(name: str, device: str = "cpu"):
    from training.encoders import AudioEncoder, VideoEncoder
    from training.fusion import FusionHead

    cfg = preset(name)
    quiet = logging.getLogger("training.encoders")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # random weights are the point here
    try:
        torch.manual_seed(0)
        with torch.device(device):
            audio = AudioEncoder(cfg.audio).eval()
            video = VideoEncoder(cfg.video, frozen=True).eval()
            fusion = FusionHead(cfg.audio.hidden_size, cfg.video.embed_dim, cfg.fusion).eval()
    finally:
        quiet.setLevel(level)
    return cfg, audio, video, fusion


def check_preset(name: str, samples: int, frames: int, device: str = "cpu"):
    cfg, audio, video, fusion = build(name, device)
    with torch.device(device):
        wave = torch.randn(1, samples)
        images = torch.randn(frames, 3, cfg.video.image_size, cfg.video.image_size)
        with no_fused_attention():
            hidden = audio(wave)
            emb = video(images)[None]
        t_a = hidden.shape[1]
        assert t_a == flops.audio_frames(cfg.audio, samples)
        want = flops.stage_flops(cfg, samples, frames)
        got = {
            "audio": counted(lambda: audio(wave)),
            "video": counted(lambda: video(images)),
            "fusion": counted(lambda: fusion(hidden, torch.ones(1, t_a), emb, torch.ones(1, frames))),
        }
    for stage in want:
        assert got[stage] == pytest.approx(want[stage], rel=TOLERANCE), (name, stage, got, want)
    return want


@pytest.mark.parametrize("name, seconds, frames, device", [
    ("tiny", 3.0, 8, "cpu"),  # the demo model's own window and frames per clip
    # An odd length: every conv layer's floor division matters. On the meta device the towers
    # run on shapes alone (no arithmetic), which is all the counter looks at; the real run of
    # the base towers takes ~40 s on two loaded cores, so it is in the slow tier.
    ("base", 1.37, 2, "meta"),
    pytest.param("base", 1.37, 2, "cpu", marks=pytest.mark.slow),
])
def test_analytic_counts_match_flop_counter(name, seconds, frames, device):
    check_preset(name, int(seconds * 16_000) + 3, frames, device)


@pytest.mark.slow
def test_large_preset_on_meta_tensors():
    """Large on the meta device (shapes only): the numbers the docs quote (6 s of audio, one
    ViT-L/14 frame, fusion over it)."""
    want = check_preset("large", 96_000, 1, device="meta")
    assert round(want["video"] / 1e9, 1) == 162.0
    assert round(want["audio"] / 1e9, 1) == 224.3


def test_fused_attention_is_what_the_counter_misses():
    """Why the counts are analytic: under inference the counter sees none of open_clip's
    attention (projections and scores), which is the gap earlier results files carry."""
    cfg, _, video, _ = build("tiny")
    images = torch.randn(2, 3, 224, 224)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        video(images)
    parts = flops.video_flops(cfg.video, 2)
    seen = parts["patch_embedding"] + parts["mlp"] + parts["projection"]
    assert counter.get_total_flops() == pytest.approx(seen, rel=TOLERANCE)
    assert sum(parts.values()) > seen


def test_counts_scale_and_parts():
    cfg = preset("large")
    one, four = flops.video_flops(cfg.video, 1), flops.video_flops(cfg.video, 4)
    assert all(four[k] == 4 * one[k] for k in one)
    audio = flops.audio_flops(cfg.audio, 96_000)
    # 6 s -> 299 frames, the attention part is 4 T^2 D per layer
    assert audio["attention_scores_and_values"] == 24 * 4 * 299 ** 2 * 1024
    longer = flops.stage_flops(cfg, 2 * 96_000, 4)
    assert longer["audio"] > 2 * flops.stage_flops(cfg, 96_000, 4)["audio"]  # attention grows as T^2


def test_too_short_audio_is_refused():
    cfg = preset("tiny").audio
    with pytest.raises(ValueError, match="at least 400"):
        flops.audio_flops(cfg, 399)
    assert flops.audio_frames(cfg, 400) == 1


def test_cli_prints_the_large_preset(capsys):
    assert flops.main(["--preset", "large", "--audio-seconds", "6", "--frames", "1"]) == 0
    out = capsys.readouterr().out
    assert "audio (6 s, 96000 samples, T_a=299): 224.286" in out
    assert "video (1 frame of 224px): 162.026" in out
    assert flops.main(["--preset", "huge"]) == 2
    assert "unknown preset" in capsys.readouterr().err
