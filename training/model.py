"""Foal-Net: WavLM + CLIP encoders, the cross-attention fusion head, and the two
training-only auxiliary tasks (AVEL alignment, MEM label matching).

The three deployable sub-modules are `audio_encoder`, `video_encoder` and `fusion`;
export and the eager benchmark use exactly these.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import losses
from .config import FoalConfig, preset as get_preset
from .encoders import AudioEncoder, VideoEncoder
from .fusion import FusionHead, masked_mean

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def write_text(path: Path, text: str) -> None:
    """Atomically: a temporary file beside `path`, then renamed over it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_safetensors(tensors: dict, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Atomically: a temporary file beside `path`, flushed to disk, then renamed over it, so
    a kill or a power cut leaves the old file or the new one, never half of one. The file
    gets the permissions any file the user writes gets (safetensors itself creates 0600)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.touch()
    mode = stat.S_IMODE(tmp.stat().st_mode)  # what the umask gives
    save_file(tensors, str(tmp), metadata=metadata)
    os.chmod(tmp, mode)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


class AlignmentProjection(nn.Module):
    """AVEL's projection to the shared space: e1 = W1 x; LayerNorm(e1 + Dropout(W2 GELU(e1)))."""

    def __init__(self, d_in: int, d_out: int, dropout: float = 0.5):
        super().__init__()
        self.proj = nn.Linear(d_in, d_out, bias=False)
        self.fc = nn.Linear(d_out, d_out, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.proj(x)
        return F.normalize(self.norm(e1 + self.dropout(self.fc(F.gelu(e1)))), dim=-1)


def matching_head(d_in: int, kind: str) -> nn.Module:
    """MEM's binary "same emotion?" head (FoalConfig.mem_head)."""
    if kind == "linear":
        return nn.Linear(d_in, 2)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(d_in, d_in), nn.GELU(), nn.Linear(d_in, 2))
    raise ValueError(f"mem_head must be 'linear' or 'mlp', not {kind!r}")


class FoalNet(nn.Module):
    def __init__(self, config: FoalConfig, wavlm: str | Path | None = None, clip: str | Path | None = None):
        super().__init__()
        self.config = config
        self.audio_encoder = AudioEncoder(config.audio, pretrained=wavlm)
        self.video_encoder = VideoEncoder(config.video, pretrained=clip, frozen=config.freeze_video)
        d_a, d_v = config.audio.hidden_size, config.video.embed_dim
        self.fusion = FusionHead(d_a, d_v, config.fusion)
        # Training-only heads.
        self.avel_audio = AlignmentProjection(d_a, config.avel_dim)
        self.avel_video = AlignmentProjection(d_v, config.avel_dim)
        self.avel_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.mem_audio = matching_head(d_a, config.mem_head)
        self.mem_video = matching_head(d_v, config.mem_head)
        # The reference's dropout on both encoders' outputs (its WavLM config's final_dropout).
        p = self.audio_encoder.final_dropout if config.encoder_dropout is None else config.encoder_dropout
        self.encoder_dropout = nn.Dropout(p)
        if config.loss.reconstruction > 0:  # VAVL's unimodal reconstruction decoders
            d_feat = config.audio.conv_dim[-1]
            self.reconstruct_audio = nn.Sequential(nn.Linear(d_a, d_a), nn.GELU(), nn.Linear(d_a, d_feat))
            self.reconstruct_video = nn.Sequential(nn.Linear(d_v, d_v), nn.GELU(), nn.Linear(d_v, d_v))

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, wavlm: str | Path | None = None, clip: str | Path | None = None,
                    **overrides) -> "FoalNet":
        """Build a preset; `wavlm` is a local Hugging Face directory, `clip` an open_clip
        checkpoint file. Missing encoders get random weights (logged)."""
        config = get_preset(name)
        for key, value in overrides.items():
            if not hasattr(config, key):
                raise ValueError(f"unknown config field {key!r}")
            setattr(config, key, value)
        return cls(config, wavlm=wavlm, clip=clip)

    def save(self, directory: str | Path) -> None:
        """config.json + model.safetensors, each written atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_text(directory / CONFIG_FILE, self.config.to_json())
        write_safetensors({k: v.detach().contiguous() for k, v in self.state_dict().items()},
                          directory / WEIGHTS_FILE)

    @classmethod
    def load(cls, directory: str | Path) -> "FoalNet":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory}: no {name}; a checkpoint is a directory written "
                                        "by training (config.json + model.safetensors)")
        config = FoalConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
        quiet = logging.getLogger("training.encoders")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # weights come from the checkpoint, not random
        try:
            model = cls(config)
        finally:
            quiet.setLevel(level)
        try:
            state = load_file(str(directory / WEIGHTS_FILE))
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{directory / WEIGHTS_FILE} is corrupt or truncated ({exc}); "
                             "re-copy it or retrain") from exc
        model.load_state_dict(state, strict=True)
        return model

    # -- forward ------------------------------------------------------------------------
    def encode_audio(self, waveform, lengths=None, with_features: bool = False, conv=None):
        """-> (hidden [B, T_a, D_a], mask [B, T_a]) (+ the conv features with `with_features`);
        `conv` [B, C, T]: precomputed conv extractor output (AudioEncoder.conv_features)."""
        hidden = self.audio_encoder(waveform, lengths, with_features=with_features, conv_features=conv)
        if with_features:
            hidden, features = hidden
            return (*self.encode_audio_mask(hidden, lengths), features)
        return self.encode_audio_mask(hidden, lengths)

    def encode_audio_mask(self, hidden, lengths):
        if lengths is None:
            mask = hidden.new_ones(hidden.shape[:2])
        else:
            frames = self.audio_encoder.frame_lengths(lengths).clamp(min=1)
            mask = (torch.arange(hidden.shape[1], device=hidden.device)[None] < frames[:, None]).to(hidden.dtype)
        return hidden, mask

    def encode_video(self, frames):
        """frames [B, T, 3, H, W] -> embeddings [B, T, D_v]"""
        B, T = frames.shape[:2]
        return self.video_encoder(frames.flatten(0, 1)).view(B, T, -1)

    def forward(self, waveform, video, video_mask, audio_lengths=None, audio_conv=None):
        """Inference: `video` is frames [B, T, 3, H, W] or embeddings [B, T, D_v]."""
        audio, audio_mask = self.encode_audio(waveform, audio_lengths, conv=audio_conv)
        if video.dim() == 5:
            video = self.encode_video(video)
        return self.fusion(audio, audio_mask, video, video_mask.to(audio.dtype))

    def training_step(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """One step's losses and logits. `batch`: waveform [B, S], audio_lengths [B],
        frames [B, T, 3, H, W] or video_embeddings [B, T, D_v], video_mask [B, T],
        labels [B], and attributes [B, 3] when the attribute head is trained."""
        cfg, w = self.config, self.config.loss
        reconstruct = w.reconstruction > 0
        encoded = self.encode_audio(batch["waveform"], batch.get("audio_lengths"), with_features=reconstruct,
                                    conv=batch.get("audio_conv"))
        audio, audio_mask = encoded[:2]
        video = batch["video_embeddings"] if "video_embeddings" in batch else self.encode_video(batch["frames"])
        video_mask = batch["video_mask"].to(audio.dtype)
        labels = batch["labels"]
        # Missing modalities (VAVL's setting): a clip trains the heads it can. has_audio /
        # has_video are absent when every clip has both.
        has_a = batch.get("has_audio", torch.ones_like(labels, dtype=torch.bool))
        has_v = batch.get("has_video", torch.ones_like(labels, dtype=torch.bool))
        both = has_a & has_v
        recon_targets = None
        if reconstruct:  # time-averaged input features, before dropout (targets, not trained)
            recon_targets = (masked_mean(encoded[2], audio_mask).detach(), masked_mean(video, video_mask).detach())
        # The reference's final dropout on both encoders' outputs, before fusion, AVEL and MEM.
        audio, video = self.encoder_dropout(audio), self.encoder_dropout(video)

        outputs = self.fusion(audio, audio_mask, video, video_mask)
        logits, audio_logits, video_logits = outputs[:3]
        out = {"logits": logits, "audio_logits": audio_logits, "video_logits": video_logits}
        zero = logits.sum() * 0.0  # keeps the graph (and DDP) happy when a part has no clips
        ce = lambda x, keep: F.cross_entropy(x[keep], labels[keep]) if keep.any() else zero  # noqa: E731
        out["ce"] = ce(logits, both)
        out["ce_unimodal"] = 0.5 * (ce(audio_logits, has_a) + ce(video_logits, has_v))
        total = w.emotion * (out["ce"] + w.unimodal * out["ce_unimodal"])
        if reconstruct:
            # VAVL's unimodal reconstruction: each modality's own representation (its mean-pooled
            # encoder output after its unimodal head's LayerNorm, which the fused path shares)
            # reconstructs that modality's time-averaged input features (the WavLM conv features;
            # the frame embeddings). A clip with one modality trains its encoder through it.
            rep_a = self.fusion.audio_head.norm(masked_mean(audio, audio_mask))
            rep_v = self.fusion.video_head.norm(masked_mean(video, video_mask))
            mse = lambda x, y, keep: F.mse_loss(x[keep], y[keep]) if keep.any() else zero  # noqa: E731
            out["reconstruction"] = 0.5 * (mse(self.reconstruct_audio(rep_a), recon_targets[0], has_a)
                                           + mse(self.reconstruct_video(rep_v), recon_targets[1], has_v))
            total = total + w.reconstruction * out["reconstruction"]
        if not both.all():  # the auxiliary tasks pair the modalities: clips with both only
            audio, audio_mask, video, video_mask, labels = (
                audio[both], audio_mask[both], video[both], video_mask[both], labels[both])

        if (w.avel > 0 or w.mem > 0) and len(labels) > 1:
            pa = self.avel_audio(masked_mean(audio, audio_mask))
            pv = self.avel_video(masked_mean(video, video_mask))
            pa_all, pv_all, labels_all = (losses.gather_across_ranks(pa), losses.gather_across_ranks(pv),
                                          losses.gather_across_ranks(labels))
            avel, _ = losses.avel_loss(pa_all, pv_all, labels_all, self.avel_scale, cfg.avel_temperature)
            if w.avel > 0:
                out["avel"] = avel
                # What AVEL is when the similarities say nothing (a uniform softmax): each row's
                # positives x ln(columns). Below it, audio and video align by emotion.
                positives = losses.label_targets(labels).sum(dim=1)
                out["avel_uniform"] = (positives * math.log(len(labels))).mean()
                total = total + w.avel * avel
            if w.mem > 0:
                # Negatives from the whole batch, over all ranks under torchrun (as the reference):
                # this rank's audio against every video, its video against every audio.
                candidates = None
                if len(labels_all) > len(labels):
                    candidates = (*losses.gather_padded(audio, audio_mask), *losses.gather_padded(video, video_mask),
                                  labels_all)
                with torch.no_grad():
                    s_av = losses.similarity_logits(pa, pv_all, self.avel_scale, cfg.avel_temperature)
                    s_va = (s_av.t() if candidates is None
                            else losses.similarity_logits(pv, pa_all, self.avel_scale, cfg.avel_temperature))
                mem = losses.mem_loss(self.fusion, audio, audio_mask, video, video_mask, labels,
                                      s_av, self.mem_audio, self.mem_video, generator, s_va=s_va,
                                      candidates=candidates)
                if mem is not None:  # None: a single-label batch has no negatives
                    out["mem"] = mem
                    total = total + w.mem * mem

        if len(outputs) > 3:
            out["attributes"] = outputs[3]
            if "attributes" in batch and w.attributes > 0 and int(both.sum()) > 1:
                out["ccc"] = losses.ccc_loss(outputs[3][both], batch["attributes"][both], w.ccc)
                total = total + w.attributes * out["ccc"]
        out["loss"] = total
        return out

    def parameter_counts(self) -> dict[str, int]:
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {"audio_encoder": count(self.audio_encoder), "video_encoder": count(self.video_encoder),
                "fusion": count(self.fusion), "total": count(self)}
