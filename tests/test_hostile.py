"""A bundle is untrusted input, and numbers have ranges: manifests that lie or overflow,
graph files that do not match their description, files outside the bundle, numbers beyond
any sensible range, stream clocks, callbacks and the CLI. Each ends in a specific
FoalEdgeError (or a correct answer where the input is valid)."""

import json
import os
import shutil

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foal_edge import (BundleError, CallbackError, FoalEdgeError, InvalidInputError, Prediction, Predictor,
                       StreamingPredictor)
from foal_edge.__main__ import main as cli
from foal_edge.bundle import sha256_file

from .conftest import edit_manifest

RNG = np.random.default_rng(1)
AUDIO = (0.1 * RNG.standard_normal(24000)).astype(np.float32)
FRAMES = RNG.integers(0, 255, (4, 60, 80, 3), dtype=np.uint8)


@pytest.fixture
def bundle(bundle_copy):
    return bundle_copy


edit = edit_manifest


def answer(p):
    return p.predict(audio=AUDIO, sample_rate=16000, frames=FRAMES).probabilities


# -- the manifest schema ------------------------------------------------------------------
def _set(path, value):
    def fn(m):
        *head, last = path
        for k in head:
            m = m[k]
        m[last] = value
    return fn


SCHEMA_CASES = [
    (("sample_rate",), 0, "sample_rate: an integer in 8000..48000"),
    (("sample_rate",), "16000", "sample_rate: an integer"),
    (("sample_rate",), 10 ** 400, "sample_rate: an integer"),
    (("frames_per_clip",), 0, "frames_per_clip: an integer in 1..1024"),
    (("image_size",), 100000, "image_size: an integer in 32..1024"),
    (("labels",), "abcd", "labels: a list"),
    (("labels",), ["neutral", "neutral", "sad", "angry"], "labels: a list without repeats"),
    (("clip_mean",), [0.5, float("nan"), 0.5], r"clip_mean\[1\]: a number"),
    (("clip_std",), [0.5, 0.0, 0.5], r"clip_std\[1\]: a number"),
    (("schema_version",), True, "schema version True"),
    (("audio_seconds",), -3, "audio_seconds: a number"),
    (("wavlm_conv_stride",), [5, 2], "wavlm_conv_stride: one stride per kernel"),
    (("graphs", "audio", "file"), 7, "graphs.audio.file: a non-empty string"),
    (("graphs", "audio", "format"), "pickle", r"graphs.audio.format: one of \['onnx', 'tensorrt'\]"),
    (("graphs", "video", "sha256"), "abc", "graphs.video.sha256: a string matching"),
    (("graphs", "fusion", "inputs"), [], r"graphs.fusion.inputs: a list of 1..16"),
    (("graphs", "fusion", "outputs", 0, "dtype"), "object", r"graphs.fusion.outputs\[0\].dtype: one of"),
    (("graphs", "extra"), {}, "graphs.extra: not a graph this runtime runs"),
    (("surprise",), 1, "surprise: not a field of schema version"),
    (("demo", "fps"), 1e308, "demo.fps: a number in"),
]


@pytest.mark.parametrize("path,value,text", SCHEMA_CASES, ids=[".".join(map(str, c[0])) + "=" + repr(c[1])[:20]
                                                               for c in SCHEMA_CASES])
def test_the_manifest_schema_names_the_field(bundle, path, value, text):
    edit(bundle, _set(path, value))
    with pytest.raises(BundleError, match=text):
        Predictor(bundle)


def test_missing_fields_and_graphs_are_named(bundle):
    edit(bundle, lambda m: m.pop("labels"))
    with pytest.raises(BundleError, match="labels: missing"):
        Predictor(bundle)
    edit(bundle, lambda m: (m.update(labels=["a", "b", "c", "d"]), m["graphs"].pop("video")))
    with pytest.raises(BundleError, match=r"graphs.video: missing"):
        Predictor(bundle)


def test_oversized_and_deeply_nested_manifests_are_refused_cheaply(bundle):
    (bundle / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="nested more than"):
        Predictor(bundle)
    with open(bundle / "manifest.json", "wb") as f:
        f.truncate(200 * 1024 * 1024)  # sparse: 200 MB that is never read
    with pytest.raises(BundleError, match="more than the 1048576 a manifest may have"):
        Predictor(bundle)


