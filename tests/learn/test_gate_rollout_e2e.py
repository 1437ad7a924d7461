"""Validate, then roll out; benchmark, then recommend: a real hub (uvicorn in a thread, on a clock the
test moves) and two real agents enrolled into one group.

One test, in order: a version that passes its gate rolls out in stages (one device per minute: the
second device gets it only once the hub's clock has moved a minute on); a version that passes its
gate but fails on the device is rolled back there and the rollout aborts before the second device
sees it; the gate then compares with the version the devices still run. Then the benchmark
component runs on one agent, records two real variants' latency under the device's class, and the
recommendation for the *other* device (same class) uses it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import xgboost as xgb
from typer.testing import CliRunner

from roost.cli.main import app
from roost.learn.validation import write_validation_csv
from roost.serve.wine import FEATURES, holdout, load_wine, split
from tests.hub.conftest import FakeClock, HubServer, publish
from tests.sync.conftest import roost, wait_for, write_component

pytestmark = pytest.mark.slow

MODEL = "com.example.Model"
runner = CliRunner()


def _cli(*args: str) -> Any:
    result = runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _report(value: float) -> dict[str, Any]:
    return {"metric": "rmse", "value": value, "rows": 100, "data": "holdout.csv", "data_sha256": "c" * 64,
            "size_bytes": 100, "latency_us": {}}


@pytest.fixture
def fleet(hub_server_factory: Callable[..., HubServer], tmp_path: Path) -> Iterator[tuple[HubServer, FakeClock]]:
    clock = FakeClock(datetime.now(UTC))
    hub = hub_server_factory(clock=clock)
    started: list[Path] = []
    try:
        for name in ("edge-a", "edge-b"):
            with hub.client() as admin:
                token = admin.post("/v1/enroll-tokens", json={"group": "fleet"}).json()["token"]
            root = tmp_path / name
            proc = roost("agent", "start", "--root", str(root), "--detach", "--hub", hub.url, "--enroll-token", token,
                         "--thing-name", name)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            started.append(root)
        yield hub, clock
    finally:
        for root in started:
            roost("agent", "stop", "--root", str(root))


def _rows(api: httpx.Client, deployment_id: str) -> dict[str, dict[str, Any]]:
    dep = api.get(f"/v1/deployments/{deployment_id}").json()
    return {d["device"]: d for d in dep["devices"]} | {"": {"status": dep["status"]}}


def _deploy(api: httpx.Client, version: str, **extra: Any) -> str:
    r = api.post("/v1/deployments", json={"target": "group:fleet", "components": {MODEL: version}, **extra})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_staged_rollout_rollback_and_benchmark(fleet: tuple[HubServer, FakeClock], tmp_path: Path) -> None:
    hub, clock = fleet
    with hub.client() as api:
        for version, value, body in (("1.0.0", 0.70, ""), ("1.1.0", 0.702, ""),
                                     ("1.2.0", 0.703, "raise SystemExit('the new model does not start')\n")):
            recipe, art = write_component(tmp_path, MODEL, version, body=body)
            assert publish(api, MODEL, version, files={"main.py": (art / "main.py").read_bytes()},
                           recipe=recipe.read_bytes()).status_code == 201
            assert api.put(f"/v1/components/{MODEL}/{version}/validation", json=_report(value)).status_code == 200
        first = _deploy(api, "1.0.0")
        wait_for(lambda: _rows(api, first)[""]["status"] == "COMPLETED", 90, "1.0.0 on both devices")

        # Stage by stage: one device per minute of the hub's clock.
        staged = _deploy(api, "1.1.0", max_per_minute=1, abort_failure_percent=0)
        rows = wait_for(lambda: (r := _rows(api, staged)) and any(d.get("status") == "SUCCEEDED" for d in r.values())
                        and r, 90, "the first stage")
        (done,) = [n for n, d in rows.items() if d.get("status") == "SUCCEEDED"]
        (waiting,) = [n for n in ("edge-a", "edge-b") if n != done]
        assert rows[waiting]["status"] == "QUEUED" and rows[waiting]["released_at"] is None
        assert _rows(api, staged)[waiting]["released_at"] is None  # still held back: the minute has not passed
        clock.advance(seconds=61)
        wait_for(lambda: _rows(api, staged)[""]["status"] == "COMPLETED", 90, "the second stage")
        gate = api.get(f"/v1/deployments/{staged}").json()["gate"][0]
        assert gate["passed"] and gate["baseline_version"] == "1.0.0"

        # Passes its gate, fails on the device: rolled back there, the rollout aborts, the rest never get it.
        clock.advance(seconds=61)
        failing = _deploy(api, "1.2.0", max_per_minute=1, abort_failure_percent=0)
        wait_for(lambda: _rows(api, failing)[""]["status"] == "ABORTED", 120, "the abort")
        rows = _rows(api, failing)
        assert sorted(d["status"] for n, d in rows.items() if n) == ["CANCELED", "ROLLED_BACK"]
        for root in (tmp_path / "edge-a", tmp_path / "edge-b"):
            comps = {c["componentName"]: c for c in json.loads(roost("component", "list", "--root", str(root),
                                                                     "--json").stdout)}
            assert comps[MODEL]["version"] == "1.1.0" and comps[MODEL]["state"] == "RUNNING"
        # The gate now compares with 1.1.0, the version the devices still run (not the aborted 1.2.0).
        recipe, art = write_component(tmp_path, MODEL, "1.3.0")
        assert publish(api, MODEL, "1.3.0", files={"main.py": (art / "main.py").read_bytes()},
                       recipe=recipe.read_bytes()).status_code == 201
        assert api.put(f"/v1/components/{MODEL}/1.3.0/validation", json=_report(0.8)).status_code == 200
        r = api.post("/v1/deployments", json={"target": "group:fleet", "components": {MODEL: "1.3.0"}})
        assert r.status_code == 409 and r.json()["error"]["code"] == "DEPLOYMENT_GATE_FAILED"
        assert "of 1.1.0" in r.json()["error"]["message"]
        # The aborted deployment stays the group's latest (the rolled-back device would retry 1.2.0 on its
        # next deployment): the operator restores the version that runs.
        restore = _deploy(api, "1.1.0")
        wait_for(lambda: _rows(api, restore)[""]["status"] == "COMPLETED", 60, "1.1.0 restored")

    # The benchmark component: two real variants timed on edge-a, recorded under its class.
    x, y = load_wine()
    train, _ = split(len(x))
    hx, hy = holdout()
    data = write_validation_csv(tmp_path / "holdout.csv", hx, hy, FEATURES)
    hub_opts = ("--hub", hub.url, "--token", hub.token)
    for name, trees in (("com.example.WineFull", 200), ("com.example.WineSmall", 10)):
        booster = xgb.train({"max_depth": 4, "eta": 0.1, "nthread": 1, "seed": 1},
                            xgb.DMatrix(x[train], label=y[train], feature_names=list(FEATURES)), trees)
        booster.save_model(str(tmp_path / f"{name}.json"))
        with hub.client() as api:
            recipe = (f'RecipeFormatVersion: "2020-01-25"\nComponentName: {name}\nComponentVersion: 1.0.0\n'
                      "Manifests:\n  - Platform: {os: linux}\n    Lifecycle:\n"
                      "      Run: roost serve --model {artifacts:path}/model.json --engine xgboost\n"
                      f"    Artifacts:\n      - URI: s3://b/{name}/1.0.0/model.json\n").encode()
            assert publish(api, name, "1.0.0", files={"model.json": (tmp_path / f"{name}.json").read_bytes()},
                           recipe=recipe).status_code == 201
        _cli("model", "validate", f"{name}=1.0.0", "--data", str(data), "--latency-calls", "20", *hub_opts, "--json")
    bench = _cli("model", "benchmark", "--candidate", "com.example.WineFull=1.0.0", "--candidate",
                 "com.example.WineSmall=1.0.0", "--rows", str(data), "--calls", "50", *hub_opts, "--json")
    with hub.client() as api:
        r = api.post("/v1/deployments", json={"target": "device:edge-a",
                                              "components": dict([bench["component"].split("=")])})
        assert r.status_code == 201, r.text
        records = wait_for(lambda: len(api.get("/v1/models/benchmarks").json()) == 2 and
                           api.get("/v1/models/benchmarks").json(), 120, "the benchmark's records")
    assert {r["device"] for r in records} == {"edge-a"} and all(r["calls"] == 50 for r in records)
    latency = {r["component"]: r["latency_us"] for r in records}
    doc = _cli("model", "recommend", "--device", "edge-b", *hub_opts, "--json")  # the same class as edge-a
    assert {c["component"] for c in doc["candidates"] if c["latency_us"] is not None} == set(latency)
    full = {c["component"]: c for c in doc["candidates"]}["com.example.WineFull"]
    assert full["value"] < {c["component"]: c for c in doc["candidates"]}["com.example.WineSmall"]["value"]
    assert doc["chosen"] == "com.example.WineFull=1.0.0"  # the best RMSE, no latency bound
    bound = (latency["com.example.WineFull"] + latency["com.example.WineSmall"]) / 2 / 1000
    if latency["com.example.WineSmall"] < latency["com.example.WineFull"]:
        tight = _cli("model", "recommend", "--device", "edge-b", "--max-latency-ms", f"{bound:.6f}", *hub_opts,
                     "--json")
        assert tight["chosen"] == "com.example.WineSmall=1.0.0"
