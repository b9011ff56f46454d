"""`python -m foal_edge serve BUNDLE`: a bundle behind an HTTP/JSON endpoint on Ray Serve,
with dynamic batching across requests, for many thin kiosks sending clips to one server.
docs/serving.md is the user's guide (host, token, TLS, limits, Ray clusters).

Each replica holds one Predictor. A request is authenticated (when the server has a token),
size-checked, decoded and checked on arrival with the Predictor's own check
(`Predictor.check_clip`, the one `predict_batch` makes): a malformed or unusable clip gets its
400 at once and never joins a batch. Valid clips wait up to `--batch-wait-ms` for others, and
each batch is predicted together (`Predictor.predict_batch(return_exceptions=True)`: each
clip fails or succeeds on its own) on a worker thread, so the replica keeps accepting
requests meanwhile. The wire format is `foal_edge.wire`; `foal_edge.Client` speaks it.

    GET  /health   -> {"status": "ok", "labels": [...], "backend": ..., ...}
    POST /predict  -> a prediction, or {"error": ..., "message": ...} with 400 (bad input),
                      401 (token), 404, 405, 413 (body), 431 (headers) or 500

Clients never see a path of the server's disk, a traceback or an API explorer (/docs, /redoc
and /openapi.json do not exist); every answer is JSON.

Ray Serve rather than PyTriton, measured here: PyTriton's Triton server answered a Python
exception with 500 and a traceback, failed every request of a dynamic batch when one was bad,
and its Python stub only found numpy once LD_LIBRARY_PATH pointed at this interpreter's
libpython; Ray Serve lets each request be checked before batching, and the same Ray runs the
archive batch (`batch --engine ray`).
"""

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .errors import BackendUnavailableError, FoalEdgeError, InvalidInputError

try:
    import ray
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import Response
    from ray import serve
    from starlette.exceptions import HTTPException
except ImportError as exc:  # the CLI turns this into a one-line error
    raise BackendUnavailableError("serving needs Ray Serve: pip install 'foal-edge[serve]'") from exc

from . import wire  # noqa: E402

log = logging.getLogger("foal_edge.serve")

TOKEN_ENV = "FOAL_EDGE_TOKEN"
MIN_TOKEN_CHARS = 16
MAX_BODY_MB = 64  # 24 frames of 1280x720 RGB are 88 MB as base64: send the frames the clip needs
MAX_HEADER_BYTES = 16 << 10  # all request headers together
LOOPBACK_NAMES = ("localhost",)

# Module level, so Ray pickles the app by reference (a FastAPI app built inside a function is
# pickled by value, which recurses through pydantic's validators). No API explorer: /docs and
# /redoc load scripts from a CDN and describe the API to anyone.
api = FastAPI(title="foal-edge", docs_url=None, redoc_url=None, openapi_url=None)


def _answer(status: int, name: str, message: str) -> Response:
    return Response(wire.error_body(None, name, message), status_code=status, media_type="application/json")


@api.exception_handler(HTTPException)
async def _http_error(request, exc):  # 404, 405, ... as JSON, in the wire's error form
    names = {404: "NotFound", 405: "MethodNotAllowed"}
    return _answer(exc.status_code, names.get(exc.status_code, "HTTPError"),
                   f"{request.method} {request.url.path[:100]}: not here; the API is POST /predict and GET /health")


@api.exception_handler(RequestValidationError)
async def _validation_error(request, exc):
    return _answer(400, "InvalidInputError", "the request does not follow foal_edge.wire")