def test_labels_that_do_not_match_the_heads_are_refused(bundle):
    edit(bundle, lambda m: m.update(labels=["a", "b", "c", "d", "e"]))
    with pytest.raises(BundleError, match="'logits' has 4 values per clip, the manifest names 5 labels"):
        Predictor(bundle)


# -- the manifest against the graph files -------------------------------------------------
def test_outputs_are_read_by_name_not_position(bundle, tiny_bundle, predictor):
    """Swapping logits and video_logits in the manifest used to report the video head as the
    fused answer. The outputs are the graph's own, read by name: the answer is unchanged."""
    def swap(m):
        outs = m["graphs"]["fusion"]["outputs"]
        outs[0], outs[2] = outs[2], outs[0]
    edit(bundle, swap)
    got, want = answer(Predictor(bundle)), answer(predictor)
    assert max(abs(got[k] - want[k]) for k in want) <= 1e-6


def test_swapped_graph_files_are_refused(bundle):
    def swap(m):
        a, v = m["graphs"]["audio"], m["graphs"]["video"]
        a["file"], v["file"], a["sha256"], v["sha256"] = v["file"], a["file"], v["sha256"], a["sha256"]
    edit(bundle, swap)
    with pytest.raises(BundleError, match="graphs.audio: tensor .* only"):
        Predictor(bundle)


def _retype_audio_input(bundle, elem_type, manifest_dtype):
    model = onnx.load(str(bundle / "audio.onnx"))
    inp = model.graph.input[0]
    inp.type.tensor_type.elem_type = elem_type
    cast = onnx.helper.make_node("Cast", [inp.name], ["waveform_f32"], to=onnx.TensorProto.FLOAT)
    for node in model.graph.node:
        node.input[:] = ["waveform_f32" if i == inp.name else i for i in node.input]
    model.graph.node.insert(0, cast)
    onnx.save(model, str(bundle / "audio.onnx"))
    digest = sha256_file(bundle / "audio.onnx")
    edit(bundle, lambda m: (m["graphs"]["audio"].update(sha256=digest),
                            m["graphs"]["audio"]["inputs"][0].update(dtype=manifest_dtype)))


def test_a_graph_whose_input_dtype_differs_is_refused_at_load(bundle):
    _retype_audio_input(bundle, onnx.TensorProto.DOUBLE, "float32")
    with pytest.raises(BundleError, match="'waveform' is float64 in audio.onnx, the manifest says float32"):
        Predictor(bundle)


def test_a_graph_whose_input_the_runtime_cannot_feed_is_refused_at_load(bundle):
    _retype_audio_input(bundle, onnx.TensorProto.INT64, "int64")
    with pytest.raises(BundleError, match="input 'waveform' is int64; the runtime feeds float32"):
        Predictor(bundle)


def test_a_fixed_dim_that_differs_is_refused(bundle):
    edit(bundle, lambda m: m["graphs"]["video"]["inputs"][0].update(shape=["frames", 3, 192, 192]))
    with pytest.raises(BundleError, match="dim 2 is 224 in video.onnx, the manifest says 192"):
        Predictor(bundle)


