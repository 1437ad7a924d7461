"""Joint inference end to end: the edge classifier in this process (or in `roost joint`), the centre's
big classifier in a real `roost cluster replica` process over a real socket. Which model answered each
row is checked against both models run locally; the centre unreachable, lost mid-run, and models of
other features; bad filters and thresholds through the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from typer.testing import CliRunner

from roost.cli.main import app
from roost.cluster.replica_session import ReplicaTarget
from roost.cluster.tokens import TokenSigner
from roost.learn.errors import CentreUnreachableError, FeatureMismatchError
from roost.learn.hard_examples import make_filter
from roost.learn.joint import JointInference, XGBoostEdgeModel, direct_centre, run_joint
from roost.learn.validation import write_validation_csv
from roost.serve.wine import FEATURES, holdout
from tests.learn.replicas import ReplicaProcess, free_port

ROWS = 300


@pytest.fixture(scope="module")
def centre(wine_classes: dict[str, Path], signer: TokenSigner,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaProcess]:
    replica = ReplicaProcess(wine_classes["centre"], "centre-1", signer, tmp_path_factory.mktemp("centre")).start()
    try:
        yield replica
    finally:
        replica.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    x, y = holdout()
    x, y = x[:ROWS], y[:ROWS]
    return write_validation_csv(tmp_path_factory.mktemp("joint-data") / "holdout.csv", x, y, FEATURES), x, y


def test_roost_joint_answers_easy_rows_on_the_edge_and_hard_rows_in_the_centre(
        centre: ReplicaProcess, wine_classes: dict[str, Path], data: tuple[Path, np.ndarray, np.ndarray],
        tmp_path: Path) -> None:
    csv_path, x, y = data
    target = centre.target()
    out = tmp_path / "answers.jsonl"
    proc = subprocess.run([sys.executable, "-m", "roost", "joint", "--edge-model", str(wine_classes["edge"]),
                           "--data", str(csv_path), "--centre", target.endpoint, "--centre-token", str(target.token),
                           "--filter", "margin", "--threshold", "0.1", "--label", "quality", "--out", str(out),
                           "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    edge_pred = XGBoostEdgeModel(wine_classes["edge"]).predict(x)[0]
    centre_pred = XGBoostEdgeModel(wine_classes["centre"]).predict(x)[0]
    by = [a["answered_by"] for a in answers]
    assert doc["rows"] == len(answers) == ROWS
    assert doc["answered_by"] == {"edge": by.count("edge"), "centre": by.count("centre")}
    assert 0 < by.count("centre") < ROWS
    for i, a in enumerate(answers):
        assert a["edge_prediction"] == edge_pred[i]
        assert a["hard"] == (a["score"] < 0.1)
        assert a["answered_by"] == ("centre" if a["hard"] else "edge")
        assert a["prediction"] == (centre_pred[i] if a["hard"] else edge_pred[i])
    assert doc["accuracy"] == pytest.approx(float(np.mean([a["prediction"] for a in answers] == y)), abs=1e-5)
    assert doc["share_sent"] == pytest.approx(by.count("centre") / ROWS, abs=1e-5)
    assert doc["centre_features"] == list(FEATURES)
    assert doc["bytes"]["sent"] > 0 and doc["latency_ms"]["centre"]["mean"] > 0
    assert doc["centre_errors"] == 0


def test_an_unreachable_centre_leaves_the_edge_answering_flagged_or_fails_when_required(
        wine_classes: dict[str, Path], data: tuple[Path, np.ndarray, np.ndarray]) -> None:
    _, x, _ = data
    nowhere = ReplicaTarget(f"ws://127.0.0.1:{free_port()}/v1/stream", "t")

    async def main() -> None:
        edge = XGBoostEdgeModel(wine_classes["edge"])
        async with JointInference(edge, direct_centre(nowhere), make_filter("threshold", 1.0)) as joint:
            batch = await joint.infer(x[:5])
        assert [a.answered_by for a in batch.answers] == ["edge"] * 5
        assert all(a.hard for a in batch.answers)
        assert batch.centre_error is not None and batch.centre_error["code"] == "CENTRE_UNREACHABLE"
        assert "REPLICA_UNREACHABLE" in batch.centre_error["message"]
        strict = JointInference(edge, direct_centre(nowhere), make_filter("threshold", 1.0), require_centre=True)
        with pytest.raises(CentreUnreachableError) as info:
            await strict.infer(x[:5])
        assert info.value.code == "CENTRE_UNREACHABLE"

    asyncio.run(main())


def test_models_of_other_features_and_rows_of_another_width(
        centre: ReplicaProcess, wine_classes: dict[str, Path], data: tuple[Path, np.ndarray, np.ndarray],
        tmp_path: Path) -> None:
    _, x, y = data
    names = list(FEATURES[:-1])
    booster = xgb.train({"objective": "multi:softprob", "num_class": 10, "max_depth": 2, "nthread": 1},
                        xgb.DMatrix(x[:, :-1], label=y, feature_names=names), 2)
    booster.save_model(str(tmp_path / "twelve.json"))

    async def main() -> None:
        other = JointInference(XGBoostEdgeModel(tmp_path / "twelve.json"), direct_centre(centre.target()),
                               make_filter())
        with pytest.raises(FeatureMismatchError) as info:
            await other.start()
        assert info.value.code == "FEATURES_MISMATCH" and "12 features" in info.value.message
        await other.close()
        joint = JointInference(XGBoostEdgeModel(wine_classes["edge"]), None, make_filter())
        with pytest.raises(FeatureMismatchError):
            await joint.infer(x[:3, :5])

    asyncio.run(main())


def test_a_centre_lost_mid_run_leaves_the_rest_to_the_edge(
        centre: ReplicaProcess, wine_classes: dict[str, Path], data: tuple[Path, np.ndarray, np.ndarray]) -> None:
    """Last in this file: it kills the module's centre replica."""
    _, x, _ = data

    async def main() -> None:
        edge = XGBoostEdgeModel(wine_classes["edge"])
        async with JointInference(edge, direct_centre(centre.target()), make_filter("threshold", 1.0),
                                  reply_timeout=5.0) as joint:
            first = await joint.infer(x[:4])
            assert {a.answered_by for a in first.answers} == {"centre"} and first.centre_error is None
            centre.kill()
            report = await run_joint(joint, x[4:20], batch=4)
        assert all(a.answered_by == "edge" for a in report.answers)
        assert all(b.centre_error is not None for b in report.batches)
        summary = report.summary()
        assert summary["centre_errors"] == 4 and summary["answered_by"] == {"edge": 16, "centre": 0}

    asyncio.run(main())


