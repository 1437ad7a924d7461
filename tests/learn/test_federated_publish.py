"""A federated job's model becomes the next version of its serving component (roost.hub.learn_publish),
without Flower: the model files the ServerApp writes are made here with the task's own parameters, and
published into a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
import yaml

from roost.errors import RoostError
from roost.hub.contract import DeploymentCreate, LearnJob, LearnJobIn
from roost.hub.errors import HubConflictError
from roost.hub.learn_publish import next_version, publish_job_model
from roost.hub.learn_runner import LearnRunner
from roost.hub.store import Store
from roost.learn.federated_job import JobState
from roost.learn.federated_model import fold_linear, job_model, linear_predict, write_job_holdout
from roost.learn.federated_params import XGB_PARAMS
from roost.recipe import parse_recipe
from roost.serve.backends import XGBoostBackend
from roost.serve.engine import load_tabular
from roost.serve.errors import ModelError
from roost.serve.wine import FEATURES, holdout, load_wine, split
from tests.hub.conftest import clock, db_url, db_url_pg_clean, pg_url, publish_to_store, store

__all__ = ["clock", "db_url", "db_url_pg_clean", "pg_url", "store"]

WINE = "com.roost.WineQuality"


def _job(strategy: str, component: str = WINE) -> LearnJob:
    now = datetime.now(UTC)
    return LearnJob(job="fl-test", target="group:vineyard", task="wine", strategy=strategy, rounds_planned=2,
                    min_participants=2, devices=["a", "b"], status="RUNNING",
                    rounds=[{"round": 1, "participants": 2, "metric": 0.8, "bytes": 10},
                            {"round": 2, "participants": 2, "metric": 0.75, "bytes": 10}],
                    final_metric=0.75, centralised_metric=0.74, serving_component=component,
                    created_at=now, updated_at=now)


def _tree_job(folder: Path, trees: int = 8) -> Path:
    """``folder/out/model.json`` as the XGBoost ServerApp writes it (the task's parameters and feature names)."""
    x, y = load_wine()
    train, _ = split(len(x))
    booster = xgb.train(XGB_PARAMS, xgb.DMatrix(x[train], label=y[train], feature_names=list(FEATURES)),
                        num_boost_round=trees)
    (folder / "out").mkdir(parents=True, exist_ok=True)
    (folder / "out" / "model.json").write_bytes(bytes(booster.save_raw("json")))
    return folder


def _linear_doc() -> dict[str, object]:
    """A linear model as the FedAvg ServerApp writes it: least squares on the training split, standardised
    with the held-out set's statistics (as the ServerApp does)."""
    x, y = load_wine()
    train, _ = split(len(x))
    hx, _ = holdout()
    mean, scale = hx.astype(np.float64).mean(axis=0), hx.astype(np.float64).std(axis=0)
    z = np.hstack([(x[train] - mean) / scale, np.ones((len(train), 1))])
    w = np.linalg.lstsq(z, y[train].astype(np.float64), rcond=None)[0]
    return {"weights": [float(v) for v in w], "mean": [float(v) for v in mean], "scale": [float(v) for v in scale],
            "features": list(FEATURES)}


def _linear_job(folder: Path, doc: dict[str, object] | None = None) -> Path:
    (folder / "out").mkdir(parents=True, exist_ok=True)
    (folder / "out" / "linear.json").write_text(json.dumps(_linear_doc() if doc is None else doc))
    return folder


def _rmse(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred.astype(np.float64) - y.astype(np.float64)) ** 2)))


def test_the_folded_linear_model_predicts_what_the_linear_model_does(tmp_path: Path) -> None:
    doc = _linear_doc()
    w, mean, scale = (np.asarray(doc[k], dtype=np.float64) for k in ("weights", "mean", "scale"))
    hx, _ = holdout()
    x = hx.astype(np.float64)
    path = fold_linear(w, mean, scale, tmp_path / "model.json", x)
    assert json.loads(path.read_text())["learner"]["gradient_booster"]["name"] == "gblinear"
    want = linear_predict(w, mean, scale, x)
    got = XGBoostBackend(path, nthread=1).predict(hx)
    assert np.max(np.abs(got - want)) < 1e-4  # float32 weights: agreement to float32's rounding
    # roost serve's engine choice serves it with xgboost (compiled and onnx convert trees only), and says so
    loaded = load_tabular(path, "auto", cache_dir=tmp_path / "cache")
    assert loaded.engine == "xgboost" and set(loaded.skipped) == {"compiled", "onnx"}
    with pytest.raises(ModelError, match="linear"):
        load_tabular(path, "compiled", cache_dir=tmp_path / "cache")


def test_a_fold_that_does_not_reproduce_the_model_is_refused(tmp_path: Path) -> None:
    # weights that float32 cannot hold: the gblinear model cannot predict what the linear model does
    n = len(FEATURES)
    w = np.full(n + 1, 1e200)
    w[-1] = 1.0
    hx, _ = holdout()
    with pytest.raises(RoostError) as info:
        fold_linear(w, np.zeros(n), np.ones(n), tmp_path / "model.json", hx.astype(np.float64)[:50])
    assert info.value.code == "LEARN_MODEL_INVALID" and not (tmp_path / "model.json").exists()


