"""The cluster's REST routes on a real hub (uvicorn): authorisation, node reports from devices, service
types, admission's refusals, and the original client's compatibility routes."""

from __future__ import annotations

from typing import Any

import httpx

from roost.cluster.service_types import SHIPPED
from tests.hub.conftest import HubServer, enroll_device, publish

GI = 2**30


def _report(hub: HubServer, name: str, machine: str, memory_gi: float, tier: str = "edge") -> httpx.Response:
    credential = enroll_device(hub, name)
    capacity = {"memory_bytes": int(memory_gi * GI), "cpu_millis": 4000}
    body = {"labels": {"machine": machine}, "allocatable": capacity, "measured": capacity, "tier": tier,
            "address": "127.0.0.1", "port_min": 32100, "port_max": 32199}
    return httpx.put(hub.url + "/v1/device/node", json=body, headers={"Authorization": f"Bearer {credential}"})


def _scalar(hub: HubServer, **changes: Any) -> httpx.Response:
    with hub.client() as c:
        if c.get("/v1/components").json() == [] or not any(
                x["name"] == "com.roost.ClusterScalar" for x in c.get("/v1/components").json()):
            assert publish(c, "com.roost.ClusterScalar", "1.0.0", {"model.json": b"{}"}).status_code == 201
        return c.put("/v1/cluster/service-types/scalar", json={**SHIPPED["scalar"].to_wire(), **changes})


def test_devices_report_nodes_and_admins_list_them(hub_server: HubServer) -> None:
    answer = _report(hub_server, "xavier-1", "xavier", 8)
    assert answer.status_code == 200, answer.text
    assert answer.json()["labels"]["machine"] == "xavier"
    with hub_server.client() as c:
        (node,) = c.get("/v1/cluster/nodes").json()
        assert node["name"] == "xavier-1" and node["allocatable"]["memory_bytes"] == 8 * GI and node["online"]
        assert c.get("/v1/devices/xavier-1").json()["labels"]["machine"] == "xavier"  # merged into the device
        # an admin token may not report as a device; a device may not list the cluster
        assert c.put("/v1/device/node", json={}).status_code == 403
    credential = enroll_device(hub_server, "other")
    assert httpx.get(hub_server.url + "/v1/cluster/nodes",
                     headers={"Authorization": f"Bearer {credential}"}).status_code == 403
    assert httpx.get(hub_server.url + "/v1/cluster/nodes").status_code == 401


def test_bad_node_reports_are_refused_with_reasons(hub_server: HubServer) -> None:
    credential = enroll_device(hub_server, "n1")
    headers = {"Authorization": f"Bearer {credential}"}
    capacity = {"memory_bytes": GI, "cpu_millis": 1000}
    base = {"allocatable": capacity, "measured": capacity, "address": "127.0.0.1"}
    for body, status in [({**base, "address": "bad host/x"}, 422), ({**base, "tier": "moon"}, 422),
                         ({**base, "allocatable": {"memory_bytes": -1}}, 422),
                         ({**base, "port_min": 32000, "port_max": 31000}, 422), ({}, 422)]:
        answer = httpx.put(hub_server.url + "/v1/device/node", json=body, headers=headers)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["error"]["code"] in ("VALIDATION_ERROR", "INVALID_ARGUMENT")


