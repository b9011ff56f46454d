"""Safe on a network, from both ends.

- The Client against a hostile HTTP server this test starts on loopback (http.server in a
  thread): trickling, silent, huge, truncated, malformed and wrong answers each end in a
  specific FoalEdgeError within the Client's total deadline.
- The real server (`python -m foal_edge serve`, with a token, as a service manager runs it) on
  loopback: concurrent good and bad clients each get their own answer, malformed and oversized
  requests get JSON 4xx, no paths or API explorer, Ray's exposed sockets need Ray's token, and
  SIGTERM stops it cleanly. One server for the module (Ray starts slowly on 2 cores).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from foal_edge import (AuthenticationError, BackendUnavailableError, Client, FoalEdgeError, InvalidInputError,
                       Predictor, ProtocolError, ServerTimeoutError, wire)

ROOT = Path(__file__).resolve().parents[1]
PREDICTION = {"label": "happy", "probabilities": {"happy": 0.75, "sad": 0.25}, "attributes": None,
              "modalities": ["audio"], "timings_ms": {"total": 1.0}, "backend": "onnxruntime-cpu", "notes": [],
              "confidence": 0.75, "low_confidence": True,
              "per_modality": {"audio": {"label": "happy", "confidence": 0.75,
                                         "probabilities": {"happy": 0.75, "sad": 0.25}},
                               "video": {"label": "sad", "confidence": 0.5,
                                         "probabilities": {"happy": 0.5, "sad": 0.5}}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clip(seed=0, seconds=2.0):
    from training.synthetic import make_clip

    audio, frames = make_clip(seed, seconds=seconds, frames=6)[:2]
    return audio, frames


# -- a hostile server ----------------------------------------------------------------------
class Hostile(BaseHTTPRequestHandler):
    """The first path segment picks the misbehaviour; the rest is what the Client asked for."""
    received: list = []

    def log_message(self, *args):
        pass

    def raw(self, data: bytes):
        self.wfile.write(data)
        self.wfile.flush()

    def answer(self, status: int, body: bytes, content_type="application/json", extra=b""):
        self.raw(f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n".encode()
                 + extra + b"Connection: close\r\n\r\n" + body)

    def do_GET(self):
        self.handle_mode()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        Hostile.received.append((self.path, dict(self.headers), self.rfile.read(length)))
        self.handle_mode()

    def handle_mode(self):
        mode = self.path.split("/")[1]
        try:
            if mode == "good":
                self.answer(200, json.dumps(PREDICTION).encode())
            elif mode == "trickle":  # a valid start, then one byte every 0.2 s, for ever
                self.raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
                while True:
                    self.raw(b" ")
                    time.sleep(0.2)
            elif mode == "trickle-headers":
                self.raw(b"HTTP/1.1 200 OK\r\n")
                while True:
                    self.raw(b"X-Slow: a\r\n")
                    time.sleep(0.2)
            elif mode == "silent":
                time.sleep(30)
            elif mode == "huge":  # says 2 GB, sends zeros until the client leaves
                self.raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2147483648\r\n\r\n")
                while True:
                    self.raw(b"0" * 65536)
            elif mode == "huge-chunked":  # no length at all
                self.raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                while True:
                    self.raw(b"10000\r\n" + b"1" * 65536 + b"\r\n")
            elif mode == "truncated":
                self.raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"la")
            elif mode == "not-json":
                self.answer(200, b"{\"label\": ")
            elif mode == "deep":
                self.answer(200, b"[" * 200000 + b"]" * 200000)
            elif mode == "digits":
                self.answer(200, json.dumps({**PREDICTION, "label": "x"}).encode().replace(b"1.0", b"1" * 5000))
            elif mode == "wrong-fields":
                self.answer(200, json.dumps({"label": 3, "probabilities": "all"}).encode())
            elif mode == "bad-confidence":
                self.answer(200, json.dumps({**PREDICTION, "confidence": "high"}).encode())
            elif mode == "bad-low-confidence":
                self.answer(200, json.dumps({**PREDICTION, "low_confidence": 1}).encode())
            elif mode == "bad-per-modality":
                self.answer(200, json.dumps({**PREDICTION, "per_modality": {"audio": {"label": "happy"}}}).encode())
            elif mode == "nan":
                self.answer(200, json.dumps({**PREDICTION, "probabilities": {"happy": float("nan")}}).encode())
            elif mode == "html":
                self.answer(200, b"<html>hello</html>", "text/html")
            elif mode == "proxy-502":
                self.answer(502, b"<html>Bad Gateway</html>", "text/html")
            elif mode == "error-400":
                self.answer(400, wire.error_body(InvalidInputError("audio is empty")))
            elif mode == "error-odd":
                self.answer(400, json.dumps({"error": ["x"], "message": {"a": 1}}).encode())
            elif mode == "unauthorized":
                self.answer(401, wire.error_body(None, "AuthenticationError", "token please"))
            elif mode == "long-header":
                self.answer(200, b"{}", extra=b"X-Long: " + b"a" * 100000 + b"\r\n")
            elif mode == "many-headers":
                self.answer(200, b"{}", extra=b"".join(b"X-%d: a\r\n" % i for i in range(500)))
            elif mode == "garbage":
                self.raw(b"HELLO THERE\r\n\r\n")
            elif mode == "redirect":
                self.answer(302, b"", extra=b"Location: file:///etc/passwd\r\n")
            elif mode == "bad-length":
                self.raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: -5\r\n\r\n{}")
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass


@pytest.fixture(scope="module")
def hostile():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode", ["trickle", "trickle-headers", "silent"])
def test_the_client_deadline_is_total_not_per_read(hostile, mode):
    client = Client(f"{hostile}/{mode}", timeout=1.5)
    start = time.monotonic()
    with pytest.raises(ServerTimeoutError):
        client.health()
    assert time.monotonic() - start < 4.0  # the deadline held: no read restarted it
    assert isinstance(ServerTimeoutError("x"), BackendUnavailableError)


@pytest.mark.parametrize("mode", ["huge", "huge-chunked", "truncated", "not-json", "deep", "digits", "wrong-fields",
                                  "bad-confidence", "bad-low-confidence", "bad-per-modality",
                                  "nan", "html", "proxy-502", "error-odd", "long-header", "many-headers", "garbage",
                                  "redirect", "bad-length"])
def test_every_malformed_answer_is_a_protocol_error(hostile, mode):
    client = Client(f"{hostile}/{mode}", timeout=20)
    audio, _ = clip()
    start = time.monotonic()
    for call in (client.health, lambda: client.predict(audio=audio, sample_rate=16000)):
        with pytest.raises(ProtocolError) as err:
            call()
        assert type(err.value) is ProtocolError, mode
    assert time.monotonic() - start < 15  # a 2 GB answer is refused at its header, not read


def test_the_servers_own_errors_come_back_as_the_runtimes(hostile):
    with pytest.raises(InvalidInputError, match="audio is empty"):
        Client(f"{hostile}/error-400").health()
    with pytest.raises(AuthenticationError, match="token please"):
        Client(f"{hostile}/unauthorized").health()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://h", "127.0.0.1:8000",
                                 "http://", "http://h:99999", "http://user:pw@h:1", 5])
def test_only_http_and_https_urls(url):
    with pytest.raises(InvalidInputError):
        Client(url)


def test_an_unreachable_server_is_backend_unavailable():
    with pytest.raises(BackendUnavailableError):
        Client(f"http://127.0.0.1:{free_port()}", timeout=5).health()


def test_numpy_scalars_and_shapes_travel_as_predict_takes_them(hostile, tiny_bundle):
    """np.int64 rate and np.float32 fps, which predict accepts, are sent as numbers; the audio's
    shape travels, so stereo [N, 2] is refused as the Predictor refuses it, [N, 1] is mono."""
    audio, frames = clip()
    client = Client(f"{hostile}/good", token="t" * 20)
    result = client.predict(audio=audio, sample_rate=np.int64(16000), frames=frames, fps=np.float32(7.5))
    assert result.label == "happy" and result.modalities == ("audio",)
    assert result.confidence == 0.75 and result.low_confidence is True
    assert result.per_modality == PREDICTION["per_modality"]
    path, headers, body = Hostile.received[-1]
    assert path == "/good/predict" and headers["Authorization"] == "Bearer " + "t" * 20
    sent = wire.decode_clip(body)
    assert sent["sample_rate"] == 16000 and sent["fps"] == 7.5
    assert np.array_equal(sent["audio"], audio) and np.array_equal(sent["frames"], frames)

    local = Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=False)
    stereo = np.stack([audio, audio], axis=1)
    with pytest.raises(InvalidInputError) as here:
        local.predict(audio=stereo, sample_rate=16000)
    with pytest.raises(InvalidInputError) as there:
        client.predict(audio=stereo, sample_rate=16000)
    assert str(there.value) == str(here.value)
    # and a server given the stereo shape refuses it too (another client that skips the check)
    body = json.loads(wire.encode_clip(audio=audio[:, None], sample_rate=16000))
    assert body["audio"]["shape"] == [len(audio), 1]
    body["audio"]["shape"] = [len(audio) // 2, 2]
    with pytest.raises(InvalidInputError) as decoded:
        local.check_clip(wire.decode_clip(json.dumps(body).encode()))
    assert "mono" in str(decoded.value)


# -- the real server -----------------------------------------------------------------------
TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    """`python -m foal_edge serve` with a token, as a service manager runs it."""
    pytest.importorskip("ray.serve")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "FOAL_EDGE_TOKEN": TOKEN}
    log = tmp_path_factory.mktemp("serve")
    out, err = open(log / "stdout", "w+"), open(log / "stderr", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "foal_edge", "serve", str(tiny_bundle[1]), "--port", str(port),
                             "--no-vad", "--max-batch", "8", "--batch-wait-ms", "50", "--max-body-mb", "4"],
                            stdout=out, stderr=err, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        try:
            Client(url, token=TOKEN, timeout=5).health()
            break
        except FoalEdgeError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err.seek(0)
                pytest.fail(f"the server did not start: {err.read()[-3000:]}")
            time.sleep(1)
    yield {"url": url, "port": port, "proc": proc, "stdout": out, "stderr": err, "bundle": tiny_bundle[1]}
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)


def post(url, body: bytes, headers=None, token=TOKEN, method="POST"):
    """(status, content type, parsed JSON or None) of a raw request."""
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body if method == "POST" else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            status, ctype, data = r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as exc:
        status, ctype, data = exc.code, exc.headers.get("Content-Type", ""), exc.read()
    try:
        return status, ctype, json.loads(data)
    except ValueError:
        return status, ctype, data


def test_the_token_is_required_on_every_request(server):
    url = server["url"]
    audio, frames = clip()
    for token in (None, "wrong-token-0123456789", TOKEN + "x"):
        with pytest.raises(AuthenticationError):
            Client(url, token=token).health()
        with pytest.raises(AuthenticationError):
            Client(url, token=token).predict(audio=audio, sample_rate=16000)
    status, ctype, body = post(url + "/predict", b"{}", token=None)
    assert status == 401 and ctype.startswith("application/json") and body["error"] == "AuthenticationError"
    assert post(url + "/nothing-here", b"", token=None, method="GET")[0] in (401, 404)
    assert Client(url, token=TOKEN).predict(audio=audio, sample_rate=16000, frames=frames).label


def test_a_bad_client_never_fails_a_good_one(server, tiny_bundle):
    """Concurrent good clients and bad ones (a 6 ms clip that passes the bundle-free checks,
    NaN, stereo, malformed JSON): each good one gets what a local Predictor gives, each bad
    one its own 400 with the Predictor's own message."""
    local = Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=False)
    client = Client(server["url"], token=TOKEN)
    good = [clip(200 + i) for i in range(12)]
    short = np.random.default_rng(0).normal(0, 0.1, 96).astype(np.float32)  # 6 ms at 16 kHz
    with pytest.raises(InvalidInputError) as local_short:
        local.predict(audio=short, sample_rate=16000)
    stereo = json.loads(wire.encode_clip(audio=good[0][0][:, None], sample_rate=16000))
    stereo["audio"]["shape"] = [len(good[0][0]) // 2, 2]
    bad_bodies = [wire.encode_clip(audio=short, sample_rate=16000, frames=good[0][1]),
                  wire.encode_clip(audio=short, sample_rate=16000),
                  json.dumps(stereo).encode(), b'{"audio": {"dtype": ["int16"], "data": ""}}',
                  wire.encode_clip(audio=np.full(16000, 0.5, np.float32),
                                   sample_rate=16000).replace(b"16000", b"9" * 5000),
                  b'{"frames": {"shape": [65536, 65536, 65536, 3], "data": ""}}']

    def run(job):
        kind, payload = job
        if kind == "good":
            return client.predict(audio=payload[0], sample_rate=16000, frames=payload[1])
        return post(server["url"] + "/predict", payload)

    jobs = [("good", g) for g in good] + [("bad", b) for b in bad_bodies * 2]
    order = np.random.default_rng(1).permutation(len(jobs))
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(run, [jobs[i] for i in order]))
    by_job = {int(i): r for i, r in zip(order, results)}
    for i, (audio, frames) in enumerate(good):
        want, got = local.predict(audio=audio, sample_rate=16000, frames=frames), by_job[i]
        assert got.label == want.label
        assert max(abs(got.probabilities[k] - want.probabilities[k]) for k in want.probabilities) <= 1e-5
        # the confidence fields travel: the served prediction carries what the local one says
        assert abs(got.confidence - want.confidence) <= 1e-5 and got.low_confidence == want.low_confidence
        assert set(got.per_modality) == set(want.per_modality) == {"audio", "video"}
        for m, head in want.per_modality.items():
            assert got.per_modality[m]["label"] == head["label"]
            assert abs(got.per_modality[m]["confidence"] - head["confidence"]) <= 1e-5
    for i in range(len(good), len(jobs)):
        status, ctype, body = by_job[i]
        assert status == 400 and ctype.startswith("application/json") and body["error"] == "InvalidInputError"
    assert by_job[len(good)][2]["message"] == str(local_short.value)  # the 6 ms clip: the Predictor's words


