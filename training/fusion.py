"""Foal-Net's fusion head: two cross-attention stacks, audio->video and video->audio.

The deployable part of the classifier. Besides the fused emotion logits it predicts from
each modality alone (VAVL's idea), so that a robot that hears no speech or sees no face
still gets an answer, and optionally valence/arousal/dominance.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import FusionConfig

# Masked attention scores. Large enough that exp() underflows to exactly 0 in FP32,
# small enough to stay finite in FP16.
MASK_VALUE = -1.0e4


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x [B, T, D] over positions where mask [B, T] is 1."""
    mask = mask.to(x.dtype).unsqueeze(-1)  # [B, T, 1]
    return (x * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class CrossAttentionLayer(nn.Module):
    """Queries from one modality attend over the other. No feed-forward (as the paper).

    q, k, v linear -> scaled dot-product attention with key padding mask -> output
    linear -> dropout -> LayerNorm(out + residual).
    """

    def __init__(self, d_query: int, d_key: int, heads: int, dropout: float):
        super().__init__()
        if d_query % heads:
            raise ValueError(f"query width {d_query} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = d_query // heads
        self.q = nn.Linear(d_query, d_query)
        self.k = nn.Linear(d_key, d_query)  # projects the other modality to the query width
        self.v = nn.Linear(d_key, d_query)
        self.out = nn.Linear(d_query, d_query)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_query)

    def forward(self, query: torch.Tensor, key: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        # query [B, Tq, Dq], key [B, Tk, Dk], key_mask [B, Tk] (1 = valid)
        B, Tq, _ = query.shape
        Tk = key.shape[1]
        q = self.q(query).view(B, Tq, self.heads, self.head_dim).transpose(1, 2)  # [B, H, Tq, hd]
        k = self.k(key).view(B, Tk, self.heads, self.head_dim).transpose(1, 2)  # [B, H, Tk, hd]
        v = self.v(key).view(B, Tk, self.heads, self.head_dim).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # [B, H, Tq, Tk]
        pad = key_mask[:, None, None, :] < 0.5
        scores = scores.masked_fill(pad, MASK_VALUE)
        attn = scores.softmax(dim=-1)
        ctx = (attn @ v).transpose(1, 2).reshape(B, Tq, -1)  # [B, Tq, Dq]
        return self.norm(self.dropout(self.out(ctx)) + query)


class CrossAttentionStack(nn.Module):
    def __init__(self, d_query: int, d_key: int, cfg: FusionConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            CrossAttentionLayer(d_query, d_key, cfg.heads, cfg.dropout) for _ in range(cfg.layers))

    def forward(self, query, query_mask, key, key_mask) -> torch.Tensor:
        x = query
        for layer in self.layers:
            x = layer(x, key, key_mask)
        return masked_mean(x, query_mask)  # [B, Dq], pooled over valid queries


class UnimodalHead(nn.Module):
    def __init__(self, d_in: int, num_classes: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_in)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(d_in, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(self.norm(pooled)))


class FusionHead(nn.Module):
    """(audio hidden, audio mask, frame embeddings, video mask) -> logits.

    audio [B, T_a, D_a], audio_mask [B, T_a], video [B, T_v, D_v], video_mask [B, T_v];
    masks are 1 for valid positions, 0 for padding. Returns (logits, audio_logits,
    video_logits[, attributes]): [B, C], [B, C], [B, C][, [B, 3]].
    """

    def __init__(self, d_audio: int, d_video: int, cfg: FusionConfig):
        super().__init__()
        self.cfg = cfg
        self.a2v = CrossAttentionStack(d_audio, d_video, cfg)
        self.v2a = CrossAttentionStack(d_video, d_audio, cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(d_audio + d_video, cfg.num_classes)
        self.audio_head = UnimodalHead(d_audio, cfg.num_classes, cfg.dropout)
        self.video_head = UnimodalHead(d_video, cfg.num_classes, cfg.dropout)
        self.attribute_head = nn.Linear(d_audio + d_video, 3) if cfg.attributes else None

    @property
    def output_names(self) -> tuple[str, ...]:
        names = ("logits", "audio_logits", "video_logits")
        return names + ("attributes",) if self.attribute_head is not None else names

    def cross(self, audio, audio_mask, video, video_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Both cross-attention stacks, pooled: ([B, D_a], [B, D_v]). MEM reuses this."""
        return (self.a2v(audio, audio_mask, video, video_mask),
                self.v2a(video, video_mask, audio, audio_mask))

    def forward(self, audio, audio_mask, video, video_mask):
        pooled_a, pooled_v = self.cross(audio, audio_mask, video, video_mask)
        fused = self.dropout(torch.cat([pooled_a, pooled_v], dim=-1))  # [B, D_a + D_v]
        outputs = (
            self.classifier(fused),
            self.audio_head(masked_mean(audio, audio_mask)),
            self.video_head(masked_mean(video, video_mask)),
        )
        if self.attribute_head is not None:
            outputs = outputs + (self.attribute_head(fused),)
        return outputs
