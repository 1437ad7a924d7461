"""The wine-quality sample: vendored data, a deterministic model, and request records.

Data: ``roost/samples/data/wine_concat.csv`` (UCI Wine Quality, Cortez et al. 2009, CC BY 4.0;
see ``roost/samples/data/ATTRIBUTION.md``). The model has the shape of the upstream sample model
(XGBoost regressor, ~400 trees of depth 4, the same 13 features in the same order), trained here
so Roost ships no unlicensed model file. Training is single-threaded with a fixed seed, so the
saved JSON is byte-identical from run to run (for one xgboost version).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from roost.samples import SAMPLES

__all__ = ["DATA_CSV", "FEATURES", "SAMPLE_ROWS", "holdout", "load_wine", "sample_records", "split", "train_wine"]

log = logging.getLogger(__name__)

DATA_CSV: Final = SAMPLES / "data" / "wine_concat.csv"

FEATURES: Final[tuple[str, ...]] = (
    "fixed acidity",
    "volatile acidity",
    "citric acid",
    "residual sugar",
    "chlorides",
    "free sulfur dioxide",
    "total sulfur dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
    "color_red",
    "color_white",
)
_NUMERIC: Final = FEATURES[:11]
_FEATURE_TYPES: Final = ["float"] * 11 + ["int"] * 2

#: The rows of wine_concat.csv that the upstream consumer sample sends (its samples.json).
SAMPLE_ROWS: Final = (3487, 1162)

#: Training parameters (upstream shape: 400+ trees of depth 4).
PARAMS: Final[dict[str, Any]] = {
    "objective": "reg:squarederror",
    # As upstream (xgboost 1.6 default). xgboost 3 would start from the label mean (~5.8); with
    # 0.5 every engine's float32 sum stays within 1e-5 of xgboost's on all 5,320 rows (7e-6).
    "base_score": 0.5,
    "max_depth": 4,
    "eta": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.9,
    "tree_method": "hist",
    "nthread": 1,
}
N_TREES: Final = 400


def _read(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _row_values(row: dict[str, str]) -> list[float]:
    color = row["color"]
    if color not in ("red", "white"):
        raise ValueError(f"unknown wine color {color!r}")
    return [float(row[name]) for name in _NUMERIC] + [float(color == "red"), float(color == "white")]


def load_wine(csv_path: Path | None = None) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Return ``(X, y)``: float32 features in :data:`FEATURES` order and the quality scores."""
    rows = _read(csv_path or DATA_CSV)
    x = np.array([_row_values(row) for row in rows], dtype=np.float32)
    y = np.array([float(row["quality"]) for row in rows], dtype=np.float32)
    return x, y


def split(rows: int, *, seed: int = 2) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The sample model's split of ``rows`` rows: (75 % training rows, the 25 % held out), shuffled."""
    order = np.random.default_rng(seed).permutation(rows)
    cut = int(rows * 0.75)
    return order[:cut], order[cut:]


def holdout(*, seed: int = 2, csv_path: Path | None = None) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``(X, y)`` of the rows :func:`train_wine` did not train on (in file order): validation data."""
    x, y = load_wine(csv_path)
    _, rest = split(len(x), seed=seed)
    rest = np.sort(rest)
    return x[rest], y[rest]


def train_wine(out: Path, *, seed: int = 2, csv_path: Path | None = None) -> Path:
    """Train the sample regressor on a 75 % split and save it as JSON (with feature names).

    Deterministic: one thread, a fixed split and seed, so the file's bytes do not change between
    runs. Returns ``out``.
    """
    x, y = load_wine(csv_path)
    train, _ = split(len(x), seed=seed)
    dtrain = xgb.DMatrix(x[train], label=y[train], feature_names=list(FEATURES), feature_types=_FEATURE_TYPES)
    booster = xgb.train({**PARAMS, "seed": seed}, dtrain, num_boost_round=N_TREES)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(out))
    log.info("trained the wine sample model (%d trees) into %s", N_TREES, out)
    return out


def sample_records(csv_path: Path | None = None) -> list[dict[str, float | int]]:
    """The two request records of the upstream consumer sample, in its format.

    Floats for the physicochemical features (at 10 significant digits, as pandas writes them),
    0/1 integers for the colour columns.
    """
    rows = _read(csv_path or DATA_CSV)
    records: list[dict[str, float | int]] = []
    for index in SAMPLE_ROWS:
        values = _row_values(rows[index])
        record: dict[str, float | int] = {name: float(f"{v:.10g}") for name, v in zip(_NUMERIC, values, strict=False)}
        record["color_red"] = int(values[11])
        record["color_white"] = int(values[12])
        records.append(record)
    return records
