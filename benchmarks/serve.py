"""Load test of the serving endpoint: throughput and latency at 1, 8 and 32 concurrent
clients against the real server (Ray Serve on loopback, one replica), and a single
Predictor in a loop in the same process as the reference.

    python -m benchmarks.serve --bundle build/foal-demo --requests 96 --out benchmarks/results/serve-cpu

Every client sends the demo clip (3 s of audio and 24 frames); all run on this machine, so
clients and server share its cores. Writes NAME.json and NAME.md.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import report
from .latency import machine


def stats(latencies: list[float], wall: float) -> dict:
    t = np.asarray(latencies) * 1e3
    return {"requests": len(t), "wall_s": wall, "throughput_per_s": len(t) / wall, "p50_ms": float(np.percentile(t, 50)),
            "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean())}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=Path("build/foal-demo"), help="the bundle to serve")
    p.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    p.add_argument("--concurrency", default="1,8,32", help="concurrent clients, comma separated")
    p.add_argument("--max-batch", type=int, default=8, help="the server's largest batch")
    p.add_argument("--batch-wait-ms", type=float, default=10.0, help="the server's batch wait")
    p.add_argument("--out", type=Path, required=True, help="output path without extension")
    args = p.parse_args(argv)

    import ray
    from ray import serve

    from foal_edge import Client, Predictor
    from foal_edge.media import read_wav
    from foal_edge.serve import build_app

    audio, rate = read_wav(args.bundle / "demo.wav")
    frames = np.load(args.bundle / "demo_frames.npy", allow_pickle=False)
    clip = dict(audio=audio, sample_rate=rate, frames=frames, fps=8)
    results = {"machine": machine(), "command": "python -m benchmarks.serve " + " ".join(sys.argv[1:]),
               "bundle": str(args.bundle), "max_batch": args.max_batch, "batch_wait_ms": args.batch_wait_ms,
               "rows": [], "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}

    local = Predictor(args.bundle, backend="onnxruntime-cpu")
    local.predict(**clip)
    lat, start = [], time.perf_counter()
    for _ in range(args.requests):
        t = time.perf_counter()
        local.predict(**clip)
        lat.append(time.perf_counter() - t)
    results["rows"].append({"setting": "one Predictor in a loop (in process)", "clients": 1,
                            **stats(lat, time.perf_counter() - start)})
    # What the safety checks cost per request, in this process (one core, same load): the
    # client's check and encoding, and the server's decoding and Predictor.check_clip on arrival.
    from foal_edge import wire

    body = wire.encode_clip(**clip)
    checks = {}
    from foal_edge.validate import check_clip

    decoded = wire.decode_clip(body)
    for name, fn in (("client: check (validate.check_clip, no bundle numbers)", lambda: check_clip(clip)),
                     ("client: check + encode (base64, JSON)", lambda: wire.encode_clip(**clip)),
                     ("server: decode (JSON, base64)", lambda: wire.decode_clip(body)),
                     ("server: check on arrival (Predictor.check_clip)", lambda: local.check_clip(decoded)),
                     ("Predictor.predict, for scale", lambda: local.predict(**clip))):
        fn()
        t = time.perf_counter()
        for _ in range(args.requests):
            fn()
        checks[name] = 1e3 * (time.perf_counter() - t) / args.requests
    results["checks_ms"] = checks
    results["body_bytes"] = len(body)
    del local

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(include_dashboard=False, logging_level="ERROR")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    token = secrets.token_urlsafe(24)  # as deployed: every request carries the token and is checked
    serve.run(build_app(str(args.bundle.resolve()), max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms,
                        token=token), name="foal-edge", route_prefix="/")
    client = Client(f"http://127.0.0.1:{port}", token=token)
    client.predict(**clip)
    try:
        for n in (int(c) for c in args.concurrency.split(",")):
            seen_before = len(client.health()["batch_sizes_seen"])

            def one(_):
                t = time.perf_counter()
                client.predict(**clip)
                return time.perf_counter() - t

            start = time.perf_counter()
            with ThreadPoolExecutor(n) as pool:
                lat = list(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - start
            batches = client.health()["batch_sizes_seen"][seen_before - 100 if seen_before > 100 else 0:]
            row = {"setting": "server (Ray Serve, 1 replica) over HTTP", "clients": n, **stats(lat, wall),
                   "mean_batch": float(np.mean(batches)) if batches else None}
            results["rows"].append(row)
            print(f"[serve] {n} clients: {row['throughput_per_s']:.1f}/s, p50 {row['p50_ms']:.0f} ms, p99 "
                  f"{row['p99_ms']:.0f} ms", file=sys.stderr, flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report.write(args.out, results, markdown)


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = ["# Serving load test (the demo clip, all on one machine)", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; onnxruntime {m['onnxruntime']}. Server: max batch "
             f"{results['max_batch']}, batch wait {results['batch_wait_ms']:g} ms.", "",
             f"Command: `{results['command']}`", "",
             f"Load average (1, 5, 15 min; other processes share the machine) at start "
             f"{results.get('load_average_at_start')}, at end {results.get('load_average_at_end')}.", "",
             "| setting | clients | requests | throughput /s | p50 ms | p99 ms | mean batch |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results["rows"]:
        batch = f"{r['mean_batch']:.1f}" if r.get("mean_batch") else "-"
        lines.append(f"| {r['setting']} | {r['clients']} | {r['requests']} | {r['throughput_per_s']:.1f} "
                     f"| {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {batch} |")
    if results.get("checks_ms"):
        lines += ["", f"What the checks cost per request (the same run, in process, {results['body_bytes']} byte body; "
                  "the server also compares the token, constant time, microseconds):", "",
                  "| check | ms per request |", "| --- | ---: |"]
        lines += [f"| {name} | {ms:.2f} |" for name, ms in results["checks_ms"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
