"""Our ONNX graphs against Hugging Face optimum's export and INT8 of the same two encoders,
side by side in one process.

    python -m benchmarks.int8_peer --preset large --threads 1 --iters 15 \\
        --bundle-dir build/bench/large --out benchmarks/results/int8-peer-large

What is compared, for each encoder (WavLM, the CLIP image tower):

- ours FP32: the encoder graph of our FP32 ONNX bundle (--bundle-dir/fp32, exported once by
  `export.build_bundle` if it is not there; never written into when it is);
- ours INT8: the graph `export.bundle.derive_bundle(fp32, ..., "int8")` derives from it,
  derived afresh at every run (into --work-dir, in a child process), so the run measures the
  INT8 rules of the code that runs it (--int8-bundle: an INT8 bundle already derived instead);
- optimum FP32: the same encoder with the SAME weights as a Hugging Face model directory
  (`WavLMModel`; `CLIPVisionModel`, whose configuration is mapped from our preset and whose
  weights are open_clip's, renamed), exported by `optimum.exporters.onnx.main_export`
  (task feature-extraction);
- optimum INT8: that export quantised by optimum's `ORTQuantizer` with
  `AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)` (dynamic INT8).

Each graph gets one ONNX Runtime CPU session with the same SessionOptions (ORT_ENABLE_ALL,
--threads intra-op threads, as foal_edge's runner sets them). The four graphs of an encoder are
timed interleaved per iteration (ours FP32, ours INT8, optimum FP32, optimum INT8, the order
rotated each iteration so that no graph always runs after the same one);
the audio graphs first, then the video graphs (one encoder's four sessions at a time, so the
large preset's eight graphs need not be in memory at once). Ratios are paired: the median of
per-iteration ratios with their 25th-75th percentiles. Each INT8 output is compared (cosine)
with its own FP32 output on the same input, and the two FP32 graphs with each other (the same
weights, so the peer is shown to be the same network).

Input conventions differ, and each graph is timed whole, as its exporter made it:
- audio: ours takes the raw waveform and normalises it inside (zero mean, unit variance, a
  few element-wise ops); optimum's takes `input_values`, the waveform already normalised (done
  in numpy before timing, outside the graph). Both output the last hidden layer.
- video: both take CLIP-normalised pixels [N, 3, 224, 224]; ours ends in the projection to the
  frame embedding (one [width x embed_dim] matmul per frame); `CLIPVisionModel` outputs
  last_hidden_state and pooler_output (no projection). The projection is applied in numpy,
  outside the timing, to compare outputs.

Setup. optimum-onnx 0.1.0 requires transformers < 4.58, older than the project's (whose export
code needs its own), so optimum lives in a virtual environment that sees the project's other
packages, and only the making of optimum's graphs runs there (a subprocess, once per checkpoint;
the graphs are kept in --work-dir). The benchmark itself runs in the project's environment:

    python -m venv --system-site-packages build/optimum-venv
    build/optimum-venv/bin/pip install optimum-onnx
    python -m benchmarks.int8_peer --preset large ...      # finds build/optimum-venv/bin/python

Another interpreter with optimum is named by --peer-python or $FOAL_PEER_PYTHON.

Writes NAME.json and NAME.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ROWS = ("ours-fp32", "ours-int8", "optimum-fp32", "optimum-int8")
QUANT_CONFIG = "AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)"


# -- the peer: Hugging Face models of our two encoders, same weights ----------------------
def clip_vision_config(video):
    """transformers.CLIPVisionConfig of our preset's image tower (training.config.VideoConfig):
    open_clip's VisionTransformer with width, layers, heads, patch and image size of the preset,
    MLP 4 x width (open_clip's mlp_ratio), LayerNorm eps 1e-5 (torch's default, which open_clip
    uses) and exact GELU (open_clip's nn.GELU; QuickGELU only for quick_gelu presets)."""
    from open_clip.model import CLIPVisionCfg
    from transformers import CLIPVisionConfig

    mlp_ratio = CLIPVisionCfg().mlp_ratio
    return CLIPVisionConfig(hidden_size=video.width, intermediate_size=int(video.width * mlp_ratio),
                            num_hidden_layers=video.layers, num_attention_heads=video.heads,
                            num_channels=3, image_size=video.image_size, patch_size=video.patch_size,
                            hidden_act="quick_gelu" if video.quick_gelu else "gelu", layer_norm_eps=1e-5,
                            projection_dim=video.embed_dim)


def clip_state_dict(visual: dict) -> dict:
    """open_clip's VisionTransformer state dict -> that of CLIPVisionModel's vision
    transformer (transformers' CLIPVisionTransformer; the projection `proj` has no place there
    and is left out). The fused attention input projection is split into query, key and value."""
    out = {"embeddings.class_embedding": visual["class_embedding"],
           "embeddings.patch_embedding.weight": visual["conv1.weight"],
           "embeddings.position_embedding.weight": visual["positional_embedding"]}
    for ours, theirs in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        for p in ("weight", "bias"):
            out[f"{theirs}.{p}"] = visual[f"{ours}.{p}"]
    layers = sorted({int(k.split(".")[2]) for k in visual if k.startswith("transformer.resblocks.")})
    for i in layers:
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for p in ("weight", "bias"):
            for q, name in zip(visual[src + f"attn.in_proj_{p}"].chunk(3), ("q_proj", "k_proj", "v_proj")):
                out[dst + f"self_attn.{name}.{p}"] = q
            for ours, theirs in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"),
                                 ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                out[dst + f"{theirs}.{p}"] = visual[src + f"{ours}.{p}"]
    return {k: v.contiguous() for k, v in out.items()}


def clip_peer(video_encoder):
    """The CLIPVisionModel computing what `video_encoder` (training.encoders.VideoEncoder)
    computes before its projection, with its weights."""
    from transformers import CLIPVisionModel

    peer = CLIPVisionModel(clip_vision_config(video_encoder.config)).eval()
    # transformers 4.x nests the transformer as .vision_model; 5.x's model is the transformer.
    tower = getattr(peer, "vision_model", peer)
    missing, unexpected = tower.load_state_dict(clip_state_dict(video_encoder.visual.state_dict()), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]  # a buffer, not a weight
    if missing or unexpected:
        raise RuntimeError(f"CLIP weights do not map: missing {missing}, unexpected {unexpected}")
    return peer


def peer_embedding(last_hidden_state: np.ndarray, pooler_output: np.ndarray, head: dict) -> np.ndarray:
    """Our video graph's output from CLIPVisionModel's outputs: the pooled token through the
    projection. `head`: pool_type, proj [width, embed_dim], ln_post weight/bias (open_clip
    pools the class token after ln_post, which is pooler_output; "avg" pools the patch tokens
    after ln_post)."""
    if head["pool_type"] == "tok":
        pooled = pooler_output
    else:
        x = last_hidden_state[:, 1:]
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        pooled = (((x - mu) / np.sqrt(var + 1e-5)) * head["ln_weight"] + head["ln_bias"]).mean(1)
    return pooled @ head["proj"]


def float_params(onnx_path: Path) -> int:
    """Elements of the floating-point weights a graph holds (initializers and Constant nodes)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    tensors = list(model.graph.initializer)
    tensors += [a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in tensors if t.data_type in floats))


# -- preparation --------------------------------------------------------------------------
def checkpoint_dir(args) -> Path:
    """--checkpoint, or random weights of --preset kept in --bundle-dir/checkpoint (made once,
    seed 0, as benchmarks.latency makes them)."""
    if args.checkpoint:
        return Path(args.checkpoint)
    checkpoint = Path(args.bundle_dir) / "checkpoint"
    if not (checkpoint / "model.safetensors").is_file():
        import torch

        from training.model import FoalNet

        torch.manual_seed(0)
        FoalNet.from_preset(args.preset).eval().save(checkpoint)
    return checkpoint


def read_config(checkpoint: Path):
    from training.config import FoalConfig

    return FoalConfig.from_dict(json.loads((checkpoint / "config.json").read_text()))


def read_weights(checkpoint: Path, prefix: str) -> dict:
    """The checkpoint's tensors under `prefix` (prefix removed), as torch tensors."""
    from safetensors import safe_open

    with safe_open(str(checkpoint / "model.safetensors"), "pt") as f:
        return {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}


def video_head(checkpoint: Path, config) -> dict:
    """What turns CLIPVisionModel's outputs into our video graph's output (peer_embedding)."""
    w = read_weights(checkpoint, "video_encoder.visual.")
    return {"pool_type": config.video.pool_type, "proj": w["proj"].numpy(),
            "ln_weight": w["ln_post.weight"].numpy(), "ln_bias": w["ln_post.bias"].numpy()}


def our_bundles(args, config, checkpoint: Path) -> dict[str, Path]:
    """Our FP32 bundle (exported when --bundle-dir has none) and the INT8 bundle derived from
    it now, into --work-dir, by a child process (deriving the large preset's takes several GB,
    which are given back before the timing); or --int8-bundle as it is."""
    import shutil
    import subprocess

    from foal_edge.bundle import load_manifest

    fp32 = Path(args.bundle_dir) / "fp32"
    if not (fp32 / "manifest.json").is_file():
        from export import build_bundle

        log(f"exporting our FP32 ONNX bundle -> {fp32}")
        build_bundle(checkpoint, fp32, target="onnx", precision="fp32", parity_clips=0,
                     max_audio_seconds=args.audio_seconds)
    if args.int8_bundle:
        int8 = Path(args.int8_bundle)
    else:
        int8 = Path(args.work_dir) / "ours-int8"
        shutil.rmtree(int8, ignore_errors=True)
        log(f"deriving our INT8 bundle -> {int8}")
        code = ("import sys; from export.bundle import derive_bundle; "
                "derive_bundle(sys.argv[1], sys.argv[2], 'int8', (int(sys.argv[3]), int(sys.argv[4])))")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        done = subprocess.run([sys.executable, "-c", code, str(fp32.resolve()), str(int8.resolve()),
                               str(config.video.heads), str(config.video.width)], env=env, cwd=str(REPO))
        if done.returncode:
            raise SystemExit(f"deriving our INT8 bundle failed (exit {done.returncode}); its error is printed above")
    paths = {}
    for tag, bundle in (("fp32", fp32), ("int8", int8)):
        graphs = load_manifest(bundle).graphs
        for name in ("audio", "video"):
            g = graphs[name]
            if g.precision != tag and tag == "int8":
                raise SystemExit(f"{bundle}: its {name} graph is {g.precision}, not int8")
            paths[f"{name}/ours-{tag}"] = bundle / g.file
    return paths


def peer_paths(work_dir: Path) -> dict[str, Path]:
    work = Path(work_dir) / "optimum"
    return {f"{n}/optimum-{t}": work / f"{n}-{t}" / ("model.onnx" if t == "fp32" else "model_quantized.onnx")
            for n in ("audio", "video") for t in ("fp32", "int8")}


def peer_stamp(checkpoint: Path) -> dict:
    weights = checkpoint / "model.safetensors"
    return {"checkpoint": str(checkpoint.resolve()), "size": weights.stat().st_size,
            "mtime": weights.stat().st_mtime, "quantization": QUANT_CONFIG}


def make_peer_graphs(checkpoint: Path, work_dir: Path) -> None:
    """optimum's FP32 export and INT8 of each encoder with the checkpoint's weights, into
    WORK_DIR/optimum; runs in the interpreter that has optimum (see peer_graphs). Writes
    source.json last: the checkpoint it was made from and the versions that made it."""
    import shutil

    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    from training.encoders import AudioEncoder, VideoEncoder

    config = read_config(checkpoint)
    work = Path(work_dir) / "optimum"
    shutil.rmtree(work, ignore_errors=True)
    excluded = {}
    for name in ("audio", "video"):
        if name == "audio":  # WavLMModel as it is inside our encoder (weight norm and all)
            encoder = AudioEncoder(config.audio)
            encoder.load_state_dict(read_weights(checkpoint, "audio_encoder."), strict=True)
            peer = encoder.wavlm
        else:
            encoder = VideoEncoder(config.video, frozen=True)
            encoder.load_state_dict(read_weights(checkpoint, "video_encoder."), strict=True)
            peer = clip_peer(encoder)
        hf = work / f"{name}-hf"
        peer.save_pretrained(hf)
        del encoder, peer
        gc.collect()
        log(f"optimum: exporting {name} -> {work / f'{name}-fp32'}")
        main_export(str(hf), work / f"{name}-fp32", task="feature-extraction", do_validation=False)
        log(f"optimum: dynamic INT8 of {name} -> {work / f'{name}-int8'}")
        excluded[name] = convs_without_weights(work / f"{name}-fp32" / "model.onnx")
        quantizer = ORTQuantizer.from_pretrained(work / f"{name}-fp32", file_name="model.onnx")
        quantizer.quantize(save_dir=work / f"{name}-int8", quantization_config=AutoQuantizationConfig.avx512_vnni(
            is_static=False, per_channel=False, nodes_to_exclude=excluded[name] or None))
        shutil.rmtree(hf)
    stamp = dict(peer_stamp(checkpoint), versions=versions(), python=sys.executable, excluded_nodes=excluded)
    (work / "source.json").write_text(json.dumps(stamp, indent=2))


def convs_without_weights(onnx_path: Path) -> list[str]:
    """Conv nodes whose weight the graph computes (WavLM's weight-norm positional convolution:
    transformers' WavLMModel always has the parametrization, and optimum's export keeps it as
    ops). ONNX Runtime's quantizer raises on those ("Expected ... to be an initializer"); the
    peer leaves them in FP32, the workaround a user of optimum has."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    weights |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.input[1] not in weights]


def has_optimum(python: str) -> bool:
    import subprocess

    try:
        return subprocess.run([python, "-c", "import optimum.exporters.onnx, optimum.onnxruntime"],
                              capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_peer_python(explicit: str | None = None) -> str | None:
    """The first interpreter that imports optimum's ONNX exporter and quantizer: `explicit`
    (--peer-python), $FOAL_PEER_PYTHON, this one, REPO/build/optimum-venv/bin/python."""
    candidates = [explicit] if explicit else [os.environ.get("FOAL_PEER_PYTHON"), sys.executable,
                                              str(REPO / "build" / "optimum-venv" / "bin" / "python")]
    for python in filter(None, candidates):
        if Path(python).exists() and has_optimum(python):
            return python
    return None


def peer_graphs(args, checkpoint: Path) -> tuple[dict[str, Path], dict]:
    """optimum's graphs of the checkpoint, made once per checkpoint in --work-dir by
    make_peer_graphs under the optimum interpreter (a subprocess: optimum pins a transformers
    older than the project's); -> their paths and the stamp (versions that made them)."""
    import subprocess

    paths, stamp_file = peer_paths(args.work_dir), Path(args.work_dir) / "optimum" / "source.json"

    def current():
        if not (stamp_file.is_file() and all(p.is_file() for p in paths.values())):
            return None
        stamp = json.loads(stamp_file.read_text())
        return stamp if {k: stamp.get(k) for k in peer_stamp(checkpoint)} == peer_stamp(checkpoint) else None

    if current() is None:
        if args.peer_python is None:
            raise SystemExit("no Python with optimum's ONNX exporter found (--peer-python, $FOAL_PEER_PYTHON, "
                             "this interpreter, build/optimum-venv): see `python -m benchmarks.int8_peer --help`")
        log(f"making optimum's graphs with {args.peer_python}")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        args.made_peer = True
        done = subprocess.run([args.peer_python, "-m", "benchmarks.int8_peer", "--make-peer", str(checkpoint.resolve()),
                               "--work-dir", str(Path(args.work_dir).resolve()), "--out", "-"], env=env, cwd=str(REPO))
        if done.returncode:
            raise SystemExit(f"making optimum's graphs with {args.peer_python} failed (exit {done.returncode}); "
                             "its error is printed above")
        if current() is None:
            raise RuntimeError(f"{stamp_file}: optimum's graphs were not made")
    return paths, current()


def make_inputs(args, config) -> dict[str, np.ndarray]:
    """A synthetic clip (training.synthetic: a voice and a face): the waveform, the same
    waveform normalised as WavLM's feature extractor does (optimum's input_values), and the
    frames resized and CLIP-normalised as foal_edge does."""
    from foal_edge.preprocess import normalize_frames, resize_frames
    from training.synthetic import make_clip

    audio, frames, _ = make_clip(1, seconds=args.audio_seconds, frames=args.frames)
    audio = audio.astype(np.float32)[None]
    values = ((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)).astype(np.float32)
    pixels = normalize_frames(resize_frames(frames, config.video.image_size), config.clip_mean, config.clip_std)
    return {"waveform": audio, "input_values": values, "pixels": pixels}


# -- timing -------------------------------------------------------------------------------
def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def paired(num: list[float], den: list[float]) -> dict:
    r = np.asarray(num) / np.asarray(den)
    return {"median": float(np.median(r)), "p25": float(np.percentile(r, 25)), "p75": float(np.percentile(r, 75))}


def time_encoder(args, name: str, paths: dict[str, Path], inputs: dict, head: dict) -> dict:
    """The four graphs of one encoder, interleaved; -> rows, ratios and cosines."""
    from export.parity import cosine

    if name == "audio":
        feeds = {"ours": {"waveform": inputs["waveform"]}, "optimum": {"input_values": inputs["input_values"]}}
    else:
        feeds = {"ours": {"frames": inputs["pixels"]}, "optimum": {"pixel_values": inputs["pixels"]}}
    sessions, outputs, load_s = {}, {}, {}
    for row in ROWS:
        t0 = time.perf_counter()
        sessions[row] = session(paths[f"{name}/{row}"], args.threads)
        load_s[row] = time.perf_counter() - t0
    feed = {row: feeds[row.split("-")[0]] for row in ROWS}
    for _ in range(args.warmup):
        for row in ROWS:
            outs = sessions[row].run(None, feed[row])
            outputs[row] = {o.name: v for o, v in zip(sessions[row].get_outputs(), outs)}
    times = {row: [] for row in ROWS}
    for i in range(args.iters):
        for row in ROWS[i % len(ROWS):] + ROWS[:i % len(ROWS)]:  # each graph first in turn
            t0 = time.perf_counter()
            sessions[row].run(None, feed[row])
            times[row].append(time.perf_counter() - t0)
        log(f"{name} iteration {i + 1}/{args.iters}: " + ", ".join(f"{r} {times[r][-1] * 1e3:.0f} ms" for r in ROWS))
    del sessions
    gc.collect()

    def compared(row):  # the output compared across rows: the last hidden layer / the frame embedding
        out = outputs[row]
        if row.startswith("ours"):
            return next(iter(out.values()))
        if name == "audio":
            return out["last_hidden_state"]
        return peer_embedding(out["last_hidden_state"], out["pooler_output"], head)

    rows = []
    for row in ROWS:
        t = np.asarray(times[row]) * 1e3
        precision = row.split("-")[1]
        rows.append({"graph": row, "file": str(paths[f"{name}/{row}"]), "p50_ms": float(np.median(t)),
                     "min_ms": float(t.min()), "times_ms": [float(v) for v in t], "session_load_s": load_s[row],
                     "speedup_vs_ours_fp32": paired(times["ours-fp32"], times[row]),
                     "cosine_to_own_fp32": cosine(compared(row), compared(row.replace(precision, "fp32")))})
    return {"rows": rows,
            "ours_int8_vs_optimum_int8": paired(times["optimum-int8"], times["ours-int8"]),
            "ours_fp32_vs_optimum_fp32": paired(times["optimum-fp32"], times["ours-fp32"]),
            "cosine_ours_fp32_to_optimum_fp32": cosine(compared("ours-fp32"), compared("optimum-fp32"))}


# -- the run ------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[int8_peer] {msg}", file=sys.stderr, flush=True)


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("onnxruntime", "onnx", "optimum", "optimum-onnx", "transformers", "torch", "open_clip_torch", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def run(args) -> dict:
    from benchmarks.latency import machine

    argv = sys.argv[1:] if args.argv is None else args.argv
    results = {"command": "python -m benchmarks.int8_peer " + " ".join(argv),
               "machine": {"cpu": machine()["cpu"], "cores": os.cpu_count(), "load_before": list(os.getloadavg())},
               "versions": versions(), "threads": args.threads, "iters": args.iters, "warmup": args.warmup,
               "audio_seconds": args.audio_seconds, "frames": args.frames, "quantization_peer": QUANT_CONFIG}
    checkpoint = checkpoint_dir(args)
    config = read_config(checkpoint)
    results.update(preset=config.preset, checkpoint=str(checkpoint))
    paths, stamp = peer_graphs(args, checkpoint)
    results["peer_made_by"] = {"python": stamp["python"], "versions": stamp["versions"],
                               "excluded_from_int8": stamp["excluded_nodes"]}
    paths.update(our_bundles(args, config, checkpoint))
    import resource

    prepared_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    results["ours_int8"] = {"bundle": str(paths["audio/ours-int8"].parent),
                            "derived_in_this_run": not args.int8_bundle}
    head = video_head(checkpoint, config)
    results["params"] = {
        name: {"ours_fp32": float_params(paths[f"{name}/ours-fp32"]),
               "optimum_fp32": float_params(paths[f"{name}/optimum-fp32"]),
               "projection": int(head["proj"].size) if name == "video" else 0}
        for name in ("audio", "video")}
    inputs = make_inputs(args, config)
    gc.collect()
    results["encoders"] = {}
    for name in ("audio", "video"):
        results["encoders"][name] = time_encoder(args, name, paths, inputs, head)
    results["machine"]["load_after"] = list(os.getloadavg())
    results["peak_rss_mb"] = {
        "timing_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "before_timing": prepared_mb,
        # the largest child: deriving our INT8 bundle, making optimum's graphs (each when done in this run)
        "largest_child": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "made_optimum_graphs": bool(getattr(args, "made_peer", False))}
    return results


def _ratio(r: dict) -> str:
    return f"{r['median']:.2f}x [{r['p25']:.2f}-{r['p75']:.2f}]"


def markdown(results: dict) -> str:
    m, v, pv = results["machine"], results["versions"], results["peer_made_by"]["versions"]
    rss = results["peak_rss_mb"]
    lines = [f"# Our ONNX graphs vs Hugging Face optimum's export and INT8 ({results['preset']} preset)", "",
             f"Command: `{results['command']}`", "",
             f"Machine: {m['cpu']}, {m['cores']} cores; load average before "
             f"{m['load_before'][0]:.2f}, after {m['load_after'][0]:.2f}. {results['threads']} intra-op thread(s), "
             f"{results['iters']} interleaved iterations after {results['warmup']} warm-up. "
             f"Timing: onnxruntime {v['onnxruntime']}, numpy {v['numpy']}. Our graphs exported with torch "
             f"{v['torch']}, transformers {v['transformers']}, open_clip {v['open_clip_torch']}; optimum's made by "
             f"optimum {pv['optimum']} (optimum-onnx {pv['optimum-onnx']}), transformers {pv['transformers']}, "
             f"onnxruntime {pv['onnxruntime']} (`{results['peer_made_by']['python']}`).", "",
             f"Peak resident memory: {rss['timing_process'] / 1024:.1f} GB in the timing process, "
             f"{rss['largest_child'] / 1024:.1f} GB in the largest child process (of: the check for optimum"
             + (", our INT8 derivation" if results["ours_int8"]["derived_in_this_run"] else "")
             + (", the making of optimum's graphs" if rss["made_optimum_graphs"] else
                "; optimum's graphs were made by an earlier run for the same checkpoint") + ").", "",
             ("Ours INT8 derived in this run" if results["ours_int8"]["derived_in_this_run"] else
              f"Ours INT8 given: `{results['ours_int8']['bundle']}`") + ".", "",
             f"Inputs: {results['audio_seconds']:g} s of 16 kHz audio, {results['frames']} frames of 224x224. "
             f"Peer INT8: optimum's `ORTQuantizer` with `{results['quantization_peer']}`. Ours INT8: "
             "`export.bundle.derive_bundle(fp32, dst, \"int8\")` at this commit.", ""]
    excluded = {k: v for k, v in results["peer_made_by"]["excluded_from_int8"].items() if v}
    if excluded:
        lines += ["Left in FP32 by the peer's quantisation (a Conv whose weight the graph computes, which ONNX "
                  "Runtime's quantizer refuses): " + "; ".join(f"{k}: {', '.join(v)}" for k, v in excluded.items())
                  + ".", ""]
    what = {"audio": "ours: raw waveform in, normalised inside, last hidden layer out; optimum's (WavLMModel): "
                     "input_values (normalised outside the timing) in, last_hidden_state out",
            "video": "ours: CLIP-normalised pixels in, projected frame embedding out; optimum's "
                     "(CLIPVisionModel): pixel_values in, last_hidden_state + pooler_output out (no projection; "
                     "applied outside the timing for the cosines)"}
    for name, enc in results["encoders"].items():
        p = results["params"][name]
        lines += [f"## {name}", "", what[name] + ".", "",
                  f"Weights: ours FP32 {p['ours_fp32']:,} floats, optimum FP32 {p['optimum_fp32']:,} "
                  f"(projection {p['projection']:,}); cosine ours FP32 to optimum FP32 "
                  f"{enc['cosine_ours_fp32_to_optimum_fp32']:.6f} (same weights).", "",
                  "| graph | p50 ms | speedup vs ours FP32 (paired median [IQR]) | cosine to own FP32 |",
                  "|---|---:|---:|---:|"]
        for r in enc["rows"]:
            lines.append(f"| {r['graph']} | {r['p50_ms']:.1f} | {_ratio(r['speedup_vs_ours_fp32'])} | "
                         f"{r['cosine_to_own_fp32']:.5f} |")
        lines += ["", f"Ours INT8 vs optimum INT8: **{_ratio(enc['ours_int8_vs_optimum_int8'])}** "
                      f"(optimum's time / ours, > 1: ours faster); ours FP32 vs optimum FP32: "
                      f"{_ratio(enc['ours_fp32_vs_optimum_fp32'])}.", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.int8_peer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="large", choices=("large", "base", "tiny"),
                   help="random weights of this preset (kept in --bundle-dir/checkpoint)")
    p.add_argument("--checkpoint", help="a trained checkpoint instead of random weights of --preset")
    p.add_argument("--bundle-dir", help="our FP32 bundle lives in BUNDLE_DIR/fp32, exported there if absent "
                                        "(default build/bench/PRESET, as benchmarks.latency keeps it)")
    p.add_argument("--work-dir", help="our derived INT8 bundle and optimum's graphs "
                                      "(default build/bench/int8-peer-PRESET)")
    p.add_argument("--int8-bundle", help="measure this INT8 bundle as it is instead of deriving one from the FP32 "
                                         "bundle (it must come from the same FP32 bundle at the code to be measured)")
    p.add_argument("--audio-seconds", type=float, default=6.0)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads of every session")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=15)
    p.add_argument("--peer-python", help="the Python that has optimum (default: $FOAL_PEER_PYTHON, this one, "
                                         "or build/optimum-venv/bin/python, the first that imports optimum)")
    p.add_argument("--make-peer", metavar="CHECKPOINT", help=argparse.SUPPRESS)  # the subprocess's job
    p.add_argument("--out", required=True, help="output path without extension: writes .json and .md")
    return p


def main(argv=None) -> dict | None:
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.make_peer:
        make_peer_graphs(Path(args.make_peer), Path(args.work_dir))
        return None
    if args.checkpoint and not args.bundle_dir:
        raise SystemExit("--checkpoint needs --bundle-dir (where its FP32 bundle is or is to be exported)")
    args.bundle_dir = args.bundle_dir or str(Path("build/bench") / args.preset)
    args.work_dir = args.work_dir or str(Path("build/bench") / f"int8-peer-{args.preset}")
    if args.iters < 1 or args.warmup < 1:
        raise SystemExit("--iters and --warmup must be at least 1")
    args.peer_python = find_peer_python(args.peer_python)
    from benchmarks.report import write

    return write(Path(args.out), run(args), markdown)


if __name__ == "__main__":
    main()
