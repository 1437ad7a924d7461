"""Backends agree with xgboost, reproduce the seed model's outputs, and reuse their caches."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from roost.serve import backends as backends_mod
from roost.serve.backends import (
    DIRECT_MAX_ROWS,
    CompiledTreesBackend,
    OnnxTabularBackend,
    TabularBackend,
    XGBoostBackend,
    compile_model,
    onnx_model,
)
from roost.serve.engine import FLOAT32_U, summation_bound
from roost.serve.errors import ModelError
from roost.serve.request import decode_tabular
from roost.serve.wine import FEATURES, load_wine
from tests.conftest import require_seed_data

SEED = Path(__file__).resolve().parents[2].parent / "shared" / "seed-data"
SEED_MODEL = SEED / "xgboost_wine_quality.json"
SEED_EXPECTED = [6.573914051055908, 4.869720935821533]
ENGINES = ["xgboost", "compiled", "onnx"]
#: Unit roundoff of float32 (round to nearest).


def float32_sum_tolerance(model_path: Path, x: np.ndarray) -> np.ndarray:
    """Per row, how far two correct float32 evaluations of the tree ensemble may be apart: the
    engine's own acceptance bound (:func:`roost.serve.engine.summation_bound`, from the model's
    leaves and float32 arithmetic, not from a CPU) plus the final rounding of the output."""
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(model_path))
    ref = booster.predict(xgb.DMatrix(x, feature_names=booster.feature_names))
    return np.asarray(summation_bound(booster, np.ascontiguousarray(x, dtype=np.float32))
                      + 2 * FLOAT32_U * np.maximum(1.0, np.abs(np.asarray(ref, np.float64))))


def assert_within_float32_sum(pred: np.ndarray, ref: np.ndarray, tolerance: np.ndarray) -> None:
    diff = np.abs(np.asarray(pred, np.float64) - np.asarray(ref, np.float64))
    assert diff.shape == tolerance.shape
    worst = int(np.argmax(diff - tolerance))
    assert np.all(diff <= tolerance), f"row {worst}: |{pred[worst]} - {ref[worst]}| > {tolerance[worst]:.3g}"


@pytest.fixture(scope="module")
def work(wine_work: Path) -> Path:
    """The session's folder (tests/serve/conftest.py): the trained wine model and the compile cache."""
    return wine_work


@pytest.fixture(scope="module")
def cache(serve_cache: Path) -> Path:
    return serve_cache


def _build(engine: str, model: Path, cache: Path) -> TabularBackend:
    if engine == "xgboost":
        return XGBoostBackend(model)
    if engine == "compiled":
        return CompiledTreesBackend(model, cache)
    return OnnxTabularBackend(model, cache)


@pytest.fixture(scope="module")
def wine_backends(wine_model: Path, cache: Path) -> dict[str, TabularBackend]:
    return {engine: _build(engine, wine_model, cache) for engine in ENGINES}


@pytest.fixture(scope="module")
def seed_backends(seed_cache: Path) -> dict[str, TabularBackend]:
    """The seed model's backends, from the session cache (through the seed-data gate)."""
    require_seed_data("xgboost_wine_quality.json", "samples.json")
    return {engine: _build(engine, SEED_MODEL, seed_cache) for engine in ENGINES}


def test_protocol_and_names(wine_backends: dict[str, TabularBackend]) -> None:
    for name, backend in wine_backends.items():
        assert isinstance(backend, TabularBackend)
        assert backend.name == name
        assert backend.feature_names == list(FEATURES)


@pytest.mark.parametrize("engine", ["compiled", "onnx"])
def test_agrees_with_xgboost_on_vendored_data(
    engine: str, wine_backends: dict[str, TabularBackend], wine_model: Path
) -> None:
    x, _ = load_wine()
    ref = wine_backends["xgboost"].predict(x)
    tolerance = float32_sum_tolerance(wine_model, x)
    backend = wine_backends[engine]
    for batch in (1, 3, DIRECT_MAX_ROWS, DIRECT_MAX_ROWS + 1, 64, 1000, len(x)):
        pred = backend.predict(np.ascontiguousarray(x[:batch]))
        assert pred.dtype == np.float32 and pred.shape == (batch,)
        assert_within_float32_sum(pred, ref[:batch], tolerance[:batch])
    # row by row through the small-batch path
    singles = np.concatenate([backend.predict(x[i : i + 1]) for i in range(300)])
    assert_within_float32_sum(singles, ref[:300], tolerance[:300])


@pytest.mark.parametrize("engine", ENGINES)
def test_missing_values_follow_xgboost(engine: str, wine_backends: dict[str, TabularBackend], wine_model: Path) -> None:
    x, _ = load_wine()
    x = np.array(x[:40])
    x[::3, 4] = np.nan
    x[1::5, 10] = np.nan
    ref = wine_backends["xgboost"].predict(x)
    tolerance = float32_sum_tolerance(wine_model, x)
    backend = wine_backends[engine]
    assert_within_float32_sum(backend.predict(x), ref, tolerance)
    assert_within_float32_sum(backend.predict(x[:1]), ref[:1], tolerance[:1])