def test_service_types_round_trip_and_bad_ones_are_refused(hub_server: HubServer) -> None:
    answer = _scalar(hub_server)
    assert answer.status_code == 200, answer.text
    with hub_server.client() as c:
        assert [t["name"] for t in c.get("/v1/cluster/service-types").json()] == ["scalar"]
        assert c.get("/v1/cluster/service-types/scalar").json()["resources"]["requests"]["memory"] == "3417969Ki"
        bad = c.put("/v1/cluster/service-types/scalar", json={"name": "scalar", "component": "x", "window": 0})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "SERVICE_TYPE_INVALID"
        assert "window" in bad.json()["error"]["message"]
        other = c.put("/v1/cluster/service-types/image", json=SHIPPED["scalar"].to_wire())
        assert other.status_code == 400 and "path" in other.json()["error"]["message"]
        unknown = c.put("/v1/cluster/service-types/image", json=SHIPPED["image"].to_wire())
        assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "UNKNOWN_COMPONENT"
        missing = c.get("/v1/cluster/service-types/nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "SERVICE_TYPE_NOT_FOUND"
        assert c.delete("/v1/cluster/service-types/scalar").status_code == 204


def test_admission_refusals_are_specific(hub_server: HubServer) -> None:
    with hub_server.client() as c:
        unknown = c.post("/v1/cluster/sessions", json={"type": "nope", "client_id": "c1"})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "SERVICE_TYPE_NOT_FOUND"
    _scalar(hub_server)
    with hub_server.client() as c:
        nobody = c.post("/v1/cluster/sessions", json={"type": "scalar", "client_id": "c1"})
        assert nobody.status_code == 422 and nobody.json()["error"]["code"] == "SERVICE_UNSCHEDULABLE"
        bad = c.post("/v1/cluster/sessions", json={"type": "scalar", "client_id": "\x01"})
        assert bad.status_code == 422
    _report(hub_server, "nano-1", "nano", 64)
    with hub_server.client() as c:
        nano = c.post("/v1/cluster/sessions", json={"type": "scalar", "client_id": "c1"})
        assert nano.status_code == 422 and "required affinity" in nano.json()["error"]["message"]
    _report(hub_server, "small", "xavier", 1)
    _scalar(hub_server, resources={"requests": {"memory": "512Mi"}})
    with hub_server.client() as c:
        c.post("/v1/cluster/sessions", json={"type": "scalar", "client_id": "c1", "wait_seconds": 0.5})
        # a replica that never answers (no agent runs on "small") is taken back: REPLICA_NOT_READY, retryable
        again = c.post("/v1/cluster/sessions", json={"type": "scalar", "client_id": "c2", "wait_seconds": 0.5})
        assert again.status_code == 503 and again.json()["error"]["code"] == "REPLICA_NOT_READY", again.text
        replicas = c.get("/v1/cluster/replicas").json()
        assert replicas and all(r["status"] == "FAILED" for r in replicas)
        assert "did not become ready" in replicas[0]["reason"]
        sessions = c.get("/v1/cluster/sessions", params={"active": "false"}).json()
        assert sessions and all(s["status"] == "ENDED" for s in sessions)
        assert c.get("/v1/cluster/sessions", params={"active": "true"}).json() == []
        assert c.get("/v1/cluster/sessions/nope").json()["error"]["code"] == "SESSION_NOT_FOUND"


def test_the_original_clients_route_takes_a_token_parameter_and_offloads(hub_server: HubServer) -> None:
    _scalar(hub_server)
    params = {"type": "scalar", "clientID": "80", "clienttime": "2026-12-02 03:00:00.000"}
    assert httpx.get(hub_server.url + "/app-service", params=params).status_code == 401
    assert httpx.get(hub_server.url + "/app-service", params={**params, "token": "rst_admin_wrong"}).status_code == 401
    _report(hub_server, "centre-1", "server", 64, tier="centre")  # no edge node has room: offload
    full = httpx.get(hub_server.url + "/app-service", params={**params, "token": hub_server.token})
    assert full.status_code == 200 and full.json() == {"service_port": "0", "offloading": 1}
    posted = httpx.post(hub_server.url + "/app-service", params=params,
                        headers={"Authorization": f"Bearer {hub_server.token}"})
    assert posted.json() == {"service_port": "0", "offloading": 1}
    missing = httpx.get(hub_server.url + "/app-service", params={"clientID": "80", "token": hub_server.token})
    assert missing.status_code == 422
    # the token parameter is for the original client's routes only
    assert httpx.get(hub_server.url + "/v1/cluster/nodes", params={"token": hub_server.token}).status_code == 401
