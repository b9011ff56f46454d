"""Leave-one-session-out training of Foal-Net.

    python -m training.train --data iemocap --root /data/IEMOCAP_full_release \\
        --wavlm /models/wavlm-large --clip /models/clip.bin --out runs/foal
    python -m training.train --data synthetic --root data/synthetic --preset tiny --out runs/demo

Each fold tests on one session. The best epoch is chosen on a validation split carved
from the TRAINING sessions (the reference code picks it on the test session). Each fold
directory holds the chosen model (config.json + model.safetensors, what
`python -m export.build_engine --checkpoint` takes), metrics.json, confusion.png, and
state/ for `--resume`. Multi-GPU: `torchrun --nproc-per-node N -m training.train ...`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from .config import ATTRIBUTE_NAMES, EMOTION_LABELS, preset as get_preset
from .metrics import ccc_report, classification_report, plot_confusion
from .model import FoalNet, write_safetensors, write_text

log = logging.getLogger("training")
STATE_DIR = "state"


# -- distributed ----------------------------------------------------------------------------
def dist_setup() -> tuple[int, int]:
    """(rank, world size); initialises torch.distributed under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), world


# -- data -----------------------------------------------------------------------------------
def read_corpus(args):
    from .data.iemocap import read_iemocap

    root = Path(args.root)
    if args.data == "synthetic" and not root.exists():
        from .synthetic import make_corpus

        log.info("no synthetic corpus at %s: writing one", root)
        make_corpus(root)
    corpus = read_iemocap(root, merge_excited=not args.keep_excited)
    log.info("%s", corpus.report())
    if args.video_region == "auto":
        args.video_region = video_region_for(args.data, root)
    return corpus


def video_region_for(data: str, root: Path) -> str:
    """--video-region auto: IEMOCAP's split-screen dialog videos -> the speaker's half; a
    synthetic corpus -> whatever layout it was written in (synthetic.json; "full" for
    corpora written before it recorded one, which drew one face per frame)."""
    if data == "iemocap":
        return "speaker"
    marker = Path(root) / "synthetic.json"
    layout = json.loads(marker.read_text()).get("layout", "single") if marker.is_file() else "single"
    return "speaker" if layout == "dialog" else "full"


def validation_session(sessions: list[int], test_session: int) -> int:
    """The training session held out for model selection: the one after the test session
    (cyclically). IEMOCAP's speakers are per session, so validation speakers are unseen."""
    ordered = sorted(sessions)
    return ordered[(ordered.index(test_session) + 1) % len(ordered)]


def with_modalities(clips, modality: str, missing: float, seed: int):
    """Copies of the clips with the modalities training may use: every clip (modality
    "both"), one modality for all (the unimodal baselines), or with `missing` > 0 that
    fraction of clips losing one modality, audio or video at random (VAVL's setting)."""
    import dataclasses

    rng = np.random.default_rng([seed, 99])
    out = []
    for c in clips:
        has_a, has_v = modality != "video", modality != "audio"
        if modality == "both" and missing > 0 and rng.random() < missing:
            has_a, has_v = (False, True) if rng.random() < 0.5 else (True, False)
        out.append(dataclasses.replace(c, has_audio=has_a, has_video=has_v))
    return out


class ProgressLines:
    """Progress a log can show. On a terminal tqdm draws its bar; elsewhere (a log file, nohup,
    a pipe) tqdm stays silent, so a plain line is printed every `every` steps instead."""

    def __init__(self, every: int, enabled: bool):
        import sys

        self.every = every
        self.enabled = enabled and every > 0 and not sys.stdout.isatty()
        self.t0 = time.time()

    def step(self, text: str, n: int, total: int, loss: float) -> None:
        if self.enabled and (n % self.every == 0 or n == total):
            print(f"{text} step {n}/{total}: loss {loss:.4f} ({time.time() - self.t0:.0f} s)", flush=True)


def smoothed(history: list[dict], key: str, window: int) -> float:
    """Mean of `key` over the last `window` epochs: selection that a single lucky or
    saturated epoch cannot decide."""
    return float(np.mean([h[key] for h in history[-window:]]))


def split_validation(clips, fraction: float, seed: int):
    """A validation split stratified by label, carved from the training clips."""
    rng = np.random.default_rng(seed)
    val = set()
    for label in range(len(EMOTION_LABELS)):
        idx = [i for i, c in enumerate(clips) if c.label == label]
        rng.shuffle(idx)
        val.update(idx[: max(1, int(round(fraction * len(idx))))] if idx else [])
    return [c for i, c in enumerate(clips) if i not in val], [c for i, c in enumerate(clips) if i in val]


