"""How hard each objective pulls on the encoders: the gradient norm of AVEL against the
emotion cross-entropy's, per AVEL temperature, on a batch of clips.

    python -m training.diagnostics --checkpoint training/demo --clips 32

At the start of training, CLIP's convention (logits x exp(scale), capped at 100) lets AVEL's
gradient on the encoders swamp the emotion loss's; the reference code's (logits / ln(1/0.07))
does not. The README's training section quotes this command's output.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def synthetic_batch(model, clips: int, seed: int = 0) -> dict:
    """A batch of synthetic corpus clips (four balanced labels), frames through the tower."""
    from foal_edge import preprocess
    from training.config import EMOTION_LABELS
    from training.data.clips import Clip, collate
    from training.synthetic import make_clip

    codes = {"neutral": "neu", "happy": "hap", "angry": "ang", "sad": "sad"}
    cfg = model.config
    items = []
    for i in range(clips):
        label = i % len(EMOTION_LABELS)
        audio, frames, _ = make_clip(seed + i, code=codes[EMOTION_LABELS[label]], frames=cfg.frames_per_clip)
        frames = np.stack([preprocess.resize_and_crop(f, cfg.video.image_size) for f in frames])
        items.append(Clip(f"c{i}", 1, "F", label, np.full(3, 3.0, np.float32), audio[: cfg.audio_samples], frames))
    return collate(items, cfg)


def gradient_ratio(model, batch: dict, temperature: str) -> float:
    """|grad AVEL| / |grad CE(fused)| over the trainable encoder parameters."""
    model.config.avel_temperature = temperature
    params = [p for m in (model.audio_encoder, model.video_encoder) for p in m.parameters() if p.requires_grad]
    model.eval()  # no dropout: the two gradients of one forward pass
    out = model.training_step(batch, torch.Generator().manual_seed(0))
    norms = []
    for key in ("avel", "ce"):
        grads = torch.autograd.grad(out[key], params, retain_graph=True, allow_unused=True)
        norms.append(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)).item())
    return norms[0] / norms[1]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m training.diagnostics", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="training/demo",
                   help="a training output directory: its encoders, with fresh heads")
    p.add_argument("--clips", type=int, default=32, help="clips in the batch (balanced labels)")
    p.add_argument("--seeds", type=int, default=3, help="batches to average over")
    args = p.parse_args(argv)
    from training.model import FoalNet

    # The start of training: the checkpoint's encoders (as `training.train --init` starts
    # them), fresh fusion and auxiliary heads.
    trained = FoalNet.load(args.checkpoint)
    torch.manual_seed(0)
    model = FoalNet(trained.config)
    for part in ("audio_encoder", "video_encoder"):
        getattr(model, part).load_state_dict(getattr(trained, part).state_dict())
    ratios = {t: [] for t in ("clip", "reference")}
    for seed in range(args.seeds):
        batch = synthetic_batch(model, args.clips, seed=1000 * seed)
        for t in ratios:
            ratios[t].append(gradient_ratio(model, batch, t))
    for t, r in ratios.items():
        print(f"AVEL temperature {t!r}: |grad AVEL| / |grad CE| on the encoders = {np.mean(r):.3f} "
              f"(batches: {', '.join(f'{x:.3f}' for x in r)})")
    return {t: float(np.mean(r)) for t, r in ratios.items()}


if __name__ == "__main__":
    main()
