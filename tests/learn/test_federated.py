"""The federated wine task: the non-IID partition, the job's spec checks and state machine, update screening."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from roost.errors import CODES
from roost.learn import federated_params
from roost.learn.errors import (
    DataMissingError,
    JobStateError,
    ParticipantsInvalidError,
    RoundsOutOfRangeError,
    StrategyUnknownError,
    TargetEmptyError,
    TaskUnknownError,
)
from roost.learn.federated_job import MAX_ROUNDS, Device, JobSpec, JobState, JobStatus, RoundTail, run_job
from roost.learn.superlink import APP_DIR
from roost.learn.wine_task import partition
from roost.serve.wine import load_wine, split

sys.path.insert(0, str(APP_DIR))
from roost_wine_fl import task as app_task  # the Flower App's own module: numpy + xgboost only


def test_partition_is_disjoint_covers_the_training_split_and_is_non_iid() -> None:
    x, y = load_wine()
    train, _ = split(len(x))
    parts = partition(3)
    joined = np.concatenate(parts)
    assert len(joined) == len(set(joined.tolist())) == len(train)
    assert set(joined.tolist()) == set(train.tolist())
    red_share = [float(x[p, 11].mean()) for p in parts]
    assert red_share[0] > 0.85 and max(red_share[1:]) < 0.15
    white_quality = [float(y[p][x[p, 12] == 1].mean()) for p in parts[1:]]
    assert white_quality[1] - white_quality[0] > 0.5


def test_the_app_trains_with_the_parameters_of_the_central_baseline() -> None:
    assert app_task.XGB_PARAMS == federated_params.XGB_PARAMS


@pytest.mark.parametrize(("spec", "devices", "error"), [
    (JobSpec("iris", "fedavg", 3, 1), 3, TaskUnknownError),
    (JobSpec("wine", "fedsgd", 3, 1), 3, StrategyUnknownError),
    (JobSpec("wine", "fedavg", 0, 1), 3, RoundsOutOfRangeError),
    (JobSpec("wine", "fedavg", MAX_ROUNDS + 1, 1), 3, RoundsOutOfRangeError),
    (JobSpec("wine", "fedavg", 3, 1), 0, TargetEmptyError),
    (JobSpec("wine", "fedavg", 3, 4), 3, ParticipantsInvalidError),
    (JobSpec("wine", "fedavg", 3, 0), 3, ParticipantsInvalidError),
    (JobSpec("wine", "fedavg", 3, 1), 33, ParticipantsInvalidError),
])
def test_bad_specs_fail_with_their_own_code(spec: JobSpec, devices: int, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        spec.check(devices)
    assert info.value.code in {code for codes in CODES.values() for code in codes}  # type: ignore[attr-defined]


def test_a_missing_data_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError, match=r"edge-b.*nowhere\.csv"):
        run_job("j", JobSpec("wine", "fedavg", 2, 1), [Device("edge-b", tmp_path / "nowhere.csv")], tmp_path / "run")


def test_the_state_machine_allows_only_forward_moves_and_times_out() -> None:
    status = JobStatus("j", JobSpec("wine", "fedavg", 3, 1))
    with pytest.raises(JobStateError):
        status.move(JobState.SUCCEEDED)
    status.move(JobState.STARTING)
    status.move(JobState.RUNNING)
    assert not status.overdue()
    assert status.overdue(now=status.since + 120.0 * 3 + 1)
    status.move(JobState.FAILED, "LEARN_TOO_FEW_PARTICIPANTS: round 2")
    for target in JobState:
        with pytest.raises(JobStateError):
            status.move(target)
    assert status.as_json()["reason"].startswith("LEARN_TOO_FEW_PARTICIPANTS")


def _update(trees: int) -> bytes:
    x, y = load_wine()
    booster = xgb.train({"max_depth": 2, "nthread": 1}, xgb.DMatrix(x[:200], label=y[:200]), num_boost_round=trees)
    return bytes(booster.save_raw("json"))


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda raw: raw[: len(raw) // 2], "not an XGBoost JSON model"),
    (lambda raw: b"\x00" * 64, "not an XGBoost JSON model"),
    (lambda raw: json.dumps({"learner": {}}).encode(), "not an XGBoost JSON model"),
    (lambda raw: raw + b" " * 5000, "over the limit"),
])
def test_corrupt_xgboost_updates_are_rejected_with_a_reason(mutate: Any, reason: str) -> None:
    raw = _update(3)
    assert app_task.check_xgb_update(raw, max_bytes=len(raw) + 100) == 3
    with pytest.raises(app_task.UpdateRejected, match=reason):
        app_task.check_xgb_update(mutate(raw), max_bytes=len(raw) + 100)


@pytest.mark.parametrize(("weights", "reason"), [
    (np.zeros(5), "shape"), (np.array([np.nan] * 14), "NaN"), (np.array([np.inf] + [0.0] * 13), "NaN"),
])
def test_corrupt_linear_updates_are_rejected_with_a_reason(weights: Any, reason: str) -> None:
    app_task.check_linear_update(np.zeros(14))
    with pytest.raises(app_task.UpdateRejected, match=reason):
        app_task.check_linear_update(weights)


def test_the_round_tail_hands_each_complete_round_once_and_survives_a_failing_callback(tmp_path: Path) -> None:
    path = tmp_path / "rounds.jsonl"
    got: list[dict[str, Any]] = []

    def on_round(doc: dict[str, Any]) -> None:
        got.append(doc)
        if doc["round"] == 1:
            raise RuntimeError("the hub's database is away")  # logged; the job and the tail go on

    tail = RoundTail(path, on_round)
    tail.poll()  # no file yet
    line = {"round": 1, "participants": 2, "rejected": [{"node": 5, "reason": "x" * 999}], "bytes_down": 10,
            "bytes_up": 20, "metric": 0.9, "seconds": 1.5}
    text = json.dumps(line) + "\n" + json.dumps({**line, "round": 2, "rejected": []})
    path.write_text(text[:-10])  # round 2 still being written
    tail.poll()
    assert [g["round"] for g in got] == [1] and got[0]["bytes"] == 30 and len(got[0]["rejected"][0]["reason"]) == 300
    with path.open("a") as fh:
        fh.write(text[-10:] + "\n\n")
    tail.poll()
    tail.poll()
    assert [g["round"] for g in got] == [1, 2] and got[1] == {"round": 2, "participants": 2, "metric": 0.9,
                                                              "bytes": 30, "seconds": 1.5, "rejected": []}
    path.write_text(text + "\n" + "y" * (RoundTail.MAX_LINE * 4 + 1))  # a line without end: reading stops
    broken = RoundTail(path, got.append)
    broken.poll()
    broken.poll()
    assert [g["round"] for g in got] == [1, 2, 1, 2]