def balanced_order(clips, generator: torch.Generator) -> list[int]:
    """One epoch of class-balanced sampling with replacement (WeightedRandomSampler's rule)."""
    counts = np.bincount([c.label for c in clips], minlength=len(EMOTION_LABELS))
    weights = torch.tensor([1.0 / counts[c.label] for c in clips], dtype=torch.double)
    return torch.multinomial(weights, len(clips), replacement=True, generator=generator).tolist()


# -- evaluation -----------------------------------------------------------------------------
@torch.inference_mode()
def evaluate(model, clips, config, batch_size: int, device) -> dict:
    from .data.clips import collate

    model.eval()
    outs = {"fused": [], "audio": [], "video": [], "attributes": []}
    for i in range(0, len(clips), batch_size):
        batch = {k: v.to(device) for k, v in collate(clips[i:i + batch_size], config).items()}
        video = batch.get("video_embeddings", batch.get("frames"))
        res = model(batch["waveform"], video, batch["video_mask"], batch["audio_lengths"], batch.get("audio_conv"))
        for key, t in zip(("fused", "audio", "video", "attributes"), res):
            outs[key].append(t.float().cpu().numpy())
    gold = [c.label for c in clips]
    report = {name: classification_report(gold, np.concatenate(outs[name]).argmax(1), EMOTION_LABELS)
              for name in ("fused", "audio", "video")}
    if outs["attributes"]:
        report["ccc"] = ccc_report(np.concatenate(outs["attributes"]), np.stack([c.vad for c in clips]),
                                   ATTRIBUTE_NAMES)
    return report


# -- checkpoints ----------------------------------------------------------------------------
STATE_KEY = "foal.training_state"  # the JSON part of the state, inside the safetensors header


