"""Choosing the engine for a tabular model: load, verify against XGBoost, time, pick.

:func:`load_tabular` with ``engine="auto"`` loads the XGBoost reference and every candidate
(compiled trees, ONNX); a candidate that fails to build (no compiler, conversion error) is skipped
with its reason logged. Each remaining candidate must agree with the reference on a calibration
batch, row by row, within the float32 summation bound of that row (:func:`summation_bound`: two
correct float32 sums of the same leaves, added in different orders, as backends and thread counts
do, are at most that far apart); a disagreeing engine is skipped, never used. The bound comes from
the model and float32 arithmetic, not from the CPU, so the same engines agree on every machine.
Every agreeing engine is timed at batch 1 and batch 64 (median of a short burst), and the choice
is:

    the fastest at batch 1, unless another engine is more than 2x faster at batch 64 than that
    one, in which case the fastest at batch 64.

(Single-row requests dominate device traffic; a large batch-64 gap only matters under load, where
the micro-batcher builds such batches.) The choice and all timings are logged once at INFO.

Without calibration data, rows are synthesised from the model itself: each feature is sampled
from the midpoints between its consecutive split thresholds (plus one value below the lowest and
one above the highest), so every branch of every split is exercised and no value sits exactly on
a threshold. This works for any XGBoost model.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from roost.serve.backends import (
    CompiledTreesBackend,
    OnnxTabularBackend,
    TabularBackend,
    XGBoostBackend,
    model_digest,
)
from roost.serve.errors import ModelError

__all__ = ["Engine", "LoadedModel", "calibration_rows", "load_tabular", "max_deviation", "summation_bound"]

log = logging.getLogger(__name__)

Engine = Literal["auto", "xgboost", "compiled", "onnx"]
Matrix = npt.NDArray[np.float32]

#: float32's unit roundoff.
FLOAT32_U: Final = 2.0**-24
CALIBRATION_ROWS: Final = 256
#: A candidate must beat the batch-1 winner by this factor at batch 64 to be chosen instead.
BATCH64_FACTOR: Final = 2.0
_TIME_BUDGET_S: Final = 0.15


@dataclass(frozen=True)
class LoadedModel:
    """A ready backend plus how it was chosen.

    ``timings`` maps engine name → ``{"load_s", "batch1_us", "batch64_us", "max_abs_diff"}`` (the
    timing keys only for engines that were timed); ``skipped`` maps engine name → reason.
    """

    backend: TabularBackend
    engine: str
    feature_names: list[str]
    digest: str
    timings: dict[str, dict[str, float]]
    skipped: dict[str, str] = field(default_factory=dict)


def calibration_rows(booster: xgb.Booster, n_rows: int = CALIBRATION_ROWS, *, seed: int = 0) -> Matrix:
    """Synthesise ``n_rows`` rows from the split thresholds of ``booster``'s trees (deterministic)."""
    model = json.loads(booster.save_raw(raw_format="json"))
    n_features = int(model["learner"]["learner_model_param"]["num_feature"])
    thresholds: list[set[float]] = [set() for _ in range(n_features)]
    for tree in model["learner"]["gradient_booster"]["model"]["trees"]:
        for left, feature, cond in zip(
            tree["left_children"], tree["split_indices"], tree["split_conditions"], strict=True
        ):
            if left != -1:
                thresholds[feature].add(float(np.float32(cond)))
    rng = np.random.default_rng(seed)
    out = np.zeros((n_rows, n_features), dtype=np.float32)
    for j, ts in enumerate(thresholds):
        if not ts:
            continue
        t = np.array(sorted(ts), dtype=np.float64)
        span = max(float(t[-1] - t[0]), 1.0)
        candidates = np.concatenate([[t[0] - span * 0.1], (t[:-1] + t[1:]) / 2, [t[-1] + span * 0.1]])
        out[:, j] = candidates[rng.integers(0, len(candidates), size=n_rows)]
    return out