def test_next_version_is_the_patch_above_the_highest() -> None:
    assert next_version([]) == "1.0.0"
    assert next_version(["latest"]) == "1.0.0"
    assert next_version(["1.0.0", "1.10.0", "1.2.3", "latest"]) == "1.10.1"
    assert next_version(["2.0.0-rc.1"]) == "2.0.0"


def test_a_tree_model_then_a_linear_one_become_versions_with_reports(store: Store, tmp_path: Path) -> None:
    # the tree model: the first version of the component, 1.0.0, no baseline
    first = _tree_job(tmp_path / "job-1", trees=100)
    assert publish_job_model(store, _job("fedxgb-bagging"), first) == f"{WINE}=1.0.0"
    comp = store.get_component(WINE, "1.0.0")
    files = {a.file: a for a in comp.artifacts}
    assert set(files) == {"model.json", "federated.json"}
    model_bytes = (first / "out" / "model.json").read_bytes()  # published as the ServerApp wrote it
    assert files["model.json"].sha256 == hashlib.sha256(model_bytes).hexdigest()
    assert store.artifacts.path(WINE, "1.0.0", "model.json").read_bytes() == model_bytes
    recipe = parse_recipe(yaml.safe_dump(comp.recipe).encode())
    assert recipe.name == WINE and recipe.version == "1.0.0"
    run = comp.recipe["Manifests"][0]["Lifecycle"]["Run"]
    assert "roost serve --model {artifacts:path}/model.json --engine {configuration:/engine}" in run
    assert comp.recipe["ComponentConfiguration"]["DefaultConfiguration"]["engine"] == "auto"
    digests = {a["URI"].rsplit("/", 1)[1]: a["Digest"] for a in comp.recipe["Manifests"][0]["Artifacts"]}
    assert digests["model.json"] == base64.b64encode(hashlib.sha256(model_bytes).digest()).decode()
    report = comp.validation
    assert report is not None and report.metric == "rmse" and report.baseline is None
    hx, hy = holdout()
    booster = xgb.Booster(model_file=str(first / "out" / "model.json"))
    assert report.value == pytest.approx(_rmse(booster.inplace_predict(hx), hy), rel=1e-6)
    assert report.rows == len(hy) and report.size_bytes == len(model_bytes) and report.latency_us
    # the held-out file is the one `roost samples wine-holdout` writes: operators validate other versions on it
    holdout_file = write_job_holdout(tmp_path / "mine.csv")
    assert report.data_sha256 == hashlib.sha256(holdout_file.read_bytes()).hexdigest()
    record = json.loads(store.artifacts.path(WINE, "1.0.0", "federated.json").read_text())
    assert record["job"] == "fl-test" and record["model"] == {"kind": "trees", "engine": "auto", "from": "model.json"}

    # the linear model: 1.0.1, folded, compared with 1.0.0 on the same held-out file
    second = _linear_job(tmp_path / "job-2")
    assert publish_job_model(store, _job("fedavg"), second) == f"{WINE}=1.0.1"
    comp2 = store.get_component(WINE, "1.0.1")
    assert comp2.recipe["ComponentConfiguration"]["DefaultConfiguration"]["engine"] == "xgboost"
    report2 = comp2.validation
    assert report2 is not None and report2.baseline is not None
    doc = _linear_doc()
    want = linear_predict(*(np.asarray(doc[k], dtype=np.float64) for k in ("weights", "mean", "scale")),
                          hx.astype(np.float64))
    assert report2.value == pytest.approx(_rmse(want, hy), rel=1e-5)
    assert report2.baseline.version == "1.0.0" and report2.baseline.value == report.value
    assert report2.baseline.regression == pytest.approx((report2.value - report.value) / report.value)
    record2 = json.loads(store.artifacts.path(WINE, "1.0.1", "federated.json").read_text())
    assert record2["linear"] == doc and record2["model"]["kind"] == "linear"

    # the existing gate judges it: against 1.0.0 with a gate below its regression it is refused
    store.enroll(store.create_enroll_token("vineyard", 3600).token, "vine-1", {})
    loss = report2.baseline.regression
    assert loss > 0  # least squares is worse on wine than 100 trees
    tight = {"target": "device:vine-1", "components": {WINE: "1.0.1"}, "baseline": {WINE: "1.0.0"},
             "max_regression": loss / 2}
    with pytest.raises(HubConflictError) as info:
        store.create_deployment(DeploymentCreate.model_validate(tight))
    assert info.value.code == "DEPLOYMENT_GATE_FAILED"
    passed = store.create_deployment(DeploymentCreate.model_validate({**tight, "max_regression": loss * 2}))
    assert passed.gate[0].passed and passed.gate[0].baseline_version == "1.0.0"


SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # refused before the store is written


@pytest.mark.parametrize(("make", "strategy", "code"), [
    (lambda d: d, "fedavg", "LEARN_MODEL_MISSING"),
    (lambda d: d, "fedxgb-cyclic", "LEARN_MODEL_MISSING"),
    (lambda d: (d / "out" / "model.json").write_text('{"learner": 3}'), "fedxgb-bagging", "LEARN_MODEL_INVALID"),
    (lambda d: (d / "out" / "model.json").write_bytes(b"\x00\xff not json"), "fedxgb-bagging", "LEARN_MODEL_INVALID"),
    (lambda d: (d / "out" / "linear.json").write_text("{not json"), "fedavg", "LEARN_MODEL_INVALID"),
    (lambda d: _linear_job(d, {**_linear_doc(), "weights": [1.0, 2.0]}), "fedprox", "LEARN_MODEL_INVALID"),
    (lambda d: _linear_job(d, {**_linear_doc(), "features": ["a", "b"]}), "fedavg", "LEARN_MODEL_INVALID"),
    (lambda d: _linear_job(d, {**_linear_doc(), "weights": [float("nan")] * (len(FEATURES) + 1)}), "fedavg",
     "LEARN_MODEL_INVALID"),
])
def test_a_missing_or_corrupt_model_is_named(tmp_path: Path, make: object, strategy: str, code: str) -> None:
    folder = tmp_path / "job"
    (folder / "out").mkdir(parents=True)
    make(folder)  # type: ignore[operator]
    with pytest.raises(RoostError) as info:
        job_model(folder / "out", strategy, tmp_path / "pub")
    assert info.value.code == code and str(folder / "out") in info.value.message


def test_a_tree_model_of_other_features_is_refused(tmp_path: Path) -> None:
    x, y = load_wine()
    booster = xgb.train(XGB_PARAMS, xgb.DMatrix(x[:, :5], label=y, feature_names=list("abcde")), num_boost_round=2)
    (tmp_path / "out").mkdir()
    booster.save_model(str(tmp_path / "out" / "model.json"))
    with pytest.raises(RoostError) as info:
        job_model(tmp_path / "out", "fedxgb-bagging", tmp_path / "pub")
    assert info.value.code == "LEARN_MODEL_INVALID" and "features" in info.value.message


@SQLITE
def test_an_unknown_or_non_serving_component_is_refused(store: Store, tmp_path: Path) -> None:
    folder = _tree_job(tmp_path / "job", trees=2)
    with pytest.raises(RoostError) as info:
        publish_job_model(store, _job("fedxgb-bagging", "com.example.Nowhere"), folder)
    assert info.value.code == "LEARN_COMPONENT_UNKNOWN" and "com.example.Nowhere" in info.value.message
    publish_to_store(store, "com.example.Hello", "1.0.0")  # runs a script, serves no model
    with pytest.raises(RoostError) as info:
        publish_job_model(store, _job("fedxgb-bagging", "com.example.Hello"), folder)
    assert info.value.code == "LEARN_COMPONENT_NOT_SERVING"
    assert store.component_versions("com.example.Hello") == ["1.0.0"] and store.component_versions(WINE) == []
    with pytest.raises(RoostError) as info:
        publish_job_model(store, _job("fedxgb-bagging", "bad/name"), folder)
    assert info.value.code == "INVALID_NAME"


@SQLITE
def test_the_runner_fails_a_job_whose_model_cannot_be_published(store: Store, tmp_path: Path) -> None:
    store.enroll(store.create_enroll_token("vineyard", 3600).token, "vine-1", {})
    job = store.create_learn_job(LearnJobIn(target="group:vineyard", task="wine", rounds=1))
    runner = LearnRunner(store, tmp_path / "learn")
    (tmp_path / "learn" / job.job / "out").mkdir(parents=True)  # the rounds ended, linear.json is not there
    result = {"rounds": [{"round": 1, "participants": 1, "metric": 0.8, "bytes": 5}], "final_metric": 0.8,
              "centralised_metric": 0.7}
    try:
        state, record = runner._publish(job.job, result)
    finally:
        runner.close()
    assert state is JobState.FAILED and record["rounds"] == result["rounds"] and "component" not in record
    assert record["reason"].startswith("the rounds ended but the model was not published: LEARN_MODEL_MISSING")
    assert store.component_versions(WINE) == []  # nothing published
    # with the model there, the job's record names the version
    _linear_job(tmp_path / "learn" / job.job)
    runner = LearnRunner(store, tmp_path / "learn")
    try:
        state, record = runner._publish(job.job, result)
    finally:
        runner.close()
    assert state is JobState.SUCCEEDED and record["component"] == f"{WINE}=1.0.0"
    stored = store.update_learn_job(job.job, state, record)
    assert stored.component == f"{WINE}=1.0.0" and stored.serving_component == WINE
