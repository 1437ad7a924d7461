"""What the ServerApp and the ClientApp share: reading a wine CSV, the models, checking updates.

Imports only numpy and xgboost (this package runs in the Flower venv, not Roost's). The CSV is the
wine_concat.csv schema (11 physicochemical columns, ``quality``, ``color``); the features are
Roost's 13 (the 11, then one-hot colour), in that order.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

NUMERIC = ("fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
           "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol")
FEATURES = (*NUMERIC, "color_red", "color_white")
XGB_PARAMS: dict[str, Any] = {"objective": "reg:squarederror", "base_score": 5.8, "max_depth": 4, "eta": 0.05,
                              "subsample": 0.8, "colsample_bytree": 0.9, "tree_method": "hist", "nthread": 1,
                              "seed": 2}
XGB_STRATEGIES = ("fedxgb-bagging", "fedxgb-cyclic")
LINEAR_STRATEGIES = ("fedavg", "fedprox")


class UpdateRejected(ValueError):
    """A client's update is not a model of the expected kind; the message says why."""


def read_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of a wine CSV: float64 features in FEATURES order and the quality scores."""
    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path}: no rows")
    x = np.array([[float(r[n]) for n in NUMERIC] + [float(r["color"] == "red"), float(r["color"] == "white")]
                  for r in rows], dtype=np.float64)
    y = np.array([float(r["quality"]) for r in rows], dtype=np.float64)
    return x, y


def rmse(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - y) ** 2)))


def dmatrix(x: np.ndarray, y: np.ndarray | None = None) -> xgb.DMatrix:
    return xgb.DMatrix(x, label=y, feature_names=list(FEATURES))


def booster_from(raw: bytes) -> xgb.Booster:
    booster = xgb.Booster(params={"nthread": 1})
    booster.load_model(bytearray(raw))
    return booster


def check_xgb_update(raw: bytes, max_bytes: int) -> int:
    """The number of trees in an XGBoost update (JSON model bytes); raises UpdateRejected."""
    if len(raw) > max_bytes:
        raise UpdateRejected(f"update of {len(raw)} bytes is over the limit of {max_bytes}")
    try:
        doc = json.loads(raw)
        trees = int(doc["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"])
        booster_from(raw)
    except (ValueError, KeyError, TypeError, xgb.core.XGBoostError) as err:
        raise UpdateRejected(f"not an XGBoost JSON model: {str(err)[:120]}") from err
    if trees < 1:
        raise UpdateRejected("the update holds no trees")
    return trees


# The linear model: y = w . ((x - mean) / scale) + b, with mean/scale fixed by the server for the run.
def linear_predict(w: np.ndarray, x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return ((x - mean) / scale) @ w[:-1] + w[-1]


def check_linear_update(w: np.ndarray) -> None:
    if w.shape != (len(FEATURES) + 1,):
        raise UpdateRejected(f"linear weights of shape {w.shape}, expected ({len(FEATURES) + 1},)")
    if not np.all(np.isfinite(w)):
        raise UpdateRejected("linear weights hold NaN or infinity")