# -- integrity: every file read is inside the bundle and hashed ---------------------------
def _externalise(bundle, location="audio.data"):
    model = onnx.load(str(bundle / "audio.onnx"))
    onnx.save(model, str(bundle / "audio.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location=location, size_threshold=1024)
    digest = sha256_file(bundle / "audio.onnx")
    edit(bundle, lambda m: m["graphs"]["audio"].update(sha256=digest))


def test_external_data_is_hashed_and_confined(bundle, predictor):
    _externalise(bundle)
    with pytest.raises(BundleError, match="external data 'audio.data' is not listed"):
        Predictor(bundle)
    edit(bundle, lambda m: m["graphs"]["audio"].update(external_data={"audio.data": sha256_file(bundle / "audio.data")}))
    got, want = answer(Predictor(bundle)), answer(predictor)
    assert max(abs(got[k] - want[k]) for k in want) <= 1e-6  # listed and hashed: it loads and agrees
    data = bytearray((bundle / "audio.data").read_bytes())
    data[100] ^= 0xFF  # a swapped weight file
    (bundle / "audio.data").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="audio.data: sha256 does not match"):
        Predictor(bundle)


def test_external_data_outside_the_bundle_is_refused_by_us(bundle, tmp_path):
    """The onnx package refuses to write such a location; an attacker edits the protobuf."""
    _externalise(bundle)
    shutil.move(bundle / "audio.data", tmp_path / "outside.data")
    model = onnx.load(str(bundle / "audio.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../outside.data"
    onnx.save(model, str(bundle / "audio.onnx"))
    with pytest.raises(BundleError, match="external data '../outside.data' lies outside the bundle"):
        Predictor(bundle, verify=False)


def test_a_manifest_symlinked_outside_is_refused(bundle, tmp_path):
    outside = tmp_path / "elsewhere.json"
    shutil.move(bundle / "manifest.json", outside)
    os.symlink(outside, bundle / "manifest.json")
    with pytest.raises(BundleError, match="outside the bundle directory"):
        Predictor(bundle)


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_graph_that_is_not_a_regular_file_is_named_so(bundle, kind):
    (bundle / "video.onnx").unlink()
    (bundle / "video.onnx").mkdir() if kind == "directory" else os.mkfifo(bundle / "video.onnx")
    with pytest.raises(BundleError, match=f"video.onnx is {'a directory' if kind == 'directory' else 'a FIFO'}"):
        Predictor(bundle)


def test_demo_paths_are_confined_and_hashed(bundle, tmp_path, capsys):
    secret = tmp_path / "outside" / "secret.wav"
    secret.parent.mkdir()
    shutil.copy(bundle / "demo.wav", secret)
    edit(bundle, lambda m: m["demo"].update(audio="../outside/secret.wav"))
    assert cli(["predict", str(bundle), "--demo"]) == 2
    assert "outside the bundle directory" in capsys.readouterr().err
    edit(bundle, lambda m: m["demo"].update(audio="demo.wav"))
    (bundle / "demo.wav").unlink()
    os.mkfifo(bundle / "demo.wav")  # would hang a reader
    assert cli(["predict", str(bundle), "--demo"]) == 2
    assert "demo.wav is a FIFO" in capsys.readouterr().err


# -- numbers without ranges ---------------------------------------------------------------
NUMBER_CASES = [
    (dict(audio=AUDIO, sample_rate=10 ** 400), "sample_rate"),
    (dict(frames=FRAMES, fps=10 ** 400), "fps"),
    (dict(frames=FRAMES, fps=1e308), "fps must be .* at most 1000"),
    (dict(audio=np.full(16000, 3e38, np.float32), sample_rate=16000), "float audio peaks at 3e\\+38"),
    (dict(audio=np.full(16000, 1e39), sample_rate=16000), "float audio peaks at 1e\\+39"),
    (dict(audio=np.full(16000, 12000.0, np.float32), sample_rate=16000), "divide by 32768"),
]


@pytest.mark.parametrize("kwargs,text", NUMBER_CASES, ids=[t for _, t in NUMBER_CASES])
def test_numbers_beyond_their_range(predictor, kwargs, text):
    with pytest.raises(InvalidInputError, match=text):
        predictor.predict(**kwargs)


@pytest.mark.parametrize("kwargs,text", [(dict(threads=2 ** 31), "threads"), (dict(frames_per_clip=10 ** 9),
                                         "frames_per_clip"), (dict(device=10 ** 400), "device")])
def test_constructor_numbers_beyond_their_range(tiny_bundle, kwargs, text):
    with pytest.raises(InvalidInputError, match=text):
        Predictor(tiny_bundle[1], **kwargs)


def test_big_endian_audio_is_the_same_audio(predictor):
    native = predictor.predict(audio=AUDIO, sample_rate=16000).probabilities
    swapped = predictor.predict(audio=AUDIO.astype(">f4"), sample_rate=16000).probabilities
    pcm = predictor.predict(audio=(AUDIO * 32767).astype(">i2"), sample_rate=16000).probabilities
    assert swapped == native
    assert max(abs(pcm[k] - native[k]) for k in native) < 1e-3


def test_stream_numbers_beyond_their_range(predictor):
    with pytest.raises(InvalidInputError, match="window"):
        StreamingPredictor(predictor, window=10 ** 400)
    with pytest.raises(InvalidInputError, match="hop"):
        StreamingPredictor(predictor, hop=10 ** 400)
    stream = StreamingPredictor(predictor)
    with pytest.raises(InvalidInputError, match="timestamp"):
        stream.push_frame(FRAMES[0], timestamp=10 ** 400)


# -- streaming ----------------------------------------------------------------------------
def test_the_stream_clock_is_exact_over_any_chunking(predictor):
    """1.000 s of 44.1 kHz audio in 10-sample chunks used to read 1.102 s."""
    audio = (0.1 * RNG.standard_normal(44100)).astype(np.float32)
    small = StreamingPredictor(predictor, hop=0.5)
    for i in range(0, len(audio), 10):
        small.push_audio(audio[i:i + 10], 44100)
    assert small.clock == 1.0
    odd = StreamingPredictor(predictor, hop=0.5)
    sizes = np.cumsum(RNG.integers(1, 3000, 200))
    for a, b in zip(np.r_[0, sizes], sizes):
        if a < len(audio):
            odd.push_audio(audio[a:min(b, len(audio))], 44100)
    one = StreamingPredictor(predictor, hop=0.5)
    one.push_audio(audio, 44100)
    assert odd.clock == one.clock == 1.0
    for s in (small, odd):  # the same window, whatever the chunks: the same answer
        assert s.latest().probabilities == one.latest().probabilities
    with pytest.raises(InvalidInputError, match="sample_rate changed from 44100 to 16000 Hz"):
        one.push_audio(AUDIO, 16000)


def test_push_frame_refuses_a_stack(predictor):
    stream = StreamingPredictor(predictor)
    with pytest.raises(InvalidInputError, match="one frame .* got 5 stacked"):
        stream.push_frame(np.zeros((5, 32, 32, 3), np.uint8), timestamp=0.0)
    assert stream.buffered_frames == 0
    stream.push_frame(np.zeros((1, 32, 32, 3), np.uint8), timestamp=0.0)  # one frame with a batch axis is fine
    assert stream.buffered_frames == 1


def test_a_failing_callback_says_what_happened_to_the_chunk(predictor):
    seen = []

    def callback(p):
        seen.append(p)
        raise KeyError("display gone")

    stream = StreamingPredictor(predictor, hop=0.5, callback=callback)
    with pytest.raises(CallbackError, match="KeyError.*chunk was consumed.*do not push the chunk again") as info:
        stream.push_audio(AUDIO, 16000)
    assert isinstance(info.value.__cause__, KeyError)
    assert stream.latest() is seen[0] and stream.clock == 1.5
    stream.callback = seen.append
    assert isinstance(stream.push_audio(AUDIO[:8000], 16000), Prediction) and stream.clock == 2.0


# -- the CLI: one line and exit code 2 ----------------------------------------------------
def _one_line_error(capsys, argv):
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_cli_errors_are_one_line(bundle, capsys):
    data = (bundle / "demo.wav").read_bytes()
    (bundle / "demo.wav").write_bytes(data[: len(data) // 2])
    digest = sha256_file(bundle / "demo.wav")
    edit(bundle, lambda m: m["demo"]["sha256"].update({"demo.wav": digest}))
    assert "truncated WAV" in _one_line_error(capsys, ["predict", str(bundle), "--demo"])
    (bundle / "demo.wav").write_bytes(data)
    edit(bundle, lambda m: m["demo"]["sha256"].update({"demo.wav": sha256_file(bundle / "demo.wav")}))
    np.save(bundle / "demo_frames.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    digest = sha256_file(bundle / "demo_frames.npy")
    edit(bundle, lambda m: m["demo"]["sha256"].update({"demo_frames.npy": digest}))
    assert "cannot read" in _one_line_error(capsys, ["predict", str(bundle), "--demo"])
    edit(bundle, lambda m: m["graphs"]["audio"].update(file=3))
    assert "graphs.audio.file" in _one_line_error(capsys, ["info", str(bundle)])
    assert "no such bundle" in _one_line_error(capsys, ["info", str(bundle / "nope")])


# -- the fuzz, grown to bundles -----------------------------------------------------------
def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.sampled_from([0, 1, -1, 10 ** 400, 2 ** 31]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["../manifest.json", "/etc/passwd", "fusion.onnx", "audio.onnx", "logits", "float64",
                     "tensorrt", "int8", "waveform", ""]),
    st.lists(st.integers(-5, 300), max_size=5), st.just({}), st.just([]))
# Fields that change the arithmetic legitimately: a valid new value gives another answer.
NUMERIC = {"sample_rate", "audio_seconds", "frames_per_clip", "clip_mean", "clip_std", "wavlm_conv_kernel",
           "wavlm_conv_stride", "labels", "attributes"}


@pytest.fixture(scope="module")
def fuzz_bundle(tiny_bundle, tmp_path_factory):
    dst = tmp_path_factory.mktemp("fuzz") / "bundle"
    shutil.copytree(tiny_bundle[1], dst)
    original = json.loads((dst / "manifest.json").read_text())
    return dst, original, answer(Predictor(dst))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_fuzz_manifests_never_raise_anything_else(fuzz_bundle, data):
    bundle, original, want = fuzz_bundle
    manifest = json.loads(json.dumps(original))
    paths = [p for p in _paths(manifest) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        value = data.draw(st.one_of(VALUES, st.sampled_from([original[k] for k in original])))
        target = manifest
        try:
            for k in path[:-1]:
                target = target[k]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            pass
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    try:
        got = answer(Predictor(bundle))
    except FoalEdgeError:
        return
    probs = np.array(list(got.values()))
    assert np.isfinite(probs).all() and abs(probs.sum() - 1) < 1e-6
    assert list(got) == manifest["labels"]
    if not any(k in NUMERIC for k in manifest if manifest[k] != original[k]):
        assert max(abs(got[k] - want[k]) for k in want) <= 1e-6, "a manifest edit changed the answer silently"


# -- results files cut anywhere -------------------------------------------------------------
NAMES = st.one_of(st.text(min_size=1, max_size=12),  # any text: commas, quotes, newlines, emoji
                  st.binary(min_size=1, max_size=12).map(os.fsdecode))  # any bytes: names that are not UTF-8


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(names=st.lists(NAMES, min_size=1, max_size=6, unique=True), cut=st.floats(0, 1),
       suffix=st.sampled_from([".jsonl", ".csv"]))
def test_fuzz_a_results_file_cut_anywhere_resumes_to_every_row_once(tmp_path_factory, names, cut, suffix):
    """A writer killed at any byte: reopening keeps exactly the complete rows (names byte for
    byte), cuts the rest, and the missing rows appended give every name once."""
    from foal_edge.outputs import ResumableRows

    out = tmp_path_factory.mktemp("rows") / f"results{suffix}"
    fields = ["file", "label", "error"]
    with ResumableRows(out, fields=fields) as rows:
        ends = []
        for name in names:
            rows.append({"file": name, "label": "happy"})
            ends.append(out.stat().st_size)
    data = out.read_bytes()
    keep = int(cut * len(data))
    out.write_bytes(data[:keep])
    complete = sum(1 for end in ends if end <= keep)
    with ResumableRows(out, fields=fields) as rows:
        got = [r["file"] for r in rows.rows]
        assert [os.fsencode(n) for n in got] == [os.fsencode(n) for n in names[:complete]]
        assert out.stat().st_size == (ends[complete - 1] if complete else (0 if suffix == ".jsonl" else
                                                                            len(rows._header)))
        for name in names[complete:]:
            rows.append({"file": name, "label": "sad"})
    with ResumableRows(out, fields=fields) as rows:
        assert [os.fsencode(r["file"]) for r in rows.rows] == [os.fsencode(n) for n in names]
        assert rows.repaired == 0
