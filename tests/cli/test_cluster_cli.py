"""`roost cluster service-type apply|list`, `nodes`, `services`, `replicas`, `sessions` through the real CLI
(in process) against a real hub in a thread; and their refusals of bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from roost.cli.main import app
from tests.hub.conftest import HubServer, enroll_device, publish

runner = CliRunner()
GI = 2**30


def run(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "240"})


def hub_args(hub: HubServer) -> list[str]:
    return ["--hub", hub.url, "--token", hub.token]


def _node(hub: HubServer, name: str, machine: str, memory_gi: int) -> None:
    credential = enroll_device(hub, name)
    capacity = {"memory_bytes": memory_gi * GI, "cpu_millis": 4000}
    answer = httpx.put(hub.url + "/v1/device/node", headers={"Authorization": f"Bearer {credential}"},
                       json={"labels": {"machine": machine}, "allocatable": capacity, "measured": capacity,
                             "address": "127.0.0.1"})
    assert answer.status_code == 200


def test_apply_list_and_look_at_the_cluster(hub_server: HubServer, tmp_path: Path) -> None:
    with hub_server.client() as c:
        assert publish(c, "com.example.Tabular", "2.0.0", {"model.json": b"{}"}).status_code == 201
    types = tmp_path / "types.yaml"
    types.write_text("name: tab\ncomponent: com.example.Tabular\nresources:\n  requests: {memory: 1Gi, cpu: 500m}\n"
                     "---\nname: tab2\ncomponent: com.example.Tabular\nversion: 2.0.0\nsessionsPerReplica: 3\n")
    applied = run("cluster", "service-type", "apply", str(types), *hub_args(hub_server), "--json")
    assert applied.exit_code == 0, applied.output
    assert [t["name"] for t in json.loads(applied.output)] == ["tab", "tab2"]
    listed = run("cluster", "service-type", "list", *hub_args(hub_server))
    assert listed.exit_code == 0 and "name: tab2" in listed.output and "sessionsPerReplica: 3" in listed.output
    _node(hub_server, "xavier-1", "xavier", 8)
    nodes = run("cluster", "nodes", *hub_args(hub_server))
    assert nodes.exit_code == 0 and "xavier-1" in nodes.output and "8.0Gi" in nodes.output
    (node,) = json.loads(run("cluster", "nodes", *hub_args(hub_server), "--json").output)
    assert node["labels"] == {"machine": "xavier", "arch": "x86_64"}
    services = json.loads(run("cluster", "services", *hub_args(hub_server), "--json").output)
    assert {s["name"]: (s["replicas"], s["sessions"]) for s in services} == {"tab": (0, 0), "tab2": (0, 0)}
    table = run("cluster", "services", *hub_args(hub_server))
    assert table.exit_code == 0 and "tab2" in table.output
    assert json.loads(run("cluster", "replicas", *hub_args(hub_server), "--json").output) == []
    assert json.loads(run("cluster", "sessions", *hub_args(hub_server), "--json").output) == []


def test_bad_service_type_input_is_refused_before_the_hub_is_asked(tmp_path: Path) -> None:
    missing = run("cluster", "service-type", "apply", str(tmp_path / "nope.yaml"), "--hub", "http://127.0.0.1:9",
                  "--token", "t", "--json")
    assert missing.exit_code == 3 and json.loads(missing.output)["error"]["code"] == "SERVICE_TYPE_INVALID"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: scalar\ncomponent: c\nresources:\n  requests: {memory: sixteen}\n")
    refused = run("cluster", "service-type", "apply", str(bad), "--hub", "http://127.0.0.1:9", "--token", "t", "--json")
    error = json.loads(refused.output)["error"]
    assert refused.exit_code == 3 and error["code"] == "SERVICE_TYPE_INVALID" and "sixteen" in error["message"]
    both = run("cluster", "service-type", "apply", str(bad), "--samples", "--hub", "http://127.0.0.1:9",
               "--token", "t", "--json")
    assert both.exit_code == 3 and json.loads(both.output)["error"]["code"] == "INVALID_ARGUMENT"
    neither = run("cluster", "service-type", "apply", "--hub", "http://127.0.0.1:9", "--token", "t", "--json")
    assert neither.exit_code == 3


def test_an_unknown_component_is_named(hub_server: HubServer, tmp_path: Path) -> None:
    types = tmp_path / "types.json"
    types.write_text(json.dumps({"name": "tab", "component": "com.example.Missing"}))
    refused = run("cluster", "service-type", "apply", str(types), *hub_args(hub_server), "--json")
    error = json.loads(refused.output)["error"]
    assert refused.exit_code == 3 and error["code"] == "UNKNOWN_COMPONENT" and "com.example.Missing" in error["message"]
