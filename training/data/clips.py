"""From corpus utterances to model-ready clips and batches.

Audio is cut or zero-padded to the preset's window (the paper: 6 s) with its valid length
kept; frames are sampled evenly over the turn, CLIP-preprocessed with the runtime's own
code (foal_edge.preprocess) and padded to frames-per-clip with a mask. With a frozen CLIP
tower, frames are encoded once into an on-disk embedding cache and training reads that.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from foal_edge import preprocess
from foal_edge.media import read_audio, read_video

from ..config import FoalConfig
from .iemocap import Utterance

log = logging.getLogger(__name__)


@dataclass
class Clip:
    id: str
    session: int
    speaker: str
    label: int
    vad: np.ndarray  # [3]
    audio: np.ndarray  # float32 [S], S <= window
    frames: np.ndarray | None  # uint8 [K, 224, 224, 3], K <= frames per clip
    embeddings: np.ndarray | None = None  # float32 [K, D_v], from the cache
    conv: np.ndarray | None = None  # float32 [C, T]: the frozen WavLM conv extractor's output (one run's)
    # Which modalities training may use (missing-modality training and the unimodal baselines).
    has_audio: bool = True
    has_video: bool = True


def load_audio(path: Path, config: FoalConfig) -> np.ndarray:
    audio, rate, _ = read_audio(path)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    audio = preprocess.resample(audio, rate, config.sample_rate)
    return audio[: config.audio_samples]  # the paper cuts to the window


def speaker_half(frame: np.ndarray, side: str) -> np.ndarray:
    """The left or right half of a split-screen frame [H, W, 3]."""
    half = frame.shape[1] // 2
    return frame[:, :half] if side == "left" else frame[:, half:]


def load_clips(utterances: list[Utterance], config: FoalConfig, progress: bool = True,
               video_region: str = "full") -> list[Clip]:
    """Read every utterance's audio and sampled frames; each dialog video is decoded once.
    video_region "speaker": IEMOCAP's dialog videos show both actors side by side, and only
    the speaking actor's half (Utterance.video_side) is kept, then CLIP-preprocessed;
    "full": the whole frame."""
    if video_region not in ("speaker", "full"):
        raise ValueError(f"video_region must be 'speaker' or 'full', not {video_region!r}")
    from tqdm import tqdm

    by_video: dict[Path, list[Utterance]] = defaultdict(list)
    for u in utterances:
        by_video[u.video].append(u)
    clips = {}
    bar = tqdm(total=len(utterances), desc="reading clips", disable=None if progress else True, leave=False)
    for video, utts in by_video.items():
        from foal_edge.media import video_info

        fps, _ = video_info(video)
        wanted = {}
        for u in utts:
            # Frames from the audio window only (the turn's first audio_seconds), as the runtime
            # samples them: train and deploy see the same part of a long turn.
            end = min(u.end, u.start + config.audio_seconds)
            first, last = int(np.ceil(u.start * fps)), int(np.ceil(end * fps))
            wanted[u.id] = first + preprocess.sample_frame_indices(max(last - first, 1), config.frames_per_clip)
        decoded, _ = read_video(video, indices=np.concatenate(list(wanted.values())))
        for u in utts:
            frames = [decoded[i] for i in wanted[u.id] if i in decoded]
            if not frames:
                raise ValueError(f"{video}: no frames in turn {u.id} ({u.start:.2f}-{u.end:.2f} s)")
            if video_region == "speaker":
                if u.video_side not in ("left", "right"):
                    raise ValueError(f"{u.id}: which half of {video.name} shows its speaker is unknown (IEMOCAP "
                                     "names: SesNN[F|M]_..., turns ..._F000 / _M000); use --video-region full")
                frames = [speaker_half(f, u.video_side) for f in frames]
            frames = np.stack([preprocess.resize_and_crop(f, config.video.image_size) for f in frames])
            clips[u.id] = Clip(u.id, u.session, u.speaker, u.label_index, np.asarray(u.vad, np.float32),
                               load_audio(u.wav, config), frames)
            bar.update()
    bar.close()
    return [clips[u.id] for u in utterances]


class EmbeddingCache:
    """Frozen-CLIP frame embeddings on disk, one .npy per utterance, keyed by the tower's
    weights and the frame sampling (frames per clip, image size)."""

    def __init__(self, root, video_encoder, config: FoalConfig, video_region: str = "full"):
        digest = hashlib.sha256()
        for name, tensor in sorted(video_encoder.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().numpy().tobytes())
        model_key = f"{config.preset}-{digest.hexdigest()[:16]}"
        sampling_key = f"k{config.frames_per_clip}-s{config.video.image_size}"
        if video_region != "full":
            sampling_key += f"-{video_region}"
        self.dir = Path(root) / model_key / sampling_key
        self.encoder = video_encoder
        self.config = config

    def fill(self, clips: list[Clip], batch_size: int = 64) -> None:
        """Attach embeddings to clips, encoding only those not cached yet."""
        self.dir.mkdir(parents=True, exist_ok=True)
        todo = []
        for clip in clips:
            path = self.dir / f"{clip.id}.npy"
            if path.is_file():
                clip.embeddings = np.load(path, allow_pickle=False)
            else:
                todo.append(clip)
        log.info("embedding cache %s: %d cached, %d to encode", self.dir, len(clips) - len(todo), len(todo))
        self.encoder.eval()
        with torch.inference_mode():
            for clip in todo:
                x = torch.from_numpy(preprocess.normalize_frames(clip.frames, self.config.clip_mean,
                                                                 self.config.clip_std))
                clip.embeddings = torch.cat([self.encoder(c) for c in x.split(batch_size)]).numpy()
                tmp = self.dir / f"{clip.id}.{os.getpid()}.tmp.npy"  # several processes may share the cache
                np.save(tmp, clip.embeddings)
                tmp.replace(self.dir / f"{clip.id}.npy")


def collate(clips: list[Clip], config: FoalConfig) -> dict[str, torch.Tensor]:
    """Pad a list of clips into a training batch (see FoalNet.training_step)."""
    B = len(clips)
    samples = max(len(c.audio) for c in clips)
    waveform = np.zeros((B, samples), np.float32)
    for i, c in enumerate(clips):
        waveform[i, : len(c.audio)] = c.audio
    K = config.frames_per_clip
    mask = np.zeros((B, K), np.float32)
    batch = {
        "waveform": torch.from_numpy(waveform),
        "audio_lengths": torch.tensor([len(c.audio) for c in clips]),
        "labels": torch.tensor([c.label for c in clips]),
        "attributes": torch.from_numpy(np.stack([c.vad for c in clips])),
    }
    if all(c.conv is not None for c in clips):
        T = max(c.conv.shape[1] for c in clips)
        conv = np.zeros((B, clips[0].conv.shape[0], T), np.float32)
        for i, c in enumerate(clips):
            conv[i, :, : c.conv.shape[1]] = c.conv
        batch["audio_conv"] = torch.from_numpy(conv)
    if not all(c.has_audio and c.has_video for c in clips):
        batch["has_audio"] = torch.tensor([c.has_audio for c in clips])
        batch["has_video"] = torch.tensor([c.has_video for c in clips])
    if all(c.embeddings is not None for c in clips):
        emb = np.zeros((B, K, clips[0].embeddings.shape[1]), np.float32)
        for i, c in enumerate(clips):
            emb[i, : len(c.embeddings)] = c.embeddings
            mask[i, : len(c.embeddings)] = 1 if c.has_video else 0
        batch["video_embeddings"] = torch.from_numpy(emb)
    else:
        size = config.video.image_size
        frames = np.zeros((B, K, 3, size, size), np.float32)
        for i, c in enumerate(clips):
            frames[i, : len(c.frames)] = preprocess.normalize_frames(c.frames, config.clip_mean, config.clip_std)
            mask[i, : len(c.frames)] = 1 if c.has_video else 0
        batch["frames"] = torch.from_numpy(frames)
    batch["video_mask"] = torch.from_numpy(mask)
    return batch


def augment_frames(frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-clip appearance jitter for a TRAINED video tower, so that it learns expressions
    rather than speakers' colours and positions: channel gain and offset, a horizontal
    flip, and a shift of up to 1/8 of the image. frames: [B, T, 3, S, S], normalised."""
    B, _, C, S, _ = frames.shape
    gain = 1 + 0.3 * (2 * torch.rand(B, 1, C, 1, 1, generator=generator) - 1)
    offset = 0.3 * (2 * torch.rand(B, 1, C, 1, 1, generator=generator) - 1)
    out = frames * gain + offset
    flip = torch.rand(B, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    shifts = torch.randint(-S // 8, S // 8 + 1, (B, 2), generator=generator)
    for b in range(B):
        out[b] = out[b].roll((int(shifts[b, 0]), int(shifts[b, 1])), dims=(-2, -1))
    return out
