"""Validation data (each schema problem its own code), the metrics, the regression and the gate's parsing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from roost.learn.errors import ValidationDataError
from roost.learn.validation import (
    DEFAULT_MAX_REGRESSION,
    evaluate,
    load_validation,
    measure_latency_us,
    parse_max_regression,
    regression,
    write_validation_csv,
)

FEATURES = ["a", "b", "c"]


def _csv(tmp_path: Path, text: str, name: str = "v.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_columns_in_any_order_come_back_in_model_order(tmp_path: Path) -> None:
    data = load_validation(_csv(tmp_path, "quality,c,a,b\n5,3,1,2\n6,30,10,20\n"), FEATURES)
    assert data.rows == 2 and data.features == FEATURES
    assert data.x.tolist() == [[1, 2, 3], [10, 20, 30]] and data.y.tolist() == [5, 6]
    assert data.x.dtype == np.float32 and data.x.flags.c_contiguous


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    x = np.array([[0.1, 2.5, -3.0]], dtype=np.float32)
    path = write_validation_csv(tmp_path / "w.csv", x, np.array([7.0], dtype=np.float32), FEATURES, label="y")
    data = load_validation(path, FEATURES, label="y")
    assert data.x.tolist() == x.tolist() and data.y.tolist() == [7.0]


@pytest.mark.parametrize(("text", "code", "says"), [
    ("", "VALIDATION_DATA_EMPTY", "no header"),
    ("a,b,c,quality\n", "VALIDATION_DATA_EMPTY", "no rows"),
    ("a,b,c\n1,2,3\n", "VALIDATION_LABEL_MISSING", "'quality'"),
    ("a,b,quality\n1,2,3\n", "VALIDATION_COLUMN_MISSING", "['c']"),
    ("a,b,c,d,quality\n1,2,3,4,5\n", "VALIDATION_COLUMN_EXTRA", "['d']"),
    ("a,b,c,a,quality\n1,2,3,1,5\n", "VALIDATION_COLUMN_EXTRA", "repeats columns ['a']"),
    ("a,b,c,quality\n1,x,3,5\n", "VALIDATION_NOT_NUMERIC", "line 2, column 'b': 'x'"),
    ("a,b,c,quality\n1,2,3,5\n1,,3,5\n", "VALIDATION_NOT_NUMERIC", "line 3, column 'b': ''"),
    ("a,b,c,quality\n1,nan,3,5\n", "VALIDATION_NOT_NUMERIC", "'nan'"),
    ("a,b,c,quality\n1,2,3,inf\n", "VALIDATION_NOT_NUMERIC", "column 'quality'"),
    ("a,b,c,quality\n1,2,3\n", "VALIDATION_NOT_NUMERIC", "3 cells, the header 4"),
])
def test_each_schema_problem_has_its_code(tmp_path: Path, text: str, code: str, says: str) -> None:
    with pytest.raises(ValidationDataError) as err:
        load_validation(_csv(tmp_path, text), FEATURES)
    assert err.value.code == code and says in err.value.message


def test_missing_file_and_folder(tmp_path: Path) -> None:
    for path in (tmp_path / "nope.csv", tmp_path):
        with pytest.raises(ValidationDataError) as err:
            load_validation(path, FEATURES)
        assert err.value.code == "VALIDATION_DATA_MISSING"


def test_not_utf8_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00a,b\n")
    with pytest.raises(ValidationDataError) as err:
        load_validation(path, FEATURES)
    assert err.value.code == "VALIDATION_DATA_INVALID"


@pytest.mark.parametrize(("value", "expected"), [(None, DEFAULT_MAX_REGRESSION), ("0", 0.0), ("0.05", 0.05), (1, 1.0)])
def test_max_regression_parses(value: str | float | None, expected: float) -> None:
    assert parse_max_regression(value) == expected


@pytest.mark.parametrize("value", ["-0.01", "abc", "", "nan", "inf", "1e400"])
def test_max_regression_refuses_negative_and_non_numbers(value: str) -> None:
    with pytest.raises(ValidationDataError) as err:
        parse_max_regression(value)
    assert err.value.code == "MAX_REGRESSION_INVALID" and repr(value) in err.value.message


def test_metrics_and_regression() -> None:
    y = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    assert evaluate(y + 1, y, "rmse") == pytest.approx(1.0)
    assert evaluate(np.array([0.9, 0.2, 0.6, 0.4], dtype=np.float32), np.array([1, 0, 0, 0], dtype=np.float32),
                    "accuracy") == pytest.approx(0.75)
    scores = np.array([[0.1, 0.9], [0.8, 0.2]], dtype=np.float32)
    assert evaluate(scores, np.array([1, 1], dtype=np.float32), "accuracy") == pytest.approx(0.5)
    assert regression(0.5, 0.55, "rmse") == pytest.approx(0.1)   # worse RMSE: positive
    assert regression(0.5, 0.45, "rmse") == pytest.approx(-0.1)  # better: negative
    assert regression(0.8, 0.72, "accuracy") == pytest.approx(0.1)
    assert regression(0.0, 0.0, "rmse") == 0.0 and math.isinf(regression(0.0, 0.1, "rmse"))


def test_latency_is_a_median_of_single_row_calls() -> None:
    shapes: list[tuple[int, ...]] = []

    def predict(x: np.ndarray) -> np.ndarray:
        shapes.append(x.shape)
        return x[:, 0]

    assert measure_latency_us(predict, np.zeros((5, 3), dtype=np.float32), calls=7, warmup=2) > 0
    assert shapes == [(1, 3)] * 9
