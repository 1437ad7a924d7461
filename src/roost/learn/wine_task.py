"""The federated wine task: a non-IID partition of the wine data, the held-out set, the central baseline.

The held-out set is the sample model's 25 % (:func:`roost.serve.wine.holdout`, stays at the hub). The
75 % training rows are split across ``devices`` non-IID: device 0 gets the red wines, the white wines
are sorted by quality and cut into contiguous blocks for the others (so each white device sees a
different quality range), and 10 % of every device's rows are swapped in at random so no device holds
a single label. With one device it gets everything. Each device's part is written as a CSV in the
wine_concat.csv schema, the file its SuperNode component reads locally (``dataPath``).

``centralised_rmse`` trains the same model (the same parameters, the same total number of trees or
the same linear model) on the union of the parts and scores it on the same held-out set.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from roost.serve.wine import DATA_CSV, split

__all__ = ["TASKS", "centralised_rmse", "partition", "write_holdout", "write_partitions"]

log = logging.getLogger(__name__)

TASKS: Final = ("wine",)
_MIX: Final = 0.10


def _rows() -> tuple[list[str], list[dict[str, str]]]:
    with DATA_CSV.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def partition(devices: int, *, seed: int = 2) -> list[npt.NDArray[np.int64]]:
    """Row indices (into wine_concat.csv) of each device's part; disjoint, covering the training split."""
    if devices < 1:
        raise ValueError("devices must be at least 1")
    _, rows = _rows()
    train, _ = split(len(rows), seed=seed)
    if devices == 1:
        return [np.sort(train)]
    colour = np.array([rows[i]["color"] for i in train])
    quality = np.array([float(rows[i]["quality"]) for i in train])
    red = train[colour == "red"]
    white = train[colour == "white"]
    white = white[np.argsort(quality[colour == "white"], kind="stable")]
    parts = [red, *np.array_split(white, devices - 1)]
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(p) for p in parts]
    moved = [p[: int(len(p) * _MIX)] for p in pools]
    kept = [p[int(len(p) * _MIX):] for p in pools]
    mixed = rng.permutation(np.concatenate(moved))
    shares = np.array_split(mixed, devices)
    return [np.sort(np.concatenate([k, s])) for k, s in zip(kept, shares, strict=True)]


def _write(path: Path, indices: npt.NDArray[np.int64]) -> Path:
    fields, rows = _rows()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for i in indices:
            writer.writerow(rows[int(i)])
    return path


def write_partitions(folder: Path, devices: int, *, seed: int = 2) -> list[Path]:
    """Write ``device-<i>.csv`` for each part into ``folder``; returns the paths."""
    return [_write(Path(folder) / f"device-{i}.csv", part) for i, part in enumerate(partition(devices, seed=seed))]


def write_holdout(path: Path, *, seed: int = 2) -> Path:
    """Write the held-out 25 % as a CSV (the hub's validation set of the job)."""
    _, rows = _rows()
    _, rest = split(len(rows), seed=seed)
    return _write(Path(path), np.sort(rest))


def _xy(indices: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    from roost.serve.wine import load_wine

    x, y = load_wine()
    return x[indices].astype(np.float64), y[indices].astype(np.float64)


def centralised_rmse(strategy: str, rounds: int, local_rounds: int, devices: int, *, seed: int = 2) -> float:
    """RMSE on the held-out set of the same model trained centrally on the whole training split."""
    from roost.learn.federated_params import XGB_PARAMS

    _, rows = _rows()
    train, rest = split(len(rows), seed=seed)
    xt, yt = _xy(np.sort(train))
    xh, yh = _xy(np.sort(rest))
    if strategy.startswith("fedxgb"):
        # bagging's global model holds every device's trees of every round; cyclic adds one device's per round
        trees = rounds * local_rounds * (devices if strategy == "fedxgb-bagging" else 1)
        booster = xgb.train(XGB_PARAMS, xgb.DMatrix(xt, label=yt), num_boost_round=trees)
        pred = booster.predict(xgb.DMatrix(xh))
    else:
        mean, scale = xh.mean(axis=0), xh.std(axis=0)
        scale[scale == 0] = 1.0
        z = np.hstack([(xt - mean) / scale, np.ones((len(xt), 1))])
        w = np.linalg.lstsq(z, yt, rcond=None)[0]
        pred = np.hstack([(xh - mean) / scale, np.ones((len(xh), 1))]) @ w
    return float(np.sqrt(np.mean((pred - yh) ** 2)))
