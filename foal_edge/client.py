"""`foal_edge.Client`: a Predictor-like client of `python -m foal_edge serve`, on the standard
library alone (urllib), so a thin kiosk needs numpy and nothing else.

    client = Client("http://gpu-server:8000")
    result = client.predict(audio=wave, sample_rate=16000, frames=rgb_uint8, fps=15)

Errors come back as the runtime's own exceptions with the server's message
(InvalidInputError for a bad clip); a server that cannot be reached is a BackendUnavailableError.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from . import wire
from .errors import BackendUnavailableError
from .predictor import Prediction


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8000", timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, path: str, body: bytes | None = None) -> dict:
        request = urllib.request.Request(self.url + path, data=body, method="POST" if body is not None else "GET",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise wire.error_from(exc.code, exc.read()) from None
        except (urllib.error.URLError, OSError) as exc:
            raise BackendUnavailableError(f"{self.url}: cannot reach the server ({exc}); start it with "
                                          "`python -m foal_edge serve BUNDLE`") from None

    def health(self) -> dict:
        return self._call("/health")

    def predict(self, audio=None, sample_rate=None, frames=None, fps=None) -> Prediction:
        """As `Predictor.predict`, on the server."""
        raw = self._call("/predict", wire.encode_clip(audio, sample_rate, frames, fps))
        return Prediction(raw["label"], raw["probabilities"], raw.get("attributes"), tuple(raw["modalities"]),
                          raw["timings_ms"], raw["backend"], tuple(raw["notes"]))