def save_state(directory: Path, model, optimizer, epoch: int, history: list, best: dict, generators) -> None:
    """Everything --resume needs in one safetensors file (tensors, with epoch, history and
    optimiser settings as JSON in its header), written atomically: one rename, so weights
    and the epoch they belong to cannot come apart. state.json is a readable copy."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for key, value in st.items():
            tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value).cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    for name, g in generators.items():
        tensors[f"rng.{name}"] = g.get_state()
    meta = json.dumps({"epoch": epoch, "history": history, "best": best, "param_groups": opt["param_groups"]})
    write_safetensors(tensors, directory / "state.safetensors", metadata={STATE_KEY: meta})
    write_text(directory / "state.json", meta)


def load_state(directory: Path, model, optimizer, generators) -> dict:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(directory / "state.safetensors"), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        # States written before the header held the JSON part keep it in state.json.
        meta = json.loads(header[STATE_KEY] if STATE_KEY in header else (directory / "state.json").read_text())
    except (SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"{directory}: the training state is corrupt or incomplete ({exc}); "
                         "delete that directory to restart this fold from scratch") from exc
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    for name, g in generators.items():
        g.set_state(tensors[f"rng.{name}"])
    return meta


# -- one fold -------------------------------------------------------------------------------
def train_fold(args, cfg, corpus_clips, test_session: int, out: Path, rank: int, world: int) -> dict:
    from tqdm import tqdm

    from .data.clips import EmbeddingCache, augment_frames, collate

    device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    model = FoalNet(cfg, wavlm=args.wavlm, clip=args.clip)
    if args.init:
        init_encoders(model, args.init)
    if cfg.freeze_video and not all(c.embeddings is not None for c in corpus_clips):
        EmbeddingCache(args.cache, model.video_encoder, cfg, args.video_region).fill(corpus_clips)
    for c in corpus_clips:  # a previous run's conv features belong to that run's weights
        c.conv = None
    if args.cache_audio_conv:
        with torch.no_grad():
            for c in corpus_clips:
                c.conv = model.audio_encoder.conv_features(torch.from_numpy(c.audio)).numpy()
    train_clips = [c for c in corpus_clips if c.session != test_session]
    test_clips = [c for c in corpus_clips if c.session == test_session]
    sessions = sorted({c.session for c in corpus_clips})
    if args.val == "session" and len(sessions) < 3:
        log.warning("only %d sessions: validation falls back to a split of the training clips", len(sessions))
        args.val = "split"
    if args.val == "session":
        held_out = validation_session(sorted({c.session for c in corpus_clips}), test_session)
        val_clips = [c for c in train_clips if c.session == held_out]
        train_clips = [c for c in train_clips if c.session != held_out]
    else:
        train_clips, val_clips = split_validation(train_clips, args.val_fraction, args.seed)
    train_clips = with_modalities(train_clips, args.modality, args.missing, args.seed)
    head = {"both": "fused", "audio": "audio", "video": "video"}[args.modality]  # what the run is about
    model.to(device)
    trained = {"wavlm_conv_features": False, "wavlm_transformer": True,
               "clip_tower": not cfg.freeze_video, "fusion": True}

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=args.lr, weight_decay=args.weight_decay)
    generators = {"sampler": torch.Generator().manual_seed(args.seed),
                  "mem": torch.Generator(device=device).manual_seed(args.seed + 1),
                  "augment": torch.Generator().manual_seed(args.seed + 2)}
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    ddp_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        class Step(torch.nn.Module):  # DDP syncs gradients through forward(): route the step there
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, batch, generator):
                return self.m.training_step(batch, generator)

        ddp_model = DistributedDataParallel(Step(model), find_unused_parameters=True)

    state_dir = out / STATE_DIR
    history, best, start = [], {"epoch": -1, "UA": -1.0, "smoothed_UA": -1.0}, 0
    if args.resume and (state_dir / "state.json").is_file():
        meta = load_state(state_dir, model, optimizer, generators)
        history, best, start = meta["history"], meta["best"], meta["epoch"] + 1
        log.info("fold %d: resuming after epoch %d", test_session, meta["epoch"] + 1)

    steps_per_epoch = -(-(len(train_clips) - len(train_clips) % world) // world // args.batch_size)
    total_steps = max(1, args.epochs * steps_per_epoch)

    def learning_rate(step: int) -> float:
        """constant (the reference), or linear warm-up over 5% of the steps then cosine decay."""
        if args.schedule == "constant":
            return args.lr
        warmup = max(1, total_steps // 20)
        if step < warmup:
            return args.lr * (step + 1) / warmup
        return args.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    micro = args.micro_batch or args.batch_size
    progress = ProgressLines(args.log_every, enabled=not args.quiet)
    t0, stopped_early = time.time(), False
    for epoch in range(start, args.epochs):
        if args.patience and best["epoch"] > 0 and epoch - best["epoch"] >= args.patience:
            stopped_early = True
            log.info("fold %d: stopping after epoch %d, %d epochs without a better validation UA",
                     test_session, epoch, args.patience)
            break
        model.train()
        order = balanced_order(train_clips, generators["sampler"])
        order = order[: len(order) - len(order) % world][rank::world]  # equal shards: DDP steps in lockstep
        losses_seen, ce_seen = [], []
        aux_seen = {"avel": [], "avel_uniform": [], "mem": [], "reconstruction": []}  # are they learning?
        bar = tqdm(range(0, len(order), args.batch_size), desc=f"fold {test_session} epoch {epoch + 1}",
                   disable=True if rank != 0 or args.quiet else None, leave=False)  # None: only on a terminal
        for n, i in enumerate(bar):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(epoch * steps_per_epoch + n)
            step_clips = [train_clips[j] for j in order[i:i + args.batch_size]]
            optimizer.zero_grad(set_to_none=True)
            # Gradient accumulation: a step of batch-size clips as micro-batches of micro-batch
            # clips (where memory is short), each loss weighted by its share of the step.
            for m in range(0, len(step_clips), micro):
                part = step_clips[m:m + micro]
                batch = collate(part, cfg)
                if args.augment and "frames" in batch:
                    batch["frames"] = augment_frames(batch["frames"], generators["augment"])
                batch = {k: v.to(device) for k, v in batch.items()}
                with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                    out_step = (ddp_model(batch, generators["mem"]) if world > 1
                                else model.training_step(batch, generators["mem"]))
                scaler.scale(out_step["loss"] * (len(part) / len(step_clips))).backward()
                losses_seen.append(float(out_step["loss"].detach()))
                ce_seen.append(float(out_step["ce"].detach()))
                for key, seen in aux_seen.items():
                    if key in out_step:
                        seen.append(float(out_step[key].detach()))
            scaler.step(optimizer)
            scaler.update()
            bar.set_postfix(loss=f"{np.mean(losses_seen):.3f}")
            if rank == 0:
                progress.step(f"fold {test_session} epoch {epoch + 1}", n + 1, steps_per_epoch, np.mean(losses_seen))
        val = evaluate(model, val_clips, cfg, args.batch_size, device)
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses_seen)), "ce": float(np.mean(ce_seen)),
               **{key: float(np.mean(seen)) for key, seen in aux_seen.items() if seen},
               "val_UA": val[head]["UA"], "val_WA": val[head]["WA"], "val_UA_fused": val["fused"]["UA"],
               "val_UA_audio": val["audio"]["UA"], "val_UA_video": val["video"]["UA"]}
        history.append(row)
        row["val_UA_smoothed"] = smoothed(history, "val_UA", args.select_window)
        # Selection: the best mean validation UA over the last `select_window` epochs (the
        # window's last epoch is kept); a later epoch wins ties, since the smoothing already
        # guards against a lucky one. Every rank decides it (each validates on all clips), so
        # early stopping ends every rank at the same epoch.
        improved = (len(history) >= min(args.select_window, args.epochs)
                    and row["val_UA_smoothed"] >= best["smoothed_UA"])
        if improved:
            best = {"epoch": epoch + 1, "UA": row["val_UA"], "smoothed_UA": row["val_UA_smoothed"]}
        if rank == 0:
            if not args.quiet:
                print(f"fold {test_session} epoch {epoch + 1}/{args.epochs}: loss {row['loss']:.4f} "
                      f"val UA {row['val_UA']:.3f} WA {row['val_WA']:.3f} (audio-only UA {row['val_UA_audio']:.3f}, "
                      f"video-only UA {row['val_UA_video']:.3f})", flush=True)
            if improved:
                model.save(out)  # the selected model, as export takes it
            save_state(state_dir, model, optimizer, epoch, history, best, generators)

    if rank != 0:
        return {}
    selected = FoalNet.load(out).to(device)
    test = evaluate(selected, test_clips, cfg, args.batch_size, device)
    metrics = {"test_session": test_session, "selected_epoch": best["epoch"], "val_UA": best["UA"],
               "val_UA_smoothed": best.get("smoothed_UA"), "selection": f"mean val UA over {args.select_window} epochs",
               "validation": (f"session {validation_session(sorted({c.session for c in corpus_clips}), test_session)}"
                              if args.val == "session" else f"{args.val_fraction:g} of the training clips"),
               "modality": args.modality, "head": head, "missing": args.missing, "seed": args.seed,
               "epochs_run": len(history), "max_epochs": args.epochs, "patience": args.patience,
               "stopped_early": stopped_early,
               "batch_size": args.batch_size, "micro_batch": micro, "objective": args.objective,
               "train_clips": len(train_clips), "val_clips": len(val_clips), "test_clips": len(test_clips),
               "trained_parts": trained, "loss_weights": vars(cfg.loss), "history": history,
               "wall_seconds": round(time.time() - t0, 1), "test": test}
    # temperatures (and the late-fusion stage) fitted on validation -> calibration.json, reliability png
    from .calibration import calibrate_fold
    metrics.update(corpus=args.data, calibration=calibrate_fold(selected, val_clips, test_clips, cfg, args.batch_size,
                                                                device, out, test_session, metrics["validation"]))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    names = {"fused": "fused (audio + video) head", "audio": "audio-only head", "video": "video-only head"}
    plot_confusion(test[head]["confusion"], EMOTION_LABELS, out / "confusion.png",
                   f"session {test_session}, {names[head]}: UA {test[head]['UA']:.3f}, WA {test[head]['WA']:.3f}")
    return metrics


def finished(metrics: dict, epochs: int) -> bool:
    """A fold's metrics.json is final: it ran every epoch, or early stopping ended it."""
    return len(metrics["history"]) >= epochs or bool(metrics.get("stopped_early"))