@pytest.mark.parametrize("engine", ENGINES)
def test_seed_model_gives_the_published_outputs(engine: str, seed_backends: dict[str, TabularBackend]) -> None:
    records = json.loads((SEED / "samples.json").read_text())
    backend = seed_backends[engine]
    x = decode_tabular(records, backend.feature_names)
    # The published outputs are float32 sums too (xgboost, upstream's machine): same bound.
    tolerance = float32_sum_tolerance(SEED_MODEL, x)
    assert_within_float32_sum(backend.predict(x), np.array(SEED_EXPECTED), tolerance)
    assert_within_float32_sum(backend.predict(x[1:]), np.array(SEED_EXPECTED[1:]), tolerance[1:])


def test_input_is_coerced_and_checked(wine_backends: dict[str, TabularBackend]) -> None:
    x, _ = load_wine()
    for backend in wine_backends.values():
        ref = backend.predict(x[:5])
        np.testing.assert_allclose(backend.predict(np.asfortranarray(x[:5].astype(np.float64))), ref, atol=1e-6)
        with pytest.raises(ModelError):
            backend.predict(x[:5, :12])


def test_thread_safe(wine_backends: dict[str, TabularBackend], wine_model: Path) -> None:
    x, _ = load_wine()
    ref = wine_backends["xgboost"].predict(x[:220])
    tolerance = float32_sum_tolerance(wine_model, x[:220])
    failures: list[str] = []

    def worker(backend: TabularBackend, offset: int) -> None:
        for i in range(offset, 200, 4):
            got = backend.predict(x[i : i + 1 + i % 20])
            rows = slice(i, i + 1 + i % 20)
            if not np.all(np.abs(got.astype(np.float64) - ref[rows]) <= tolerance[rows]):
                failures.append(f"{backend.name} row {i}")

    threads = [threading.Thread(target=worker, args=(b, k)) for b in wine_backends.values() for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_compile_cache_is_reused(wine_model: Path, cache: Path, wine_backends: dict[str, TabularBackend]) -> None:
    compiled = wine_backends["compiled"]
    assert isinstance(compiled, CompiledTreesBackend)
    before = compiled.libpath.stat()
    calls: list[object] = []
    original = backends_mod._tl2cgen
    backends_mod._tl2cgen = lambda: calls.append(1) or original()  # type: ignore[func-returns-value]
    try:
        again = CompiledTreesBackend(wine_model, cache)
        assert compile_model(wine_model, cache) == compiled.libpath
    finally:
        backends_mod._tl2cgen = original
    assert again.libpath == compiled.libpath
    after = again.libpath.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert len(calls) == 1  # the Predictor import only; compile_model returned before touching tl2cgen
    assert not list(cache.glob(".*.so")), "no temporary library left behind"
    onnx_path = onnx_model(wine_model, cache)
    mtime = onnx_path.stat().st_mtime_ns
    assert onnx_model(wine_model, cache).stat().st_mtime_ns == mtime


def test_onnx_file_carries_feature_names(wine_model: Path, cache: Path) -> None:
    onnx_path = onnx_model(wine_model, cache)
    backend = OnnxTabularBackend(onnx_path)
    assert backend.feature_names == list(FEATURES)
    with pytest.raises(ModelError):
        OnnxTabularBackend(onnx_path, feature_names=["a"] * 13)


def test_model_without_names(work: Path, wine_model: Path) -> None:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(wine_model))
    booster.feature_names = None
    booster.feature_types = None
    bare = work / "bare.ubj"
    booster.save_model(str(bare))
    with pytest.raises(ModelError, match="no feature names"):
        XGBoostBackend(bare)
    backend = XGBoostBackend(bare, feature_names=list(FEATURES))
    x, _ = load_wine()
    np.testing.assert_allclose(backend.predict(x[:10]), XGBoostBackend(wine_model).predict(x[:10]), atol=1e-6)
    with pytest.raises(ModelError):
        XGBoostBackend(bare, feature_names=["a", "b"])


def test_unreadable_model(work: Path, cache: Path) -> None:
    broken = work / "broken.json"
    broken.write_text("{not a model")
    with pytest.raises(ModelError):
        XGBoostBackend(broken)
    with pytest.raises(ModelError):
        CompiledTreesBackend(work / "absent.json", cache)


def test_the_end_to_end_seed_tolerance_is_the_float32_bound(seed_backends: dict[str, TabularBackend]) -> None:
    """tests/serve/test_service_e2e.py compares served predictions with the published ones within
    SEED_TOLERANCE: it must be the float32 summation bound of the seed model on the seed records
    (plus the published values' 6-decimal rounding), rounded up, not a number tuned to a CPU."""
    from tests.serve.test_service_e2e import SEED_TOLERANCE

    records = json.loads((SEED / "samples.json").read_text())
    x = decode_tabular(records, next(iter(seed_backends.values())).feature_names)
    bound = float(float32_sum_tolerance(SEED_MODEL, x).max()) + 5e-7
    assert bound <= SEED_TOLERANCE < 1.5 * bound
