"""The serving endpoint: the real Ray Serve server on loopback, driven by concurrent clients."""

import json
import socket
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from foal_edge import Client, InvalidInputError, Predictor

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_bundle):
    from foal_edge.serve import build_app

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", ignore_reinit_error=True)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(str(tiny_bundle[1]), max_batch=8, batch_wait_ms=20, vad=False), name="foal-edge",
              route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


def clips(n):
    from training.synthetic import make_clip

    return [make_clip(100 + i, seconds=2.0, frames=6)[:2] for i in range(n)]


def test_concurrent_clients_get_what_a_local_predictor_gives(server, tiny_bundle):
    local = Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=False)
    client = Client(server)
    data = clips(24)
    with ThreadPoolExecutor(12) as pool:
        remote = list(pool.map(lambda c: client.predict(audio=c[0], sample_rate=16000, frames=c[1]), data))
    for (audio, frames), got in zip(data, remote):
        want = local.predict(audio=audio, sample_rate=16000, frames=frames)
        assert got.label == want.label and got.modalities == want.modalities
        assert max(abs(got.probabilities[k] - want.probabilities[k]) for k in want.probabilities) <= 1e-5
    assert max(client.health()["batch_sizes_seen"]) > 1  # requests were batched together


def test_malformed_requests_get_a_400_with_the_runtimes_text(server, tiny_bundle):
    local = Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=False)
    client = Client(server)
    audio, frames = clips(1)[0]
    for kwargs in (dict(audio=audio, sample_rate=0), dict(audio=np.full(16000, np.nan, np.float32), sample_rate=16000),
                   dict(frames=frames[:, :4, :4])):
        with pytest.raises(InvalidInputError) as local_error:
            local.predict(**kwargs)
        with pytest.raises(InvalidInputError) as remote_error:
            client.predict(**kwargs)
        assert str(remote_error.value) == str(local_error.value)
    for body in (b"{not json", b'{"audio": 5}', b'{"frames": {"shape": [1, 2, 2, 3], "data": "AAAA"}}', b"{}"):
        request = urllib.request.Request(server + "/predict", data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=30)
        assert err.value.code == 400 and json.loads(err.value.read())["error"] == "InvalidInputError"


def test_the_server_survives_a_client_that_disconnects_mid_request(server):
    host, port = server.removeprefix("http://").split(":")
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100000\r\n\r\n{\"audio\": {\"dtype\": \"int16\"")
        # closed with 99 kB of the body unsent
    audio, frames = clips(1)[0]
    assert Client(server).predict(audio=audio, sample_rate=16000, frames=frames).label


def test_batch_runs_on_ray_data(server, tiny_bundle, tmp_path):
    """The same batch command on Ray Data (the local Ray the server runs on): one Predictor per
    actor, results equal the local engine's, a broken file reported, resumable."""
    from foal_edge.__main__ import main as cli

    from .conftest import write_clip_video

    folder = tmp_path / "archive"
    folder.mkdir()
    for i in range(4):
        write_clip_video(folder / f"s{i}.mp4", seconds=2.0, seed=i)
    (folder / "broken.mp4").write_bytes(b"nope")
    common = ["batch", str(tiny_bundle[1]), str(folder), "--no-progress", "--workers", "2", "--no-vad"]
    assert cli(common + ["--out", str(tmp_path / "ray.jsonl"), "--engine", "ray"]) == 1
    assert cli(common + ["--out", str(tmp_path / "local.jsonl")]) == 1
    read = lambda p: {r["file"]: r for r in map(json.loads, p.read_text().splitlines())}  # noqa: E731
    on_ray, local = read(tmp_path / "ray.jsonl"), read(tmp_path / "local.jsonl")
    assert set(on_ray) == set(local) and len(on_ray) == 5 and "error" in on_ray[str(folder / "broken.mp4")]
    for f, r in local.items():
        if "error" not in r:
            assert on_ray[f]["label"] == r["label"]
            assert max(abs(on_ray[f]["probabilities"][k] - v) for k, v in r["probabilities"].items()) <= 1e-5
    # Resumed: only the failed file is retried (still broken, so status 1), nothing twice.
    assert cli(common + ["--out", str(tmp_path / "ray.jsonl"), "--engine", "ray"]) == 1
    assert len(read(tmp_path / "ray.jsonl")) == 5


def test_predict_batch_isolates_each_clips_failure(tiny_bundle):
    """One bad clip in a batch (a 6 ms clip, NaN audio, stereo, no input) fails alone: the
    others get what they get when predicted by themselves, and the bad ones their own error,
    the same one `check_clip` (the server's arrival check) gives."""
    local = Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=False)
    good = [dict(audio=a, sample_rate=16000, frames=f) for a, f in clips(3)]
    short = dict(audio=np.zeros(96, np.float32), sample_rate=16000)
    bad = [short, dict(audio=np.full(8000, np.nan, np.float32), sample_rate=16000),
           dict(audio=np.zeros((8000, 2), np.float32), sample_rate=16000), dict(audio=None, frames=None)]
    batch = [good[0], bad[0], good[1], bad[1], bad[2], good[2], bad[3]]
    out = local.predict_batch(batch, return_exceptions=True)
    for clip, got in zip(batch, out):
        if any(clip is g for g in good):
            want = local.predict(**clip)
            assert got.label == want.label
            assert max(abs(got.probabilities[k] - want.probabilities[k]) for k in want.probabilities) <= 1e-5
        else:
            assert isinstance(got, InvalidInputError)
            with pytest.raises(InvalidInputError) as arrival:
                local.check_clip(clip)
            assert str(arrival.value) == str(got)
    with pytest.raises(InvalidInputError, match="WavLM frame"):
        local.predict_batch([good[0], short])  # without return_exceptions: raised, as predict does
    with pytest.raises(InvalidInputError, match="WavLM frame"):
        local.predict(**short)


def test_the_arrival_check_refuses_what_would_fail_in_a_batch(tiny_bundle):
    """Every clip the server's arrival check (Predictor.check_clip) passes is predicted; every
    one it refuses, predict refuses with the same words: at the edges of each rule."""
    local = Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=False)
    strict = Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=False, long_audio="error")
    rng = np.random.default_rng(0)
    cases = []
    for rate in (8000, 16000, 22050, 44100, 48000):
        for samples in (1, local.min_samples * rate // 16000 - 1, local.min_samples * rate // 16000,
                        local.min_samples * rate // 16000 + 1):
            cases.append(dict(audio=rng.normal(0, 0.1, max(samples, 1)).astype(np.float32), sample_rate=rate))
    window = int(local.manifest.audio_seconds * 16000)
    cases += [dict(audio=rng.normal(0, 0.1, window + k).astype(np.float32), sample_rate=16000) for k in (0, 1, 400)]
    for predictor in (local, strict):
        for clip in cases:
            try:
                predictor.check_clip(clip)
            except InvalidInputError as exc:
                with pytest.raises(InvalidInputError) as err:
                    predictor.predict(**clip)
                assert str(err.value) == str(exc)
            else:
                assert predictor.predict(**clip).label in predictor.labels