def init_encoders(model, checkpoint) -> None:
    """Start both encoders from a trained checkpoint's (the stand-in for pretrained WavLM and
    CLIP where those cannot be downloaded); the fusion and auxiliary heads start fresh."""
    source = FoalNet.load(checkpoint)
    for part in ("audio_encoder", "video_encoder"):
        getattr(model, part).load_state_dict(getattr(source, part).state_dict())
    log.info("encoders initialised from %s", checkpoint)


def parse_weights(text: str) -> dict[str, float]:
    out = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        out[key.strip()] = float(value)
    return out


def make_config(args):
    """The preset with the command line's choices applied."""
    cfg = get_preset(args.preset)
    weights = parse_weights(args.loss_weights)
    for k, v in weights.items():
        if not hasattr(cfg.loss, k):
            raise SystemExit(f"--loss-weights: unknown weight {k!r}; known: {list(vars(cfg.loss))}")
        setattr(cfg.loss, k, v)
    if args.objective == "paper":  # CE + AVEL + MEM only: no unimodal heads' CE, no attribute head
        cfg.loss.unimodal = 0.0
        cfg.loss.attributes = 0.0
        cfg.fusion.attributes = False
    if args.reconstruct:
        cfg.loss.reconstruction = args.reconstruct
    if args.no_avel:
        cfg.loss.avel = 0.0
    if args.no_mem:
        cfg.loss.mem = 0.0
    if args.modality != "both":  # a unimodal baseline: one encoder and its head, nothing paired
        cfg.loss.avel = cfg.loss.mem = cfg.loss.attributes = 0.0
    if args.task == "attributes":
        cfg.loss.emotion = 0.0
    if args.task in ("attributes", "both"):
        if args.objective == "paper":
            raise SystemExit("--objective paper trains the emotion classes only; use --task emotion")
        cfg.fusion.attributes = True
    if args.freeze_video is not None:
        cfg.freeze_video = args.freeze_video
    cfg.avel_temperature = args.avel_temperature
    cfg.mem_head = args.mem_head
    return cfg


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every option's default."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--data", choices=("iemocap", "synthetic"), default="iemocap",
                   help="corpus kind; 'synthetic' writes one at --root if none is there")
    p.add_argument("--root", required=True, help="IEMOCAP_full_release directory (or the synthetic corpus)")
    p.add_argument("--preset", default="large", choices=("large", "base", "tiny"),
                   help="architecture: large (the paper: WavLM Large + ViT-L/14), base, tiny (CPU demo)")
    p.add_argument("--wavlm", help="local Hugging Face WavLM directory (random weights without)")
    p.add_argument("--clip", help="open_clip checkpoint file, optionally NAME=FILE (random weights without)")
    p.add_argument("--folds", default="all", help="test sessions: 'all' or a comma list such as 1,3")
    p.add_argument("--epochs", type=int, default=40, help="epochs per fold")
    p.add_argument("--batch-size", type=int, default=64,
                   help="clips per optimiser step, per process under torchrun (the paper: 64)")
    p.add_argument("--micro-batch", type=int, default=0,
                   help="clips per forward pass, accumulating gradients up to --batch-size where memory is "
                        "short (the reference: 16 per GPU); 0: the whole batch at once")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                   help="learning rate: constant (the reference code) or 5%% warm-up then cosine decay")
    p.add_argument("--loss-weights", default="", help="e.g. avel=1,mem=0.1,unimodal=1,attributes=1")
    p.add_argument("--objective", choices=("full", "paper"), default="full",
                   help="full: CE + unimodal heads' CE + AVEL + MEM (+ CCC where the attribute head is on); "
                        "paper: CE + AVEL + 0.1 MEM only, the paper's objective (no unimodal or attribute heads)")
    p.add_argument("--reconstruct", type=float, default=0.0,
                   help="weight of VAVL's unimodal reconstruction task (0: off); with --missing, clips with one "
                        "modality train that modality's encoder through it")
    p.add_argument("--no-avel", action="store_true", help="ablation: no audio-video emotion alignment")
    p.add_argument("--no-mem", action="store_true", help="ablation: no cross-modal label matching")
    p.add_argument("--avel-temperature", choices=("clip", "reference"), default="reference",
                   help="AVEL logits / ln(1/0.07) as the reference code (default), or CLIP's x exp(scale) "
                        "(its gradient on the encoders is 11-12x the emotion CE's at the start)")
    p.add_argument("--mem-head", choices=("linear", "mlp"), default="linear",
                   help="MEM's matching heads: the paper's linear layer, or a 2-layer MLP that can compare "
                        "the audio and video parts of the pooled cross-attention output")
    p.add_argument("--modality", choices=("both", "audio", "video"), default="both",
                   help="both: Foal-Net; audio / video: the paper's unimodal baselines, that encoder and "
                        "its head trained alone")
    p.add_argument("--missing", type=float, default=0.0,
                   help="fraction of training clips that lose one modality (audio or video, at random); "
                        "such a clip trains only the head it can (VAVL's missing-modality setting)")
    p.add_argument("--val", choices=("session", "split"), default="session",
                   help="model selection on a held-out training session (unseen speakers, default) or "
                        "on --val-fraction of the training clips (shares their speakers)")
    p.add_argument("--select-window", type=int, default=3,
                   help="select the epoch with the best mean validation UA over this many epochs")
    p.add_argument("--patience", type=int, default=0,
                   help="stop a fold after this many epochs without a better (smoothed) validation UA; 0: never")
    p.add_argument("--init", default=None,
                   help="start both encoders from this checkpoint directory (a stand-in for pretrained ones)")
    p.add_argument("--task", choices=("emotion", "attributes", "both"), default="emotion",
                   help="emotion classes, valence/arousal/dominance (CCC loss), or both")
    p.add_argument("--freeze-video", dest="freeze_video", action="store_true", default=None,
                   help="freeze the CLIP tower and train from cached frame embeddings (the paper)")
    p.add_argument("--train-video", dest="freeze_video", action="store_false",
                   help="fine-tune the CLIP tower (the tiny preset's default)")
    p.add_argument("--augment", action="store_true",
                   help="jitter frame colour, flip and position per clip (only when the video tower is trained)")
    p.add_argument("--video-region", choices=("auto", "speaker", "full"), default="auto",
                   help="speaker: the speaking actor's half of IEMOCAP's split-screen dialog frame; full: the "
                        "whole frame (both actors); auto: speaker for --data iemocap, the synthetic corpus's layout "
                        "otherwise")
    p.add_argument("--keep-excited", action="store_true", help="leave 'excited' out instead of merging it into happy")
    p.add_argument("--val-fraction", type=float, default=0.15, help="with --val split: the validation share")
    p.add_argument("--cache", default=None, help="CLIP embedding cache directory (default OUT/embedding-cache)")
    p.add_argument("--cache-audio-conv", action="store_true",
                   help="compute the frozen WavLM conv extractor's output once per fold and train the transformer "
                        "on it (the same features, faster; keeps them in memory: fine for small corpora)")
    p.add_argument("--seed", type=int, default=1234, help="seed for weights, sampling and MEM negatives")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--out", required=True, help="output directory (one foldN/ per test session)")
    p.add_argument("--resume", action="store_true", help="continue each fold from its last saved epoch")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bars")
    p.add_argument("--log-every", type=int, default=20,
                   help="when stdout is not a terminal (a log), print a progress line every N steps; 0: never")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.clip and "=" in args.clip:
        _, args.clip = args.clip.split("=", 1)  # NAME=FILE: the preset names the architecture
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    rank, world = dist_setup()
    out = Path(args.out)
    args.cache = args.cache or str(out / "embedding-cache")

    cfg = make_config(args)
    corpus = read_corpus(args)
    from .data.clips import load_clips

    clips = load_clips(corpus.utterances, cfg, progress=not args.quiet, video_region=args.video_region)
    sessions = sorted({c.session for c in clips})
    folds = sessions if args.folds == "all" else [int(f) for f in args.folds.split(",")]
    results = {}
    for session in folds:
        fold_dir = out / f"fold{session}"
        if args.resume and (fold_dir / "metrics.json").is_file():
            done = json.loads((fold_dir / "metrics.json").read_text())
            if finished(done, args.epochs):  # nothing to resume
                results[session] = done
                continue
        results[session] = train_fold(args, cfg, clips, session, fold_dir, rank, world)
    if rank != 0:
        return {}
    summary = {"folds": {}, "mean": {}, "skipped_turns": dict(corpus.skipped),
               "skipped_hidden_files": [str(p) for p in corpus.hidden_files], "command": vars(args)}
    for session, m in results.items():
        summary["folds"][session] = {k: {"UA": m["test"][k]["UA"], "WA": m["test"][k]["WA"]}
                                     for k in ("fused", "audio", "video")}
        summary["folds"][session]["wall_seconds"] = m["wall_seconds"]
        if "ccc" in m["test"]:
            summary["folds"][session]["ccc"] = m["test"]["ccc"]
    for k in ("fused", "audio", "video"):
        summary["mean"][k] = {metric: float(np.mean([f[k][metric] for f in summary["folds"].values()]))
                              for metric in ("UA", "WA")}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("test (mean over folds): " + ", ".join(
        f"{k} UA {v['UA']:.3f} WA {v['WA']:.3f}" for k, v in summary["mean"].items()))
    return summary


if __name__ == "__main__":
    main()
