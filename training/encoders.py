"""The two encoders: WavLM for audio, the CLIP image tower for video frames.

Both are thin wrappers that fix the interface the rest of the package relies on (and
that export turns into graphs): plain tensors in, plain tensors out.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from .config import AudioConfig, VideoConfig

log = logging.getLogger(__name__)
# transformers' WavLM passes a float position bias with a bool padding mask; torch warns once
# per call site that mixing them is deprecated. The result is right (tests/test_model.py).
warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask and attn_mask")


def conv_output_length(samples: torch.Tensor | int, kernels, strides):
    """Frames WavLM's conv feature extractor makes of `samples` (floor division per layer)."""
    for k, s in zip(kernels, strides):
        samples = (samples - k) // s + 1
    return samples


class _GivenFeatures(nn.Module):
    """Stands in for WavLM's (frozen) conv feature extractor for one call: returns features
    computed earlier (AudioEncoder.conv_features)."""

    def __init__(self, features: torch.Tensor):
        super().__init__()
        self.features = features

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.features


class AudioEncoder(nn.Module):
    """waveform [B, samples] float32 at 16 kHz -> last hidden layer [B, T_a, D_a].

    Each waveform is normalised to zero mean and unit variance inside the module (what
    WavLM's feature extractor does), over its valid samples when `lengths` is given.
    The conv feature extractor is frozen; the transformer is trainable.
    """

    def __init__(self, config: AudioConfig, pretrained: str | Path | None = None):
        super().__init__()
        from transformers import WavLMModel

        self.config = config
        if pretrained is not None:
            # The directory's own config decides the architecture; only the fine-tuning
            # knobs are overridden. It must match the preset, which export and the bundle use.
            # transformers reads model.safetensors, or pytorch_model.bin through
            # torch.load(weights_only=True) (its default): no arbitrary unpickling either way.
            self.wavlm = WavLMModel.from_pretrained(
                str(pretrained), apply_spec_augment=False, mask_time_prob=0.0, layerdrop=0.0)
            got = self.wavlm.config
            for name in ("hidden_size", "num_hidden_layers", "do_stable_layer_norm"):
                if getattr(got, name) != getattr(config, name):
                    raise ValueError(f"{pretrained}: WavLM {name}={getattr(got, name)} but the preset "
                                     f"expects {getattr(config, name)}; pick the matching --preset")
            log.info("WavLM: loaded pretrained weights from %s", pretrained)
        else:
            self.wavlm = WavLMModel(config.to_hf())
            log.warning("WavLM: no pretrained directory given, using RANDOM weights "
                        "(fine for export, parity and latency; not for accuracy)")
        self.wavlm.freeze_feature_encoder()
        # Only used by SpecAugment, which we disable: freeze it so it is not "trainable but gradient-free".
        if getattr(self.wavlm, "masked_spec_embed", None) is not None:
            self.wavlm.masked_spec_embed.requires_grad_(False)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return conv_output_length(lengths, self.config.conv_kernel, self.config.conv_stride)

    @property
    def final_dropout(self) -> float:
        """The WavLM config's final_dropout (what the reference applies to the encoder output)."""
        return float(getattr(self.wavlm.config, "final_dropout", 0.0) or 0.0)

    def normalise(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Zero mean, unit variance over each clip's valid samples; padding stays zero."""
        if lengths is None:
            mean = waveform.mean(dim=1, keepdim=True)
            var = waveform.var(dim=1, keepdim=True, unbiased=False)
            return (waveform - mean) / torch.sqrt(var + 1e-7)
        valid = (torch.arange(waveform.shape[1], device=waveform.device)[None, :] < lengths[:, None])
        n = valid.sum(dim=1, keepdim=True).clamp(min=1).to(waveform.dtype)
        fvalid = valid.to(waveform.dtype)
        mean = (waveform * fvalid).sum(dim=1, keepdim=True) / n
        var = (((waveform - mean) * fvalid) ** 2).sum(dim=1, keepdim=True) / n
        return (waveform - mean) / torch.sqrt(var + 1e-7) * fvalid

    @torch.no_grad()
    def conv_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """The frozen conv feature extractor's output for ONE unpadded clip [S] -> [C, T].
        Training with a frozen extractor can compute these once per run and pass them to
        forward(conv_features=...) (train --cache-audio-conv): the conv is local, so a clip's
        valid frames are the same alone and padded in a batch."""
        return self.wavlm.feature_extractor(self.normalise(waveform[None]))[0]

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None,
                with_features: bool = False, conv_features: torch.Tensor | None = None):
        """-> last hidden layer [B, T_a, D_a]; with `with_features`, also the conv feature
        extractor's output after its LayerNorm [B, T_a, C] (the transformer's input features,
        which VAVL's reconstruction task reconstructs). `conv_features` [B, C, T]: the conv
        extractor's output computed earlier (see conv_features), which skips it."""
        if conv_features is not None:
            extractor = self.wavlm.feature_extractor
            self.wavlm.feature_extractor = _GivenFeatures(conv_features)
            try:
                mask = None if lengths is None else (
                    torch.arange(waveform.shape[1], device=waveform.device)[None, :] < lengths[:, None]).long()
                out = self.wavlm(waveform, attention_mask=mask)
            finally:
                self.wavlm.feature_extractor = extractor
            return (out.last_hidden_state, out.extract_features) if with_features else out.last_hidden_state
        # waveform: [B, S]
        if lengths is None:
            mean = waveform.mean(dim=1, keepdim=True)
            var = waveform.var(dim=1, keepdim=True, unbiased=False)
            x = (waveform - mean) / torch.sqrt(var + 1e-7)
            out = self.wavlm(x)
            return (out.last_hidden_state, out.extract_features) if with_features else out.last_hidden_state
        valid = (torch.arange(waveform.shape[1], device=waveform.device)[None, :] < lengths[:, None])
        n = valid.sum(dim=1, keepdim=True).clamp(min=1).to(waveform.dtype)
        fvalid = valid.to(waveform.dtype)  # [B, S]
        mean = (waveform * fvalid).sum(dim=1, keepdim=True) / n
        var = (((waveform - mean) * fvalid) ** 2).sum(dim=1, keepdim=True) / n
        x = (waveform - mean) / torch.sqrt(var + 1e-7) * fvalid  # padding stays zero
        # The attention mask keeps padded frames out of self-attention and the relative
        # position bias: a clip padded in a batch gets the features it gets alone (which is
        # what the runtime computes, one clip at a time, unpadded).
        out = self.wavlm(x, attention_mask=valid.long())
        return (out.last_hidden_state, out.extract_features) if with_features else out.last_hidden_state


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint as tensors, through safetensors or torch.load(weights_only=True): never pickle."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}


