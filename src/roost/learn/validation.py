"""Validation of a model variant: held-out data with schema checks, the metric, latency, the report, the gate.

Validation data is a CSV with a header: one column per model feature (the model's own names, any
order) and one label column (``quality`` unless told otherwise). Every cell must be a finite number:
an empty cell, ``nan`` or text is refused with the row and the column named. Nothing is guessed: a
column the model does not know is an error, not ignored, so a file meant for another model cannot
pass by accident.

The metric follows the model: RMSE for regression (lower is better), top-1 accuracy for
classification (higher is better). The *regression* of a variant is its relative loss against the
original on the same rows: ``(after - before) / before`` for RMSE, ``(before - after) / before`` for
accuracy (0 when nothing was lost, negative when the variant is better). A variant *passes* its gate
when its regression is at most ``max_regression`` (a fraction: 0.01 is 1 %).

Latency is per row at batch 1: the median of ``calls`` single-row predictions (after a warm-up),
cycling over the validation rows, in µs, on the machine that ran the command. It is reported, never
gated (speed is measured, not asserted).
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from roost.learn.errors import ValidationDataError

__all__ = [
    "DEFAULT_LABEL",
    "DEFAULT_MAX_REGRESSION",
    "MAX_VALIDATION_BYTES",
    "Metric",
    "ValidationReport",
    "ValidationSet",
    "evaluate",
    "load_validation",
    "measure_latency_us",
    "parse_max_regression",
    "regression",
    "write_validation_csv",
]

log = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float32]
Predict = Callable[[Matrix], Matrix]
Metric = Literal["rmse", "accuracy"]

DEFAULT_LABEL: Final = "quality"
#: The gate when ``--max-regression`` is not given: 1 % of the metric.
DEFAULT_MAX_REGRESSION: Final = 0.01
#: Largest validation file read (bytes): a bound, not a target (1.4 M wine rows fit).
MAX_VALIDATION_BYTES: Final = 128 * 1024 * 1024


class ValidationSet(BaseModel):
    """Validation rows in model feature order, with their labels."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    path: str
    label: str
    features: list[str]
    x: Matrix
    y: Matrix
    #: ``labels``: ``y`` holds the labels; ``agreement``: no labels (images only), the original's
    #: top-1 answers are the reference.
    against: Literal["labels", "agreement"] = "labels"

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])


class ValidationReport(BaseModel):
    """What a variant cost and what it bought, on data the operator provided.

    The four keys of the scripts' interface are ``metric_before``, ``metric_after``, ``size_bytes``
    and ``latency_us`` (of the variant); the rest say how they were measured.
    """

    model_config = ConfigDict(extra="forbid")

    metric: Metric
    #: ``labels``: the metric compares predictions with the label column; ``agreement`` (images
    #: without labels): top-1 agreement with the original, which scores 1.0 by construction.
    measured_against: Literal["labels", "agreement"] = "labels"
    metric_before: float
    metric_after: float
    regression: float
    max_regression: float
    passed: bool
    size_bytes: int
    size_bytes_before: int
    latency_us: float
    latency_us_before: float
    latency_calls: int
    engine: str
    engine_before: str
    rows: int
    data: str
    details: dict[str, float | int | str] = {}


