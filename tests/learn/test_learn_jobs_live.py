"""A federated job observed while it runs and recovered after a hub restart, without Flower: the runner's
record of each round (``record_learn_round``) through the API, ``roost learn status|list`` (in process),
the hub's ``/metrics``; and :meth:`LearnRunner.recover` on jobs a stopped hub process left."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from roost.cli.main import app
from roost.hub.app import HubConfig, open_store
from roost.hub.client import HubClient
from roost.hub.contract import DeploymentCreate, LearnJobIn
from roost.hub.learn_runner import SUPERNODE, LearnRunner
from roost.hub.store import Store
from roost.learn.federated_job import JobState
from roost.learn.superlink import kill_leftovers
from tests.hub.conftest import FakeClock, HubServer, enroll_device, publish_to_store

runner = CliRunner()


def _round(n: int, participants: int = 2, rejected: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"round": n, "participants": participants, "metric": 1.0 / n, "bytes": 1000 * n, "seconds": 2.5,
            "rejected": rejected or []}


def _running(hub: HubServer, group: str = "vines") -> str:
    """A job RUNNING at the hub that no runner runs (the test plays the runner through the store)."""
    for name in (f"{group}-a", f"{group}-b", f"{group}-c"):
        enroll_device(hub, name, group=group)
    job = hub.store.create_learn_job(LearnJobIn(target=f"group:{group}", task="wine", rounds=3, min_participants=2))
    hub.store.update_learn_job(job.job, JobState.RUNNING)
    return job.job


def _cli(hub: HubServer, *args: str) -> Any:
    return runner.invoke(app, ["learn", *args, "--hub", hub.url, "--token", hub.token], catch_exceptions=False,
                         env={"COLUMNS": "200"})


def test_rounds_are_in_the_api_the_cli_and_metrics_while_the_job_runs(hub_server: HubServer) -> None:
    job = _running(hub_server)
    lost = {"node": 7, "reason": "client error: Error: Node Unavailable"}
    hub_server.store.record_learn_round(job, _round(1, 3))
    hub_server.store.record_learn_round(job, _round(2, 2, [lost]))
    hub_server.store.record_learn_round(job, _round(2, 2, [lost]))  # recorded again: replaced, not doubled
    with HubClient(hub_server.url, hub_server.token) as hub:
        seen = hub.learn_job(job)
    assert seen.status == "RUNNING" and [(r.round, r.participants, r.bytes) for r in seen.rounds] == [
        (1, 3, 1000), (2, 2, 2000)]
    assert seen.rounds[1].seconds == 2.5 and seen.rounds[1].rejected[0].reason == lost["reason"]
    out = _cli(hub_server, "status", job, "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["status"] == "RUNNING" and doc["rounds"][1]["rejected"] == [lost] and doc["reason"] is None
    text = _cli(hub_server, "status", job)
    assert "round 2: 2 participants, RMSE 0.5000, 2000 bytes, 2.5 s" in text.output
    assert "rejected node 7: client error: Error: Node Unavailable" in text.output
    listed = _cli(hub_server, "list", "--json")
    assert [(j["job"], j["status"], j["target"]) for j in json.loads(listed.output)] == [(job, "RUNNING",
                                                                                         "group:vines")]
    assert job in _cli(hub_server, "list").output
    with hub_server.client() as c:
        metrics = c.get("/metrics").text
    assert 'roost_learn_jobs{status="RUNNING"} 1.0' in metrics and 'roost_learn_jobs{status="FAILED"} 0.0' in metrics
    assert f'roost_learn_round{{job="{job}",status="RUNNING"}} 2.0' in metrics
    assert f'roost_learn_round_participants{{job="{job}"}} 2.0' in metrics
    assert f'roost_learn_round_metric{{job="{job}"}} 0.5' in metrics
    assert f'roost_learn_bytes_total{{job="{job}"}} 3000.0' in metrics
    assert f'roost_learn_rejected_updates_total{{job="{job}"}} 1.0' in metrics
    # the end: the runner's final record keeps what it does not replace
    hub_server.store.update_learn_job(job, JobState.FAILED, {"reason": "LEARN_TOO_FEW_PARTICIPANTS: round 3"})
    ended = hub_server.store.learn_job(job)
    assert ended.reason == "LEARN_TOO_FEW_PARTICIPANTS: round 3" and len(ended.rounds) == 2


def test_follow_prints_each_round_as_it_lands_and_exits_with_the_job(hub_server: HubServer) -> None:
    ok, bad = _running(hub_server, "ok"), _running(hub_server, "bad")

    def play(job: str, end: JobState) -> None:
        for n in (1, 2):
            time.sleep(0.7)  # the CLI reads the job every second
            hub_server.store.record_learn_round(job, _round(n))
        time.sleep(0.7)
        hub_server.store.update_learn_job(job, end, {"reason": "LEARN_TOO_FEW_PARTICIPANTS: round 3: 1 usable update"}
                                          if end is JobState.FAILED else {"final_metric": 0.5})

    for job, end, code in ((ok, JobState.SUCCEEDED, 0), (bad, JobState.FAILED, 1)):
        player = threading.Thread(target=play, args=(job, end))
        player.start()
        out = _cli(hub_server, "status", job, "--follow", "--json", "--timeout", "60")
        player.join()
        lines = [json.loads(line) for line in out.output.splitlines()]
        assert out.exit_code == code, out.output
        assert [(x["event"], x.get("round")) for x in lines[:-1]] == [("round", 1), ("round", 2)]
        assert lines[-1]["event"] == "end" and lines[-1]["status"] == str(end) and len(lines[-1]["rounds"]) == 2
    text = _cli(hub_server, "status", bad, "--follow")  # already ended: its rounds, then its end
    assert text.exit_code == 1 and "round 2: 2 participants" in text.output and "round 3: 1 usable" in text.output


def test_follow_is_bounded_and_unknown_jobs_are_named(hub_server: HubServer) -> None:
    job = _running(hub_server)
    out = _cli(hub_server, "status", job, "--follow", "--timeout", "1", "--json")
    assert out.exit_code != 0 and json.loads(out.output.splitlines()[-1])["error"]["code"] == "TIMEOUT"
    missing = _cli(hub_server, "status", "fl-nope", "--json")
    assert missing.exit_code != 0 and json.loads(missing.output)["error"]["code"] == "LEARN_JOB_NOT_FOUND"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    s = open_store(HubConfig(root=tmp_path / "hub", db_url=f"sqlite:///{tmp_path / 'hub.db'}"))
    s.clock = clock
    yield s
    s.db.dispose()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _fleet(store: Store) -> None:
    for name, group in (("edge-a", "vines"), ("edge-b", "vines"), ("edge-c", "vines"), ("edge-x", "other")):
        store.enroll(store.create_enroll_token(group, 3600).token, name, {})
    publish_to_store(store, SUPERNODE, "1.0.0")
    publish_to_store(store, "com.example.Own", "1.0.0")


def _deploy(store: Store, device: str, components: dict[str, str]) -> None:
    store.create_deployment(DeploymentCreate.model_validate({"target": f"device:{device}", "components": components}))


def test_a_restarted_hub_fails_the_jobs_its_old_process_left(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    _fleet(store)
    body = LearnJobIn(target="group:vines", task="wine", rounds=5, min_participants=2)
    host = socket.gethostname()
    left = store.create_learn_job(body).job  # the old process died at round 3, its SuperNodes deployed
    store.claim_learn_job(left, {"host": host, "pid": _dead_pid(), "id": "old"})
    store.update_learn_job(left, JobState.RUNNING)
    for n in (1, 2, 3):
        store.record_learn_round(left, _round(n))
    _deploy(store, "edge-a", {"com.example.Own": "1.0.0", SUPERNODE: "1.0.0"})
    _deploy(store, "edge-b", {SUPERNODE: "1.0.0"})
    queued = store.create_learn_job(body).job  # waiting in the old process' queue
    store.claim_learn_job(queued, {"host": host, "pid": _dead_pid(), "id": "old"})
    other = LearnJobIn(target="group:other", task="wine", rounds=5)
    elsewhere = store.create_learn_job(other).job  # another host's hub runs it
    store.claim_learn_job(elsewhere, {"host": host + "-other", "pid": 1, "id": "x"})
    store.update_learn_job(elsewhere, JobState.STARTING)
    unclaimed = store.create_learn_job(body).job  # created just now by a process about to submit it
    done = store.create_learn_job(body).job
    store.update_learn_job(done, JobState.SUCCEEDED)

    live = LearnRunner(store, tmp_path / "live")  # a sibling process of this host, still running its job
    mine = store.create_learn_job(other).job
    store.claim_learn_job(mine, live.identity)
    store.update_learn_job(mine, JobState.RUNNING)
    restarted = LearnRunner(store, tmp_path / "new")
    try:
        assert sorted(restarted.recover()) == sorted([left, queued])
        assert store.learn_job(left).reason == ("LEARN_HUB_RESTARTED: the hub restarted while the job was RUNNING "
                                                "at round 3; start it again")
        assert store.learn_job(queued).reason == ("LEARN_HUB_RESTARTED: the hub restarted while the job was "
                                                  "PENDING before its first round; start it again")
        assert {j: store.learn_job(j).status for j in (left, queued, elsewhere, unclaimed, done, mine)} == {
            left: "FAILED", queued: "FAILED", elsewhere: "STARTING", unclaimed: "PENDING", done: "SUCCEEDED",
            mine: "RUNNING"}
        # the SuperNode is gone from the devices again, each keeps its own components
        assert store.device_components("edge-a") == {"com.example.Own": "1.0.0"}
        assert store.device_components("edge-b") == {}
        assert store.device_components("edge-c") == {}  # it never had a deployment: none made
        # a job never claimed is left for a minute (its process may be submitting it), then failed
        clock.advance(minutes=2)
        store.update_learn_job(mine, JobState.RUNNING)  # the live job goes on
        assert restarted.recover() == [unclaimed]
        assert store.learn_job(mine).status == "RUNNING"
    finally:
        live.close()
        restarted.close()


def test_leftover_flower_processes_are_killed_only_when_they_name_the_job_folder(tmp_path: Path) -> None:
    folder = tmp_path / "learn" / "fl-left"
    folder.mkdir(parents=True)
    sleeper = "import sys, time; time.sleep(120)"
    left = subprocess.Popen([sys.executable, "-c", sleeper, str(folder / "superlink.db")], start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", sleeper, "elsewhere"], start_new_session=True)
    try:
        (folder / "superlink.pid").write_text(str(left.pid))
        (folder / "flwr-run.pid").write_text(str(other.pid))  # a reused id: someone else's process
        assert kill_leftovers(folder) == [left.pid]
        assert left.wait(timeout=10) == -signal.SIGKILL and other.poll() is None
        assert kill_leftovers(folder) == []  # gone: nothing to kill, no error
        (folder / "superlink.pid").write_text("not a pid")
        assert kill_leftovers(tmp_path / "learn" / "fl-none") == [] and kill_leftovers(folder) == []
    finally:
        for proc in (left, other):
            proc.kill()
            proc.wait()
