"""Parallel inference end to end: real `roost cluster replica` processes, windows split across them and
merged in order (checked against the model run locally), a replica killed mid-stream (its windows go
to the others, order kept), every replica lost (an error naming them), replicas of other features,
and `roost cluster infer --json`."""

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

from roost.cluster.tokens import TokenSigner
from roost.learn.errors import FeatureMismatchError, ReplicasExhaustedError
from roost.learn.joint import XGBoostEdgeModel
from roost.learn.parallel import parallel_infer
from roost.learn.validation import write_validation_csv
from roost.serve.wine import FEATURES, holdout
from tests.learn.replicas import ReplicaProcess

ROWS = 1200  # 30 windows of 40


@pytest.fixture(scope="module")
def matrix() -> tuple[np.ndarray, np.ndarray]:
    x, y = holdout()
    return x[:ROWS], y[:ROWS]


@pytest.fixture
def replicas(wine_classes: dict[str, Path], signer: TokenSigner, tmp_path: Path) -> Iterator[list[ReplicaProcess]]:
    procs = [ReplicaProcess(wine_classes["centre"], f"rep-{i}", signer, tmp_path) for i in range(2)]
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        for p in procs:
            p.stop()


def test_windows_split_across_replicas_merge_in_order_and_survive_a_lost_replica(
        replicas: list[ReplicaProcess], wine_classes: dict[str, Path], matrix: tuple[np.ndarray, np.ndarray],
        tmp_path: Path) -> None:
    x, _ = matrix
    expected = XGBoostEdgeModel(wine_classes["centre"]).predict(x)[0].tolist()

    async def both() -> None:
        report = await parallel_infer([r.target() for r in replicas], x, window=40, depth=2)
        assert report.predictions == expected
        assert report.windows == 30 and report.retried == []
        assert all(stat.windows > 0 for stat in report.replicas)  # both took part
        assert sum(stat.rows for stat in report.replicas) == ROWS

    asyncio.run(both())

    answered: list[str] = []

    def kill_after_some(index: int, replica: str) -> None:
        answered.append(replica)
        if len(answered) == 6:
            replicas[1].kill()

    async def one_lost() -> None:
        report = await parallel_infer([r.target() for r in replicas], x, window=40, depth=2,
                                      on_window=kill_after_some)
        assert report.predictions == expected  # every window answered, in order
        lost = [s for s in report.replicas if s.lost is not None]
        assert [s.name for s in lost] == ["rep-1"] and lost[0].lost["code"] == "SESSION_LOST"
        assert [r["code"] for r in report.retried] == ["PARALLEL_REPLICA_LOST"]
        assert report.retried[0]["replica"] == "rep-1"
        assert report.retried[0]["requeued"]  # it had windows in flight, answered by rep-0 instead
        assert sum(s.rows for s in report.replicas) >= ROWS

    asyncio.run(one_lost())

    def kill_rest(index: int, replica: str) -> None:
        replicas[0].kill()

    async def all_lost() -> None:
        with pytest.raises(ReplicasExhaustedError) as info:
            await parallel_infer([r.target() for r in replicas], x, window=40, depth=1, on_window=kill_rest)
        assert info.value.code == "PARALLEL_REPLICAS_LOST"
        assert "rep-0" in info.value.message and "rep-1" in info.value.message
        assert "REPLICA_UNREACHABLE" in info.value.message  # rep-1 was already gone at the start

    asyncio.run(all_lost())


def test_roost_cluster_infer_json_and_replicas_of_other_features(
        replicas: list[ReplicaProcess], wine_classes: dict[str, Path], signer: TokenSigner,
        matrix: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    x, y = matrix
    csv_path = write_validation_csv(tmp_path / "rows.csv", x[:200], y[:200], FEATURES)
    out = tmp_path / "predictions.csv"
    args = [a for r in replicas for a in ("--replica", f"{r.endpoint}={r.target().token}")]
    proc = subprocess.run([sys.executable, "-m", "roost", "cluster", "infer", "--data", str(csv_path), *args,
                           "--window", "20", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["rows"] == 200 and doc["windows"] == 10 and len(doc["replicas"]) == 2
    expected = XGBoostEdgeModel(wine_classes["centre"]).predict(x[:200])[0].tolist()
    assert [float(v) for v in out.read_text().split()[1:]] == expected

    names = list(FEATURES[:-1])
    booster = xgb.train({"objective": "multi:softprob", "num_class": 10, "max_depth": 2, "nthread": 1},
                        xgb.DMatrix(x[:, :-1], label=y, feature_names=names), 2)
    booster.save_model(str(tmp_path / "twelve.json"))
    other = ReplicaProcess(tmp_path / "twelve.json", "rep-other", signer, tmp_path).start()
    try:
        with pytest.raises(FeatureMismatchError) as info:
            asyncio.run(parallel_infer([replicas[0].target(), other.target()], x))
        assert info.value.code == "FEATURES_MISMATCH" and "rep-other" in info.value.message
    finally:
        other.stop()
    with pytest.raises(FeatureMismatchError):
        asyncio.run(parallel_infer([replicas[0].target()], x[:, :5]))
