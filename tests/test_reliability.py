"""Hostile input and broken bundles: every public entry point answers with a specific
FoalEdgeError (or a valid Prediction), never another exception, never a crash."""


import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foal_edge import (BackendUnavailableError, BundleError, FoalEdgeError, IncompatibleEngineError,
                       InferenceError, InvalidInputError, Prediction, Predictor, StreamingPredictor)
from foal_edge.backends.tensorrt import check_engine

from .conftest import edit_manifest

RNG = np.random.default_rng(0)
GOOD_AUDIO = (0.1 * RNG.standard_normal(16000)).astype(np.float32)
GOOD_FRAMES = RNG.integers(0, 255, (4, 60, 80, 3), dtype=np.uint8)


def readonly(a):
    a = a.copy()
    a.setflags(write=False)
    return a


# (name, kwargs for predict, exception, text the message must contain)
BAD_INPUTS = [
    ("audio rank 3", dict(audio=np.zeros((2, 2, 800), np.float32), sample_rate=16000), InvalidInputError, "mono"),
    ("stereo audio", dict(audio=np.zeros((16000, 2), np.float32), sample_rate=16000), InvalidInputError, "stereo"),
    ("6-channel audio", dict(audio=np.zeros((6, 16000), np.float32), sample_rate=16000), InvalidInputError, "mono"),
    ("object audio", dict(audio=np.array([object()] * 800), sample_rate=16000), InvalidInputError, "dtype"),
    ("bool audio", dict(audio=np.ones(16000, bool), sample_rate=16000), InvalidInputError, "dtype"),
    ("complex audio", dict(audio=np.ones(16000, np.complex64), sample_rate=16000), InvalidInputError, "dtype"),
    ("uint8 audio", dict(audio=np.ones(16000, np.uint8), sample_rate=16000), InvalidInputError, "dtype"),
    ("string audio", dict(audio="hello", sample_rate=16000), InvalidInputError, "dtype"),
    ("NaN audio", dict(audio=np.full(16000, np.nan, np.float32), sample_rate=16000), InvalidInputError, "NaN"),
    ("Inf audio", dict(audio=np.r_[GOOD_AUDIO, np.inf].astype(np.float32), sample_rate=16000), InvalidInputError,
     "Inf"),
    ("empty audio", dict(audio=np.zeros(0, np.float32), sample_rate=16000), InvalidInputError, "empty"),
    ("audio under one WavLM frame", dict(audio=np.zeros(399, np.float32), sample_rate=16000), InvalidInputError,
     "25 ms"),
    ("sample rate missing", dict(audio=GOOD_AUDIO), InvalidInputError, "sample_rate is missing"),
    ("sample rate zero", dict(audio=GOOD_AUDIO, sample_rate=0), InvalidInputError, "outside"),
    ("sample rate negative", dict(audio=GOOD_AUDIO, sample_rate=-16000), InvalidInputError, "outside"),
    ("sample rate absurd", dict(audio=GOOD_AUDIO, sample_rate=10 ** 9), InvalidInputError, "outside"),
    ("sample rate fractional", dict(audio=GOOD_AUDIO, sample_rate=16000.5), InvalidInputError, "whole number"),
    ("sample rate NaN", dict(audio=GOOD_AUDIO, sample_rate=float("nan")), InvalidInputError, "whole number"),
    ("sample rate string", dict(audio=GOOD_AUDIO, sample_rate="16k"), InvalidInputError, "whole number"),
    ("1-channel frames", dict(frames=np.zeros((2, 32, 32, 1), np.uint8)), InvalidInputError, "grey"),
    ("4-channel frames", dict(frames=np.zeros((2, 32, 32, 4), np.uint8)), InvalidInputError, "alpha"),
    ("channels-first frames", dict(frames=np.zeros((2, 3, 32, 32), np.uint8)), InvalidInputError, "RGB"),
    ("float frames in [0, 1]", dict(frames=np.full((2, 32, 32, 3), 0.5, np.float32)), InvalidInputError,
     "uint8"),
    ("float frames beyond 255", dict(frames=np.full((2, 32, 32, 3), 300.0)), InvalidInputError, "uint8"),
    ("zero frames", dict(frames=np.zeros((0, 32, 32, 3), np.uint8)), InvalidInputError, "zero frames"),
    ("empty frame list", dict(frames=[]), InvalidInputError, "empty list"),
    ("tiny frames", dict(frames=np.zeros((2, 4, 4, 3), np.uint8)), InvalidInputError, "8..8192"),
    ("huge frames", dict(frames=np.zeros((1, 9000, 9, 3), np.uint8)), InvalidInputError, "8..8192"),
    ("mismatched frame sizes", dict(frames=[np.zeros((32, 32, 3), np.uint8), np.zeros((40, 32, 3), np.uint8)]),
     InvalidInputError, "differ in size"),
    ("frames rank 5", dict(frames=np.zeros((1, 2, 32, 32, 3), np.uint8)), InvalidInputError, "RGB"),
    ("fps zero", dict(frames=GOOD_FRAMES, fps=0), InvalidInputError, "fps"),
    ("fps negative", dict(frames=GOOD_FRAMES, fps=-30), InvalidInputError, "fps"),
    ("fps NaN", dict(frames=GOOD_FRAMES, fps=float("nan")), InvalidInputError, "fps"),
    ("nothing given", dict(), InvalidInputError, "both are missing"),
]


