"""GPU tier: TensorRT engines and ONNX Runtime's CUDA provider against ONNX Runtime on CPU.
Skipped cleanly where TensorRT, a CUDA binding or a GPU is missing (the CPU tier covers
everything else, and tests/test_tensorrt_names.py checks the TensorRT API statically)."""

import pytest

from foal_edge import Predictor

pytestmark = pytest.mark.gpu


def _clips(n):
    from training.synthetic import make_clip

    return [make_clip(500 + i, frames=12)[:2] for i in range(n)]


def _agreement(a: Predictor, b: Predictor, clips):
    worst, same = 0.0, 0
    for audio, frames in clips:
        pa = a.predict(audio=audio, sample_rate=16000, frames=frames)
        pb = b.predict(audio=audio, sample_rate=16000, frames=frames)
        worst = max(worst, max(abs(pa.probabilities[k] - pb.probabilities[k]) for k in a.labels))
        same += pa.label == pb.label
    return worst, same / len(clips)


def test_tensorrt_engines_match_onnxruntime(tiny_bundle, tmp_path):
    pytest.importorskip("tensorrt")
    from export.tensorrt_build import tensorrt_status

    usable, why = tensorrt_status()
    if not usable:
        pytest.skip(why)
    from export.build_engine import main as build

    ckpt, onnx_bundle = tiny_bundle
    out = tmp_path / "trt"
    build(["--checkpoint", str(ckpt), "--out", str(out), "--target", "tensorrt", "--precision", "fp16",
           "--parity-clips", "0", "--timing-cache", str(tmp_path / "timing.cache")])
    engine = Predictor(out, backend="auto")
    assert engine.backend == "tensorrt"
    assert all(g.format == "tensorrt" and g.compute_capability for g in engine.manifest.graphs.values())
    worst, agree = _agreement(engine, Predictor(onnx_bundle, backend="onnxruntime-cpu"), _clips(50))
    assert worst <= 1e-2 and agree >= 0.98
    assert (tmp_path / "timing.cache").stat().st_size > 0


def test_onnxruntime_cuda_matches_cpu(tiny_bundle):
    from foal_edge.backends.onnxruntime import cuda_available

    if not cuda_available():
        pytest.skip("ONNX Runtime has no CUDA provider here (install onnxruntime-gpu)")
    worst, agree = _agreement(Predictor(tiny_bundle[1], backend="onnxruntime-cuda"),
                              Predictor(tiny_bundle[1], backend="onnxruntime-cpu"), _clips(20))
    assert worst <= 1e-4 and agree == 1.0


def test_preprocess_graph_on_cuda_equals_the_cpu_path(tiny_bundle):
    """Camera frames (1280x720, 640x480) preprocessed on the GPU next to the video graph
    against Pillow on the CPU: within one grey level, and the same prediction."""
    import numpy as np

    from foal_edge import preprocess
    from foal_edge.backends.onnxruntime import cuda_available

    if not cuda_available():
        pytest.skip("ONNX Runtime has no CUDA provider here (install onnxruntime-gpu)")
    gpu = Predictor(tiny_bundle[1], backend="onnxruntime-cuda")
    cpu = Predictor(tiny_bundle[1], backend="onnxruntime-cpu")
    assert gpu.preprocess == "graph" and cpu.preprocess == "cpu"
    std = np.asarray(gpu.manifest.clip_std, np.float32)[None, :, None, None]
    for h, w in [(720, 1280), (480, 640)]:
        audio, frames = _clips(1)[0]
        from PIL import Image

        frames = np.stack([np.asarray(Image.fromarray(f).resize((w, h))) for f in frames])
        wx, wy = preprocess.resize_matrices(h, w, gpu.manifest.image_size)
        pixels = gpu.runners["preprocess"].run({"frames": frames, "resize_x": wx, "resize_y": wy})[0]
        assert (np.abs(pixels - cpu.pipeline.preprocess_frames(frames)) * std * 255).max() <= 1.0 + 1e-3
        a = gpu.predict(audio=audio, sample_rate=16000, frames=frames)
        b = cpu.predict(audio=audio, sample_rate=16000, frames=frames)
        assert a.label == b.label
        assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in gpu.labels) <= 1e-3


def test_the_onnxruntime_cuda_variants_run_and_agree(tiny_bundle, tmp_path):
    """The FP16 bundle's ONNX Runtime CUDA variants (fused attention) are what onnxruntime-cuda
    runs for both encoders, and they keep the FP32 CPU answers."""
    from foal_edge.backends.onnxruntime import cuda_available

    if not cuda_available():
        pytest.skip("ONNX Runtime has no CUDA provider here (install onnxruntime-gpu)")
    from export.build_engine import main as build

    out = tmp_path / "fp16"
    build(["--checkpoint", str(tiny_bundle[0]), "--out", str(out), "--target", "onnx", "--precision", "fp16",
           "--parity-clips", "0"])
    gpu = Predictor(out, backend="onnxruntime-cuda")
    assert {n: gpu.runners[n].path.name for n in ("audio", "video")} == \
        {"audio": "audio.ort-cuda.fp16.onnx", "video": "video.ort-cuda.fp16.onnx"}
    worst, agree = _agreement(gpu, Predictor(tiny_bundle[1], backend="onnxruntime-cpu"), _clips(20))
    assert worst <= 2e-2 and agree >= 0.95
