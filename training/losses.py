"""Foal-Net's objectives: emotion alignment (AVEL), label matching (MEM), and CCC.

loss = CE(fused) + w_avel * AVEL + w_mem * MEM (+ unimodal CE and attribute CCC, see
`FoalNet.training_step`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gather_across_ranks(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x over all DDP ranks, keeping the gradient of this rank's part (so the
    contrastive loss sees the global batch). A no-op without torch.distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    if x.requires_grad:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(x))
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def gather_padded(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, T, D] and mask [B, T] over all DDP ranks, padded to the longest T on any rank
    (padding is masked). This rank's part keeps its gradient. A no-op without torch.distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, mask
    longest = torch.tensor([x.shape[1]], device=x.device)
    dist.all_reduce(longest, op=dist.ReduceOp.MAX)
    pad = int(longest) - x.shape[1]
    if pad:
        x = F.pad(x, (0, 0, 0, pad))
        mask = F.pad(mask, (0, pad))
    return gather_across_ranks(x), gather_across_ranks(mask)


def label_targets(labels: torch.Tensor) -> torch.Tensor:
    """t_ij = 1 where samples i and j carry the same emotion."""
    return (labels[:, None] == labels[None, :]).to(torch.float32)


def supervised_contrastive(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_j t_ij log softmax(logits)_ij (several positives per row)."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def similarity_logits(audio: torch.Tensor, video: torch.Tensor, scale: torch.Tensor,
                      temperature: str = "clip") -> torch.Tensor:
    """s_av [B_a, B_v]: cosine similarities of L2-normalised projections, tempered."""
    sim = audio @ video.t()
    if temperature == "clip":
        return sim * scale.exp().clamp(max=100.0)
    if temperature == "reference":
        return sim / scale  # the reference code: divides by ln(1/0.07) ~ 2.66, no exp
    raise ValueError(f"temperature must be 'clip' or 'reference', not {temperature!r}")


def avel_loss(audio: torch.Tensor, video: torch.Tensor, labels: torch.Tensor,
              scale: torch.Tensor, temperature: str = "clip") -> tuple[torch.Tensor, torch.Tensor]:
    """Audio-video emotion alignment, both directions.

    audio [B, E], video [B, E]: L2-normalised projections. `scale` is the learnable
    temperature parameter. Returns (loss, s_av).
    """
    s_av = similarity_logits(audio, video, scale, temperature)
    t = label_targets(labels)
    loss = 0.5 * (supervised_contrastive(s_av, t) + supervised_contrastive(s_av.t(), t))
    return loss, s_av


def sample_negatives(similarity: torch.Tensor, labels: torch.Tensor,
                     generator: torch.Generator | None = None,
                     column_labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row, one column with a DIFFERENT label, drawn from softmax(similarity).

    Harder (more similar) negatives are likelier, as in ALBEF. Returns (rows, columns) of
    the rows that have at least one other-label candidate; rows without one are skipped.
    `column_labels`: the columns' labels when they are not the rows' (the batch gathered
    over all ranks under torchrun).
    """
    column_labels = labels if column_labels is None else column_labels
    with torch.no_grad():
        other = labels[:, None] != column_labels[None, :]  # [B, B_columns]
        rows = other.any(dim=1).nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            return rows, rows
        weights = torch.softmax(similarity[rows].float(), dim=1) * other[rows]
        # Guard against all-zero rows from underflow: fall back to uniform over candidates.
        empty = weights.sum(dim=1) <= 0
        weights[empty] = other[rows][empty].float()
        cols = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        return rows, cols


def mem_loss(fusion, audio, audio_mask, video, video_mask, labels, s_av, head_a, head_v,
             generator: torch.Generator | None = None, s_va: torch.Tensor | None = None,
             candidates: tuple | None = None) -> torch.Tensor | None:
    """Cross-modal emotion label matching: is this audio/video pair the same emotion?

    Positives: each sample with its own partner. Negatives: each audio with a sampled
    other-label video (and each video with an other-label audio), through the SAME
    cross-attention stacks. Returns None when no row has a negative (single-label batch).

    s_av [B, B_c]: this batch's audio against the candidate videos; s_va [B, B_c]: its videos
    against the candidate audios (default s_av.t()). `candidates` = (audio, audio_mask, video,
    video_mask, labels) to draw negatives from, by default this batch; under torchrun the
    batch gathered over all ranks, as the reference draws them.
    """
    c_audio, c_audio_mask, c_video, c_video_mask, c_labels = (
        candidates if candidates is not None else (audio, audio_mask, video, video_mask, labels))
    s_va = s_av.t() if s_va is None else s_va
    a_rows, a_neg = sample_negatives(s_av, labels, generator, c_labels)  # audio anchor -> negative video
    v_rows, v_neg = sample_negatives(s_va, labels, generator, c_labels)  # video anchor -> negative audio
    if a_rows.numel() == 0:
        return None
    # Audio-anchored pairs for the a2v stack, video-anchored pairs for v2a.
    pos_a, pos_v = fusion.cross(audio, audio_mask, video, video_mask)
    neg_a = fusion.a2v(audio[a_rows], audio_mask[a_rows], c_video[a_neg], c_video_mask[a_neg])
    neg_v = fusion.v2a(video[v_rows], video_mask[v_rows], c_audio[v_neg], c_audio_mask[v_neg])

    def matching_ce(head, pos, neg):
        logits = head(torch.cat([pos, neg]))
        target = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).long().to(logits.device)
        return F.cross_entropy(logits, target)

    return 0.5 * (matching_ce(head_a, pos_a, neg_a) + matching_ce(head_v, pos_v, neg_v))


def ccc(pred: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Concordance correlation coefficient per column of [N, K] (or of a vector)."""
    if pred.dim() == 1:
        pred, gold = pred[:, None], gold[:, None]
    mp, mg = pred.mean(0), gold.mean(0)
    vp, vg = pred.var(0, unbiased=False), gold.var(0, unbiased=False)
    cov = ((pred - mp) * (gold - mg)).mean(0)
    return 2 * cov / (vp + vg + (mp - mg) ** 2 + 1e-8)


def ccc_loss(pred: torch.Tensor, gold: torch.Tensor, weights) -> torch.Tensor:
    """sum_k w_k (1 - CCC_k) over the attributes (Atmaja & Akagi's multitask loss)."""
    w = torch.as_tensor(weights, dtype=pred.dtype, device=pred.device)
    return (w * (1.0 - ccc(pred, gold))).sum()
