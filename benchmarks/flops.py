"""Analytic FLOP counts of Foal-Net's three deployable stages, from the model config alone.

Convention: FLOPs = 2 x multiply-accumulates of every matrix product and convolution the
forward pass computes (linear layers, the convolutions at the lengths they are computed,
attention scores Q K^T and attention x V, WavLM's relative-position gate projection). Not
counted: bias additions, norms, activations, softmax, residual additions, the position-bias
gating and pooling: elementwise work, well under 1% of each stage at the base and large
presets (more in the tiny preset's narrow towers).
This is the convention of torch's `FlopCounterMode`, which tests/test_flops.py checks these
counts against on the tiny and base towers (with the fused attention fast paths off, which
that counter does not see into).

The counts need no model, no weights and no torch: the latency harness uses them for its
GFLOP and share-of-peak columns, and `python -m benchmarks.flops --preset large` prints them.
"""

from __future__ import annotations

import argparse
import sys

from foal_edge.preprocess import min_samples
from training.config import SAMPLE_RATE, AudioConfig, FoalConfig, FusionConfig, VideoConfig
from training.config import preset as get_preset


def _linear(rows: int, d_in: int, d_out: int) -> int:
    return 2 * rows * d_in * d_out


def _attention(t_query: int, t_key: int, width: int) -> int:
    """Q K^T and attention x V over all heads: each 2 * Tq * Tk * width."""
    return 2 * (2 * t_query * t_key * width)


def _too_short(cfg: AudioConfig, samples: int) -> ValueError:
    need = min_samples(cfg.conv_kernel, cfg.conv_stride)
    return ValueError(f"{samples} samples are too short for WavLM's feature extractor (it needs at least {need})")


def audio_frames(cfg: AudioConfig, samples: int) -> int:
    """Frames WavLM's conv feature extractor makes of `samples` (floor per layer, no padding)."""
    n = samples
    for k, s in zip(cfg.conv_kernel, cfg.conv_stride):
        n = (n - k) // s + 1
    if n < 1:
        raise _too_short(cfg, samples)
    return n


