"""ONNX Runtime backend: one InferenceSession per graph.

Full graph optimisation, intra-op threads = physical cores (or `threads`), CUDA provider
when asked and present. `InferenceSession.run` is thread-safe, so one runner serves
several threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, BundleError, InferenceError
from ..bundle.files import onnx_external_data, sha256_file
from .base import Runner

CACHE_RECORD = "entry.json"  # {"source_sha256": the bundle graph's, "files": {name: sha256}}
MAX_RECORD_BYTES = 64 << 10


class CacheWarning(RuntimeWarning):
    """The optimised-graph cache could not be used or written: the bundle's graph ran instead."""


class _Unusable(Exception):
    pass


def _read_record(path: Path) -> dict:
    with open(path, "rb") as f:
        data = f.read(MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES:
        raise _Unusable("its record is too large")
    try:
        record = json.loads(data)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise _Unusable("its record is not JSON") from None
    if not isinstance(record, dict):
        raise _Unusable("its record is not a JSON object")
    return record


def _write_record(directory: Path, source_sha256: str | None) -> None:
    """The record of a freshly written entry: the source graph's sha256 and each file's own."""
    files = {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file()}
    data = json.dumps({"source_sha256": source_sha256, "files": files}, indent=1).encode()
    with open(directory / CACHE_RECORD, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _copy_options(ort, options):
    """A fresh SessionOptions with `options`' settings (ONNX Runtime's cannot be copied)."""
    copy = ort.SessionOptions()
    copy.graph_optimization_level = options.graph_optimization_level
    copy.intra_op_num_threads = options.intra_op_num_threads
    copy.log_severity_level = options.log_severity_level
    _set_spinning(copy, _spinning(options))
    return copy


SPINNING = "session.intra_op.allow_spinning"


def _set_spinning(options, spin: bool) -> None:
    if not spin:  # (spinning is ONNX Runtime's default)
        options.add_session_config_entry(SPINNING, "0")


def _spinning(options) -> bool:
    try:
        return options.get_session_config_entry(SPINNING) != "0"
    except Exception:  # not set: ONNX Runtime's default, spinning
        return True


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool",
               "tensor(double)": "float64"}


def import_onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailableError("ONNX Runtime is not installed: pip install 'foal-edge[cpu]' "
                                      "(or 'foal-edge[gpu]' for CUDA)") from exc
    # Errors only: ONNX Runtime 1.31 warns "No registered plugin EP device found for
    # 'CUDAExecutionProvider'" at every CUDA session (it looks for plugin providers first);
    # the built-in CUDA provider is used all the same. Session creation failures still raise.
    ort.set_default_logger_severity(3)
    return ort


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[tuple[str, str], ...]:
    """/proc/cpuinfo as (key, value) pairs, read once per process (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return tuple((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in f))
    except OSError:
        return ()


def physical_cores() -> int:
    """Distinct (socket, core) pairs in /proc/cpuinfo: hyperthreads only slow GEMMs down."""
    cores, socket = set(), "0"
    for key, value in _cpuinfo():
        if key == "physical id":
            socket = value
        elif key == "core id":
            cores.add((socket, value))
    return len(cores) or os.cpu_count() or 1


def _runtime_errors(ort) -> tuple[type[BaseException], ...]:
    """ONNX Runtime's own exception classes (Fail, InvalidArgument, RuntimeException, ...)."""
    state = getattr(getattr(ort, "capi", None), "onnxruntime_pybind11_state", None)
    found = tuple(v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception)) \
        if state is not None else ()
    return found or (RuntimeError,)


def default_cache_dir() -> Path | None:
    """Where optimised CPU graphs are kept: $FOAL_EDGE_CACHE ("off" disables the cache), else
    $XDG_CACHE_HOME/foal-edge, else ~/.cache/foal-edge."""
    env = os.environ.get("FOAL_EDGE_CACHE")
    if env is not None:
        return None if env.strip().lower() in ("", "0", "off", "none") else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "foal-edge"


def _cpu_signature() -> str:
    """The CPU model and instruction-set flags: an optimised graph may hold kernels and weight
    layouts chosen for them (NCHWc blocks, prepacked GEMM panels), so it is cached per CPU."""
    info = _cpuinfo()
    model = next((v for k, v in info if k == "model name"), "")
    flags = next((v for k, v in info if k in ("flags", "Features")), "")
    return f"{model}|{flags}|{os.uname().machine}"


