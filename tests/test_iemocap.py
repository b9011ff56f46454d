"""The IEMOCAP reader on fake trees in the real layout: split-screen 720x480 dialog videos at
29.97 fps with both actors in every frame, real-format EmoEvaluation files, and the hidden
files macOS leaves on shared drives."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from training.config import preset
from training.data.clips import load_clips
from training.data.iemocap import read_iemocap, speaker_side
from training.synthetic import _speaker, write_dialog

# Each actor has a colour the other never shows: red (F) and blue (M) faces on grey.
SKIN = {"F": (225, 40, 40), "M": (40, 40, 225)}


def _actors(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    actors = {g: _speaker(rng, g) for g in "FM"}
    for g, actor in actors.items():
        actor["skin"] = np.array(SKIN[g])
        actor["background"] = np.array((90, 90, 90))
    return actors


@pytest.fixture(scope="module")
def dialog_tree(tmp_path_factory):
    """Session 1 with two dialogs: Ses01F_impro01 (F wears the markers: F on the left half)
    and Ses01M_impro02 (M on the left)."""
    root = tmp_path_factory.mktemp("iemocap")
    actors = _actors(7)
    rng = np.random.default_rng(3)
    for index, lead in ((1, "F"), (2, "M")):
        write_dialog(root, rng, 1, lead, index, actors, turns=4, seconds=(1.0, 1.4), layout="dialog")
    return root


def _share(frames: np.ndarray, gender: str) -> float:
    """Fraction of pixels in the actor's colour (red for F, blue for M)."""
    f = frames.astype(int)
    r, b = f[..., 0], f[..., 2]
    hit = (r > 150) & (b < 110) if gender == "F" else (b > 150) & (r < 110)
    return float(hit.mean())


def test_dialog_videos_are_in_iemocaps_format(dialog_tree):
    import av

    path = dialog_tree / "Session1" / "dialog" / "avi" / "DivX" / "Ses01F_impro01.avi"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (720, 480)
        assert stream.codec_context.name == "mpeg4"
        assert abs(float(stream.average_rate) - 29.97) < 0.01
        frame = next(container.decode(stream)).to_ndarray(format="rgb24")
    # Both actors in one frame: the dialog's named actor (F) on the left, M on the right.
    assert _share(frame[:, :360], "F") > 0.05 and _share(frame[:, :360], "M") < 0.001
    assert _share(frame[:, 360:], "M") > 0.05 and _share(frame[:, 360:], "F") < 0.001
    text = (dialog_tree / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt").read_text()
    assert text.startswith("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]")
    assert "C-E2:\t" in text and "A-E3:\tval " in text


def test_speaker_side_follows_the_dialog_name():
    assert speaker_side("Ses01F_impro01", "F") == "left" and speaker_side("Ses01F_impro01", "M") == "right"
    assert speaker_side("Ses05M_script01_1", "M") == "left" and speaker_side("Ses05M_script01_1", "F") == "right"
    assert speaker_side("Ses05M_script01_1", "F", mocap_side="right") == "left"
    assert speaker_side("meeting", "F") is None


def test_reader_crops_the_speaking_actors_half(dialog_tree):
    corpus = read_iemocap(dialog_tree)
    genders = {u.id: u.id.rsplit("_", 1)[-1][0] for u in corpus.utterances}
    assert set(genders.values()) == {"F", "M"} and {u.dialog for u in corpus.utterances} == {
        "Ses01F_impro01", "Ses01M_impro02"}
    cfg = preset("tiny")
    speaker = load_clips(corpus.utterances, cfg, progress=False, video_region="speaker")
    full = load_clips(corpus.utterances, cfg, progress=False, video_region="full")
    for clip, whole in zip(speaker, full):
        me, other = genders[clip.id], "M" if genders[clip.id] == "F" else "F"
        assert clip.frames.shape[1:] == (224, 224, 3)
        # The speaker's face fills the crop; the other actor is not in it.
        assert _share(clip.frames, me) > 0.15, clip.id
        assert _share(clip.frames, other) < 0.001, clip.id
        # The whole frame (CLIP's centre crop of 720x480) cuts both faces and keeps both actors.
        assert _share(whole.frames, me) > 0.03 and _share(whole.frames, other) > 0.03, clip.id


def test_speaker_region_needs_iemocap_names(tmp_path):
    actors = _actors(1)
    write_dialog(tmp_path, np.random.default_rng(0), 1, "F", 1, actors, turns=2, seconds=(1.0, 1.2), layout="dialog")
    corpus = read_iemocap(tmp_path)
    for u in corpus.utterances:
        object.__setattr__(u, "video_side", None)  # as for a dialog not named SesNN[F|M]_...
    with pytest.raises(ValueError, match="--video-region full"):
        load_clips(corpus.utterances[:1], preset("tiny"), progress=False, video_region="speaker")


def test_hidden_files_are_skipped_and_reported(dialog_tree, tmp_path, caplog):
    import shutil

    root = tmp_path / "IEMOCAP_full_release"
    shutil.copytree(dialog_tree, root)
    evaluation = root / "Session1" / "dialog" / "EmoEvaluation"
    # macOS AppleDouble files: binary, named like the real ones with "._" in front.
    (evaluation / "._Ses01F_impro01.txt").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    (evaluation / ".DS_Store.txt").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "._Session1").write_bytes(b"\x00\x05\x16\x07")
    with caplog.at_level(logging.WARNING, logger="training.data.iemocap"):
        corpus = read_iemocap(root)
    assert sorted(p.name for p in corpus.hidden_files) == [".DS_Store.txt", "._Ses01F_impro01.txt"]
    assert "skipped 2 hidden files" in corpus.report()
    assert any("hidden" in r.getMessage() for r in caplog.records)
    # Nothing real is lost: every turn of both dialogs is read.
    assert len(corpus.utterances) == len(read_iemocap(dialog_tree).utterances)


def test_training_reads_the_split_screen_corpus_through_the_speaker_region(dialog_tree, tmp_path):
    """--data iemocap defaults to the speaker's half, and the embedding cache keeps it apart
    from the whole-frame embeddings."""
    from training.train import build_parser, read_corpus, video_region_for

    args = build_parser().parse_args(["--data", "iemocap", "--root", str(dialog_tree), "--out", str(tmp_path)])
    read_corpus(args)
    assert args.video_region == "speaker"
    assert video_region_for("synthetic", tmp_path) == "full"  # a corpus without synthetic.json: one face