def audio_flops(cfg: AudioConfig, samples: int) -> dict[str, int]:
    """WavLM on one waveform of `samples`: FLOPs per part (sum them for the stage)."""
    out: dict[str, int] = {}
    length, c_in = samples, 1
    conv = 0
    for i, (c_out, k, s) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)):
        length = (length - k) // s + 1
        if length < 1:
            raise _too_short(cfg, samples)
        out[f"feature_conv{i}"] = 2 * length * c_out * c_in * k
        conv += out[f"feature_conv{i}"]
        c_in = c_out
    t, d, h = length, cfg.hidden_size, cfg.num_attention_heads
    out["feature_projection"] = _linear(t, cfg.conv_dim[-1], d)
    # Grouped conv, padding k // 2 on both sides: k even computes T + 1 positions (the last is cut).
    k, g = cfg.num_conv_pos_embeddings, cfg.num_conv_pos_embedding_groups
    out["positional_conv"] = 2 * (t + 2 * (k // 2) - k + 1) * d * (d // g) * k
    n = cfg.num_hidden_layers
    out["qkv_out_projections"] = n * 4 * _linear(t, d, d)
    out["attention_scores_and_values"] = n * _attention(t, t, d)
    # The gate of the relative position bias: Linear(head_dim, 8) on every head's vector.
    out["relative_position_gate"] = n * _linear(t * h, d // h, 8)
    out["ffn"] = n * (_linear(t, d, cfg.intermediate_size) + _linear(t, cfg.intermediate_size, d))
    return out


def video_flops(cfg: VideoConfig, frames: int = 1, mlp_ratio: float = 4.0) -> dict[str, int]:
    """The CLIP image tower on `frames` frames of cfg.image_size: FLOPs per part."""
    grid = cfg.image_size // cfg.patch_size
    n_tok, w = grid * grid + 1, cfg.width  # patches + the class token
    hidden = int(w * mlp_ratio)
    per_frame = {
        "patch_embedding": 2 * grid * grid * w * 3 * cfg.patch_size ** 2,
        "qkv_out_projections": cfg.layers * 4 * _linear(n_tok, w, w),
        "attention_scores_and_values": cfg.layers * _attention(n_tok, n_tok, w),
        "mlp": cfg.layers * (_linear(n_tok, w, hidden) + _linear(n_tok, hidden, w)),
        "projection": _linear(1, w, cfg.embed_dim),
    }
    return {k: v * frames for k, v in per_frame.items()}


def fusion_flops(cfg: FusionConfig, d_audio: int, d_video: int, t_audio: int, t_video: int) -> dict[str, int]:
    """The fusion head on T_a audio frames and T_v frame embeddings: FLOPs per part."""

    def cross_layer(t_q: int, d_q: int, t_k: int, d_k: int) -> int:
        return (_linear(t_q, d_q, d_q) + 2 * _linear(t_k, d_k, d_q)  # q; k and v to the query width
                + _attention(t_q, t_k, d_q) + _linear(t_q, d_q, d_q))  # scores, x V; output

    c = cfg.num_classes
    out = {
        "audio_to_video": cfg.layers * cross_layer(t_audio, d_audio, t_video, d_video),
        "video_to_audio": cfg.layers * cross_layer(t_video, d_video, t_audio, d_audio),
        "heads": (_linear(1, d_audio + d_video, c) + _linear(1, d_audio, c) + _linear(1, d_video, c)
                  + (_linear(1, d_audio + d_video, 3) if cfg.attributes else 0)),
    }
    return out


def stage_flops(config: FoalConfig, samples: int, frames: int = 1, fusion_frames: int | None = None) -> dict[str, int]:
    """{"audio", "video", "fusion"}: each stage's total for one waveform of `samples`, `frames`
    frames through the image tower, and fusion over `fusion_frames` embeddings (default `frames`)."""
    t_a = audio_frames(config.audio, samples)
    return {
        "audio": sum(audio_flops(config.audio, samples).values()),
        "video": sum(video_flops(config.video, frames).values()),
        "fusion": sum(fusion_flops(config.fusion, config.audio.hidden_size, config.video.embed_dim,
                                   t_a, frames if fusion_frames is None else fusion_frames).values()),
    }


def report(config: FoalConfig, seconds: float, frames: int) -> str:
    samples = int(round(seconds * SAMPLE_RATE))
    t_a = audio_frames(config.audio, samples)
    parts = [(f"audio ({seconds:g} s, {samples} samples, T_a={t_a})", audio_flops(config.audio, samples)),
             (f"video ({frames} frame{'s' * (frames != 1)} of {config.video.image_size}px)",
              video_flops(config.video, frames)),
             (f"fusion (T_a={t_a}, T_v={frames})",
              fusion_flops(config.fusion, config.audio.hidden_size, config.video.embed_dim, t_a, frames))]
    lines = [f"preset {config.preset}: GFLOP (2 x multiply-accumulates of matmuls and convolutions)"]
    total = 0
    for title, part in parts:
        stage = sum(part.values())
        total += stage
        lines.append(f"{title}: {stage / 1e9:.3f}")
        lines += [f"    {name}: {v / 1e9:.3f}" for name, v in part.items()]
    lines.append(f"total: {total / 1e9:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.flops", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="large", help="large, base or tiny (default: large)")
    p.add_argument("--audio-seconds", type=float, default=6.0)
    p.add_argument("--frames", type=int, default=1, help="frames through the image tower (and into fusion)")
    args = p.parse_args(argv)
    try:
        config = get_preset(args.preset)
        if args.frames < 1:
            raise ValueError("--frames must be at least 1")
        print(report(config, args.audio_seconds, args.frames))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
