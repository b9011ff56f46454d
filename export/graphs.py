"""The three deployable graphs, in one place: which sub-module, which inputs and outputs,
which dimensions are dynamic, and an example input for tracing.

| graph | inputs | outputs |
| --- | --- | --- |
| audio | waveform float32 [B, samples] (16 kHz; normalised inside) | hidden [B, T_a, D_a] |
| video | frames float32 [N, 3, S, S] (CLIP-normalised) | embeddings [N, D_v] |
| fusion | audio [B, T_a, D_a], audio_mask [B, T_a], video [B, T_v, D_v], video_mask [B, T_v] | logits, audio_logits, video_logits [B, C] (+ attributes [B, 3]) |

and a fourth, small one for the GPU: `preprocess` turns camera frames into the video graph's
input where the graphs run, so the host copies uint8 frames once and never resamples them:

| preprocess | frames uint8 [N, H, W, 3], resize_x [S, W], resize_y [S, H] | pixels float32 [N, 3, S, S] |

resize_x / resize_y are the crop's resampling weights (foal_edge.preprocess.resize_matrices,
computed once per camera size on the host): two MatMuls, rounding to 8 bits between and after
the passes as Pillow does, then CLIP's normalisation. Standard ONNX ops only (TensorRT parses it).
"""

from __future__ import annotations

import contextlib
import math
import types
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic: dict[str, dict[int, str]]  # input name -> {axis: symbolic dimension name}


def _sdpa_self_attention(self, hidden_states, attention_mask, gated_position_bias):
    """WavLMAttention's attention (transformers runs it through F.multi_head_attention_forward,
    in a [T, B*H, d] layout with baddbmm) written batch first, [B, H, T, d], through
    scaled_dot_product_attention with the gated relative position bias as its additive mask:
    the same arithmetic (a test holds the two equal, with and without padding), in the form
    onnxscript's ONNX Runtime fusions turn into one com.microsoft Attention node with an
    attention_bias input (export.ort_optimize). At opset 18 the exporter writes it as
    standard MatMul/Softmax ops, so TensorRT parses the graph as before."""
    B, T, D = hidden_states.shape
    heads, head_dim = self.num_heads, self.head_dim
    split = lambda x: x.view(B, T, heads, head_dim).transpose(1, 2)  # noqa: E731
    q, k, v = (split(proj(hidden_states)) for proj in (self.q_proj, self.k_proj, self.v_proj))
    bias = gated_position_bias.view(B, heads, T, T)
    if attention_mask is not None:  # [B, T], 1 = valid: padded keys get no weight, as in transformers
        bias = bias.masked_fill(attention_mask.ne(1)[:, None, None, :], float("-inf"))
    out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return self.out_proj(out.transpose(1, 2).reshape(B, T, D)), None


@contextlib.contextmanager
def sdpa_attention(encoder):
    """Within the block, the audio encoder's WavLM attention layers run _sdpa_self_attention;
    after it, transformers' own again (the trained model is not changed: patching a copy
    instead would copy WavLM's weight-norm parametrization, which does not survive that)."""
    layers = [m for m in encoder.modules() if type(m).__name__ == "WavLMAttention"]
    for layer in layers:
        layer.torch_multi_head_self_attention = types.MethodType(_sdpa_self_attention, layer)
    try:
        yield encoder
    finally:
        for layer in layers:
            del layer.torch_multi_head_self_attention


class AudioGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.encoder = model.audio_encoder

    def forward(self, waveform):
        with sdpa_attention(self.encoder):
            return self.encoder(waveform)


