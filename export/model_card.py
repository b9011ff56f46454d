"""The bundle's model card and calibration, from what the checkpoint knows plus the researcher's file.

    card, calibration = bundle_card(checkpoint_dir, card_file, config)

The checkpoint directory knows (training writes them): the weights' sha256, metrics.json
(corpus, test session, validation, clip counts, test UA/WA per head) and calibration.json
(temperatures fitted on the validation session, test NLL/Brier/ECE before and after). A
`model_card.json` in the checkpoint directory (the demo has one) and then `--model-card FILE`
(JSON, or YAML when PyYAML is installed) are laid over that, key by key. The EU AI Act
Article 5(1)(f) line is always among the prohibited uses. The result is checked against
foal_edge/model_card.py's schema before anything is exported.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from foal_edge.errors import ModelCardError
from foal_edge.bundle import sha256_file
from foal_edge.model_card import CARD_VERSION, EU_AI_ACT, validate_card

CALIBRATION_FILE = "calibration.json"
CARD_FILE = "model_card.json"
CORPORA = {"synthetic": ("foal-edge synthetic IEMOCAP-layout corpus (training/synthetic.py)", True),
           "iemocap": ("IEMOCAP (USC SAIL), leave-one-session-out", False)}
DEFAULT_USES = ["research and prototyping of audio-visual emotion recognition, with a person who can "
                "check its answers"]


def read_card_file(path: Path) -> dict:
    """The researcher's card: JSON, or YAML (.yaml/.yml) when PyYAML is installed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelCardError(f"{path}: cannot read the model card ({exc})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ModelCardError(f"{path}: a YAML model card needs PyYAML (pip install pyyaml), or write it as "
                                 "JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ModelCardError(f"{path}: not valid YAML ({exc})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelCardError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelCardError(f"{path}: a model card is a mapping of fields (model, licences, ...), "
                             f"not {type(data).__name__}")
    return data


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelCardError(f"{path}: cannot read it ({exc}); re-copy the checkpoint") from None


def from_checkpoint(checkpoint: Path | None, config) -> tuple[dict, dict | None]:
    """(the card as far as the checkpoint knows it, the manifest's calibration or None)."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    card = {"card_version": CARD_VERSION,
            "model": {"name": f"Foal-Net {config.preset}", "preset": config.preset, "checkpoint_sha256": None,
                      "built_at": now, "built_by": None},
            "training_data": None, "metrics": None, "calibration": None,
            "licences": {"weights": None, "training_data": None},
            "intended_uses": list(DEFAULT_USES), "prohibited_uses": [EU_AI_ACT]}
    if checkpoint is None:  # --random-weights
        card["model"]["notice"] = "random weights: for latency and parity work; its labels mean nothing"
        return card, None
    checkpoint = Path(checkpoint)
    weights = checkpoint / "model.safetensors"
    if weights.is_file():
        card["model"]["checkpoint_sha256"] = sha256_file(weights)
    metrics = _read_json(checkpoint / "metrics.json")
    if metrics:
        corpus, synthetic = CORPORA.get(metrics.get("corpus"), (metrics.get("corpus") or "not recorded", False))
        clips = {k: metrics[f"{k}_clips"] for k in ("train", "val", "test")
                 if isinstance(metrics.get(f"{k}_clips"), int)}
        card["training_data"] = {"corpus": corpus, "synthetic": synthetic, "clips": clips or None,
                                 "test_session": metrics.get("test_session")}
        if metrics.get("validation"):
            card["training_data"]["validation"] = str(metrics["validation"])
        test = metrics.get("test") or {}
        heads = {h: {k: float(test[h][k]) for k in ("UA", "WA") if k in test[h]} for h in ("fused", "audio", "video")
                 if isinstance(test.get(h), dict)}
        if heads:
            card["metrics"] = {"protocol": f"leave-one-session-out: tested on session {metrics.get('test_session')} "
                                           "(speakers never seen in training); model selected on "
                                           f"{metrics.get('validation', 'a validation split')}",
                               "test": heads}
    calibration = None
    fitted = _read_json(checkpoint / CALIBRATION_FILE)
    if fitted:
        calibration = {"method": fitted["method"], "fitted_on": fitted["fitted_on"],
                       "temperatures": {h: float(t) for h, t in fitted["temperatures"].items()}}
        card["calibration"] = dict(calibration)
        test = fitted.get("test", {})
        for when in ("before", "after"):
            fused = test.get(when, {}).get("fused")
            if fused:
                card["calibration"][f"test_{when}"] = {k: float(fused[k]) for k in ("NLL", "Brier", "ECE")}
    return card, calibration


def bundle_card(checkpoint: Path | None, card_file: Path | None, config) -> tuple[dict, dict | None]:
    """The checked card and the manifest's calibration. Raises ModelCardError naming a bad field."""
    card, calibration = from_checkpoint(checkpoint, config)
    sources = []
    if checkpoint is not None and (Path(checkpoint) / CARD_FILE).is_file():
        sources.append(Path(checkpoint) / CARD_FILE)
    if card_file is not None:
        sources.append(Path(card_file))
    for source in sources:
        given = read_card_file(source)
        # Checked after each layer, so an error names the file that brought it.
        card = _merge(card, given)
        validate_card(card, str(source))
    if EU_AI_ACT not in card["prohibited_uses"]:
        card["prohibited_uses"] = list(card["prohibited_uses"]) + [EU_AI_ACT]
    return validate_card(card, "model card"), calibration
