"""`python -m foal_edge serve BUNDLE`: a bundle behind an HTTP/JSON endpoint on Ray Serve,
with dynamic batching across requests, for many thin kiosks sending clips to one server.

Each replica holds one Predictor. A request is decoded and checked on arrival (a malformed
one gets its 400 at once and never joins a batch); valid clips wait up to `--batch-wait-ms`
for others, and each batch is predicted together (`Predictor.predict_batch`: the fusion head
runs once for the batch) on a worker thread, so the replica keeps accepting requests
meanwhile. The wire format is `foal_edge.wire`; `foal_edge.Client` speaks it.

    GET  /health   -> {"status": "ok", "labels": [...], "backend": ..., ...}
    POST /predict  -> a prediction, or {"error": ..., "message": ...} with 400 (bad input) / 500

Ray Serve rather than PyTriton, measured here: PyTriton's Triton server answered a Python
exception with 500 and a traceback, failed every request of a dynamic batch when one was bad,
and its Python stub only found numpy once LD_LIBRARY_PATH pointed at this interpreter's
libpython; Ray Serve lets each request be checked before batching, and the same Ray runs the
archive batch (`batch --engine ray`).
"""



import asyncio
import time

from .errors import BackendUnavailableError, FoalEdgeError


try:
    import ray
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from ray import serve
except ImportError as exc:  # the CLI turns this into a one-line error
    raise BackendUnavailableError("serving needs Ray Serve: pip install 'foal-edge[serve]'") from exc

from . import wire  # noqa: E402
from .validate import check_audio, check_frames  # noqa: E402

# Module level, so Ray pickles the app by reference (a FastAPI app built inside a function is
# pickled by value, which recurses through pydantic's validators).
api = FastAPI(title="foal-edge", description="Foal-Net emotion recognition: POST /predict, GET /health")


@serve.deployment
@serve.ingress(api)
class FoalServer:
    def __init__(self, bundle: str, backend: str = "auto", max_batch: int = 8, batch_wait_ms: float = 10.0,
                 threads: int | None = None, vad="auto"):
        from .predictor import Predictor

        self.predictor = Predictor(bundle, backend=backend, threads=threads, vad=vad)
        self.batched.set_max_batch_size(max_batch)
        self.batched.set_batch_wait_timeout_s(batch_wait_ms / 1000)
        self.batches: list[int] = []

    @api.get("/health")
    def health(self):
        return {"status": "ok", **self.predictor.info(), "batch_sizes_seen": self.batches[-100:]}

    @api.post("/predict")
    async def predict(self, request: Request):
        try:
            clip = wire.decode_clip(await request.body())
            if clip["audio"] is None and clip["frames"] is None:
                raise wire.InvalidInputError("give audio, frames or both; both are missing")
            # The runtime's own checks, per request, before the clip can join a batch.
            if clip["audio"] is not None:
                check_audio(clip["audio"], clip["sample_rate"], 0)
            if clip["frames"] is not None:
                check_frames(clip["frames"], clip["fps"])
        except FoalEdgeError as exc:
            return Response(wire.error_body(exc), status_code=400, media_type="application/json")
        try:
            return JSONResponse(await self.batched(clip))
        except FoalEdgeError as exc:
            status = 400 if isinstance(exc, wire.InvalidInputError) else 500
            return Response(wire.error_body(exc), status_code=status, media_type="application/json")

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def batched(self, clips: list[dict]) -> list[dict]:
        self.batches.append(len(clips))
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(None, self.predictor.predict_batch, clips)
        return [r.to_dict() for r in results]


def build_app(bundle: str, replicas: int = 1, **options):
    """The Ray Serve application (run it with serve.run)."""
    return FoalServer.options(num_replicas=replicas,
                              max_ongoing_requests=max(64, 4 * options.get("max_batch", 8))).bind(bundle, **options)


def serve_forever(bundle: str, host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Start Ray (locally unless RAY_ADDRESS names a cluster), run the app, block until Ctrl-C."""
    ray.init(ignore_reinit_error=True, include_dashboard=False, logging_level="ERROR")
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(bundle, **options), name="foal-edge", route_prefix="/")
    print(f"serving {bundle} on http://{host}:{port} (POST /predict, GET /health); Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
