"""Tabular model backends: one XGBoost model, three engines behind :class:`TabularBackend`.

* :class:`XGBoostBackend` — the reference: ``xgboost.Booster.inplace_predict``.
* :class:`CompiledTreesBackend` — treelite + tl2cgen turn the trees into C, gcc compiles a shared
  library once per model digest (cached, see :func:`compile_model`). Batches of up to
  :data:`DIRECT_MAX_ROWS` rows call the library's per-row ``predict`` symbol through ctypes with
  per-thread preallocated buffers (a few µs); larger batches go through ``tl2cgen.Predictor``
  (whose ``DMatrix`` construction costs ~20 µs, negligible there), single-threaded below
  :data:`PARALLEL_MIN_ROWS` rows.
* :class:`OnnxTabularBackend` — onnxmltools converts the booster to an ONNX TreeEnsemble (cached
  by digest, feature names kept in the model's metadata) and onnxruntime runs it: a one-thread
  session below :data:`PARALLEL_MIN_ROWS` rows and a multi-thread session for larger batches.

Every backend takes a float32 ``(rows, features)`` matrix in model feature order and returns
float32 predictions: 1-D for a single-output model, ``(rows, outputs)`` otherwise. ``predict`` is
safe to call from several threads at once. NaN means "missing", as in XGBoost.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import os
import platform
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from importlib import import_module, metadata
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from roost.serve.errors import ModelError

__all__ = [
    "DIRECT_MAX_ROWS",
    "PARALLEL_MIN_ROWS",
    "CompiledTreesBackend",
    "OnnxTabularBackend",
    "TabularBackend",
    "XGBoostBackend",
    "booster_kind",
    "compile_model",
    "model_digest",
    "onnx_model",
]

log = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float32]

#: Largest batch the compiled backend runs row by row through ctypes instead of tl2cgen.Predictor.
DIRECT_MAX_ROWS: Final = 16
#: Smallest batch run multi-threaded. Below it every backend uses one thread: thread hand-off
#: costs more than it saves on small batches, and on a busy device an OpenMP barrier waiting
#: for a descheduled thread turned a 0.3 ms xgboost call into 24 ms (measured here).
PARALLEL_MIN_ROWS: Final = 128
_MAX_THREADS: Final = 4


@runtime_checkable
class TabularBackend(Protocol):
    """A loaded tabular model. ``predict`` is thread-safe."""

    name: str
    feature_names: list[str]

    def predict(self, x: Matrix) -> Matrix:
        """Predict float32 ``(rows, features)`` → float32 predictions (1-D for one output)."""
        ...


def default_threads() -> int:
    """Threads for large batches: the machine's cores, capped (edge boxes share them)."""
    return max(1, min(os.cpu_count() or 1, _MAX_THREADS))


def model_digest(path: Path) -> str:
    """sha256 hex digest of a model file (the cache key of compiled/converted artifacts)."""
    h = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as err:
        raise ModelError(f"cannot read model {path}: {err}") from err
    return h.hexdigest()


def _as_output(pred: Any, n: int) -> Matrix:
    out = np.asarray(pred, dtype=np.float32).reshape(n, -1)
    return out[:, 0] if out.shape[1] == 1 else out


def _check_input(x: Matrix, n_features: int) -> Matrix:
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ModelError(f"expected a (rows, {n_features}) matrix, got shape {x.shape}")
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        return np.ascontiguousarray(x, dtype=np.float32)
    return x


def load_booster(model_path: Path, feature_names: Sequence[str] | None = None) -> tuple[xgb.Booster, list[str]]:
    """Load an XGBoost model (JSON or UBJ) and settle its feature names.

    The model's own names win; ``feature_names`` is used when the model has none (and must agree
    when it has). Raises :class:`ModelError` when neither gives names.
    """
    booster = xgb.Booster()
    try:
        booster.load_model(str(model_path))
    except (xgb.core.XGBoostError, OSError, ValueError) as err:
        raise ModelError(f"cannot load XGBoost model {model_path}: {err}") from err
    names = list(booster.feature_names or [])
    if names and feature_names is not None and list(feature_names) != names:
        raise ModelError(f"{model_path} names its features {names}, not {list(feature_names)}")
    if not names:
        if feature_names is None:
            raise ModelError(f"{model_path} has no feature names; pass feature_names")
        names = list(feature_names)
        if len(names) != booster.num_features():
            raise ModelError(f"{model_path} has {booster.num_features()} features, {len(names)} names were given")
    return booster, names


