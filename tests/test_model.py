"""Foal-Net in PyTorch: shapes, masking, gradients, learning, loading real weights."""

import pytest
import torch

from tests.conftest import make_batch
from training.config import preset
from training.model import FoalNet


def test_submodule_shapes(tiny_model):
    cfg = tiny_model.config
    with torch.no_grad():
        hidden = tiny_model.audio_encoder(torch.randn(2, 16000))
        # 1 s at 16 kHz -> 49 WavLM frames (20 ms stride, 25 ms receptive field)
        assert hidden.shape == (2, 49, cfg.audio.hidden_size)
        emb = tiny_model.video_encoder(torch.randn(5, 3, 224, 224))
        assert emb.shape == (5, cfg.video.embed_dim)
        outs = tiny_model.fusion(hidden, torch.ones(2, 49), emb[None, :4].expand(2, -1, -1), torch.ones(2, 4))
    assert [tuple(o.shape) for o in outs] == [(2, 4), (2, 4), (2, 4), (2, 3)]
    assert tiny_model.fusion.output_names == ("logits", "audio_logits", "video_logits", "attributes")


def test_frame_lengths_match_encoder(tiny_model):
    for samples in (400, 401, 16000, 48000, 12345):
        with torch.no_grad():
            T = tiny_model.audio_encoder(torch.randn(1, samples)).shape[1]
        assert int(tiny_model.audio_encoder.frame_lengths(torch.tensor(samples))) == T


@pytest.mark.slow
def test_large_preset_parameter_counts():
    counts = FoalNet.from_preset("large").parameter_counts()
    assert abs(counts["audio_encoder"] - 315e6) < 3e6  # WavLM Large ~315 M
    assert abs(counts["video_encoder"] - 304e6) < 3e6  # CLIP ViT-L/14 image tower ~304 M


def test_padding_invariance(tiny_model):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(2, 30, 64, generator=g)
    v = torch.randn(2, 5, 48, generator=g)
    am, vm = torch.ones(2, 30), torch.ones(2, 5)
    with torch.no_grad():
        ref = tiny_model.fusion(a, am, v, vm)
        a_pad = torch.cat([a, 100 * torch.randn(2, 7, 64, generator=g)], 1)
        v_pad = torch.cat([v, 100 * torch.randn(2, 4, 48, generator=g)], 1)
        am_pad = torch.cat([am, torch.zeros(2, 7)], 1)
        vm_pad = torch.cat([vm, torch.zeros(2, 4)], 1)
        for outs in (tiny_model.fusion(a_pad, am_pad, v, vm), tiny_model.fusion(a, am, v_pad, vm_pad),
                     tiny_model.fusion(a_pad, am_pad, v_pad, vm_pad)):
            for r, o in zip(ref, outs):
                torch.testing.assert_close(o, r, atol=1e-5, rtol=0)


def test_audio_normalisation_ignores_padding(tiny_model):
    wave = torch.randn(1, 8000) * 3 + 0.5
    padded = torch.cat([wave, torch.zeros(1, 4000)], 1)
    with torch.no_grad():
        h, mask = tiny_model.encode_audio(wave)
        hp, mask_p = tiny_model.encode_audio(padded, torch.tensor([8000]))
    assert mask_p.sum() == mask.sum() == h.shape[1]
    assert hp.shape[1] > h.shape[1]


def test_gradients_reach_trainable_and_spare_frozen(seeded):
    model = FoalNet.from_preset("tiny", freeze_video=True).train()
    out = model.training_step(make_batch(model), generator=seeded)
    assert {"ce", "ce_unimodal", "avel", "mem", "ccc"} <= set(out)
    out["loss"].backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"
        else:
            assert p.grad is None, f"frozen {name} got a gradient"
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("audio_encoder.wavlm.feature_extractor.") for n in frozen)
    assert not any(n.startswith("audio_encoder.wavlm.encoder.") for n in frozen)
    assert all(p.requires_grad is False for p in model.video_encoder.parameters())
    assert not model.video_encoder.visual.training  # a frozen tower stays in eval mode


