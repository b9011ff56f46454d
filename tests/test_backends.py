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
