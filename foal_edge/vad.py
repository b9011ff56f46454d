"""Voice activity detection: which parts of a window are speech.

WebRTC's detector (the `webrtcvad-wheels` build of Google's WebRTC VAD: a small C extension,
no model file, about 0.4 ms per 3 s window here), run on 30 ms frames of 16-bit PCM at the
bundle's rate, in its most aggressive mode, with a fresh detector per window (its noise
estimate adapts within a window, never across predictions). Speech frames are widened by
150 ms on each side so that word onsets and endings stay with the speech; what is not speech
is dropped, and WavLM sees the speech segments joined. Silero's VAD would be stronger on
babble, but its package requires torch, which the runtime never imports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import BackendUnavailableError

FRAME_SECONDS = 0.03
PAD_FRAMES = 5  # 150 ms of context either side of each speech frame
MIN_SPEECH_SECONDS = 0.25  # less than this is a cough, a click or a false alarm
RATES = (8000, 16000, 32000, 48000)  # what WebRTC's detector takes


@dataclass
class Speech:
    samples: np.ndarray  # the speech segments, joined (float32)
    seconds: float  # speech heard, before widening
    segments: list[tuple[float, float]]  # (start, end) in seconds, widened


def available() -> bool:
    try:
        import webrtcvad  # noqa: F401
    except ImportError:
        return False
    return True


class VoiceActivity:
    def __init__(self, rate: int, mode: int = 3):
        try:
            import webrtcvad
        except ImportError as exc:
            raise BackendUnavailableError("voice activity detection needs webrtcvad: pip install 'foal-edge[vad]' "
                                          "(or pass vad=False)") from exc
        if rate not in RATES:
            raise BackendUnavailableError(f"WebRTC's VAD takes {RATES} Hz audio, the bundle's rate is {rate} Hz: "
                                          "pass vad=False")
        self._make = lambda: webrtcvad.Vad(mode)
        self.rate = rate
        self.frame = int(FRAME_SECONDS * rate)

    def speech(self, audio: np.ndarray) -> Speech:
        """The speech in `audio` (float32 mono at the detector's rate)."""
        vad, n = self._make(), self.frame
        count = len(audio) // n
        if count == 0:
            return Speech(audio[:0], 0.0, [])
        pcm = (np.clip(audio[: count * n], -1.0, 1.0) * 32767).astype("<i2")
        voiced = np.fromiter((vad.is_speech(pcm[i * n:(i + 1) * n].tobytes(), self.rate) for i in range(count)),
                             bool, count)
        heard = voiced.sum() * FRAME_SECONDS
        if heard < MIN_SPEECH_SECONDS:
            return Speech(audio[:0], float(heard), [])
        keep = np.convolve(voiced, np.ones(2 * PAD_FRAMES + 1), "same") > 0
        if keep[-1]:  # the tail shorter than a frame goes with the last frame
            keep = np.append(keep, True)
        mask = np.repeat(keep, n)[: len(audio)]
        if len(mask) < len(audio):
            mask = np.concatenate([mask, np.zeros(len(audio) - len(mask), bool)])
        edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
        segments = [(a / self.rate, b / self.rate) for a, b in zip(edges[::2], edges[1::2])]
        return Speech(np.ascontiguousarray(audio[mask]), float(heard), segments)
