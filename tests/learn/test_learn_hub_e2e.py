"""`roost learn start --hub`: the hub runs the job's SuperLink and deploys com.roost.FlowerSuperNode to
each device of the group (two real agents enrolled with a real `roost hub serve`), each with its own
data path; the rounds come back through /v1/learn/jobs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from roost.learn.errors import FlowerMissingError
from roost.learn.superlink import flower_bin
from roost.learn.wine_task import write_partitions
from roost.samples import RECIPES
from tests.conftest import require_service
from tests.sync.conftest import Agent, Hub, agents, hub, roost, roost_json, wait_for, write_component

__all__ = ["agents", "hub"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

try:
    flower_bin()
    _FLOWER, _WHY = True, ""
except FlowerMissingError as err:
    _FLOWER, _WHY = False, str(err)


def test_a_hub_job_trains_on_the_groups_supernode_components(hub: Hub, agents: dict[str, Agent],
                                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    require_service("the Flower venv (make flower)", _FLOWER, _WHY)
    roost_json(*hub.cli("component", "publish", "--recipe", str(RECIPES / "com.roost.FlowerSuperNode-1.0.0.yaml")))
    # edge-a has a device deployment of its own: the job adds the SuperNode beside it and gives it back
    recipe, art = write_component(tmp_path_factory.mktemp("own"), "com.example.Own", "1.0.0")
    roost_json(*hub.cli("component", "publish", "--recipe", str(recipe), "--artifacts", str(art)))
    own = roost(*hub.cli("deployment", "create", "--target", "device:edge-a", "--component", "com.example.Own=1.0.0",
                         "--wait", "--wait-timeout", "60", "--json"), timeout=120)
    assert own.returncode == 0, own.stdout + own.stderr
    parts = write_partitions(tmp_path_factory.mktemp("fl-hub-data"), len(agents))
    device_data = [f"--device-data={name}={part}" for name, part in zip(agents, parts, strict=True)]
    start = subprocess.Popen([sys.executable, "-m", "roost", *hub.cli(
        "learn", "start", "--target", "group:fleet", "--task", "wine", "--rounds", "2", *device_data, "--wait",
        "--timeout", "200", "--json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with hub.api() as api:  # meanwhile, `roost learn status --follow` prints each round as it lands
        job = wait_for(lambda: [j["job"] for j in api.get("/v1/learn/jobs").json()], timeout=60, what="the job")[0]
    follow = roost(*hub.cli("learn", "status", job, "--follow", "--timeout", "200", "--json"), timeout=230)
    stdout, stderr = start.communicate(timeout=230)
    assert start.returncode == 0 and follow.returncode == 0, stdout + stderr + follow.stdout + follow.stderr
    doc = json.loads(stdout)
    assert doc["status"] == "SUCCEEDED" and doc["component"] == "com.roost.FlowerSuperNode"
    assert [(r["round"], r["participants"]) for r in doc["rounds"]] == [(1, 2), (2, 2)]
    assert all(r["seconds"] > 0 and r["bytes"] > 0 and r["rejected"] == [] for r in doc["rounds"])
    *rounds, end = (json.loads(line) for line in follow.stdout.splitlines())
    assert [(r["event"], r["round"]) for r in rounds] == [("round", 1), ("round", 2)]
    assert end["event"] == "end" and end["rounds"] == doc["rounds"]
    assert doc["final_metric"] is not None and doc["centralised_metric"] is not None
    for agent, part in zip(agents.values(), parts, strict=True):
        log = (agent.root / "logs" / "com.roost.FlowerSuperNode.log").read_text()
        assert f"with data {part}" in log  # each device trained on its own part
    # after the job: the SuperNode is gone again, edge-a's own component still runs
    a = agents["edge-a"]
    wait_for(lambda: "com.roost.FlowerSuperNode" not in a.components(), timeout=60, what="the SuperNode removed")
    assert a.components()["com.example.Own"] == ("1.0.0", "RUNNING")


def test_bad_device_data_is_named(hub: Hub) -> None:
    out = roost(*hub.cli("learn", "start", "--target", "group:fleet", "--device-data", "nopath", "--json"))
    assert out.returncode == 3 and json.loads(out.stdout)["error"]["code"] == "INVALID_ARGUMENT"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_hub_restart_fails_its_running_job_and_removes_the_supernodes(hub: Hub, agents: dict[str, Agent],
                                                                        tmp_path_factory: pytest.TempPathFactory
                                                                        ) -> None:
    require_service("the Flower venv (make flower)", _FLOWER, _WHY)
    parts = write_partitions(tmp_path_factory.mktemp("fl-restart-data"), len(agents))
    device_data = [f"--device-data={name}={part}" for name, part in zip(agents, parts, strict=True)]
    job = roost_json(*hub.cli("learn", "start", "--target", "group:fleet", "--rounds", "10", *device_data))["job"]
    for agent in agents.values():  # the job is RUNNING once each device's SuperNode runs (round 1 may be under way)
        wait_for(lambda a=agent: a.components().get("com.roost.FlowerSuperNode", ("", ""))[1] == "RUNNING",
                 timeout=120, interval=1.0, what=f"the SuperNode on {agent.name}")
    with hub.api() as api:
        assert api.get(f"/v1/learn/jobs/{job}").json()["status"] == "RUNNING"
    folder = hub.root / "learn" / job
    wait_for(lambda: (folder / "flwr-run.pid").is_file(), timeout=30, what="flwr run started")
    left = [int((folder / name).read_text()) for name in ("superlink.pid", "flwr-run.pid")]
    hub.kill()  # the SuperLink and flwr run lead their own sessions: they outlive the hub
    assert all(_running(pid) for pid in left)
    hub.start(timeout=90)  # a loaded machine (2 cores shared by test runs) can take over 30 s
    doc = roost_json(*hub.cli("learn", "status", job))
    assert doc["status"] == "FAILED", doc
    assert doc["reason"].startswith("LEARN_HUB_RESTARTED: the hub restarted while the job was RUNNING ")
    assert doc["reason"].endswith("; start it again")
    wait_for(lambda: not any(_running(pid) for pid in left), timeout=10, what="the old SuperLink killed")
    for agent in agents.values():
        wait_for(lambda a=agent: "com.roost.FlowerSuperNode" not in a.components(), timeout=60,
                 what=f"the SuperNode removed from {agent.name}")
    assert agents["edge-a"].components()["com.example.Own"] == ("1.0.0", "RUNNING")
