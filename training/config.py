"""Foal-Net configuration: the presets and the constants every stage shares.

This is the one place that knows the emotion labels, the audio window and the CLIP
preprocessing constants. Export copies them into the bundle manifest, and the runtime
(`foal_edge`) reads them from there, so the runtime never needs this module (or torch).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

# IEMOCAP's usual four classes; "excited" is merged into "happy" by the data reader.
EMOTION_LABELS: tuple[str, ...] = ("neutral", "happy", "angry", "sad")
ATTRIBUTE_NAMES: tuple[str, ...] = ("valence", "arousal", "dominance")

# CLIP image preprocessing (OpenAI CLIP; open_clip's OPENAI_DATASET_MEAN/STD).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

SAMPLE_RATE = 16_000


@dataclass
class AudioConfig:
    """WavLM encoder. Field names follow `transformers.WavLMConfig`."""

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    feat_extract_norm: str = "layer"  # "layer" for Large, "group" for Base+
    do_stable_layer_norm: bool = True  # pre-LN transformer (Large)
    conv_bias: bool = True
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    num_buckets: int = 320
    max_bucket_distance: int = 800

    def to_hf(self):
        from transformers import WavLMConfig

        return WavLMConfig(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            conv_dim=list(self.conv_dim),
            conv_kernel=list(self.conv_kernel),
            conv_stride=list(self.conv_stride),
            feat_extract_norm=self.feat_extract_norm,
            do_stable_layer_norm=self.do_stable_layer_norm,
            conv_bias=self.conv_bias,
            num_conv_pos_embeddings=self.num_conv_pos_embeddings,
            num_conv_pos_embedding_groups=self.num_conv_pos_embedding_groups,
            num_buckets=self.num_buckets,
            max_bucket_distance=self.max_bucket_distance,
            # Deterministic fine-tuning: no SpecAugment, no LayerDrop (docs/training-departures.md).
            apply_spec_augment=False,
            mask_time_prob=0.0,
            layerdrop=0.0,
        )


@dataclass
class VideoConfig:
    """CLIP image tower. Field names follow open_clip's model configs."""

    embed_dim: int = 768  # pooled, projected frame embedding
    image_size: int = 224
    layers: int = 24
    width: int = 1024
    patch_size: int = 14
    head_width: int = 64
    quick_gelu: bool = False  # True for OpenAI's original weights ("-quickgelu" names)
    pool_type: str = "tok"  # CLIP pools the class token; "avg" pools the patch tokens

    @property
    def heads(self) -> int:
        return self.width // self.head_width

    def vision_cfg(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "layers": self.layers,
            "width": self.width,
            "patch_size": self.patch_size,
            "head_width": self.head_width,
            "pool_type": self.pool_type,
        }


@dataclass
class FusionConfig:
    heads: int = 4
    layers: int = 2
    dropout: float = 0.1
    num_classes: int = len(EMOTION_LABELS)
    attributes: bool = False  # valence/arousal/dominance head


@dataclass
class LossWeights:
    """loss = emotion * (CE + unimodal * (CE_audio + CE_video) / 2) + avel * AVEL + mem * MEM
    + attributes * CCC."""

    emotion: float = 1.0
    avel: float = 1.0
    mem: float = 0.1
    unimodal: float = 1.0
    attributes: float = 1.0
    # VAVL's unimodal reconstruction (0: off): each modality's own representation reconstructs
    # the time-averaged input features of that modality (FoalNet.training_step).
    reconstruction: float = 0.0
    # Atmaja & Akagi's search result for (arousal, valence, dominance) is (0.7, 0.2, 1.0);
    # our attribute order is (valence, arousal, dominance).
    ccc: tuple[float, float, float] = (0.2, 0.7, 1.0)


@dataclass
class FoalConfig:
    preset: str
    audio: AudioConfig
    video: VideoConfig
    fusion: FusionConfig = field(default_factory=FusionConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    avel_dim: int = 512
    # "reference": logits / scale with scale initialised to ln(1/0.07) (the reference code): the
    # default, since "clip" (logits * exp(scale), clamped at ln(100), CLIP's convention) gives
    # AVEL 11-12x the emotion CE's gradient on the encoders (README, training section).
    avel_temperature: str = "reference"
    # MEM's "same emotion?" heads. "linear" is the paper's Linear(d, 2) on the mean-pooled
    # cross-attention output; "mlp" (Linear-GELU-Linear) is a more capable alternative. Each
    # cross-attention layer ends in LayerNorm(out + residual), which is not additive, so the
    # pooled output need not be "audio part + video part" and "same emotion?" can be linearly
    # separable after it (tests/test_losses.py); whether MEM learns is measured, not argued
    # (docs/training-departures.md).
    mem_head: str = "linear"
    # Dropout on the encoder outputs before fusion, AVEL and MEM. None: the WavLM config's
    # final_dropout, as the reference applies it (0.0 in microsoft/wavlm-large's config.json,
    # 0.1 in transformers' default WavLMConfig, which the presets without --wavlm use).
    encoder_dropout: float | None = None
    labels: tuple[str, ...] = EMOTION_LABELS
    sample_rate: int = SAMPLE_RATE
    audio_seconds: float = 6.0
    frames_per_clip: int = 180
    freeze_video: bool = True  # the paper freezes CLIP
    clip_mean: tuple[float, float, float] = CLIP_MEAN
    clip_std: tuple[float, float, float] = CLIP_STD

    @property
    def audio_samples(self) -> int:
        return int(round(self.audio_seconds * self.sample_rate))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FoalConfig":
        d = dict(d)
        tuples = lambda sub, names: {k: tuple(v) if k in names else v for k, v in sub.items()}  # noqa: E731
        return cls(
            preset=d.pop("preset"),
            audio=AudioConfig(**tuples(d.pop("audio"), {"conv_dim", "conv_kernel", "conv_stride"})),
            video=VideoConfig(**d.pop("video")),
            fusion=FusionConfig(**d.pop("fusion")),
            loss=LossWeights(**tuples(d.pop("loss"), {"ccc"})),
            **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()},
        )


def _large() -> FoalConfig:
    # WavLM Large + CLIP ViT-L/14, exactly as the paper.
    return FoalConfig(preset="large", audio=AudioConfig(), video=VideoConfig())


def _base() -> FoalConfig:
    # WavLM Base+ (post-LN, group-norm conv) + CLIP ViT-B/16.
    return FoalConfig(
        preset="base",
        audio=AudioConfig(
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            feat_extract_norm="group",
            do_stable_layer_norm=False,
            conv_bias=False,
        ),
        video=VideoConfig(embed_dim=512, layers=12, width=768, patch_size=16),
    )


def _tiny() -> FoalConfig:
    # A few small layers: fast enough to train on two CPU cores (tests and the demo).
    return FoalConfig(
        preset="tiny",
        audio=AudioConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            conv_dim=(32,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
            num_buckets=32,
            max_bucket_distance=64,
        ),
        # Mean-pooled patch tokens: a small tower trained from scratch learns far faster than with
        # the class token (measured on the synthetic corpus).
        video=VideoConfig(embed_dim=48, layers=2, width=64, patch_size=32, head_width=16, pool_type="avg"),
        fusion=FusionConfig(attributes=True),
        avel_dim=32,
        audio_seconds=3.0,
        frames_per_clip=8,
        # A random frozen tower carries too little: the demo trains its small video tower.
        freeze_video=False,
    )


PRESETS = {"large": _large, "base": _base, "tiny": _tiny}


def preset(name: str) -> FoalConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