def parse_max_regression(value: str | float | None) -> float:
    """``--max-regression`` as a fraction: a finite number >= 0 (``None``: the default)."""
    if value is None:
        return DEFAULT_MAX_REGRESSION
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise ValidationDataError(
            f"--max-regression must be a number (a fraction, 0.01 = 1 %), got {value!r}", code="MAX_REGRESSION_INVALID"
        ) from err
    if not math.isfinite(number) or number < 0:
        raise ValidationDataError(
            f"--max-regression must be a finite number >= 0 (a fraction, 0.01 = 1 %), got {value!r}",
            code="MAX_REGRESSION_INVALID",
        )
    return number


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        size = path.stat().st_size
    except FileNotFoundError as err:
        raise ValidationDataError(f"validation data {path} does not exist", code="VALIDATION_DATA_MISSING") from err
    except OSError as err:
        raise ValidationDataError(f"validation data {path} cannot be read: {err}") from err
    if not path.is_file():
        raise ValidationDataError(f"validation data {path} is not a file", code="VALIDATION_DATA_MISSING")
    if size > MAX_VALIDATION_BYTES:
        raise ValidationDataError(f"validation data {path} is {size} bytes; the limit is {MAX_VALIDATION_BYTES}")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            body = [row for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValidationDataError(f"validation data {path} is not a readable CSV: {err}") from err
    if not header or not any(cell.strip() for cell in header):
        raise ValidationDataError(f"validation data {path} is empty (no header)", code="VALIDATION_DATA_EMPTY")
    if not body:
        raise ValidationDataError(f"validation data {path} has a header but no rows", code="VALIDATION_DATA_EMPTY")
    return [cell.strip() for cell in header], body


def load_validation(path: Path, features: Sequence[str], *, label: str = DEFAULT_LABEL) -> ValidationSet:
    """Read validation data for a model with ``features``; every schema problem is its own code.

    ``VALIDATION_DATA_MISSING`` (no such file), ``VALIDATION_DATA_EMPTY`` (no header or no rows),
    ``VALIDATION_LABEL_MISSING``, ``VALIDATION_COLUMN_MISSING``, ``VALIDATION_COLUMN_EXTRA`` (a
    column that is neither a feature nor the label, or a repeated one) and
    ``VALIDATION_NOT_NUMERIC`` (a cell that is not a finite number, or a short row).
    """
    path = Path(path)
    header, body = _read_rows(path)
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ValidationDataError(f"validation data {path} repeats columns {repeated}", code="VALIDATION_COLUMN_EXTRA")
    if label not in header:
        raise ValidationDataError(
            f"validation data {path} has no label column {label!r} (columns: {header}); name it with --label",
            code="VALIDATION_LABEL_MISSING",
        )
    missing = [name for name in features if name not in header]
    if missing:
        raise ValidationDataError(
            f"validation data {path} lacks the model's feature columns {missing}", code="VALIDATION_COLUMN_MISSING"
        )
    known = {*features, label}
    extra = [name for name in header if name not in known]
    if extra:
        raise ValidationDataError(
            f"validation data {path} has columns the model does not take: {extra} (the model's features: "
            f"{list(features)}; label: {label!r})",
            code="VALIDATION_COLUMN_EXTRA",
        )
    order = [header.index(name) for name in [*features, label]]
    values = np.empty((len(body), len(order)), dtype=np.float64)
    for r, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ValidationDataError(
                f"validation data {path} line {r} has {len(row)} cells, the header {len(header)}",
                code="VALIDATION_NOT_NUMERIC",
            )
        for c, index in enumerate(order):
            cell = row[index].strip()
            try:
                number = float(cell)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise ValidationDataError(
                    f"validation data {path} line {r}, column {header[index]!r}: {cell!r} is not a finite number",
                    code="VALIDATION_NOT_NUMERIC",
                )
            values[r - 2, c] = number
    x = np.ascontiguousarray(values[:, :-1], dtype=np.float32)
    y = np.ascontiguousarray(values[:, -1], dtype=np.float32)
    return ValidationSet(path=str(path), label=label, features=list(features), x=x, y=y)


def write_validation_csv(
    path: Path, x: Matrix, y: Matrix, features: Sequence[str], *, label: str = DEFAULT_LABEL
) -> Path:
    """Write rows in the validation format (features, then the label); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*features, label])
        for row, target in zip(x.tolist(), y.tolist(), strict=True):
            writer.writerow([f"{v:.9g}" for v in row] + [f"{target:.9g}"])
    return path


def evaluate(pred: Matrix, y: Matrix, metric: Metric) -> float:
    """The metric of predictions ``pred`` against labels ``y``.

    Accuracy takes ``pred`` as class scores ``(rows, classes)`` (argmax) or, 1-D, as the positive
    class' probability (threshold 0.5) — the two shapes XGBoost's classifiers answer with.
    """
    if metric == "rmse":
        p = np.asarray(pred, dtype=np.float64).reshape(len(y), -1)[:, 0]
        return float(np.sqrt(np.mean((p - y.astype(np.float64)) ** 2)))
    p = np.asarray(pred)
    labels = p.argmax(axis=1) if p.ndim == 2 and p.shape[1] > 1 else (p.reshape(-1) >= 0.5).astype(np.int64)
    return float(np.mean(labels == y.astype(np.int64)))


def regression(before: float, after: float, metric: Metric) -> float:
    """The relative loss of ``after`` against ``before`` (see the module notes)."""
    loss = after - before if metric == "rmse" else before - after
    if before == 0:
        return 0.0 if loss <= 0 else math.inf
    return loss / abs(before)


def measure_latency_us(predict: Predict, x: Matrix, *, calls: int = 300, warmup: int = 20) -> float:
    """Median µs of one single-row ``predict`` over ``calls`` calls, cycling over the rows of ``x``."""
    rows = [np.ascontiguousarray(x[i : i + 1]) for i in range(min(len(x), 256))]
    for i in range(warmup):
        predict(rows[i % len(rows)])
    times: list[float] = []
    for i in range(max(1, calls)):
        row = rows[i % len(rows)]
        t0 = time.perf_counter_ns()
        predict(row)
        times.append((time.perf_counter_ns() - t0) / 1000.0)
    return float(statistics.median(times))
