"""Calibration: a miscalibrated model is recalibrated (ECE falls, accuracy does not move); the
temperatures travel checkpoint -> bundle -> Predictor and the runtime's probabilities are the
calibrated eager ones; min_confidence flags what it should; per-modality heads are reported."""

import json

import numpy as np
import pytest

from foal_edge import InvalidInputError, Predictor


def _clips(seeds, config):
    """Synthetic clips as training reads them (audio at 16 kHz, 224x224 frames)."""
    from foal_edge import preprocess
    from training.config import EMOTION_LABELS
    from training.data.clips import Clip
    from training.synthetic import make_clip

    codes = {"neu": "neutral", "hap": "happy", "ang": "angry", "sad": "sad"}
    out = []
    for seed in seeds:
        audio, frames, code = make_clip(seed, code=("neu", "hap", "ang", "sad")[seed % 4],
                                        frames=config.frames_per_clip)
        frames = np.stack([preprocess.resize_and_crop(f, config.video.image_size) for f in frames])
        out.append(Clip(f"s{seed}", 1, "F", EMOTION_LABELS.index(codes[code]), np.full(3, 3.0, np.float32),
                        audio[: config.audio_samples].astype(np.float32), frames))
    return out


def test_overconfident_logits_get_their_temperature_back():
    """Labels drawn from softmax(z) make z calibrated by construction; 5z is overconfident:
    the fitted temperature is about 5, the test ECE falls to near 0, the arg-max is kept."""
    from training.calibration import ece, fit_temperature, nll, softmax

    rng = np.random.default_rng(0)

    def draw(n):
        z = rng.normal(0, 1.5, (n, 4))
        p = softmax(z)
        gold = (rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(1)  # one draw from each row's distribution
        return 5 * z, gold

    val_logits, val_gold = draw(3000)
    test_logits, test_gold = draw(3000)
    t = fit_temperature(val_logits, val_gold)
    assert 4.5 < t < 5.5
    before, after = softmax(test_logits), softmax(test_logits, t)
    assert ece(before, test_gold) > 0.15 and ece(after, test_gold) < 0.03
    assert nll(after, test_gold) < nll(before, test_gold)
    assert (before.argmax(1) == after.argmax(1)).all()
    # an already calibrated head keeps T close to 1
    assert 0.85 < fit_temperature(val_logits / 5, val_gold) < 1.15


def test_ece_and_brier_by_hand():
    from training.calibration import brier, ece

    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    gold = np.array([0, 1, 0, 0])
    # bins: 0.9 (2 clips, accuracy 0.5) and 0.6 (2 clips, accuracy 1.0): 0.5*0.4 + 0.5*0.4
    assert ece(probs, gold) == pytest.approx(0.4)
    assert brier(probs, gold) == pytest.approx((0.02 + 1.62 + 0.32 + 0.32) / 4)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """The demo checkpoint with its fused classifier scaled by 5 (overconfident), calibrated
    by training's own fold step on synthetic clips, and the bundle built from it with a YAML
    model card: (checkpoint dir, bundle dir, calibration report)."""
    import torch

    from export.api import DEMO_CHECKPOINT
    from export.build_engine import main as build
    from training.calibration import calibrate_fold
    from training.model import FoalNet

    root = tmp_path_factory.mktemp("calibrated")
    model = FoalNet.load(DEMO_CHECKPOINT).eval()
    with torch.no_grad():
        model.fusion.classifier.weight.mul_(5)
        model.fusion.classifier.bias.mul_(5)
    ckpt = root / "ckpt"
    model.save(ckpt)
    config = model.config
    report = calibrate_fold(model, _clips(range(40), config), _clips(range(100, 140), config), config, 8,
                            torch.device("cpu"), ckpt, 1, "synthetic clips 0-39")
    (root / "card.yaml").write_text("model:\n  name: scaled demo\n  built_by: tests/test_calibration.py\n"
                                    "licences:\n  weights: Apache-2.0\n  training_data: synthetic\n")
    build(["--checkpoint", str(ckpt), "--out", str(root / "bundle"), "--target", "onnx", "--precision", "fp32",
           "--parity-clips", "0", "--model-card", str(root / "card.yaml")])
    return ckpt, root / "bundle", report


def test_a_scaled_model_is_recalibrated_and_keeps_its_accuracy(calibrated):
    ckpt, _, report = calibrated
    before, after = report["test"]["before"]["fused"], report["test"]["after"]["fused"]
    assert report["temperatures"]["fused"] > 2  # the x5 is (mostly) undone
    assert after["ECE"] < before["ECE"] and after["NLL"] < before["NLL"]
    for head in ("fused", "audio", "video"):  # dividing by T keeps every arg-max
        assert report["test"]["after"][head]["UA"] == report["test"]["before"][head]["UA"]
    assert json.loads((ckpt / "calibration.json").read_text())["temperatures"] == report["temperatures"]
    assert (ckpt / "reliability-fold1.png").stat().st_size > 1000


def test_temperatures_round_trip_into_the_runtime(calibrated):
    """checkpoint -> manifest -> Predictor: the runtime's probabilities are softmax(eager logits / T)."""
    import torch

    from training.calibration import softmax
    from training.model import FoalNet

    ckpt, bundle, report = calibrated
    temps = report["temperatures"]
    predictor = Predictor(bundle, backend="onnxruntime-cpu", vad=False)
    assert predictor.manifest.calibration["temperatures"] == pytest.approx(temps)
    model = FoalNet.load(ckpt).eval()
    labels = predictor.labels
    for clip in _clips([7, 8, 9], model.config):
        got = predictor.predict(audio=clip.audio, sample_rate=16000, frames=clip.frames)
        x, _ = predictor.pipeline.prepare_frames(clip.frames)
        with torch.inference_mode():
            fused, audio, video = model(torch.from_numpy(clip.audio[None]), torch.from_numpy(x)[None],
                                        torch.ones(1, len(x)))[:3]
        want = {"fused": softmax(fused.numpy()[0], temps["fused"]), "audio": softmax(audio.numpy()[0], temps["audio"]),
                "video": softmax(video.numpy()[0], temps["video"])}
        assert np.abs(np.array([got.probabilities[k] for k in labels]) - want["fused"]).max() < 1e-4
        assert np.abs(np.array([got.probabilities[k] for k in labels]) - softmax(fused.numpy()[0])).max() > 1e-3
        assert got.confidence == pytest.approx(want["fused"].max(), abs=1e-4)
        assert got.label == labels[int(want["fused"].argmax())]
        for m in ("audio", "video"):
            p = got.per_modality[m]
            assert np.abs(np.array([p["probabilities"][k] for k in labels]) - want[m]).max() < 1e-4
            assert p["label"] == labels[int(want[m].argmax())]
        only = predictor.predict(frames=clip.frames)  # one modality: its own head, no per-modality part
        assert only.per_modality is None and only.confidence == max(only.probabilities.values())


def test_min_confidence_flags_what_is_below_it(calibrated):
    _, bundle, _ = calibrated
    from training.model import FoalNet

    clips = _clips(range(200, 212), FoalNet.load(calibrated[0]).config)
    plain = Predictor(bundle, backend="onnxruntime-cpu", vad=False)
    conf = [plain.predict(audio=c.audio, sample_rate=16000, frames=c.frames).confidence for c in clips]
    threshold = float(np.median(conf))
    strict = Predictor(bundle, backend="onnxruntime-cpu", vad=False, min_confidence=threshold)
    flags = [strict.predict(audio=c.audio, sample_rate=16000, frames=c.frames).low_confidence for c in clips]
    assert flags == [c < threshold for c in conf] and any(flags) and not all(flags)
    assert not any(plain.predict(audio=c.audio, sample_rate=16000).low_confidence for c in clips[:3])
    d = strict.predict(audio=clips[0].audio, sample_rate=16000, frames=clips[0].frames).to_dict()
    assert {"confidence", "low_confidence", "per_modality"} <= set(d)
    json.dumps(d)  # the server's JSON carries it


@pytest.mark.parametrize("bad", [1.5, -0.1, "high", True, float("nan")])
def test_min_confidence_refuses_what_is_not_a_probability(calibrated, bad):
    with pytest.raises(InvalidInputError, match="min_confidence"):
        Predictor(calibrated[1], backend="onnxruntime-cpu", min_confidence=bad)


def test_cli_prints_confidence_and_agreement(calibrated, capsys):
    from foal_edge.__main__ import main

    assert main(["predict", str(calibrated[1]), "--demo", "--no-vad"]) == 0
    out = capsys.readouterr().out
    assert "confidence 0." in out and ("they agree" in out or "they disagree" in out)
