"""`roost learn start --hub`: the hub runs the job's SuperLink and deploys com.roost.FlowerSuperNode to
each device of the group (two real agents enrolled with a real `roost hub serve`), each with its own
data path; the rounds come back through /v1/learn/jobs."""

from __future__ import annotations

import json

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
    out = roost(*hub.cli("learn", "start", "--target", "group:fleet", "--task", "wine", "--rounds", "2",
                         *device_data, "--wait", "--timeout", "200", "--json"), timeout=230)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["status"] == "SUCCEEDED" and doc["component"] == "com.roost.FlowerSuperNode"
    assert [(r["round"], r["participants"]) for r in doc["rounds"]] == [(1, 2), (2, 2)]
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