def cuda_available() -> bool:
    try:
        return "CUDAExecutionProvider" in import_onnxruntime().get_available_providers()
    except BackendUnavailableError:
        return False


class OnnxRuntimeRunner(Runner):
    keeps_on_device = True  # outputs as OrtValues where the session runs (io binding)
    def __init__(self, path, device: str = "cpu", device_id: int = 0, threads: int | None = None,
                 precision: str = "fp32", exact_fp32: bool = False, cache_key: str | None = None,
                 cache_dir: Path | None = None, spin: bool = True):
        """cache_key (the graph's sha256 from the manifest) with cache_dir: on CPU, the graph as
        ONNX Runtime optimised it is saved there on first load and loaded from there afterwards,
        so a large bundle does not spend seconds optimising at every start. spin: the intra-op
        worker threads spin while they wait for work (ONNX Runtime's default: a little sooner
        on back-to-back runs); False lets them sleep, leaving the cores to other work between
        runs (decoding, resizing, voice activity: a timeline)."""
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if device == "cpu" and precision == "fp16":
            # ONNX Runtime 1.31's CPU layout transforms crash (SIGSEGV) on FP16 convolutions;
            # FP16 is a GPU format anyway: on CPU run it with the extended level.
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.intra_op_num_threads = threads or physical_cores()
        options.log_severity_level = 3
        _set_spinning(options, spin)
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError("ONNX Runtime has no CUDA provider here: install onnxruntime-gpu "
                                              "(pip install 'foal-edge[gpu]') and the CUDA libraries it needs")
            cuda = {"device_id": device_id}
            if exact_fp32:  # no TF32 (10-bit mantissa) MatMuls: frame resampling must stay within a grey level
                cuda["use_tf32"] = "0"
            providers = [("CUDAExecutionProvider", cuda)] + providers
        self.cached = None  # "hit" | "written" | None (no cache)
        self.cache_warning = None  # what went wrong with the cache, if anything (also warned once)
        self.session = None
        entry = None
        if device == "cpu" and cache_key and cache_dir:
            key = hashlib.sha256(f"{cache_key}|{ort.__version__}|{precision}|{int(options.graph_optimization_level)}|"
                                 f"{_cpu_signature()}".encode()).hexdigest()[:32]
            entry = Path(cache_dir) / "ort-optimized" / f"{Path(path).stem}-{key}"
            self.session = self._load_cached(ort, entry, options, providers, cache_key)
        if self.session is None:
            self.session = self._create(ort, path, options, providers, entry, cache_key)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        # What the graph file itself declares: {name: (dtype, shape with None/str for dynamic)}
        self.io = {v.name: (_ORT_DTYPES.get(v.type, v.type), list(v.shape))
                   for v in self.session.get_inputs() + self.session.get_outputs()}
        self.max_shapes = {}  # ONNX Runtime runs any shape the graph allows
        self.device, self.device_id = device, device_id
        self.path = Path(path)
        self._errors = _runtime_errors(ort)

    def _cache_problem(self, entry: Path, what: str, drop: bool = True) -> None:
        """One warning for a cache entry that cannot be used or written; the entry is removed
        and the bundle's own graph runs."""
        if drop:
            shutil.rmtree(entry, ignore_errors=True)
        self.cache_warning = f"optimised-graph cache entry {entry}: {what}; running the bundle's own graph"
        warnings.warn(self.cache_warning, CacheWarning, stacklevel=4)

    def _load_cached(self, ort, entry: Path, options, providers, source_sha256: str):
        """The session from a cached optimised graph, or None. The entry is used only when its
        record names the bundle graph's sha256 (already checked against the manifest) and every
        file in it has the sha256 recorded when it was written, and the graph reads no file
        outside the entry: anything else (a foreign, stale, damaged or half-written entry) is
        removed, with a warning, and the bundle's graph is optimised again."""
        if not entry.exists() and not entry.is_symlink():
            return None
        try:
            if entry.is_symlink() or not entry.is_dir():
                raise _Unusable("not a directory the cache wrote")
            record = _read_record(entry / CACHE_RECORD)
            if record.get("source_sha256") != source_sha256:
                raise _Unusable("made from another graph than the bundle's")
            files = record.get("files")
            if not isinstance(files, dict) or "model.onnx" not in files or \
                    set(p.name for p in entry.iterdir()) != set(files) | {CACHE_RECORD}:
                raise _Unusable("its files are not the ones recorded")
            for name, digest in files.items():
                file = entry / name
                if not isinstance(name, str) or "/" in name or name.startswith(".") or file.is_symlink() \
                        or not file.is_file() or sha256_file(file) != digest:
                    raise _Unusable(f"{name} is not the file written there (sha256 differs)")
            if not set(onnx_external_data(entry / "model.onnx")) <= set(files):
                raise _Unusable("the graph reads files the entry does not hold")
        except (_Unusable, OSError, BundleError, ValueError) as exc:
            self._cache_problem(entry, str(exc) if isinstance(exc, _Unusable) else f"unreadable ({exc})")
            return None
        cached = ort.SessionOptions()
        cached.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        cached.intra_op_num_threads = options.intra_op_num_threads
        cached.log_severity_level = 3
        _set_spinning(cached, _spinning(options))
        try:
            session = ort.InferenceSession(str(entry / "model.onnx"), cached, providers=providers)
        except Exception as exc:  # ONNX Runtime cannot load it after all: drop it
            self._cache_problem(entry, f"ONNX Runtime cannot load it ({str(exc)[:200]})")
            return None
        self.cached = "hit"
        return session

    def _create(self, ort, path, options, providers, entry: Path | None, source_sha256: str | None):
        """Load and optimise the bundle's graph; with `entry`, save the optimised graph there
        with its record (written to a temporary directory, then renamed, so readers never see
        half of it). Writing is best effort: a cache that cannot be written (read-only,
        full disk) costs a warning, never the load."""
        tmp = None
        if entry is not None:
            try:
                entry.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=entry.name + ".", dir=entry.parent))
            except OSError as exc:  # a read-only home, a file where the directory should be
                self._cache_problem(entry, f"cannot be written ({exc})", drop=False)
                tmp = None
        session = None
        if tmp is not None:
            writing = _copy_options(ort, options)
            writing.optimized_model_filepath = str(tmp / "model.onnx")
            # Weights in a side file: a large graph cannot be one protobuf (2 GB limit).
            writing.add_session_config_entry("session.optimized_model_external_initializers_file_name", "model.data")
            writing.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                             "1024")
            try:
                session = ort.InferenceSession(str(path), writing, providers=providers)
            except Exception:  # perhaps only the writing failed (a full disk): load without it below
                session = None
            if session is not None:
                try:
                    _write_record(tmp, source_sha256)
                    os.rename(tmp, entry)
                    self.cached = "written"
                    tmp = None
                except OSError as exc:
                    if not entry.is_dir():  # (another process cached it first: nothing to say)
                        self._cache_problem(entry, f"cannot be written ({exc})", drop=False)
            else:
                self._cache_problem(entry, "the optimised graph could not be written", drop=False)
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        if session is None:
            try:
                session = ort.InferenceSession(str(path), options, providers=providers)
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf classes
                raise BundleError(f"{path}: ONNX Runtime cannot load this graph ({exc}); the file is corrupt or "
                                  "from an incompatible export: rebuild the bundle") from exc
        return session

    def run(self, feeds: dict, keep_on_device: bool = False) -> list:
        """Run the graph. Feeds are numpy arrays or OrtValues (outputs of another runner's
        `keep_on_device` call, already where this session runs: no copy back and forth).
        Returns numpy arrays, or OrtValues left on the session's device with keep_on_device."""
        if self.session is None:
            raise InferenceError(f"{self.path.name}: the runner is closed")
        try:
            if not keep_on_device and all(isinstance(feeds[n], np.ndarray) for n in self.inputs):
                return self.session.run(self.outputs, {n: feeds[n] for n in self.inputs})
            binding = self.session.io_binding()
            for n in self.inputs:
                if isinstance(feeds[n], np.ndarray):
                    binding.bind_cpu_input(n, feeds[n])
                else:
                    binding.bind_ortvalue_input(n, feeds[n])
            for n in self.outputs:
                if keep_on_device:
                    binding.bind_output(n, self.device, self.device_id)
                else:
                    binding.bind_output(n)
            self.session.run_with_iobinding(binding)
            return binding.get_outputs() if keep_on_device else binding.copy_outputs_to_cpu()
        except self._errors as exc:
            raise InferenceError(f"{self.path.name}: ONNX Runtime failed to run the graph ({exc})") from exc

    def close(self) -> None:
        self.session = None  # the session frees its memory when the last reference goes
