"""The model card a bundle carries in its manifest (`model_card`): what the model was trained
on, how well it did and how that was measured, its calibration, the licences of its weights
and training data, what it is for and what it must not be used for, and who built it when
from which checkpoint.

`python -m export.build_engine` fills it from the checkpoint (training writes metrics.json and
calibration.json beside the weights) and from `--model-card FILE`, a small JSON or YAML file
the researcher writes with the same fields (see docs/confidence.md). `python -m foal_edge
info` prints it (`describe`). Checked like the rest of the manifest (foal_edge/manifest.py's
dependency-free schema layer): a missing or wrong-typed field is refused by its name.
"""

from __future__ import annotations

from .errors import ModelCardError
from .bundle.schema import SchemaError, _entries, _int, _list, _nullable, _num, _object, _sha256, _short, _str

CARD_VERSION = 1
EU_AI_ACT = ("emotion recognition in workplaces and education institutions, except for medical or safety reasons "
             "(prohibited by the EU AI Act, Article 5(1)(f))")
NO_LICENCE = ("licence: NONE GIVEN for the weights; do not redistribute or deploy them until their owner states "
              "one (rebuild with --model-card naming licences.weights)")

_TEXT = lambda x: _str(x, 500)  # noqa: E731
_SCORES = lambda x: _entries(x, 16, lambda s: _num(s, -1e6, 1e6))  # noqa: E731  metric -> value


def _model(v):
    return _object(v, {"name": lambda x: _str(x, 128), "preset": lambda x: _str(x, 64),
                       "checkpoint_sha256": _nullable(_sha256), "built_at": lambda x: _str(x, 64),
                       "built_by": _nullable(lambda x: _str(x, 200))},
                   {"notice": _TEXT})


def _training_data(v):
    return _object(v, {"corpus": lambda x: _str(x, 200), "synthetic": _bool,
                       "clips": _nullable(lambda x: _entries(x, 8, lambda n: _int(n, 0, 1 << 30)))},
                   {"sessions": lambda x: _list(x, 0, 64, lambda s: _int(s, 0, 1 << 16)),
                    "test_session": _nullable(lambda x: _int(x, 0, 1 << 16)),
                    "validation": _TEXT})


def _bool(v) -> bool:
    if not isinstance(v, bool):
        raise SchemaError(f"true or false, not {_short(v)}")
    return v


def _metrics(v):
    return _object(v, {"protocol": _TEXT, "test": lambda x: _entries(x, 8, _SCORES)})


def _calibration(v):
    return _object(v, {"method": lambda x: _str(x, 200), "fitted_on": lambda x: _str(x, 200),
                       "temperatures": lambda x: _entries(x, 8, lambda t: _num(t, 0.0, 1e3, open_low=True))},
                   {"test_before": _SCORES, "test_after": _SCORES})


def _licences(v):
    return _object(v, {"weights": _nullable(lambda x: _str(x, 200)),
                       "training_data": _nullable(lambda x: _str(x, 200))})


CARD_FIELDS = {
    "card_version": lambda x: _int(x, CARD_VERSION, CARD_VERSION),
    "model": _model,
    "training_data": _nullable(_training_data),
    "metrics": _nullable(_metrics),
    "calibration": _nullable(_calibration),
    "licences": _licences,
    "intended_uses": lambda x: _list(x, 1, 16, _TEXT),
    "prohibited_uses": lambda x: _list(x, 1, 16, _TEXT),
}


def check_card(v) -> dict:
    """The schema as the manifest's checker uses it (raises the manifest layer's SchemaError)."""
    return _object(v, CARD_FIELDS)


def validate_card(card, source: str = "model card") -> dict:
    """A whole card, or ModelCardError naming the field that is missing or of the wrong type."""
    try:
        return check_card(card)
    except SchemaError as exc:
        raise ModelCardError(f"{source}: {exc}; see docs/confidence.md for the model card's fields") from None


def describe(card: dict | None) -> list[str]:
    """The card as `info` prints it: a bundle without a card or without a licence says so."""
    if not card:
        return ["model card: none (a bundle built before model cards); nothing says what it was trained on",
                NO_LICENCE]
    m, data, lic = card["model"], card["training_data"], card["licences"]
    lines = []
    if m.get("notice"):
        lines.append(f"NOTICE: {m['notice']}")
    by = f"by {m['built_by']}" if m.get("built_by") else "maker not stated"
    sha = f"model.safetensors sha256 {m['checkpoint_sha256'][:12]}..." if m.get("checkpoint_sha256") else "no sha256"
    lines.append(f"model card: {m['name']}, {by}; bundle built {m['built_at']} from a checkpoint ({sha})")
    if data is None:
        lines.append("  trained on: not recorded (random or untracked weights)")
    else:
        kind = "synthetic" if data["synthetic"] else "real recordings"
        clips = data.get("clips") or {}
        counts = ", ".join(f"{n} {k}" for k, n in clips.items())
        where = f"; tested on session {data['test_session']}" if data.get("test_session") is not None else ""
        lines.append(f"  trained on: {data['corpus']} ({kind}){where}" + (f"; clips: {counts}" if counts else ""))
    met = card.get("metrics")
    if met:
        heads = "; ".join(f"{h} " + ", ".join(f"{k} {v:.3f}" for k, v in s.items()) for h, s in met["test"].items())
        lines.append(f"  test metrics: {heads} ({met['protocol']})")
    else:
        lines.append("  test metrics: none recorded")
    cal = card.get("calibration")
    if cal:
        temps = ", ".join(f"{h} T={t:.2f}" for h, t in cal["temperatures"].items())
        change = ""
        if cal.get("test_before") and cal.get("test_after"):
            change = "; fused head on the test session: " + ", ".join(
                f"{k} {cal['test_before'][k]:.3f} -> {cal['test_after'][k]:.3f}"
                for k in ("NLL", "ECE") if k in cal["test_before"] and k in cal["test_after"])
        lines.append(f"  calibration: {temps} (fitted on {cal['fitted_on']}){change}")
    else:
        lines.append("  calibration: none fitted (probabilities are the raw softmax)")
    lines.append(NO_LICENCE if not lic.get("weights") else f"  licence of the weights: {lic['weights']}")
    lines.append(f"  licence of the training data: {lic.get('training_data') or 'not stated'}")
    lines.append("  intended uses: " + "; ".join(card["intended_uses"]))
    lines.append("  must not be used for: " + "; ".join(card["prohibited_uses"]))
    return lines


def notice(card: dict | None) -> str | None:
    """The card's one-line warning (the demo's: synthetic data, labels on real media mean nothing)."""
    return (card or {}).get("model", {}).get("notice")


__all__ = ["CARD_VERSION", "EU_AI_ACT", "check_card", "validate_card", "describe", "notice"]