@pytest.mark.parametrize("name,kwargs,exc,text", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_a_specific_error(predictor, name, kwargs, exc, text):
    with pytest.raises(exc, match=text) as info:
        predictor.predict(**kwargs)
    assert isinstance(info.value, FoalEdgeError)


GOOD_VARIANTS = [
    ("int16 PCM", dict(audio=(GOOD_AUDIO * 32767).astype(np.int16), sample_rate=16000)),
    ("int32 PCM", dict(audio=(GOOD_AUDIO * 2 ** 31).astype(np.int32), sample_rate=16000)),
    ("float64 at 44.1 kHz", dict(audio=np.tile(GOOD_AUDIO, 3).astype(np.float64), sample_rate=44100)),
    ("8 kHz", dict(audio=GOOD_AUDIO[:8000], sample_rate=8000)),
    ("[1, S] audio", dict(audio=GOOD_AUDIO[None], sample_rate=16000)),
    ("hours-long audio", dict(audio=np.zeros(16000 * 3600, np.int16), sample_rate=16000)),
    ("non-contiguous audio", dict(audio=np.repeat(GOOD_AUDIO, 2)[::2], sample_rate=16000)),
    ("read-only audio and frames", dict(audio=readonly(GOOD_AUDIO), sample_rate=16000, frames=readonly(GOOD_FRAMES))),
    ("non-contiguous frames", dict(frames=np.asfortranarray(GOOD_FRAMES[:, ::2, ::2]))),
    ("one frame [H, W, 3]", dict(frames=GOOD_FRAMES[0])),
    ("frame list", dict(frames=list(GOOD_FRAMES))),
    ("frames without fps", dict(audio=GOOD_AUDIO, sample_rate=16000, frames=GOOD_FRAMES)),
    ("large frames", dict(frames=np.zeros((1, 1080, 1920, 3), np.uint8))),
]


@pytest.mark.parametrize("name,kwargs", GOOD_VARIANTS, ids=[g[0] for g in GOOD_VARIANTS])
def test_unusual_but_valid_input_works(predictor, name, kwargs):
    before = {k: v.copy() for k, v in kwargs.items() if isinstance(v, np.ndarray)}
    result = predictor.predict(**kwargs)
    assert isinstance(result, Prediction) and abs(sum(result.probabilities.values()) - 1) < 1e-6
    for k, v in before.items():
        assert np.array_equal(kwargs[k], v)  # the caller's arrays are never modified


def test_hours_long_audio_says_it_was_cut(predictor):
    result = predictor.predict(audio=np.zeros(48000 * 3600, np.int16), sample_rate=48000)
    assert any("cut from 3600.00 s" in n for n in result.notes) and any("resampled" in n for n in result.notes)


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    audio=st.one_of(st.none(), st.builds(
        lambda n, dtype, scale, bad: _audio(n, dtype, scale, bad),
        st.integers(0, 40000), st.sampled_from(["float32", "float64", "int16", "int32", "int8", "bool",
                                                 "complex64", "uint16"]),
        st.floats(0, 10), st.sampled_from([None, "nan", "inf", "2d", "3d"]))),
    rate=st.one_of(st.none(), st.integers(-10, 500_000), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([8000, 16000, 22050, 44100, 48000])),
    frames=st.one_of(st.none(), st.builds(
        lambda n, h, w, c, dtype: np.zeros((n, h, w, c), dtype=dtype),
        st.integers(0, 3), st.integers(1, 70), st.integers(1, 70), st.sampled_from([1, 3, 4]),
        st.sampled_from(["uint8", "float32", "int64"]))),
    fps=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 120)),
)
def test_fuzz_predict_never_raises_anything_else(predictor, audio, rate, frames, fps):
    try:
        result = predictor.predict(audio=audio, sample_rate=rate, frames=frames, fps=fps)
    except FoalEdgeError:
        return
    assert isinstance(result, Prediction)
    assert np.isfinite(list(result.probabilities.values())).all()


