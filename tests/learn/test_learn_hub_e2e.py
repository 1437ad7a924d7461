"""`roost learn start --hub`: the hub runs the job's SuperLink and deploys com.roost.FlowerSuperNode to
each device of the group (two real agents enrolled with a real `roost hub serve`), each with its own
data path; the rounds come back through /v1/learn/jobs, and the aggregated model becomes the next version
of com.roost.WineQuality with its validation report, which the deployment gate judges."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from roost.learn.errors import FlowerMissingError
from roost.learn.publish import tabular_recipe
from roost.learn.superlink import flower_bin
from roost.learn.wine_task import write_partitions
from roost.samples import RECIPES
from roost.serve.wine import train_wine
from tests.conftest import require_service
from tests.sync.conftest import Agent, Hub, agents, hub, roost, roost_json, wait_for, write_component

__all__ = ["agents", "hub"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WINE = "com.roost.WineQuality"

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
    # the component's current version: the sample model, validated by the operator on `roost samples wine-holdout`
    base = tmp_path_factory.mktemp("wine-1.0.0")
    train_wine(base / "art" / "model.json")
    (base / "recipe.yaml").write_text(tabular_recipe(WINE, "1.0.0", "The sample model.", "model.json", ["model.json"]))
    roost_json(*hub.cli("component", "publish", "--recipe", str(base / "recipe.yaml"), "--artifacts",
                        str(base / "art")))
    roost_json("samples", "wine-holdout", "--out", str(base / "holdout.csv"), "--json")
    roost_json(*hub.cli("model", "validate", f"{WINE}=1.0.0", "--data", str(base / "holdout.csv"), "--latency-calls",
                        "20", "--json"))
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
    assert set(doc) >= {"job", "status", "rounds", "final_metric", "centralised_metric", "component"}
    assert doc["status"] == "SUCCEEDED" and doc["component"] == f"{WINE}=1.0.1"  # the next patch above 1.0.0
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
    _check_published(hub, agents["edge-b"], doc, base / "holdout.csv")


def _check_published(hub: Hub, agent: Agent, job: dict[str, object], holdout: Path) -> None:
    """The job's version is in the registry: its model artifact (digest), its report on the job's held-out
    set (the rows the ServerApp scored, the operator's file), compared with 1.0.0; the gate judges it and
    the version runs on a device."""
    info = roost_json(*hub.cli("component", "show", WINE, "1.0.1", "--json"))
    model = next(a for a in info["artifacts"] if a["file"] == "model.json")
    with hub.api() as api:
        r = api.get(f"/v1/artifacts/{WINE}/1.0.1/model.json")
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == model["sha256"]
    assert json.loads(r.content)["learner"]["gradient_booster"]["name"] == "gblinear"  # FedAvg's model, folded
    report = info["validation"]
    assert report["metric"] == "rmse" and report["size_bytes"] == model["size"] and report["latency_us"]
    assert report["data_sha256"] == hashlib.sha256(holdout.read_bytes()).hexdigest()
    assert report["value"] == pytest.approx(job["final_metric"], rel=1e-5)  # what the ServerApp measured
    base = roost_json(*hub.cli("component", "show", WINE, "1.0.0", "--json"))["validation"]
    loss = report["baseline"]["regression"]
    assert report["baseline"]["version"] == "1.0.0" and report["baseline"]["value"] == base["value"]
    assert loss == pytest.approx((report["value"] - base["value"]) / base["value"])
    assert loss > 0  # 2 rounds of a linear model do not beat the sample model's 400 trees
    deploy = ("deployment", "create", "--target", f"device:{agent.name}", "--component", f"{WINE}=1.0.1",
              "--baseline", f"{WINE}=1.0.0")
    refused = roost(*hub.cli(*deploy, "--max-regression", f"{loss / 2:.6f}", "--json"))
    assert refused.returncode == 7 and json.loads(refused.stdout)["error"]["code"] == "DEPLOYMENT_GATE_FAILED"
    passed = roost(*hub.cli(*deploy, "--max-regression", f"{loss * 2:.6f}", "--wait", "--wait-timeout", "60",
                            "--json"), timeout=120)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert agent.components()[WINE] == ("1.0.1", "RUNNING")
    log = agent.root / "logs" / f"{WINE}.log"
    wait_for(lambda: log.is_file() and f"serving {WINE}@1.0.1" in log.read_text(), timeout=30,
             what="the version serving its model")
    assert "engine xgboost" in log.read_text()


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