def test_malformed_and_oversized_requests_get_json_4xx(server):
    url = server["url"] + "/predict"
    deep = b'{"fps": ' + b"[" * 100000 + b"]" * 100000 + b"}"
    for body in (b"", b"null", b"[]", b"\xff\xfe", b"{not json", deep, b'{"audio": {"dtype": {"a": 1}, "data": 5}}',
                 b'{"fps": 1e999, "frames": {"shape": [1, 8, 8, 3], "data": "' + b"A" * 256 + b'"}}',
                 b'{"audio": {"dtype": "int16", "sample_rate": 16000, "shape": [-1], "data": ""}}',
                 b'{"audio": {"dtype": "int16", "sample_rate": 16000, "shape": [10, 10, 10], "data": ""}}',
                 b'{"frames": {"shape": [2, 8, 8, 3], "data": "!!!"}}', b'{"extra": 1}'):
        status, ctype, answer = post(url, body)
        assert status == 400 and ctype.startswith("application/json"), body[:60]
        assert answer["error"] == "InvalidInputError" and "Traceback" not in answer["message"]
    status, ctype, answer = post(url, b"{" + b" " * (5 << 20) + b"}")  # over --max-body-mb 4
    assert status == 413 and answer["error"] == "InvalidInputError"
    status, _, answer = post(url, b"{}", headers={"X-Big": "a" * 40000})
    assert status in (400, 413, 431)
    # the server is still there for the next client
    audio, frames = clip()
    assert Client(server["url"], token=TOKEN).predict(audio=audio, sample_rate=16000, frames=frames).label