def _audio(n, dtype, scale, bad):
    x = np.random.default_rng(n).standard_normal(n) * scale
    if dtype in ("int16", "int32", "int8", "uint16"):
        x = (x * 1000).astype(dtype)
    else:
        x = x.astype(dtype)
    if bad == "nan" and n and dtype.startswith("float"):
        x[n // 2] = np.nan
    if bad == "inf" and n and dtype.startswith("float"):
        x[0] = np.inf
    if bad == "2d":
        x = np.stack([x, x], axis=1)
    if bad == "3d":
        x = x.reshape(1, 1, -1)
    return x


# -- bundles ----------------------------------------------------------------------------------
def test_bundle_path_that_does_not_exist(tmp_path):
    with pytest.raises(BundleError, match="no such bundle directory"):
        Predictor(tmp_path / "missing")


def test_bundle_without_manifest(bundle_copy):
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        Predictor(bundle_copy)


def test_manifest_that_is_not_json(bundle_copy):
    (bundle_copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Predictor(bundle_copy)


def test_manifest_with_missing_fields(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m.pop("labels"))
    with pytest.raises(BundleError, match="labels: missing"):
        Predictor(bundle_copy)


def test_missing_graph_file(bundle_copy):
    (bundle_copy / "video.onnx").unlink()
    with pytest.raises(BundleError, match="graph 'video' video.onnx is missing"):
        Predictor(bundle_copy)


def test_truncated_onnx_file(bundle_copy):
    data = (bundle_copy / "audio.onnx").read_bytes()
    (bundle_copy / "audio.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(BundleError, match="sha256"):
        Predictor(bundle_copy)
    with pytest.raises(BundleError, match="not a valid ONNX file"):  # even without the checksum
        Predictor(bundle_copy, verify=False)


def test_flipped_byte(bundle_copy):
    data = bytearray((bundle_copy / "video.onnx").read_bytes())
    data[-10] ^= 0x01
    (bundle_copy / "video.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 does not match"):
        Predictor(bundle_copy)


def test_manifest_of_another_schema_version(bundle_copy):
    edit_manifest(bundle_copy, lambda m: m.update(schema_version=1))
    with pytest.raises(BundleError, match="schema version 1, this foal-edge reads version 2"):
        Predictor(bundle_copy)


def test_manifest_naming_a_file_outside_the_bundle(bundle_copy, tmp_path):
    (tmp_path / "evil.onnx").write_bytes((bundle_copy / "audio.onnx").read_bytes())
    edit_manifest(bundle_copy, lambda m: m["graphs"]["audio"].update(file="../evil.onnx"))
    with pytest.raises(BundleError, match="outside the bundle directory"):
        Predictor(bundle_copy)


def test_onnx_runtime_cannot_run_engines(bundle_copy):
    edit_manifest(bundle_copy, lambda m: [g.update(format="tensorrt") for g in m["graphs"].values()])
    with pytest.raises(BackendUnavailableError, match="TensorRT engines"):
        Predictor(bundle_copy, backend="onnxruntime")


def test_engine_for_another_tensorrt_version_or_gpu():
    rebuild = "rebuild with `python -m export.build_engine --out b`"
    with pytest.raises(IncompatibleEngineError, match=r"TensorRT 10\.3\.0, this machine has TensorRT 11\.4\.0.*rebuild"):
        check_engine("a.engine", "10.3.0", "8.7", "11.4.0", "8.7", rebuild)
    with pytest.raises(IncompatibleEngineError, match=r"sm_87, this GPU is sm_90.*rebuild"):
        check_engine("a.engine", "10.3.0", "8.7", "10.3.0", "9.0", rebuild)
    check_engine("a.engine", "10.3.0", "8.7", "10.3.0", "8.7", rebuild)  # a match passes


BAD_CONSTRUCTOR_ARGUMENTS = [
    (dict(backend="cuda-magic"), "unknown backend"),
    (dict(long_audio="middle"), "long_audio"),
    (dict(frames_per_clip=0), "frames_per_clip"),
    (dict(frames_per_clip=2.5), "frames_per_clip"),
    (dict(threads=0), "threads"),
    (dict(threads="two"), "threads"),
    (dict(device=-1), "device"),
    (dict(device="cuda:0"), "device"),
    (dict(verify="no"), "verify"),
    (dict(spin="no"), "spin"),
]


@pytest.mark.parametrize("kwargs,text", BAD_CONSTRUCTOR_ARGUMENTS, ids=[str(k) for k, _ in BAD_CONSTRUCTOR_ARGUMENTS])
def test_bad_predictor_arguments(tiny_bundle, kwargs, text):
    with pytest.raises(InvalidInputError, match=text):
        Predictor(tiny_bundle[1], **kwargs)


@pytest.mark.parametrize("bundle", [None, 123, b"build/foal-demo"])
def test_bundle_that_is_not_a_path(bundle):
    with pytest.raises(InvalidInputError, match="bundle must be a path"):
        Predictor(bundle)


def test_streaming_rejects_bad_arguments(predictor):
    with pytest.raises(InvalidInputError, match="hop"):
        StreamingPredictor(predictor, hop=0)
    with pytest.raises(InvalidInputError, match="exceeds"):
        StreamingPredictor(predictor, window=60)
    with pytest.raises(InvalidInputError, match="window"):
        StreamingPredictor(predictor, window=float("nan"))
    with pytest.raises(InvalidInputError, match="shorter than one WavLM frame"):
        StreamingPredictor(predictor, window=0.001, hop=0.001)
    with pytest.raises(InvalidInputError, match="shorter than one audio sample"):
        StreamingPredictor(predictor, hop=1e-9)
    with pytest.raises(InvalidInputError, match="wraps a foal_edge.Predictor"):
        StreamingPredictor("build/foal-demo")
    with pytest.raises(InvalidInputError, match="callback must be callable"):
        StreamingPredictor(predictor, callback=5)
    stream = StreamingPredictor(predictor)
    for bad in (float("nan"), None, "0.5", True):
        with pytest.raises(InvalidInputError, match="timestamp"):
            stream.push_frame(GOOD_FRAMES[0], timestamp=bad)
    with pytest.raises(InvalidInputError, match="sample_rate"):
        stream.push_audio(GOOD_AUDIO, sample_rate=None)
    with pytest.raises(InvalidInputError, match="uint8"):
        stream.push_frame(GOOD_FRAMES[0].astype(np.float32), timestamp=0.0)


def test_stream_refuses_timestamps_that_would_grow_its_buffer(predictor):
    """Wall-clock timestamps (time.time()) would sit ahead of the audio for ever and never be
    dropped; a clock that jumps back would break the time order. Both are refused, with the
    fix in the message, and the buffer stays as it was."""
    stream = StreamingPredictor(predictor, hop=0.5)
    stream.push_audio(GOOD_AUDIO, 16000)
    stream.push_frame(GOOD_FRAMES[0], timestamp=0.9)
    with pytest.raises(InvalidInputError, match="ahead of the audio.*audio clock"):
        stream.push_frame(GOOD_FRAMES[0], timestamp=1.7e9)
    with pytest.raises(InvalidInputError, match="go backwards.*reset"):
        stream.push_frame(GOOD_FRAMES[1], timestamp=0.2)
    assert stream.buffered_frames == 1
    stream.reset()
    assert stream.buffered_frames == 0 and stream.buffered_seconds == 0 and stream.latest() is None
    stream.push_frame(GOOD_FRAMES[1], timestamp=0.2)  # a fresh clock
    assert stream.push_audio(GOOD_AUDIO, 16000).modalities == ("audio", "video")


def test_a_backend_failure_is_an_inference_error_and_the_predictor_goes_on(predictor):
    """What ONNX Runtime raises while running (here: a feed of the wrong rank, which the
    Predictor never sends) reaches the caller as InferenceError, and nothing is left broken."""
    with pytest.raises(InferenceError, match="audio.onnx: ONNX Runtime failed to run the graph"):
        predictor.runners["audio"].run({"waveform": np.zeros((1, 2, 400), np.float32)})
    assert isinstance(predictor.predict(audio=GOOD_AUDIO, sample_rate=16000), Prediction)


def test_predict_batch_rejects_bad_clips(predictor):
    for bad in ([], "clip", [{"audio": GOOD_AUDIO, "rate": 16000}], [5]):
        with pytest.raises(InvalidInputError):
            predictor.predict_batch(bad)


def test_predict_files_errors(predictor, tmp_path):
    from foal_edge import MediaError

    with pytest.raises(MediaError, match="no such file"):
        predictor.predict_files(audio_path=tmp_path / "none.wav")
    with pytest.raises(InvalidInputError, match="audio_path must be a path"):
        predictor.predict_files(audio_path=5)
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(MediaError, match="cannot decode"):
        predictor.predict_files(audio_path=tmp_path / "junk.wav")
    (tmp_path / "junk.mp4").write_bytes(b"not video at all")
    with pytest.raises(MediaError):
        predictor.predict_files(video_path=tmp_path / "junk.mp4")


@pytest.mark.slow
def test_soak_short(tiny_bundle):
    """The CI-sized soak: RSS flat after warm-up, threads agree with serial, stream bounded."""
    from benchmarks.soak import run

    report = run(tiny_bundle[1], predictions=400, threads=8, per_thread=25, stream_minutes=0.5,
                 backend="onnxruntime-cpu")
    assert report["predictions"]["growth_percent"] < 2.0, report["predictions"]["samples"]
    assert report["concurrency"]["mismatches"] == 0 and not report["concurrency"]["errors"]
    stream = report["stream"]
    assert stream["predictions"] >= 25 and stream["max_audio_buffered_s"] <= 3.0
    # the window, plus the frames that arrive ahead of the next audio chunk (0.5 s at 15 fps)
    assert stream["max_frames_buffered"] <= (3.0 + 0.5) * 15 + 1


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    window=st.one_of(st.none(), st.floats(-1, 4), st.sampled_from([float("inf"), 1e-3, 0.025, 0.0])),
    hop=st.one_of(st.floats(-0.5, 4), st.sampled_from([float("nan"), 1e-9, 1e-5, 0.0])),
    events=st.lists(st.one_of(
        st.tuples(st.just("audio"), st.integers(0, 24000), st.sampled_from([8000, 16000, 44100, 0, None])),
        st.tuples(st.just("frame"), st.one_of(st.floats(-2, 12), st.just(float("nan"))),
                  st.sampled_from([(48, 64, 3), (48, 64, 4)]))),
        max_size=12),
)
def test_fuzz_stream_errors_are_ours_and_buffers_stay_bounded(predictor, window, hop, events):
    """Any window, hop and interleaving of audio chunks and frames: each call returns or
    raises a FoalEdgeError, and the buffers never exceed the window."""
    try:
        stream = StreamingPredictor(predictor, window=window, hop=hop)
    except FoalEdgeError:
        return
    for kind, a, b in events:
        try:
            if kind == "audio":
                out = stream.push_audio(0.1 * np.random.default_rng(a).standard_normal(a).astype(np.float32), b)
                assert out is None or isinstance(out, Prediction)
            else:
                stream.push_frame(np.zeros(b, np.uint8), timestamp=a)
        except FoalEdgeError:
            pass
        # the window at the chunks' own rate, rounded up to whole samples (as predict cuts it)
        assert stream.buffered_seconds <= stream.window + 1 / 8000 + 1e-9
        assert all(t >= stream._clock - stream.window for t, _ in stream._frames)
