"""A federated job's aggregated model, made servable by ``roost serve`` and assessed on the job's held-out set.

The ServerApp writes the final model to ``<job>/out/``: ``model.json`` for the XGBoost strategies (the
aggregated tree ensemble, an XGBoost JSON model with the task's feature names), ``linear.json`` for
FedAvg/FedProx (``y = w . ((x - mean) / scale) + b``, with the standardisation the server fixed for the
run). ``roost serve`` serves XGBoost models, so the linear model is *folded* into an XGBoost ``gblinear``
model that predicts the same: weight ``w_j / scale_j`` per feature and bias
``b - sum_j w_j * mean_j / scale_j`` (``base_score`` 0). XGBoost stores the weights in float32, so the
fold is checked on the held-out rows against the float64 formula, row by row, within the float32
rounding bound of that row's sum (:func:`fold_linear`); a fold that misses it is refused, never published.
A gblinear model is served with ``--engine xgboost`` (the compiled and ONNX engines convert trees only).

The held-out set is the one the ServerApp scores on (the sample model's 25 %, :func:`roost.serve.wine.holdout`),
written in the validation format of ``roost samples wine-holdout`` (:func:`write_job_holdout`): the same
bytes, so a version validated by an operator with that file compares with the job's version at the gate.

Errors: ``LEARN_MODEL_MISSING`` (no final model file), ``LEARN_MODEL_INVALID`` (it does not load, is not
the wine task's model, or the fold does not reproduce it).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from roost.learn.errors import JobModelInvalidError, JobModelMissingError
from roost.learn.validation import write_validation_csv
from roost.serve.backends import XGBoostBackend, load_booster
from roost.serve.errors import ModelError
from roost.serve.wine import FEATURES, holdout

__all__ = ["LINEAR_FILE", "MODEL_FILE", "JobModel", "fold_linear", "job_model", "write_job_holdout"]

log = logging.getLogger(__name__)

#: The servable model's file name (the artifact ``roost model validate`` finds) and the ServerApp's files.
MODEL_FILE: Final = "model.json"
LINEAR_FILE: Final = "linear.json"
XGB_STRATEGIES: Final = ("fedxgb-bagging", "fedxgb-cyclic")
LINEAR_STRATEGIES: Final = ("fedavg", "fedprox")
#: Largest final model read (bytes): the ServerApp's updates are bounded at 4 MiB each, 100 rounds at most.
MAX_MODEL_BYTES: Final = 512 * 1024 * 1024
_EPS32: Final = float(np.finfo(np.float32).eps)

Kind = Literal["trees", "linear"]


@dataclass(frozen=True)
class JobModel:
    """The servable model of a job: ``path`` (an XGBoost JSON model), its kind and the engine serving it."""

    path: Path
    kind: Kind
    engine: str
    source: Path
    #: For a linear model: the ServerApp's document (weights, mean, scale), kept with the version.
    linear: dict[str, Any] | None = None


def write_job_holdout(path: Path) -> Path:
    """The job's held-out rows (those the ServerApp scores on) as a validation CSV; returns ``path``."""
    x, y = holdout(seed=2)
    return write_validation_csv(path, x, y, FEATURES)


def _source(out_dir: Path, strategy: str) -> Path:
    if strategy in XGB_STRATEGIES:
        name = MODEL_FILE
    elif strategy in LINEAR_STRATEGIES:
        name = LINEAR_FILE
    else:
        raise JobModelInvalidError(f"strategy {strategy!r} writes no model Roost knows how to serve")
    path = Path(out_dir) / name
    if not path.is_file():
        raise JobModelMissingError(f"the job's final model {path} is missing: the {strategy} ServerApp writes "
                                   f"{name} at the end of its last round")
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise JobModelInvalidError(f"the job's final model {path} is {size} bytes, over the {MAX_MODEL_BYTES} "
                                   "bytes Roost publishes")
    return path


def _check_trees(path: Path) -> None:
    try:
        booster, names = load_booster(path)
    except ModelError as err:
        raise JobModelInvalidError(f"the job's final model {path} does not load as an XGBoost model: "
                                   f"{err.message}") from err
    if names != list(FEATURES):
        raise JobModelInvalidError(f"the job's final model {path} has features {names}, not the wine task's "
                                   f"{list(FEATURES)}")
    config = json.loads(booster.save_config())
    objective = str(config["learner"]["objective"]["name"])
    booster_kind = str(config["learner"]["gradient_booster"]["name"])
    if not objective.startswith("reg:") or booster_kind != "gbtree":
        raise JobModelInvalidError(f"the job's final model {path} is a {booster_kind} {objective} model, not the "
                                   "wine task's tree regressor")
    if booster.num_boosted_rounds() < 1:
        raise JobModelInvalidError(f"the job's final model {path} holds no trees")