@api.exception_handler(Exception)
async def _internal_error(request, exc):  # a bug of ours: the log has the traceback, the client a line
    log.exception("internal error on %s %s", request.method, request.url.path[:100])
    return _answer(500, "InternalError", "the server failed on this request; its log has the details")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token(token) -> str | None:
    """A server token: None, or printable ASCII of at least MIN_TOKEN_CHARS without spaces."""
    if token is None:
        return None
    if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS or not token.isascii() or \
            not token.isprintable() or " " in token:
        raise InvalidInputError(f"the token must be at least {MIN_TOKEN_CHARS} printable ASCII characters without "
                                "spaces; make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return token


@serve.deployment
@serve.ingress(api)
class FoalServer:
    def __init__(self, bundle: str, backend: str = "auto", max_batch: int = 8, batch_wait_ms: float = 10.0,
                 threads: int | None = None, vad="auto", token: str | None = None, max_body_mb: float = MAX_BODY_MB):
        from .predictor import Predictor

        self.predictor = Predictor(bundle, backend=backend, threads=threads, vad=vad)
        self.batched.set_max_batch_size(max_batch)
        self.batched.set_batch_wait_timeout_s(batch_wait_ms / 1000)
        self.batches: list[int] = []
        self.token = check_token(token).encode() if token else None
        self.max_body = int(max_body_mb * (1 << 20))
        info = self.predictor.info()
        info["bundle"] = Path(bundle).name  # the directory's name, not where it lies on the server's disk
        self.info = info

    def _refuse(self, request: Request) -> Response | None:
        """The request's headers: size, then the token (constant-time comparison)."""
        size = sum(len(k) + len(v) + 4 for k, v in request.headers.raw)
        if size > MAX_HEADER_BYTES:
            return _answer(431, "InvalidInputError", f"request headers are {size} bytes, more than {MAX_HEADER_BYTES}")
        if self.token is not None:
            given = request.headers.get("authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode("utf-8", "replace"),
                                                                     self.token):
                return Response(wire.error_body(None, "AuthenticationError",
                                                "this server needs its token: Authorization: Bearer TOKEN "
                                                "(foal_edge.Client(url, token=...))"),
                                status_code=401, media_type="application/json",
                                headers={"WWW-Authenticate": "Bearer"})
        return None

    async def _body(self, request: Request) -> bytes | Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return _answer(413, "InvalidInputError", f"the request body is {length[:20]} bytes, more than this "
                           f"server's {self.max_body} (serve --max-body-mb)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                return _answer(413, "InvalidInputError", f"the request body is more than this server's "
                               f"{self.max_body} bytes (serve --max-body-mb)")
            chunks.append(chunk)
        return b"".join(chunks)

    def _arrive(self, body: bytes) -> dict:
        """Decode and check a clip, as predict_batch will (off the event loop: base64 and checks
        of a large clip take milliseconds)."""
        clip = wire.decode_clip(body)
        self.predictor.check_clip(clip)
        return clip

    @api.get("/health")
    def health(self, request: Request):
        refused = self._refuse(request)
        if refused is not None:
            return refused
        return Response(json.dumps({"status": "ok", **self.info, "batch_sizes_seen": self.batches[-100:]}),
                        media_type="application/json")

    @api.post("/predict")
    async def predict(self, request: Request):
        refused = self._refuse(request)
        if refused is not None:
            return refused
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        loop = asyncio.get_running_loop()
        try:
            clip = await loop.run_in_executor(None, self._arrive, body)
        except FoalEdgeError as exc:
            return _answer(400, type(exc).__name__, str(exc))
        del body
        result = await self.batched(clip)
        if isinstance(result, InvalidInputError):
            return _answer(400, type(result).__name__, str(result))
        if isinstance(result, FoalEdgeError):
            return _answer(500, type(result).__name__, str(result))
        if isinstance(result, BaseException):
            log.error("internal error in a batch", exc_info=result)
            return _answer(500, "InternalError", "the server failed on this clip; its log has the details")
        try:
            return Response(json.dumps(result.to_dict(), allow_nan=False), media_type="application/json")
        except ValueError:
            return _answer(500, "InferenceError", "the prediction is not finite (NaN or Inf from the graphs)")

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def batched(self, clips: list[dict]) -> list:
        """Each clip's Prediction or its own exception (a value, not raised: the others are
        answered all the same)."""
        self.batches.append(len(clips))
        self.batches = self.batches[-1000:]
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, lambda: self.predictor.predict_batch(clips,
                                                                                         return_exceptions=True))
        except Exception as exc:  # predict_batch itself failed: every clip gets that error, none a wrong result
            return [exc] * len(clips)


def build_app(bundle: str, replicas: int = 1, **options):
    """The Ray Serve application (run it with serve.run)."""
    return FoalServer.options(num_replicas=replicas,
                              max_ongoing_requests=max(64, 4 * options.get("max_batch", 8))).bind(bundle, **options)


def serve_forever(bundle: str, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                  **options) -> None:
    """Start Ray (locally unless RAY_ADDRESS names a cluster), run the app, block until Ctrl-C
    or SIGTERM, then stop Serve and Ray and return. Off loopback a token is required (`token`
    or $FOAL_EDGE_TOKEN)."""
    token = check_token(token if token is not None else (os.environ.get(TOKEN_ENV) or None))
    if not is_loopback(host) and token is None:
        raise InvalidInputError(f"--host {host} makes the server reachable from other machines: give it a token "
                                f"(--token TOKEN or the {TOKEN_ENV} environment variable; clients pass "
                                "Client(url, token=...)), or serve on 127.0.0.1 behind a reverse proxy")
    from .validate import check_positive

    check_positive("--max-body-mb", options.get("max_body_mb", MAX_BODY_MB), "a positive number of MB", limit=4096)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise InvalidInputError(f"--port must be 1..65535, not {port!r}")
    stop = threading.Event()

    def on_signal(signum, frame):  # SIGTERM (a service manager) and Ctrl-C: the same clean stop
        stop.set()
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    started = False
    try:
        local = not os.environ.get("RAY_ADDRESS")
        ray.init(ignore_reinit_error=True, include_dashboard=False, logging_level="ERROR")
        started = True
        # Ray's core installs its own SIGTERM handler (a C++ stack trace on exit): ours again.
        for s in previous:
            signal.signal(s, on_signal)
        if local and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            print("warning: Ray's token authentication is off for this local Ray (RAY_AUTH_MODE); its services "
                  "listen beyond loopback without it (docs/serving.md)", file=sys.stderr, flush=True)
        serve.start(http_options={"host": host, "port": port, "request_timeout_s": 120})
        serve.run(build_app(bundle, token=token, **options), name="foal-edge", route_prefix="/")
        print(f"serving {Path(bundle).name} on http://{host}:{port} (POST /predict, GET /health"
              f"{', token required' if token else ''}); Ctrl-C or SIGTERM stops", flush=True)
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for s in previous:
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C does not cut the shutdown short
        if started:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
        for s, handler in previous.items():
            signal.signal(s, handler)
    print("stopped", flush=True)
