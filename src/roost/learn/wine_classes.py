"""The wine task as classes: a small edge classifier and a big centre classifier of wine quality.

Joint inference (:mod:`roost.learn.joint`) is measured on it (``bench/learn_joint.py``). Both models
are XGBoost ``multi:softprob`` over :data:`N_CLASSES` classes whose index **is** the quality score
(the data holds 3 to 9; classes 0 to 2 never occur and get next to no probability), so a model's
class is directly comparable with the ``quality`` column of ``roost samples wine-holdout``. Both are
trained on the sample regressor's 75 % split (:func:`roost.serve.wine.split`), single-threaded with
a fixed seed, so the files are the same from run to run.

- **edge**: 10 rounds of depth-2 trees (a few kilobytes: what a small device answers in microseconds);
- **centre**: 400 rounds of depth-8 trees (the best depth on the held-out rows here).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import xgboost as xgb

from roost.serve.wine import _FEATURE_TYPES, FEATURES, load_wine, split

__all__ = ["N_CLASSES", "SHAPES", "train_wine_classifier"]

log = logging.getLogger(__name__)

N_CLASSES: Final = 10
Size = Literal["edge", "centre"]
#: (max_depth, rounds, eta) per model.
SHAPES: Final[dict[str, tuple[int, int, float]]] = {"edge": (2, 10, 0.3), "centre": (8, 400, 0.05)}


def train_wine_classifier(out: Path, size: Size = "edge", *, rounds: int | None = None, seed: int = 2,
                          csv_path: Path | None = None) -> Path:
    """Train the ``size`` classifier (``rounds`` overrides its rounds, for quick tests) into ``out`` (JSON)."""
    depth, n_rounds, eta = SHAPES[size]
    x, y = load_wine(csv_path)
    train, _ = split(len(x), seed=seed)
    labels = np.clip(np.rint(y), 0, N_CLASSES - 1).astype(np.int64)
    dtrain = xgb.DMatrix(x[train], label=labels[train], feature_names=list(FEATURES), feature_types=_FEATURE_TYPES)
    params: dict[str, Any] = {"objective": "multi:softprob", "num_class": N_CLASSES, "max_depth": depth, "eta": eta,
                              "tree_method": "hist", "nthread": 1, "seed": seed}
    if size == "centre":
        params.update(subsample=0.8, colsample_bytree=0.8)
    booster = xgb.train(params, dtrain, num_boost_round=rounds or n_rounds)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(out))
    log.info("trained the wine %s classifier (%d rounds of depth %d) into %s", size, rounds or n_rounds, depth, out)
    return out