class VideoEncoder(nn.Module):
    """frames [N, 3, 224, 224] (CLIP-normalised) -> pooled, projected embeddings [N, D_v].

    The open_clip image tower only; the text tower is never built. Frozen unless the
    preset trains it (the tiny demo does: a random frozen tower carries too little).
    """

    def __init__(self, config: VideoConfig, pretrained: str | Path | None = None, frozen: bool = True):
        super().__init__()
        from open_clip.model import CLIPVisionCfg, _build_vision_tower

        self.config = config
        self.frozen = frozen
        self.visual = _build_vision_tower(config.embed_dim, CLIPVisionCfg(**config.vision_cfg()),
                                          quick_gelu=config.quick_gelu)
        if pretrained is not None:
            state = _read_state_dict(Path(pretrained))
            visual = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
            if not visual:
                raise ValueError(f"{pretrained}: no 'visual.*' weights found; is this an open_clip/CLIP checkpoint?")
            self.visual.load_state_dict(visual, strict=True)
            log.info("CLIP: loaded image tower weights from %s", pretrained)
        else:
            log.warning("CLIP: no checkpoint given, using RANDOM weights "
                        "(fine for export, parity and latency; not for accuracy)")
        if frozen:
            self.visual.requires_grad_(False)
            self.visual.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.visual.eval()  # a frozen tower stays in inference mode
        return self

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.visual(frames)  # [N, D_v]
