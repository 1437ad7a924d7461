"""Real Flower processes (a TLS SuperLink, 3 SuperNodes, ``flwr run``) on the non-IID wine partition.

Each SuperNode is a process of this machine reading its own CSV; the hub/agent deployment of the
SuperNode component is not wired yet (see docs/learning.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.learn.assess import assess
from roost.learn.errors import FlowerMissingError, TooFewParticipantsError
from roost.learn.federated_job import Device, JobSpec, JobState, run_job
from roost.learn.federated_model import job_model, write_job_holdout
from roost.learn.superlink import flower_bin
from roost.learn.wine_task import write_partitions
from tests.conftest import require_service

pytestmark = pytest.mark.slow

try:
    flower_bin()
    _FLOWER, _WHY = True, ""
except FlowerMissingError as err:
    _FLOWER, _WHY = False, str(err)


@pytest.fixture
def parts(tmp_path: Path) -> list[Path]:
    require_service("the Flower venv (make flower)", _FLOWER, _WHY)
    return write_partitions(tmp_path / "data", 3)


def test_fedavg_over_tls_on_three_supernodes(parts: list[Path], tmp_path: Path) -> None:
    status = run_job("e2e", JobSpec("wine", "fedavg", 3, min_participants=3),
                     [Device(f"edge-{i}", p) for i, p in enumerate(parts)], tmp_path / "run", capture=True)
    doc = status.as_json()
    assert doc["status"] == JobState.SUCCEEDED
    assert [r["round"] for r in doc["rounds"]] == [1, 2, 3]
    assert all(r["participants"] == 3 and r["bytes"] > 0 and not r["rejected"] for r in doc["rounds"])
    metrics = [r["metric"] for r in doc["rounds"]]
    assert metrics[-1] < metrics[0] and doc["final_metric"] == metrics[-1]
    assert doc["centralised_metric"] is not None and doc["centralised_metric"] < metrics[0]
    # the final linear model folds into a servable gblinear model scoring what the ServerApp measured
    model = job_model(tmp_path / "run" / "out", "fedavg", tmp_path / "pub")
    measured = assess(model.path, write_job_holdout(tmp_path / "holdout.csv"), calls=5)
    assert measured.value == pytest.approx(doc["final_metric"], rel=1e-5)
    # the messages carried 14 weights each way and metrics, never a row of the devices' data
    row = parts[0].read_text().splitlines()[1]
    blob = b"".join(p.read_bytes() for p in (tmp_path / "run" / "out" / "messages").glob("*.bin"))
    assert blob and ",".join(row.split(",")[:6]).encode() not in blob


def test_a_device_that_fails_mid_round_fails_the_job_below_the_minimum(parts: list[Path], tmp_path: Path) -> None:
    parts[2].write_text(parts[2].read_text().replace(",", ";"))  # its ClientApp fails on every round
    with pytest.raises(TooFewParticipantsError, match="round 1: 2 usable update"):
        run_job("e2e-fail", JobSpec("wine", "fedavg", 2, min_participants=3),
                [Device(f"edge-{i}", p) for i, p in enumerate(parts)], tmp_path / "run")


def test_the_round_goes_on_without_a_failing_device_above_the_minimum(parts: list[Path], tmp_path: Path) -> None:
    parts[1].write_text("not,a,wine,file\n1,2,3,4\n")
    status = run_job("e2e-continue", JobSpec("wine", "fedavg", 1, min_participants=2),
                     [Device(f"edge-{i}", p) for i, p in enumerate(parts)], tmp_path / "run")
    (only,) = status.as_json()["rounds"]
    assert status.status == JobState.SUCCEEDED and only["participants"] == 2
    (rejected,) = only["rejected"]
    assert rejected["reason"].startswith("client error")