def summation_bound(booster: xgb.Booster, x: Matrix) -> npt.NDArray[np.float64]:
    """Per row of ``x``: how far two correct float32 evaluations of ``booster`` may be apart.

    A prediction is ``base_score + one leaf per tree``, added in float32 in an order that differs
    between backends and, for onnxruntime, with the thread count. Any order of ``n`` additions is
    within ``gamma_n * sum(|terms|)`` of the exact sum (Higham, *Accuracy and Stability of Numerical
    Algorithms*, 4.2: ``gamma_n = n u / (1 - n u)``), so two are within twice that. The terms are the
    leaf values each row reaches (``pred_leaf``). Output transforms (sigmoid, softmax) are
    1-Lipschitz, and a final rounding adds ``2 u max(1, |y|)``, which the caller adds per output.
    """
    dmatrix = xgb.DMatrix(x, feature_names=booster.feature_names)
    leaves = np.asarray(booster.predict(dmatrix, pred_leaf=True), dtype=np.int64).reshape(len(x), -1)
    learner = json.loads(booster.save_raw(raw_format="json"))["learner"]
    trees = learner["gradient_booster"]["model"]["trees"]
    base_text = str(learner["learner_model_param"]["base_score"]).strip("[]")
    base = max((abs(float(v)) for v in base_text.replace(",", " ").split()), default=0.0)
    total = np.full(len(x), base, dtype=np.float64)
    for i, tree in enumerate(trees[: leaves.shape[1]]):
        values = np.abs(np.asarray(tree["split_conditions"], dtype=np.float64))  # a leaf's value
        total += values[leaves[:, i]]
    n = leaves.shape[1] + 1
    return np.asarray(2 * n * FLOAT32_U / (1 - n * FLOAT32_U) * total, dtype=np.float64)