def _objective(booster: xgb.Booster) -> str:
    config = json.loads(booster.save_config())
    return str(config["learner"]["objective"]["name"])


@contextlib.contextmanager
def _cache_lock(cache_dir: Path, key: str) -> Iterator[None]:
    """Serialise builds of one artifact across processes (others wait, then find it built)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / f".{key}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _atomic_target(final: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.stem}-", suffix=final.suffix)
    os.close(fd)
    return Path(tmp)


# --------------------------------------------------------------------------------------------
# xgboost


def booster_kind(booster: xgb.Booster) -> str:
    """The model's booster: ``gbtree``, ``dart`` or ``gblinear``."""
    return str(json.loads(booster.save_config())["learner"]["gradient_booster"]["name"])


class XGBoostBackend:
    """The reference engine: ``Booster.inplace_predict`` on the float32 matrix.

    Two boosters share the model: one single-threaded for batches under
    :data:`PARALLEL_MIN_ROWS`, one with ``nthread`` threads for larger ones (``nthread`` is a
    booster-wide setting, so it cannot be switched per call safely). A linear model (``gblinear``,
    e.g. a federated FedAvg model folded by :mod:`roost.learn.federated_model`) has no in-place
    prediction: it predicts through a ``DMatrix``, one call at a time (XGBoost guarantees thread-safe
    prediction for tree boosters only).
    """

    name = "xgboost"

    def __init__(
        self, model_path: Path, *, feature_names: Sequence[str] | None = None, nthread: int | None = None
    ) -> None:
        self.model_path = Path(model_path)
        self.booster, self.feature_names = load_booster(self.model_path, feature_names)
        self.nthread = nthread or default_threads()
        self.booster.set_param({"nthread": 1})
        self._parallel = self.booster
        if self.nthread > 1:
            self._parallel = self.booster.copy()
            self._parallel.set_param({"nthread": self.nthread})
        self._n_features = len(self.feature_names)
        self.linear = booster_kind(self.booster) == "gblinear"
        self._linear_lock = threading.Lock()

    def predict(self, x: Matrix) -> Matrix:
        x = _check_input(x, self._n_features)
        n = x.shape[0]
        booster = self.booster if n < PARALLEL_MIN_ROWS else self._parallel
        if self.linear:
            with self._linear_lock:
                return _as_output(booster.predict(xgb.DMatrix(x, nthread=1), validate_features=False), n)
        return _as_output(booster.inplace_predict(x, validate_features=False), n)


# --------------------------------------------------------------------------------------------
# treelite + tl2cgen


def _tl2cgen() -> Any:
    return import_module("tl2cgen")


def _treelite() -> Any:
    return import_module("treelite")


def compiled_name(digest: str) -> str:
    """File name of the compiled library for a model digest (tl2cgen version and CPU included)."""
    return f"{digest}-tl2cgen{metadata.version('tl2cgen')}-{platform.machine()}.so"


def compile_model(model_path: Path, cache_dir: Path, *, digest: str | None = None) -> Path:
    """Compile an XGBoost model to a shared library in ``cache_dir`` once; return its path.

    Keyed by the model's sha256 and the tl2cgen version, built under a file lock into a temporary
    name and renamed into place, so concurrent starts neither collide nor compile twice. Usable at
    Install time (``python -c 'from roost.serve.backends import compile_model; ...'``).
    """
    model_path = Path(model_path)
    digest = digest or model_digest(model_path)
    libpath = Path(cache_dir) / compiled_name(digest)
    if libpath.is_file():
        return libpath
    with _cache_lock(Path(cache_dir), digest):
        if libpath.is_file():  # another process built it while we waited
            return libpath
        tl2cgen, treelite = _tl2cgen(), _treelite()
        tmp = _atomic_target(libpath)
        t0 = time.perf_counter()
        try:
            model = treelite.frontend.load_xgboost_model(str(model_path))
            threads = default_threads()
            tl2cgen.export_lib(
                model, toolchain="gcc", libpath=str(tmp), params={"parallel_comp": threads}, nthread=threads
            )
            os.replace(tmp, libpath)
        except Exception as err:
            raise ModelError(f"cannot compile {model_path} with tl2cgen/gcc: {err}") from err
        finally:
            tmp.unlink(missing_ok=True)
        log.info("compiled %s to %s in %.1f s", model_path.name, libpath, time.perf_counter() - t0)
    return libpath