def _vector(doc: dict[str, Any], key: str, length: int, path: Path) -> npt.NDArray[np.float64]:
    value = doc.get(key)
    if not isinstance(value, list) or len(value) != length:
        raise JobModelInvalidError(f"the job's final model {path}: {key!r} must be a list of {length} numbers")
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise JobModelInvalidError(f"the job's final model {path}: {key!r} holds a value that is not a number") from err
    if not np.all(np.isfinite(out)):
        raise JobModelInvalidError(f"the job's final model {path}: {key!r} holds NaN or infinity")
    return out


def _read_linear(path: Path) -> tuple[dict[str, Any], npt.NDArray[np.float64], npt.NDArray[np.float64],
                                      npt.NDArray[np.float64]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise JobModelInvalidError(f"the job's final model {path} is not JSON: {err}") from err
    if not isinstance(doc, dict):
        raise JobModelInvalidError(f"the job's final model {path} is not a JSON object")
    if doc.get("features") != list(FEATURES):
        raise JobModelInvalidError(f"the job's final model {path} has features {doc.get('features')!r}, not the "
                                   f"wine task's {list(FEATURES)}")
    n = len(FEATURES)
    w = _vector(doc, "weights", n + 1, path)
    mean = _vector(doc, "mean", n, path)
    scale = _vector(doc, "scale", n, path)
    if np.any(scale == 0):
        raise JobModelInvalidError(f"the job's final model {path}: a feature scale is 0")
    return doc, w, mean, scale


def linear_predict(w: npt.NDArray[np.float64], mean: npt.NDArray[np.float64], scale: npt.NDArray[np.float64],
                   x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The ServerApp's linear model: ``((x - mean) / scale) @ w[:-1] + w[-1]`` (float64)."""
    result: npt.NDArray[np.float64] = ((x - mean) / scale) @ w[:-1] + w[-1]
    return result


def fold_linear(w: npt.NDArray[np.float64], mean: npt.NDArray[np.float64], scale: npt.NDArray[np.float64],
                dest: Path, check: npt.NDArray[np.float64]) -> Path:
    """Write the gblinear model predicting ``linear_predict(w, mean, scale, x)`` to ``dest``.

    ``check`` (rows of features) is predicted both ways; every row must agree within
    ``4 * eps32 * (|bias| + sum_j |weight_j * x_j|)`` (float32 weights and summation), else
    ``LEARN_MODEL_INVALID``."""
    weights = w[:-1] / scale
    bias = float(w[-1] - np.sum(w[:-1] * mean / scale))
    # a one-round gblinear model of this XGBoost version (its own JSON layout), then our weights in it
    seed = xgb.DMatrix(check[:2], label=np.zeros(min(2, len(check))), feature_names=list(FEATURES))
    booster = xgb.train({"booster": "gblinear", "objective": "reg:squarederror", "base_score": 0.0, "nthread": 1},
                        seed, num_boost_round=1)
    doc = json.loads(bytes(booster.save_raw("json")))
    model = doc["learner"]["gradient_booster"]["model"]
    if len(model["weights"]) != len(FEATURES) + 1:
        raise JobModelInvalidError(f"xgboost {xgb.__version__} lays out gblinear weights as {len(model['weights'])} "
                                   f"values, not {len(FEATURES) + 1}: the linear model cannot be folded")
    model["weights"] = [float(v) for v in weights] + [bias]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(doc))
    got = XGBoostBackend(dest, nthread=1).predict(check.astype(np.float32)).astype(np.float64)
    want = linear_predict(w, mean, scale, check)
    bound = 4 * _EPS32 * (abs(bias) + np.abs(check * weights).sum(axis=1) + np.abs(want))
    worst = float(np.max(np.abs(got - want) - bound))
    if not worst <= 0:
        dest.unlink(missing_ok=True)
        raise JobModelInvalidError(f"the folded gblinear model does not reproduce the linear model (off by "
                                   f"{worst:.3g} past the float32 bound on some row); nothing published")
    return dest


def job_model(out_dir: Path, strategy: str, dest_dir: Path) -> JobModel:
    """The servable model of the job whose ServerApp wrote ``out_dir``, as ``dest_dir/model.json``."""
    source = _source(out_dir, strategy)
    dest = Path(dest_dir) / MODEL_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    if strategy in XGB_STRATEGIES:
        _check_trees(source)
        shutil.copyfile(source, dest)
        return JobModel(dest, "trees", "auto", source)
    doc, w, mean, scale = _read_linear(source)
    x, _ = holdout(seed=2)
    fold_linear(w, mean, scale, dest, x.astype(np.float64))
    log.info("folded the linear model of %s into a gblinear model %s", source, dest)
    return JobModel(dest, "linear", "xgboost", source, linear=doc)

