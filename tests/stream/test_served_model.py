"""Window answers: a classifier's majority class and confidence, a regressor's mean (no confidence),
through :func:`aggregate` and through real XGBoost models loaded by roost.serve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from roost.cluster.served_model import TabularModel, aggregate, task_of
from roost.serve.errors import ModelError
from roost.serve.wine import FEATURES, load_wine


def test_regressor_window_is_the_mean_without_confidence() -> None:
    outcome = aggregate(np.array([5.0, 6.0, 7.5], dtype=np.float32), "regressor")
    assert (outcome.result, outcome.confidence, outcome.predictions) == (6.166666666666667, None, [5.0, 6.0, 7.5])
    with pytest.raises(ModelError, match="one output per row"):
        aggregate(np.zeros((2, 2), dtype=np.float32), "regressor")


def test_binary_classifier_window_is_the_majority_with_its_mean_probability() -> None:
    outcome = aggregate(np.array([0.9, 0.8, 0.3, 0.6], dtype=np.float32), "probabilities")
    assert outcome.result == 1.0 and outcome.predictions == [1.0, 1.0, 0.0, 1.0]
    assert outcome.confidence == pytest.approx((0.9 + 0.8 + 0.3 + 0.6) / 4)  # P(class 1) over every row


def test_multiclass_probabilities_margins_and_classes() -> None:
    probs = np.array([[0.1, 0.7, 0.2], [0.2, 0.2, 0.6], [0.1, 0.5, 0.4]], dtype=np.float32)
    outcome = aggregate(probs, "probabilities")
    assert outcome.result == 1.0 and outcome.confidence == pytest.approx((0.7 + 0.2 + 0.5) / 3)
    margins = aggregate(np.array([-2.0, -1.0, 3.0], dtype=np.float32), "margins")
    assert margins.result == 0.0 and margins.confidence == pytest.approx(
        float(np.mean(1 - 1 / (1 + np.exp(-np.array([-2.0, -1.0, 3.0]))))))
    classes = aggregate(np.array([2.0, 0.0, 2.0, 1.0], dtype=np.float32), "classes")
    assert (classes.result, classes.confidence) == (2.0, None)
    tie = aggregate(np.array([1.0, 0.0], dtype=np.float32), "classes")
    assert tie.result == 0.0  # a tie goes to the lowest class


def test_task_from_objective() -> None:
    assert [task_of(o) for o in ("reg:squarederror", "binary:logistic", "multi:softprob", "binary:logitraw",
                                 "multi:softmax", "count:poisson")] == \
        ["regressor", "probabilities", "probabilities", "margins", "classes", "regressor"]


def test_real_models_through_roost_serve(wine_model: Path, tmp_path: Path) -> None:
    x, _ = load_wine()
    regressor = TabularModel(wine_model, engine="xgboost", cache_dir=tmp_path)
    assert regressor.task == "regressor" and regressor.features == list(FEATURES)
    expected = xgb.Booster(model_file=str(wine_model)).inplace_predict(x[:40])
    outcome = regressor.predict_window(x[:40])
    assert outcome.confidence is None
    assert outcome.result == pytest.approx(float(np.mean(expected.astype(np.float64))), rel=1e-6)

    # A binary classifier (is the wine red?) trained here: majority class and its mean probability.
    dtrain = xgb.DMatrix(x[:, :11], label=x[:, 11], feature_names=list(FEATURES[:11]))
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1}, dtrain, num_boost_round=5)
    booster.save_model(str(tmp_path / "red.json"))
    classifier = TabularModel(tmp_path / "red.json", engine="xgboost", cache_dir=tmp_path)
    red_rows = x[x[:, 11] == 1][:40, :11]
    outcome = classifier.predict_window(red_rows)
    p = booster.inplace_predict(red_rows).astype(np.float64)
    assert outcome.result == 1.0
    assert outcome.confidence == pytest.approx(float(p.mean()), rel=1e-5)