class SplitAttention(nn.Module):
    """open_clip's nn.MultiheadAttention (batch first) written out with separate query, key and
    value projections: the same arithmetic (the exported graph's output is unchanged, tested),
    in the form ONNX Runtime's transformer optimizer recognises and fuses into its Attention
    kernel (with the fused qkv projection of nn.MultiheadAttention it fused none). Standard
    ONNX ops only, so TensorRT parses it as before."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        import copy

        d, self.heads = mha.embed_dim, mha.num_heads
        self.head_dim = d // self.heads
        self.q, self.k, self.v = (nn.Linear(d, d) for _ in range(3))
        w, b = mha.in_proj_weight.detach(), mha.in_proj_bias.detach()
        with torch.no_grad():
            for i, lin in enumerate((self.q, self.k, self.v)):
                lin.weight.copy_(w[i * d:(i + 1) * d])
                lin.bias.copy_(b[i * d:(i + 1) * d])
        self.out_proj = copy.deepcopy(mha.out_proj)

    def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None):
        B, T, D = query.shape
        key = query if key is None else key
        value = query if value is None else value
        split = lambda x: x.reshape(B, -1, self.heads, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(query)), split(self.k(key)), split(self.v(value))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        if attn_mask is not None:
            scores = scores + attn_mask
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, T, D)
        return self.out_proj(out), None


def with_split_attention(encoder):
    """A copy of the video encoder whose attention layers are SplitAttention (the trained
    model is left as it is)."""
    import copy

    encoder = copy.deepcopy(encoder)
    for module in list(encoder.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.MultiheadAttention) and child.batch_first and child.in_proj_weight is not None:
                setattr(module, name, SplitAttention(child))
    return encoder


class VideoGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.encoder = with_split_attention(model.video_encoder)

    def forward(self, frames):
        return self.encoder(frames)


class FusionGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.fusion = model.fusion

    def forward(self, audio, audio_mask, video, video_mask):
        return self.fusion(audio, audio_mask, video, video_mask)


class PreprocessGraph(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        # Normalisation folded into one multiply-add: (x / 255 - mean) / std.
        std = torch.tensor(std, dtype=torch.float32)
        self.register_buffer("scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1))
        self.register_buffer("shift", (-torch.tensor(mean, dtype=torch.float32) / std).view(1, 3, 1, 1))

    def forward(self, frames, resize_x, resize_y):
        x = frames.permute(0, 3, 1, 2).to(torch.float32)  # [N, 3, H, W]
        x = torch.clamp(torch.floor(torch.matmul(x, resize_x.t()) + 0.5), 0.0, 255.0)  # [N, 3, H, S]
        x = torch.clamp(torch.floor(torch.matmul(resize_y, x) + 0.5), 0.0, 255.0)  # [N, 3, S, S]
        return x * self.scale + self.shift


PREPROCESS_SPEC = GraphSpec("preprocess", ("frames", "resize_x", "resize_y"), ("pixels",),
                            {"frames": {0: "frames", 1: "height", 2: "width"}, "resize_x": {1: "width"},
                             "resize_y": {1: "height"}})


def specs(model) -> dict[str, GraphSpec]:
    return {
        "audio": GraphSpec("audio", ("waveform",), ("hidden",),
                           {"waveform": {0: "batch", 1: "samples"}}),
        "video": GraphSpec("video", ("frames",), ("embeddings",), {"frames": {0: "frames"}}),
        "fusion": GraphSpec("fusion", ("audio", "audio_mask", "video", "video_mask"), model.fusion.output_names,
                            {"audio": {0: "batch", 1: "audio_frames"}, "audio_mask": {0: "batch", 1: "audio_frames"},
                             "video": {0: "batch", 1: "video_frames"}, "video_mask": {0: "batch", 1: "video_frames"}}),
        "preprocess": PREPROCESS_SPEC,
    }


def modules(model) -> dict[str, nn.Module]:
    cfg = model.config
    return {"audio": AudioGraph(model).eval(), "video": VideoGraph(model).eval(), "fusion": FusionGraph(model).eval(),
            "preprocess": PreprocessGraph(cfg.clip_mean, cfg.clip_std).eval()}


def example_inputs(model, name: str, batch: int = 2, seconds: float = 2.0, frames: int = 3,
                   seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs with distinct sizes per dynamic axis (so a tracer cannot confuse them)."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    if name == "audio":
        return (torch.randn(batch, int(seconds * cfg.sample_rate), generator=g),)
    if name == "video":
        s = cfg.video.image_size
        return (torch.randn(frames * batch + 1, 3, s, s, generator=g),)
    if name == "preprocess":
        from foal_edge.preprocess import resize_matrices

        s, (h, w) = cfg.video.image_size, (2 * cfg.video.image_size + 5, 3 * cfg.video.image_size + 7)
        wx, wy = resize_matrices(h, w, s)
        return (torch.randint(0, 256, (frames, h, w, 3), dtype=torch.uint8, generator=g),
                torch.from_numpy(wx), torch.from_numpy(wy))
    t_a = model.audio_encoder.frame_lengths(torch.tensor(int(seconds * cfg.sample_rate))).item()
    audio_mask = torch.ones(batch, t_a)
    video_mask = torch.ones(batch, frames)
    audio_mask[-1, t_a // 2:] = 0  # exercise the masks
    video_mask[-1, -1] = 0
    return (torch.randn(batch, t_a, cfg.audio.hidden_size, generator=g), audio_mask,
            torch.randn(batch, frames, cfg.video.embed_dim, generator=g), video_mask)
