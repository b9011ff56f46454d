"""The runner interface: every backend has the same shape, the Predictor uses it without
asking which backend it holds, and a closed runner or Predictor says so."""

import numpy as np
import pytest

from foal_edge import InferenceError, Predictor
from foal_edge.backends import Runner, open_runners
from foal_edge.backends.onnxruntime import OnnxRuntimeRunner
from foal_edge.backends.tensorrt import TensorRTRunner
from foal_edge.bundle import load_manifest


def test_both_backends_implement_the_runner_interface():
    for cls in (OnnxRuntimeRunner, TensorRTRunner):
        assert issubclass(cls, Runner)
        assert callable(cls.run) and callable(cls.close) and hasattr(cls, "__enter__")
    assert OnnxRuntimeRunner.keeps_on_device and not TensorRTRunner.keeps_on_device


def test_open_runners_gives_one_runner_per_graph_with_its_io(tiny_bundle):
    bundle = tiny_bundle[1]
    manifest = load_manifest(bundle)
    backend, runners = open_runners(bundle, manifest, "onnxruntime-cpu")
    assert backend == "onnxruntime-cpu" and set(runners) == set(manifest.graphs)
    for name, runner in runners.items():
        with runner:
            declared = {t.name for t in manifest.graphs[name].inputs + manifest.graphs[name].outputs}
            assert set(runner.io) == declared and runner.device == "cpu"
            assert runner.max_shapes == {} and runner.fits(runner.inputs[0], (10 ** 6,) * 4)
    with pytest.raises(InferenceError, match="closed"):
        runners["audio"].run({"waveform": np.zeros((1, 16000), np.float32)})


def test_spin_false_lets_onnx_runtime_threads_sleep_with_the_same_outputs(tiny_bundle, tmp_path):
    """Predictor(spin=False), as the timeline command opens it: every session (a fresh one, and
    one loaded from the optimised-graph cache) has spinning off; predictions are unchanged."""
    from foal_edge.backends.onnxruntime import SPINNING

    audio = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    frames = np.random.default_rng(1).integers(0, 256, (4, 480, 640, 3), np.uint8)
    with Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=False, graph_cache=None) as spinning:
        expected = spinning.predict(audio=audio, sample_rate=16000, frames=frames, fps=4)
    for attempt in ("written", "hit"):
        with Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=False, graph_cache=tmp_path,
                       spin=False) as p:
            for runner in p.runners.values():
                assert runner.cached == attempt
                assert runner.session.get_session_options().get_session_config_entry(SPINNING) == "0"
            got = p.predict(audio=audio, sample_rate=16000, frames=frames, fps=4)
        assert got.label == expected.label
        assert got.probabilities == pytest.approx(expected.probabilities, abs=1e-6)


def test_a_runner_limit_is_read_from_max_shapes():
    class Limited(Runner):
        max_shapes = {"frames": (8, 720, 1280, 3)}

        def run(self, feeds, keep_on_device=False):
            return []

        def close(self):
            pass

    r = Limited()
    assert r.fits("frames", (8, 480, 640, 3)) and not r.fits("frames", (8, 1080, 1920, 3))
    assert not r.fits("frames", (480, 640, 3)) and r.fits("other", (1,))


def test_a_closed_predictor_refuses_to_predict(tiny_bundle):
    audio = np.zeros(16000, np.float32)
    with Predictor(tiny_bundle[1], backend="onnxruntime-cpu", vad=False) as predictor:
        assert predictor.predict(audio=audio, sample_rate=16000).label in predictor.labels
    with pytest.raises(InferenceError, match="closed"):
        predictor.predict(audio=audio, sample_rate=16000)
