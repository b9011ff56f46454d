"""`foal_edge.Client`: a Predictor-like client of `python -m foal_edge serve`, on the standard
library alone (http.client), so a thin kiosk needs numpy and nothing else.

    client = Client("http://gpu-server:8000", token=os.environ["FOAL_EDGE_TOKEN"])
    result = client.predict(audio=wave, sample_rate=16000, frames=rgb_uint8, fps=15)

The clip is checked here before it is sent, as `Predictor.predict` checks it (a stereo array
is refused with the Predictor's message); the server checks it again with its bundle's
numbers. Errors come back as the runtime's own exceptions with the server's message
(InvalidInputError for a bad clip, AuthenticationError for a missing or wrong token); a
server that cannot be reached is a BackendUnavailableError, one that does not answer within
`timeout` seconds in all (connecting, sending and reading together) a ServerTimeoutError, and
an answer that is not foal-edge's JSON (too large, truncated, malformed, another kind of
server) a ProtocolError. Only http:// and https:// URLs; redirects are not followed.
"""

from __future__ import annotations

import http.client
import math
import socket
import ssl
import threading
import time
import urllib.parse

from . import wire
from .errors import BackendUnavailableError, InvalidInputError, ProtocolError, ServerTimeoutError
from .predictor import Prediction

CHUNK = 64 << 10


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8000", timeout: float = 60.0, token: str | None = None,
                 max_response_bytes: int = wire.MAX_RESPONSE_BYTES, ssl_context: ssl.SSLContext | None = None):
        """url: http://host:port or https://host:port (a TLS reverse proxy in front of the
        server). timeout: seconds for a whole request, from connecting to the last byte of the
        answer. token: the server's token (`serve --token` / FOAL_EDGE_TOKEN), sent as
        `Authorization: Bearer TOKEN`. ssl_context: for https, e.g. one trusting a private CA."""
        if not isinstance(url, str):
            raise InvalidInputError(f"url must be a string like 'http://host:8000', not {type(url).__name__}")
        try:
            parts = urllib.parse.urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise InvalidInputError(f"url {url!r} is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInputError(f"url {url!r}: give http://host:port or https://host:port (other schemes, such "
                                    "as file://, are refused)")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise InvalidInputError(f"url {url!r}: no query, fragment or user:password in the URL (pass token=)")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (0 < timeout <= 86400) \
                or not math.isfinite(timeout):
            raise InvalidInputError(f"timeout must be a number of seconds in (0, 86400], not {timeout!r}")
        if token is not None and (not isinstance(token, str) or not token or not token.isprintable()
                                  or any(c in token for c in " \r\n") or not token.isascii()):
            raise InvalidInputError("token must be a non-empty printable ASCII string without spaces")
        if isinstance(max_response_bytes, bool) or not isinstance(max_response_bytes, int) or max_response_bytes < 1024:
            raise InvalidInputError("max_response_bytes must be a whole number of bytes, at least 1024")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._scheme, self._host, self._port, self._path = parts.scheme, parts.hostname, port, parts.path.rstrip("/")
        self.timeout = float(timeout)
        self.token = token
        self.max_response_bytes = max_response_bytes
        self._ssl = ssl_context

    # -- HTTP, with one deadline for the whole request ---------------------------------------
    def _call(self, path: str, body: bytes | None = None) -> tuple[int, str, bytes]:
        deadline = time.monotonic() + self.timeout
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        kwargs = {"context": self._ssl} if self._scheme == "https" and self._ssl is not None else {}
        conn = cls(self._host, self._port, timeout=self.timeout, **kwargs)
        expired = threading.Event()

        def expire():  # at the deadline, whatever the request is doing, its socket is shut
            expired.set()
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        timer = threading.Timer(self.timeout, expire)
        timer.daemon = True
        timer.start()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            conn.request("POST" if body is not None else "GET", self._path + path, body=body, headers=headers)
            response = conn.getresponse()
            length = response.getheader("Content-Length")
            if length is not None and (not length.strip().isdigit() or int(length) > self.max_response_bytes):
                raise ProtocolError(f"{self.url}: the answer is {length[:40]} bytes, more than the "
                                    f"{self.max_response_bytes} a client reads (max_response_bytes)")
            data = bytearray()
            while True:
                chunk = response.read(min(CHUNK, self.max_response_bytes + 1 - len(data)) or 1)
                if not chunk:
                    break
                data += chunk
                if len(data) > self.max_response_bytes:
                    raise ProtocolError(f"{self.url}: the answer is more than the {self.max_response_bytes} bytes a "
                                        "client reads (max_response_bytes)")
                if time.monotonic() > deadline:
                    expire()
                    raise OSError("deadline")
            if expired.is_set():  # the socket was shut under a read that then saw a clean end
                raise OSError("deadline")
            return response.status, response.getheader("Content-Type") or "", bytes(data)
        except ProtocolError:
            if expired.is_set():
                raise ServerTimeoutError(f"{self.url}: no complete answer within {self.timeout:g} s (Client "
                                         "timeout)") from None
            raise
        except Exception as exc:  # sockets, TLS, http.client's own (IncompleteRead, LineTooLong, ...)
            if expired.is_set() or isinstance(exc, (socket.timeout, TimeoutError)):
                raise ServerTimeoutError(f"{self.url}: no complete answer within {self.timeout:g} s (Client timeout)") \
                    from None
            if isinstance(exc, (http.client.HTTPException, UnicodeError, ValueError)) or \
                    isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLCertVerificationError):
                raise ProtocolError(f"{self.url}: the answer is not valid HTTP ({type(exc).__name__}: "
                                    f"{str(exc)[:200]})") from None
            if isinstance(exc, (OSError, MemoryError)):
                raise BackendUnavailableError(f"{self.url}: cannot reach the server ({str(exc)[:200]}); start it "
                                              "with `python -m foal_edge serve BUNDLE`") from None
            raise
        finally:
            timer.cancel()
            conn.close()

    def _json(self, path: str, body: bytes | None = None) -> bytes:
        status, content_type, data = self._call(path, body)
        if status != 200:
            raise wire.error_from(status, data)
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise ProtocolError(f"{self.url}: the answer is {content_type[:60] or 'untyped'!r}, not application/json: "
                                "is this a foal-edge server?")
        return data

    def health(self) -> dict:
        return wire.decode_health(self._json("/health"))

    def predict(self, audio=None, sample_rate=None, frames=None, fps=None) -> Prediction:
        """As `Predictor.predict`, on the server."""
        raw = wire.decode_prediction(self._json("/predict", wire.encode_clip(audio, sample_rate, frames, fps)))
        return Prediction(**raw)