def test_ten_steps_lower_the_loss(seeded):
    model = FoalNet.from_preset("tiny").train()
    for m in model.modules():  # dropout off, so the comparison measures learning only
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    batch = make_batch(model, batch=8, seconds=0.5, frames=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    first = None
    for _ in range(10):
        loss = model.training_step(batch, generator=torch.Generator().manual_seed(0))["loss"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = float(model.training_step(batch, generator=torch.Generator().manual_seed(0))["loss"].detach())
    assert last < 0.7 * first, (first, last)


def test_loads_real_pretrained_weights(tmp_path, seeded):
    import open_clip
    from transformers import WavLMModel

    cfg = preset("tiny")
    wavlm = WavLMModel(cfg.audio.to_hf())
    wavlm.save_pretrained(tmp_path / "wavlm")
    clip = open_clip.model.CLIP(
        embed_dim=cfg.video.embed_dim, vision_cfg=open_clip.model.CLIPVisionCfg(**cfg.video.vision_cfg()),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=16, vocab_size=100, width=32, heads=2, layers=1))
    torch.save({"state_dict": {f"module.{k}": v for k, v in clip.state_dict().items()}}, tmp_path / "clip.pt")

    model = FoalNet.from_preset("tiny", wavlm=tmp_path / "wavlm", clip=tmp_path / "clip.pt")
    for k, v in wavlm.state_dict().items():
        assert torch.equal(model.audio_encoder.wavlm.state_dict()[k], v), k
    for k, v in clip.visual.state_dict().items():
        assert torch.equal(model.video_encoder.visual.state_dict()[k], v), k


def test_pretrained_mismatch_names_the_preset(tmp_path):
    from transformers import WavLMModel

    WavLMModel(preset("tiny").audio.to_hf()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="preset"):
        FoalNet.from_preset("base", wavlm=tmp_path)


def test_checkpoint_round_trip(tmp_path, tiny_model):
    tiny_model.save(tmp_path / "ckpt")
    loaded = FoalNet.load(tmp_path / "ckpt").eval()
    assert loaded.config == tiny_model.config
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert not list((tmp_path / "ckpt").glob("*.tmp"))


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, tiny_model):
    tiny_model.save(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        FoalNet.load(tmp_path)


def test_a_clip_padded_in_a_batch_keeps_its_wavlm_features(tiny_model):
    """Training pads clips to the longest in the batch; the runtime encodes one clip alone.
    With the attention mask through WavLM both see the same features (without it: ~21%)."""
    g = torch.Generator().manual_seed(3)
    clip = torch.randn(1, 12000, generator=g) * 0.1
    batch = torch.zeros(3, 40000)
    batch[0, :12000] = clip[0]
    batch[1:] = torch.randn(2, 40000, generator=g)
    with torch.no_grad():
        alone = tiny_model.audio_encoder(clip)
        padded = tiny_model.audio_encoder(batch, torch.tensor([12000, 40000, 40000]))
    T = alone.shape[1]
    assert (padded[0, :T] - alone[0]).abs().max() / alone.abs().max() < 1e-5


def test_the_default_avel_temperature_does_not_swamp_the_emotion_loss():
    """At the start of training (the demo's encoders, fresh heads), CLIP's temperature gives
    AVEL many times CE's gradient on the encoders; the reference temperature, the default,
    keeps it below CE's (python -m training.diagnostics measures both)."""
    from training.config import preset
    from training.diagnostics import gradient_ratio, synthetic_batch
    from training.model import FoalNet

    assert preset("tiny").avel_temperature == "reference"
    trained = FoalNet.load("training/demo")
    torch.manual_seed(0)
    model = FoalNet(trained.config)
    for part in ("audio_encoder", "video_encoder"):
        getattr(model, part).load_state_dict(getattr(trained, part).state_dict())
    batch = synthetic_batch(model, 16)
    assert gradient_ratio(model, batch, "reference") < 1 < gradient_ratio(model, batch, "clip")


def test_a_clip_missing_a_modality_trains_only_the_heads_it_can(tiny_model):
    batch = make_batch(tiny_model, batch=4)
    batch["has_audio"] = torch.tensor([True, True, True, True])
    batch["has_video"] = torch.tensor([False, False, False, False])
    out = tiny_model.training_step(batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["ce"].item() == 0.0 and "avel" not in out and "mem" not in out
    out["loss"].backward()
    video_head = [p.grad for p in tiny_model.fusion.video_head.parameters()]
    assert all(g is None or float(g.abs().max()) == 0.0 for g in video_head)
    assert float(tiny_model.fusion.audio_head.linear.weight.grad.abs().max()) > 0


def test_encoder_dropout_follows_the_wavlm_config(tiny_model):
    """The reference applies its WavLM config's final_dropout to both encoders' outputs
    before fusion, AVEL and MEM: transformers' default config (the presets without --wavlm)
    says 0.1; microsoft/wavlm-large's config.json says 0.0. Inference is unaffected."""
    assert tiny_model.audio_encoder.wavlm.config.final_dropout == pytest.approx(0.1)
    assert tiny_model.encoder_dropout.p == pytest.approx(0.1)
    assert FoalNet.from_preset("tiny", encoder_dropout=0.0).encoder_dropout.p == 0.0
    batch = make_batch(tiny_model, batch=4)
    tiny_model.train()
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(1)
    a = tiny_model.training_step(batch, g)["logits"]
    torch.manual_seed(2)
    b = tiny_model.training_step(batch, torch.Generator().manual_seed(0))["logits"]
    assert not torch.allclose(a, b)  # dropout draws differ in training
    tiny_model.eval()
    with torch.no_grad():
        x = tiny_model(batch["waveform"], batch["frames"], batch["video_mask"], batch["audio_lengths"])[0]
        y = tiny_model(batch["waveform"], batch["frames"], batch["video_mask"], batch["audio_lengths"])[0]
    assert torch.equal(x, y)


def test_cached_conv_features_give_the_same_model_output(tiny_model):
    """--cache-audio-conv: the frozen conv extractor's output computed per clip, alone, then
    padded into the batch, gives what the whole model computes from the waveforms."""
    import numpy as np

    from training.data.clips import Clip, collate

    rng = np.random.default_rng(0)
    clips = [Clip(str(i), 1, "x", 0, np.zeros(3, np.float32), rng.normal(0, 0.1, n).astype(np.float32), None,
                  embeddings=rng.normal(size=(8, 48)).astype(np.float32)) for i, n in enumerate([16000, 24000, 9000])]
    cfg = tiny_model.config
    plain = collate(clips, cfg)
    with torch.no_grad():
        ref = tiny_model(plain["waveform"], plain["video_embeddings"], plain["video_mask"], plain["audio_lengths"])
        for c in clips:
            c.conv = tiny_model.audio_encoder.conv_features(torch.from_numpy(c.audio)).numpy()
        cached = collate(clips, cfg)
        got = tiny_model(cached["waveform"], cached["video_embeddings"], cached["video_mask"],
                         cached["audio_lengths"], cached["audio_conv"])
    for r, x in zip(ref, got):
        assert torch.allclose(r, x, atol=1e-5), float((r - x).abs().max())
    # The extractor is restored after the call.
    assert type(tiny_model.audio_encoder.wavlm.feature_extractor).__name__ == "WavLMFeatureEncoder"


def test_reconstruction_lets_one_modality_clips_train_their_encoder(seeded):
    """VAVL's reconstruction task: an audio-only clip's pooled representation reconstructs its
    time-averaged conv features, which trains the WavLM transformer with no label at all."""
    model = FoalNet.from_preset("tiny")
    model.config.loss.reconstruction = 1.0
    model = FoalNet(model.config)  # the decoders exist only with the task on
    for name in ("emotion", "avel", "mem", "attributes"):
        setattr(model.config.loss, name, 0.0)
    batch = make_batch(model, batch=4)
    batch["has_audio"] = torch.tensor([True, True, True, True])
    batch["has_video"] = torch.tensor([False, False, False, False])
    out = model.training_step(batch, torch.Generator().manual_seed(0))
    assert out["reconstruction"].item() > 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    layer = model.audio_encoder.wavlm.encoder.layers[0].attention.k_proj.weight
    assert float(layer.grad.abs().max()) > 0
    model.config.loss.reconstruction = 0.0
    plain = FoalNet(model.config)
    assert not hasattr(plain, "reconstruct_audio")
