"""The model card: built from the checkpoint and the researcher's file, schema-checked (a
missing or wrong-typed field names itself), carried by the manifest and printed by `info`;
a bundle without a licence says so; the demo's card says it is a synthetic-data demo."""

import copy
import json

import pytest

from foal_edge import BundleError
from foal_edge.errors import FoalEdgeError, ModelCardError
from foal_edge.bundle import load_manifest
from foal_edge.model_card import EU_AI_ACT, NO_LICENCE, validate_card

from .conftest import edit_manifest


@pytest.fixture(scope="module")
def card():
    from export.model_card import bundle_card
    from training.model import FoalNet

    from export.api import DEMO_CHECKPOINT as checkpoint

    return bundle_card(checkpoint, None, FoalNet.load(checkpoint).config)[0]


def test_the_demo_card_says_what_the_demo_is(card):
    assert "synthetic-data demo" in card["model"]["notice"] and "mean nothing" in card["model"]["notice"]
    assert card["training_data"]["synthetic"] is True and card["training_data"]["test_session"] == 1
    assert card["training_data"]["clips"] == {"train": 393, "val": 70, "test": 116}
    assert card["metrics"]["test"]["fused"]["UA"] == pytest.approx(0.774, abs=1e-3)
    assert len(card["model"]["checkpoint_sha256"]) == 64
    assert EU_AI_ACT in card["prohibited_uses"] and "Article 5(1)(f)" in EU_AI_ACT


@pytest.mark.parametrize("edit, field", [
    (lambda c: c.pop("licences"), "licences: missing"),
    (lambda c: c["licences"].pop("weights"), "licences.weights: missing"),
    (lambda c: c["training_data"].update(synthetic="yes"), "training_data.synthetic: true or false"),
    (lambda c: c["training_data"]["clips"].update(train=-3), "training_data.clips.train: an integer"),
    (lambda c: c["model"].update(checkpoint_sha256="abc"), "model.checkpoint_sha256: a string matching"),
    (lambda c: c.update(intended_uses="anything"), "intended_uses: a list"),
    (lambda c: c["prohibited_uses"].append(7), "prohibited_uses[2]: a non-empty string"),
    (lambda c: c["metrics"]["test"]["fused"].update(UA="high"), "metrics.test.fused.UA: a number"),
    (lambda c: c.update(licence="MIT"), "licence: not a field"),
])
def test_a_bad_field_names_itself(card, edit, field):
    bad = copy.deepcopy(card)
    edit(bad)
    with pytest.raises(ModelCardError, match=field.replace("[", r"\[").replace("(", r"\(")) as err:
        validate_card(bad, "card.json")
    assert isinstance(err.value, FoalEdgeError) and str(err.value).startswith("card.json: ")


def test_a_bad_card_file_stops_the_build_at_once_naming_the_field(tmp_path):
    from export.build_engine import main as build

    (tmp_path / "card.json").write_text(json.dumps({"licences": {"weights": 42, "training_data": None}}))
    with pytest.raises(SystemExit, match=r"card.json: licences.weights: a non-empty string"):
        build(["--out", str(tmp_path / "bundle"), "--model-card", str(tmp_path / "card.json")])
    assert not (tmp_path / "bundle" / "manifest.json").exists()
    (tmp_path / "card.json").write_text("{not json")
    with pytest.raises(SystemExit, match="not valid JSON"):
        build(["--out", str(tmp_path / "bundle"), "--model-card", str(tmp_path / "card.json")])


def test_info_shows_the_card_and_a_missing_licence(tiny_bundle, capsys):
    """The test bundle was built from random weights with no --model-card: info says there is no licence."""
    from foal_edge.__main__ import main

    m = load_manifest(tiny_bundle[1])
    assert m.model_card["licences"]["weights"] is None and m.calibration is None
    assert main(["info", str(tiny_bundle[1])]) == 0
    out = capsys.readouterr().out
    assert NO_LICENCE in out and "Article 5(1)(f)" in out and "trained on: not recorded" in out
    assert "calibration: none fitted" in out


def test_the_manifest_refuses_a_broken_card_by_name(bundle_copy, card):
    def broken(m):
        m["model_card"] = copy.deepcopy(card)
        del m["model_card"]["intended_uses"]

    edit_manifest(bundle_copy, broken)
    with pytest.raises(BundleError, match="model_card.intended_uses: missing"):
        load_manifest(bundle_copy)
    edit_manifest(bundle_copy, lambda m: m.update(model_card=card, calibration={
        "method": "t", "fitted_on": "v", "temperatures": {"fused": 1.0, "audio": 0, "video": 1.0}}))
    with pytest.raises(BundleError, match="calibration.temperatures.audio: a number"):
        load_manifest(bundle_copy)


def test_a_demo_card_is_shown_by_info_and_predict(bundle_copy, card, capsys):
    from foal_edge.__main__ import main

    edit_manifest(bundle_copy, lambda m: m.update(model_card=card))
    assert main(["info", str(bundle_copy)]) == 0
    out = capsys.readouterr().out
    assert out.count("NOTICE: synthetic-data demo") == 1 and "licence of the weights: Apache-2.0" in out
    assert main(["predict", str(bundle_copy), "--demo", "--no-vad"]) == 0
    assert "NOTICE: synthetic-data demo" in capsys.readouterr().err


def test_an_old_bundle_without_a_card_says_so(bundle_copy, capsys):
    from foal_edge.__main__ import main

    edit_manifest(bundle_copy, lambda m: m.pop("model_card"))
    assert main(["info", str(bundle_copy)]) == 0
    out = capsys.readouterr().out
    assert "model card: none" in out and NO_LICENCE in out
