"""Parity of exported graphs: ONNX Runtime vs the eager sub-modules, and FP16 / INT8 vs
FP32, on synthetic clips shaped like the corpus (speech-like audio, drawn faces)."""

from __future__ import annotations

import numpy as np
import torch

from foal_edge import preprocess


def clip_inputs(config, seeds) -> list[tuple[np.ndarray, np.ndarray]]:
    """(waveform float32 [1, S], frames float32 [K, 3, S, S]) per seed, preprocessed as the runtime does."""
    from training.synthetic import make_clip

    out = []
    for seed in seeds:
        audio, frames, _ = make_clip(seed, frames=config.frames_per_clip)
        audio = audio[: config.audio_samples]
        frames = np.stack([preprocess.resize_and_crop(f, config.video.image_size) for f in frames])
        out.append((audio[None].astype(np.float32),
                    preprocess.normalize_frames(frames, config.clip_mean, config.clip_std)))
    return out


def run_eager(model, wave, frames):
    with torch.inference_mode():
        hidden = model.audio_encoder(torch.from_numpy(wave))
        emb = model.video_encoder(torch.from_numpy(frames))
        outs = model.fusion(hidden, torch.ones(hidden.shape[:2]), emb[None], torch.ones(1, emb.shape[0]))
    return hidden.numpy(), emb.numpy(), [o.numpy() for o in outs]


def run_sessions(runners, wave, frames):
    hidden = runners["audio"].run({"waveform": wave})[0]
    emb = runners["video"].run({"frames": frames})[0]
    outs = runners["fusion"].run({"audio": hidden, "audio_mask": np.ones(hidden.shape[:2], np.float32),
                                  "video": emb[None], "video_mask": np.ones((1, emb.shape[0]), np.float32)})
    return hidden, emb, outs


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def compare(reference, candidate, inputs) -> dict:
    """Per-graph max |diff|, probability diff and label agreement of `candidate` vs `reference`
    (each a callable (wave, frames) -> (hidden, emb, outs))."""
    worst = {"audio": 0.0, "video": 0.0, "fusion": 0.0}
    prob_diff, same, cos_a, cos_v = 0.0, 0, 1.0, 1.0
    for wave, frames in inputs:
        h0, e0, o0 = reference(wave, frames)
        h1, e1, o1 = candidate(wave, frames)
        worst["audio"] = max(worst["audio"], float(np.abs(h0 - h1).max()))
        worst["video"] = max(worst["video"], float(np.abs(e0 - e1).max()))
        worst["fusion"] = max(worst["fusion"], max(float(np.abs(a - b).max()) for a, b in zip(o0, o1)))
        prob_diff = max(prob_diff, float(np.abs(softmax(o0[0]) - softmax(o1[0])).max()))
        same += int(o0[0].argmax() == o1[0].argmax())
        cos_a = min(cos_a, cosine(h0, h1))
        cos_v = min(cos_v, cosine(e0, e1))
    return {"clips": len(inputs), "max_abs_diff": worst, "max_probability_diff": prob_diff,
            "label_agreement": same / max(len(inputs), 1), "min_cosine": {"audio": cos_a, "video": cos_v}}


def cosine(a, b) -> float:
    a, b = a.reshape(-1).astype(np.float64), b.reshape(-1).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def encoder_cosines(reference: dict, candidate: dict, config, seconds=(1.0, 3.0, 6.0), frames=(1, 4, 16),
                    seed: int = 0) -> dict:
    """Per-row cosine similarity of the encoders' outputs, `candidate` vs `reference`
    runners, at several audio lengths and frame counts (random inputs): the minimum over
    rows, per setting."""
    rng = np.random.default_rng(seed)
    out = {"audio": {}, "video": {}}
    for s in seconds:
        wave = (0.1 * rng.standard_normal((1, int(s * config.sample_rate)))).astype(np.float32)
        a = reference["audio"].run({"waveform": wave})[0][0]
        b = candidate["audio"].run({"waveform": wave})[0][0]
        out["audio"][f"{s:g}s"] = min(cosine(x, y) for x, y in zip(a, b))
    size = config.video.image_size
    for n in frames:
        x = rng.standard_normal((n, 3, size, size)).astype(np.float32)
        a = reference["video"].run({"frames": x})[0]
        b = candidate["video"].run({"frames": x})[0]
        out["video"][f"{n} frames"] = min(cosine(u, v) for u, v in zip(a, b))
    return out


def preprocess_parity(path, config, sizes=((480, 640), (720, 1280), (1280, 720)), frames: int = 2) -> dict:
    """The preprocess graph (ONNX Runtime, CPU) against the runtime's CPU path (Pillow) on
    camera-sized frames: the largest difference, in grey levels."""
    from foal_edge.backends.onnxruntime import OnnxRuntimeRunner
    from training.synthetic import make_clip

    runner = OnnxRuntimeRunner(path)
    size, worst = config.video.image_size, 0.0
    for h, w in sizes:
        _, raw, _ = make_clip(7, frames=frames)
        from PIL import Image

        raw = np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR)) for f in raw])
        wx, wy = preprocess.resize_matrices(h, w, size)
        graph = runner.run({"frames": raw, "resize_x": wx, "resize_y": wy})[0]
        cpu = preprocess.normalize_frames(preprocess.resize_frames(raw, size), config.clip_mean,
                                          config.clip_std)
        grey = np.abs(graph - cpu) * np.asarray(config.clip_std, np.float32)[None, :, None, None] * 255
        worst = max(worst, float(grey.max()))
    return {"sizes": [list(s) for s in sizes], "max_grey_levels": worst}