def _disagreement(pred: Matrix, ref: Matrix, bound: npt.NDArray[np.float64]) -> tuple[float, float]:
    """(largest |pred - ref|, the largest ratio of a difference to what its row allows)."""
    p = np.asarray(pred, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if p.shape != r.shape:
        return float("inf"), float("inf")
    rows = bound.reshape((-1,) + (1,) * (r.ndim - 1))
    allowed = rows + 2 * FLOAT32_U * np.maximum(1.0, np.abs(r))
    diff = np.abs(p - r)
    return float(np.max(diff, initial=0.0)), float(np.max(diff / allowed, initial=0.0))


def max_deviation(pred: Matrix, ref: Matrix) -> float:
    """Largest ``|pred - ref| / max(1, |ref|)`` (absolute for outputs up to 1 in magnitude)."""
    p = np.asarray(pred, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if p.shape != r.shape:
        return float("inf")
    return float(np.max(np.abs(p - r) / np.maximum(1.0, np.abs(r)), initial=0.0))


def _median_us(fn: Callable[[Matrix], Matrix], batches: list[Matrix], max_calls: int) -> float:
    for b in batches[:3]:
        fn(b)
    lat: list[int] = []
    deadline = time.perf_counter() + _TIME_BUDGET_S
    for i in range(max_calls):
        x = batches[i % len(batches)]
        t0 = time.perf_counter_ns()
        fn(x)
        lat.append(time.perf_counter_ns() - t0)
        if time.perf_counter() > deadline and len(lat) >= 10:
            break
    return float(np.median(lat)) / 1000.0


def _build(engine: str, model_path: Path, cache_dir: Path, feature_names: list[str] | None) -> TabularBackend:
    if engine == "xgboost":
        return XGBoostBackend(model_path, feature_names=feature_names)
    if engine == "compiled":
        return CompiledTreesBackend(model_path, cache_dir, feature_names=feature_names)
    if engine == "onnx":
        return OnnxTabularBackend(model_path, cache_dir, feature_names=feature_names)
    raise ModelError(f"unknown engine {engine!r}; choose auto, xgboost, compiled or onnx")


def _choose(timings: dict[str, dict[str, float]]) -> str:
    timed = {name: t for name, t in timings.items() if "batch1_us" in t}
    best1 = min(timed, key=lambda name: timed[name]["batch1_us"])
    best64 = min(timed, key=lambda name: timed[name]["batch64_us"])
    if timed[best64]["batch64_us"] * BATCH64_FACTOR < timed[best1]["batch64_us"]:
        return best64
    return best1


def load_tabular(
    model_path: Path,
    engine: Engine = "auto",
    *,
    cache_dir: Path,
    calibration: Matrix | None = None,
    feature_names: list[str] | None = None,
) -> LoadedModel:
    """Load an XGBoost model (JSON/UBJ) with the given engine, or choose one (see the module notes).

    Explicit ``compiled``/``onnx`` engines are verified against XGBoost too; a disagreement raises
    :class:`ModelError`. ``feature_names`` is only needed for models saved without names.
    """
    model_path = Path(model_path)
    cache_dir = Path(cache_dir)
    digest = model_digest(model_path)
    timings: dict[str, dict[str, float]] = {}
    skipped: dict[str, str] = {}

    t0 = time.perf_counter()
    reference = XGBoostBackend(model_path, feature_names=feature_names)
    timings["xgboost"] = {"load_s": time.perf_counter() - t0}
    names = reference.feature_names
    if calibration is not None:
        calib = np.ascontiguousarray(calibration, dtype=np.float32)
        if calib.ndim != 2 or calib.shape[1] != len(names) or calib.shape[0] == 0:
            raise ModelError(f"calibration must be a non-empty (rows, {len(names)}) matrix, got {calib.shape}")
    if engine == "xgboost":  # nothing to compare it against: no calibration rows to make
        return LoadedModel(reference, "xgboost", names, digest, timings)
    if reference.linear:  # the compiled and ONNX engines convert tree ensembles only
        why = "a linear (gblinear) model: only the xgboost engine serves it"
        if engine != "auto":
            raise ModelError(f"engine {engine} cannot serve {model_path}: {why}")
        log.info("model %s (%s): engine xgboost chosen (%s)", model_path.name, digest[:12], why)
        return LoadedModel(reference, "xgboost", names, digest, timings, {"compiled": why, "onnx": why})
    if calibration is None:
        calib = calibration_rows(reference.booster)
    expected = reference.predict(calib)
    bound = summation_bound(reference.booster, calib)

    candidates = ["compiled", "onnx"] if engine == "auto" else [engine]
    backends: dict[str, TabularBackend] = {"xgboost": reference}
    for name in candidates:
        t0 = time.perf_counter()
        try:
            backend = _build(name, model_path, cache_dir, names)
        except ModelError as err:
            if engine != "auto":
                raise
            skipped[name] = str(err)
            log.warning("engine %s skipped for %s: %s", name, model_path.name, err)
            continue
        load_s = time.perf_counter() - t0
        deviation, ratio = _disagreement(backend.predict(calib), expected, bound)
        timings[name] = {"load_s": load_s, "max_abs_diff": deviation, "bound_ratio": ratio}
        if not ratio <= 1.0:
            reason = (f"disagrees with xgboost by {deviation:.3g}, {ratio:.3g}x the float32 summation bound "
                      f"of its row (largest bound {float(bound.max(initial=0.0)):.3g})")
            if engine != "auto":
                raise ModelError(f"engine {name} {reason} on {model_path}")
            skipped[name] = reason
            log.warning("engine %s skipped for %s: %s", name, model_path.name, reason)
            continue
        backends[name] = backend

    if engine != "auto":
        return LoadedModel(backends[engine], engine, names, digest, timings, skipped)

    rows1 = [np.ascontiguousarray(calib[i : i + 1]) for i in range(min(32, len(calib)))]
    reps = max(1, -(-64 // len(calib)))
    big = np.ascontiguousarray(np.tile(calib, (reps, 1)))
    rows64 = [np.ascontiguousarray(big[i : i + 64]) for i in range(0, min(len(big) - 63, 256), 64)]
    for name, backend in backends.items():
        timings[name]["batch1_us"] = _median_us(backend.predict, rows1, 400)
        timings[name]["batch64_us"] = _median_us(backend.predict, rows64, 100)
    chosen = _choose(timings)
    summary = "; ".join(
        f"{name} b1={t['batch1_us']:.1f}us b64={t['batch64_us']:.1f}us"
        for name, t in timings.items()
        if "batch1_us" in t
    )
    extra = "".join(f"; {name} skipped ({why})" for name, why in skipped.items())
    log.info("model %s (%s): engine %s chosen [%s%s]", model_path.name, digest[:12], chosen, summary, extra)
    return LoadedModel(backends[chosen], chosen, names, digest, timings, skipped)