runner = CliRunner()


@pytest.mark.parametrize(("args", "code"), [
    (["--filter", "nope"], "FILTER_UNKNOWN"),
    (["--filter", "IBT"], "FILTER_UNKNOWN"),
    (["--threshold", "1.5"], "FILTER_THRESHOLD_INVALID"),
    (["--filter", "random", "--threshold", "-0.2"], "FILTER_THRESHOLD_INVALID"),
])
def test_bad_filters_through_the_cli(args: list[str], code: str, wine_classes: dict[str, Path],
                                     data: tuple[Path, np.ndarray, np.ndarray]) -> None:
    result = runner.invoke(app, ["joint", "--edge-model", str(wine_classes["edge"]), "--data", str(data[0]),
                                 *args, "--json"])
    assert result.exit_code == 3, result.output
    assert json.loads(result.output)["error"]["code"] == code


def test_an_edge_regressor_takes_only_the_random_filter(data: tuple[Path, np.ndarray, np.ndarray],
                                                        tmp_path: Path) -> None:
    from roost.learn.errors import FilterError

    _, x, y = data
    booster = xgb.train({"objective": "reg:squarederror", "max_depth": 2, "nthread": 1},
                        xgb.DMatrix(x, label=y, feature_names=list(FEATURES)), 2)
    booster.save_model(str(tmp_path / "regressor.json"))
    edge = XGBoostEdgeModel(tmp_path / "regressor.json")

    async def main() -> None:
        with pytest.raises(FilterError) as info:
            await JointInference(edge, None, make_filter("margin")).infer(x[:3])
        assert info.value.code == "FILTER_NEEDS_PROBABILITIES"
        batch = await JointInference(edge, None, make_filter("random", 1.0)).infer(x[:3])
        assert [a.answered_by for a in batch.answers] == ["edge"] * 3  # no centre configured: flagged
        assert batch.centre_error is not None and batch.centre_error["code"] == "CENTRE_UNREACHABLE"

    asyncio.run(main())