def test_no_paths_tracebacks_or_api_explorer(server):
    url = server["url"]
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/etc/passwd"):
        status, ctype, body = post(url + path, b"", method="GET")
        assert status == 404 and ctype.startswith("application/json"), path
    status, _, body = post(url + "/health", b"", method="PUT")
    assert status == 405 and body["error"] == "MethodNotAllowed"
    health = Client(url, token=TOKEN).health()
    text = json.dumps(health)
    assert health["bundle"] == server["bundle"].name and str(server["bundle"].parent) not in text
    assert "/" not in health["bundle"]
    # what a caller needs to judge the answers: the calibration and the model card
    from foal_edge import confidence
    from foal_edge.bundle import load_manifest

    m = load_manifest(server["bundle"])
    assert health["calibration"]["temperatures"] == confidence.temperatures(m.calibration)
    assert set(health["calibration"]["temperatures"]) == {"fused", "audio", "video"}
    assert health["model_card"] == m.model_card and health["vad"] is None  # --no-vad


def server_processes(proc):
    import psutil

    root = psutil.Process(proc.pid)
    return [root] + root.children(recursive=True)


def test_ray_sockets_beyond_loopback_need_rays_token(server):
    """The HTTP port listens on loopback only. Ray 2.60 binds its gRPC services (GCS, raylet,
    workers) to every interface whatever node IP it is given (it turns 127.0.0.1 into the
    machine's address), so what stands in front of them is Ray's token authentication: on for
    the local Ray `serve` starts, and a client without the token is refused."""
    import psutil

    procs = {p.pid: p for p in server_processes(server["proc"])}
    listening = [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in procs]
    http = [c for c in listening if c.laddr.port == server["port"]]
    assert http and all(c.laddr.ip in ("127.0.0.1", "::1") for c in http)
    exposed = [c for c in listening if c.laddr.ip not in ("127.0.0.1", "::1")]
    gcs = [c for c in exposed if procs[c.pid].name() == "gcs_server"]
    assert gcs
    probe = (f"import ray\ntry:\n    ray.init(address='127.0.0.1:{gcs[0].laddr.port}', logging_level='ERROR')\n"
             "except Exception as exc:\n    print('refused', type(exc).__name__, exc)\nelse:\n    print('connected')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="disabled", HOME=str(Path(server["stdout"].name).parent))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    # refused for its missing token (Ray says InvalidAuthToken; the exception's class varies by call)
    assert out.stdout.startswith("refused") and "InvalidAuthToken" in out.stdout + out.stderr, \
        out.stdout + out.stderr[-2000:]


def test_off_loopback_the_server_refuses_to_start_without_a_token(tiny_bundle, monkeypatch, capsys):
    from foal_edge.__main__ import main as cli

    monkeypatch.delenv("FOAL_EDGE_TOKEN", raising=False)
    assert cli(["serve", str(tiny_bundle[1]), "--host", "0.0.0.0"]) == 2
    assert "token" in capsys.readouterr().err
    assert cli(["serve", str(tiny_bundle[1]), "--host", "0.0.0.0", "--token", "short"]) == 2
    assert "16" in capsys.readouterr().err


def test_the_docs_client_example_runs_as_written(server, tmp_path, monkeypatch, capsys):
    """docs/serving.md's kiosk program, against this server (its address and token)."""
    import re

    blocks = [b for b in re.findall(r"```py\n(.*?)```", (ROOT / "docs" / "serving.md").read_text(), re.S)
              if "Client(" in b]
    assert len(blocks) == 1
    (tmp_path / "build").mkdir()
    os.symlink(server["bundle"], tmp_path / "build" / "foal-demo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FOAL_EDGE_TOKEN", TOKEN)
    code = blocks[0].replace("http://127.0.0.1:8000", server["url"])
    exec(compile(code, "docs/serving.md", "exec"), {"__name__": "__docs__"})
    printed = capsys.readouterr().out
    assert printed.split()[0] in Client(server["url"], token=TOKEN).health()["labels"]


def test_sigterm_stops_the_server_cleanly(server):
    """Last: what a service manager sends. Serve and Ray stop, exit status 0, no stack trace."""
    import psutil

    procs = server_processes(server["proc"])
    server["proc"].send_signal(signal.SIGTERM)
    assert server["proc"].wait(120) == 0
    psutil.wait_procs(procs, timeout=60)
    server["stderr"].seek(0)
    server["stdout"].seek(0)
    err, out = server["stderr"].read(), server["stdout"].read()
    assert "stopped" in out and "token authentication is off" not in err
    for sign in ("Stack trace", "Traceback", "*** SIG", "core dumped"):
        assert sign not in err, err[-3000:]
