"""Engine choice: auto picks an engine that agrees with xgboost and records why."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from roost.serve import engine as engine_mod
from roost.serve.backends import XGBoostBackend
from roost.serve.engine import calibration_rows, load_tabular, max_deviation
from roost.serve.errors import ModelError
from roost.serve.wine import FEATURES, load_wine

from .test_backends import assert_within_float32_sum, float32_sum_tolerance


@pytest.fixture(scope="module")
def model(wine_model: Path) -> Path:
    """The session's trained wine model (tests/serve/conftest.py)."""
    return wine_model


@pytest.fixture(scope="module")
def cache(serve_cache: Path) -> Path:
    return serve_cache


def test_auto_picks_an_agreeing_engine_and_records_timings(
    model: Path, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="roost.serve.engine"):
        loaded = load_tabular(model, cache_dir=cache)
    assert loaded.engine in ("xgboost", "compiled", "onnx")
    assert loaded.backend.name == loaded.engine
    assert loaded.feature_names == list(FEATURES)
    assert len(loaded.digest) == 64
    assert set(loaded.timings) == {"xgboost", "compiled", "onnx"}, loaded.skipped
    for name, t in loaded.timings.items():
        assert t["batch1_us"] > 0 and t["batch64_us"] > 0 and t["load_s"] >= 0
        if name != "xgboost":
            assert t["bound_ratio"] <= 1.0 and t["max_abs_diff"] < 1e-3
    chosen = [r for r in caplog.records if "chosen" in r.getMessage()]
    assert len(chosen) == 1 and loaded.engine in chosen[0].getMessage()
    x, _ = load_wine()
    ref = XGBoostBackend(model).predict(x[:500])
    assert_within_float32_sum(loaded.backend.predict(x[:500]), ref, float32_sum_tolerance(model, x[:500]))


def test_choice_rule() -> None:
    t = {
        "xgboost": {"batch1_us": 300.0, "batch64_us": 400.0},
        "compiled": {"batch1_us": 5.0, "batch64_us": 300.0},
        "onnx": {"batch1_us": 8.0, "batch64_us": 200.0},
    }
    assert engine_mod._choose(t) == "compiled"  # onnx is faster at 64, but not 2x
    t["onnx"]["batch64_us"] = 149.0
    assert engine_mod._choose(t) == "onnx"
    t["compiled"]["max_abs_diff"] = 0.0
    del t["xgboost"]["batch1_us"]  # untimed engines are not candidates
    assert engine_mod._choose({k: v for k, v in t.items() if k != "xgboost"}) == "onnx"


def test_explicit_engines_and_calibration(model: Path, cache: Path) -> None:
    x, _ = load_wine()
    for name in ("xgboost", "compiled", "onnx"):
        loaded = load_tabular(model, name, cache_dir=cache, calibration=x[:100])
        assert loaded.engine == name and loaded.backend.name == name
    with pytest.raises(ModelError, match="calibration"):
        load_tabular(model, "xgboost", cache_dir=cache, calibration=x[:, :5])
    with pytest.raises(ModelError, match="unknown engine"):
        load_tabular(model, "tvm", cache_dir=cache)  # type: ignore[arg-type]


def test_failing_candidate_is_skipped_with_reason(
    model: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = engine_mod._build

    def no_compiler(engine: str, *args: object) -> object:
        if engine == "compiled":
            raise ModelError("cannot compile: gcc not found")
        return real(engine, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(engine_mod, "_build", no_compiler)
    with caplog.at_level(logging.WARNING, logger="roost.serve.engine"):
        loaded = load_tabular(model, cache_dir=cache)
    assert "compiled" in loaded.skipped and "gcc" in loaded.skipped["compiled"]
    assert loaded.engine in ("xgboost", "onnx")
    assert any("compiled skipped" in r.getMessage() for r in caplog.records)
    with pytest.raises(ModelError, match="gcc"):
        load_tabular(model, "compiled", cache_dir=cache)


def test_disagreeing_candidate_is_never_used(model: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = engine_mod._build

    class Off:
        def __init__(self, inner: object) -> None:
            self.inner = inner
            self.name = inner.name  # type: ignore[attr-defined]
            self.feature_names = inner.feature_names  # type: ignore[attr-defined]

        def predict(self, x: np.ndarray) -> np.ndarray:
            return self.inner.predict(x) + np.float32(0.01)  # type: ignore[attr-defined,no-any-return]

    def skewed(engine: str, *args: object) -> object:
        backend = real(engine, *args)  # type: ignore[arg-type]
        return Off(backend) if engine == "onnx" else backend

    monkeypatch.setattr(engine_mod, "_build", skewed)
    loaded = load_tabular(model, cache_dir=cache)
    assert loaded.engine != "onnx" and "disagrees" in loaded.skipped["onnx"]
    with pytest.raises(ModelError, match="disagrees"):
        load_tabular(model, "onnx", cache_dir=cache)


def test_synthesised_calibration_exercises_the_splits(model: Path) -> None:
    ref = XGBoostBackend(model)
    rows = calibration_rows(ref.booster)
    assert rows.shape == (256, 13) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows, calibration_rows(ref.booster))  # deterministic
    assert all(len(np.unique(rows[:, j])) > 1 for j in range(11))
    assert np.isfinite(ref.predict(rows)).all()


def test_max_deviation_is_relative_above_one() -> None:
    assert max_deviation(np.array([100.0005], np.float32), np.array([100.0], np.float32)) < 1e-5
    assert max_deviation(np.array([0.5], np.float32), np.array([0.5001], np.float32)) > 1e-5
    assert max_deviation(np.zeros(2, np.float32), np.zeros(3, np.float32)) == float("inf")