class _DirectBuffers(threading.local):
    """Per-thread input/output buffers for the ctypes path (their addresses are computed once)."""

    def __init__(self, n_features: int) -> None:
        self.x = np.zeros((DIRECT_MAX_ROWS, n_features), dtype=np.float32)
        self.out = np.zeros(DIRECT_MAX_ROWS, dtype=np.float32)
        self.x_ptr = int(self.x.ctypes.data)
        self.out_ptr = int(self.out.ctypes.data)
        self.row_bytes = n_features * 4
        self.views = [self.x[:k] for k in range(DIRECT_MAX_ROWS + 1)]
        self.flat = [self.x[:k].reshape(-1) for k in range(DIRECT_MAX_ROWS + 1)]


class CompiledTreesBackend:
    """Trees compiled to C by tl2cgen; see the module notes for the small-batch fast path."""

    name = "compiled"

    def __init__(
        self,
        model_path: Path,
        cache_dir: Path,
        *,
        feature_names: Sequence[str] | None = None,
        nthread: int | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        booster, self.feature_names = load_booster(self.model_path, feature_names)
        del booster
        self.digest = model_digest(self.model_path)
        self.libpath = compile_model(self.model_path, Path(cache_dir), digest=self.digest)
        tl2cgen = _tl2cgen()
        self._dmatrix = tl2cgen.DMatrix
        self.nthread = nthread or default_threads()
        try:
            self._predictor = tl2cgen.Predictor(str(self.libpath), nthread=1)
            self._parallel = (
                tl2cgen.Predictor(str(self.libpath), nthread=self.nthread) if self.nthread > 1 else self._predictor
            )
            lib = ctypes.CDLL(str(self.libpath))
        except Exception as err:
            raise ModelError(f"cannot load compiled model {self.libpath}: {err}") from err
        self._n_features = len(self.feature_names)
        if int(self._predictor.num_feature) != self._n_features:
            raise ModelError(
                f"{self.libpath} expects {self._predictor.num_feature} features, the model names {self._n_features}"
            )
        # The per-row entry point generated by tl2cgen: predict(union Entry* row, int pred_margin,
        # float* result). Entry is {int missing; float fvalue}: a float32 row is a valid Entry
        # array (missing == -1 is a NaN bit pattern, which the fast path never passes).
        self._direct: Any = None
        p = self._predictor
        if (
            int(p.num_target) == 1
            and int(np.max(p.num_class)) == 1
            and p.leaf_output_type == "float32"
            and p.threshold_type == "float32"
        ):
            fn = lib.predict
            fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
            fn.restype = None
            self._direct = fn
        self._lib = lib
        self._buffers = _DirectBuffers(self._n_features)

    def predict(self, x: Matrix) -> Matrix:
        n = x.shape[0]
        if self._direct is not None and 0 < n <= DIRECT_MAX_ROWS and x.ndim == 2 and x.shape[1] == self._n_features:
            buf = self._buffers
            buf.views[n][...] = x
            flat = buf.flat[n]
            if not np.isnan(flat.dot(flat)):  # NaN (missing) rows take the Predictor path
                fn, xp, op, rb = self._direct, buf.x_ptr, buf.out_ptr, buf.row_bytes
                out = buf.out
                out[:n] = 0.0
                for i in range(n):
                    fn(xp + i * rb, 0, op + 4 * i)
                return out[:n].copy()
        x = _check_input(x, self._n_features)
        predictor = self._predictor if n < PARALLEL_MIN_ROWS else self._parallel
        return _as_output(predictor.predict(self._dmatrix(x)), n)


# --------------------------------------------------------------------------------------------
# onnx


def onnx_name(digest: str) -> str:
    return f"{digest}-onnxmltools{metadata.version('onnxmltools')}.onnx"


def onnx_model(model_path: Path, cache_dir: Path, *, digest: str | None = None) -> Path:
    """Convert an XGBoost model to ONNX once (cached by digest); return the .onnx path.

    onnxmltools maps split features through names ``f0..fN`` only, so the booster's names are
    cleared for the conversion and stored instead in the ONNX metadata (``feature_names``, JSON).
    """
    model_path = Path(model_path)
    digest = digest or model_digest(model_path)
    target = Path(cache_dir) / onnx_name(digest)
    if target.is_file():
        return target
    with _cache_lock(Path(cache_dir), digest + "-onnx"):
        if target.is_file():
            return target
        booster, names = load_booster(model_path)
        objective = _objective(booster)
        if not objective.startswith("reg:"):
            raise ModelError(f"the ONNX backend converts regression models only, not {objective!r}")
        onnxmltools = import_module("onnxmltools")
        float_tensor = import_module("onnxmltools.convert.common.data_types").FloatTensorType
        booster.feature_names = None
        booster.feature_types = None
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onx = onnxmltools.convert_xgboost(booster, initial_types=[("input", float_tensor([None, len(names)]))])
        except Exception as err:
            raise ModelError(f"onnxmltools cannot convert {model_path}: {err}") from err
        prop = onx.metadata_props.add()
        prop.key, prop.value = "feature_names", json.dumps(names)
        tmp = _atomic_target(target)
        try:
            tmp.write_bytes(onx.SerializeToString())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("converted %s to ONNX %s in %.2f s", model_path.name, target, time.perf_counter() - t0)
    return target


class OnnxTabularBackend:
    """onnxruntime on the converted model (or on a given ``.onnx`` file)."""

    name = "onnx"

    def __init__(
        self,
        model_path: Path,
        cache_dir: Path | None = None,
        *,
        feature_names: Sequence[str] | None = None,
        nthread: int | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        if self.model_path.suffix == ".onnx":
            self.onnx_path = self.model_path
        else:
            if cache_dir is None:
                raise ModelError("converting an XGBoost model to ONNX needs a cache_dir")
            self.onnx_path = onnx_model(self.model_path, Path(cache_dir))
        ort = import_module("onnxruntime")
        self.nthread = nthread or default_threads()
        try:
            self._small = self._session(ort, 1)
            self._large = self._session(ort, self.nthread) if self.nthread > 1 else self._small
        except Exception as err:
            raise ModelError(f"onnxruntime cannot load {self.onnx_path}: {err}") from err
        meta = self._small.get_modelmeta().custom_metadata_map
        names = json.loads(meta["feature_names"]) if "feature_names" in meta else None
        if names is None:
            if feature_names is None:
                raise ModelError(f"{self.onnx_path} carries no feature names; pass feature_names")
            names = list(feature_names)
        elif feature_names is not None and list(feature_names) != names:
            raise ModelError(f"{self.onnx_path} names its features {names}, not {list(feature_names)}")
        self.feature_names: list[str] = list(names)
        inputs, outputs = self._small.get_inputs(), self._small.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{self.onnx_path}: expected one input and one output (a regression model)")
        self._input = inputs[0].name
        self._outputs = [outputs[0].name]
        self._n_features = len(self.feature_names)

    def _session(self, ort: Any, threads: int) -> Any:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        return ort.InferenceSession(str(self.onnx_path), sess_options=so, providers=["CPUExecutionProvider"])

    def predict(self, x: Matrix) -> Matrix:
        x = _check_input(x, self._n_features)
        n = x.shape[0]
        session = self._small if n < PARALLEL_MIN_ROWS else self._large
        return _as_output(session.run(self._outputs, {self._input: x})[0], n)
