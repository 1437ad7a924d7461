"""The REST API over a real uvicorn server: auth, uploads, downloads, long poll, reports, errors."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from tests.hub.conftest import HubServer, enroll_device, make_recipe, publish


def error_code(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    code: str = body["error"]["code"]
    return code


def concrete_path(path: str) -> str:
    return (path.replace("{name}", "n1").replace("{version}", "1.0.0").replace("{file}", "f")
            .replace("{device}", "d").replace("{deployment_id}", "00000000-0000-0000-0000-000000000000"))


def test_every_endpoint_requires_a_token(hub_server: HubServer) -> None:
    spec = httpx.get(hub_server.url + "/openapi.json", timeout=40).json()  # built on the first read: slow when loaded
    checked = 0
    with hub_server.client(token=None) as anon, hub_server.client(token="rst_admin_wrong") as wrong:
        for path, methods in spec["paths"].items():
            for method in methods:
                if path == "/v1/enroll":
                    continue
                for client in (anon, wrong):
                    r = client.request(method.upper(), concrete_path(path), content=b"{not json")
                    assert r.status_code == 401, (method, path, r.text)
                    assert error_code(r) in ("UNAUTHORIZED", "INVALID_TOKEN")
                checked += 1
    assert checked >= 16


def test_device_token_is_refused_on_admin_endpoints_and_admin_on_device_ones(hub_server: HubServer) -> None:
    credential = enroll_device(hub_server, "dev-a")
    spec = httpx.get(hub_server.url + "/openapi.json", timeout=40).json()  # built on the first read: slow when loaded
    with hub_server.client(token=credential) as dev, hub_server.client() as admin:
        for path, methods in spec["paths"].items():
            for method in methods:
                if path == "/v1/enroll" or path.startswith("/v1/artifacts"):
                    continue
                if path.startswith("/v1/device/"):
                    r = admin.request(method.upper(), concrete_path(path), json={})
                else:
                    r = dev.request(method.upper(), concrete_path(path), json={})
                assert r.status_code == 403, (method, path, r.text)
                assert error_code(r) == "FORBIDDEN"


def test_enrolment_errors(hub_server: HubServer) -> None:
    with hub_server.client() as admin:
        token = admin.post("/v1/enroll-tokens", json={"ttl_seconds": 60}).json()["token"]
        r = httpx.post(hub_server.url + "/v1/enroll", json={"token": token, "name": "e1"})
        assert r.status_code == 201 and r.json()["device"] == "e1"
        r = httpx.post(hub_server.url + "/v1/enroll", json={"token": token, "name": "e2"})
        assert (r.status_code, error_code(r)) == (410, "ENROLL_TOKEN_USED")
        r = httpx.post(hub_server.url + "/v1/enroll", json={"token": "rst_enroll_x", "name": "e3"})
        assert (r.status_code, error_code(r)) == (401, "ENROLL_TOKEN_INVALID")
        token2 = admin.post("/v1/enroll-tokens", json={}).json()["token"]
        r = httpx.post(hub_server.url + "/v1/enroll", json={"token": token2, "name": "../../etc"})
        assert (r.status_code, error_code(r)) == (400, "INVALID_NAME")
        r = httpx.post(hub_server.url + "/v1/enroll", json={"token": token2})
        assert (r.status_code, error_code(r)) == (422, "VALIDATION_ERROR")


def test_expired_enrolment_token(hub_server_factory: Callable[..., HubServer]) -> None:
    from tests.hub.conftest import FakeClock
    clock = FakeClock()
    hub = hub_server_factory(clock=clock)
    with hub.client() as admin:
        token = admin.post("/v1/enroll-tokens", json={"ttl_seconds": 5}).json()["token"]
    clock.advance(seconds=6)
    r = httpx.post(hub.url + "/v1/enroll", json={"token": token, "name": "late"})
    assert (r.status_code, error_code(r)) == (401, "ENROLL_TOKEN_EXPIRED")


def test_upload_download_with_digest(hub_server: HubServer) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    credential = enroll_device(hub_server, "dl-1")
    with hub_server.client() as admin:
        r = publish(admin, "com.example.Big", "1.0.0", files={"model.bin": payload, "run.py": b"print(1)\n"})
        assert r.status_code == 201, r.text
        sha = hashlib.sha256(payload).hexdigest()
        assert {a["file"]: a["sha256"] for a in r.json()["artifacts"]}["model.bin"] == sha
        recipe = admin.get("/v1/components/com.example.Big/1.0.0").json()["recipe"]
        digests = {a["URI"].rsplit("/", 1)[-1]: a["Digest"] for a in recipe["Manifests"][0]["Artifacts"]}
        assert digests["model.bin"] == base64.b64encode(hashlib.sha256(payload).digest()).decode()
        r = publish(admin, "com.example.Big", "1.0.0", files={"model.bin": b"x", "run.py": b"y"})
        assert (r.status_code, error_code(r)) == (409, "VERSION_EXISTS")
        with admin.stream("GET", "/v1/artifacts/com.example.Big/1.0.0/model.bin") as resp:
            assert resp.status_code == 200
            assert resp.headers["X-Roost-Sha256"] == sha
            assert hashlib.sha256(resp.read()).hexdigest() == sha
        assert admin.get("/v1/components").json()[0]["name"] == "com.example.Big"
        dep = admin.post("/v1/deployments", json={"target": "device:dl-1",
                                                  "components": {"com.example.Big": "1.0.0"}})
        assert dep.status_code == 201, dep.text
    with hub_server.client(token=credential) as dev:
        r = dev.get("/v1/artifacts/com.example.Big/1.0.0/run.py")
        assert r.status_code == 200 and r.content == b"print(1)\n"
        assert r.headers["X-Roost-Sha256"] == hashlib.sha256(b"print(1)\n").hexdigest()
        r = dev.get("/v1/artifacts/com.example.Big/1.0.0/nope.bin")
        assert (r.status_code, error_code(r)) == (404, "ARTIFACT_NOT_FOUND")


def test_oversize_upload_is_413(hub_server_factory: Callable[..., HubServer]) -> None:
    hub = hub_server_factory(max_artifact_bytes=64 * 1024)
    with hub.client() as admin:
        r = publish(admin, "com.example.Huge", "1.0.0", files={"big.bin": b"\0" * (256 * 1024)})
        assert (r.status_code, error_code(r)) == (413, "ARTIFACT_TOO_LARGE")
        assert "65536" in r.json()["error"]["message"]
        assert admin.get("/v1/components").json() == []
        r = publish(admin, "com.example.Huge", "1.0.0", files={"big.bin": b"\0" * 1024})
        assert r.status_code == 201, r.text
    leftovers = list((hub.root / "artifacts" / ".staging").iterdir())
    assert leftovers == []


def test_bad_uploads(hub_server: HubServer) -> None:
    with hub_server.client() as admin:
        r = publish(admin, files={"../evil.py": b"x"}, recipe=make_recipe(files=("evil.py",)))
        assert (r.status_code, error_code(r)) == (400, "INVALID_PATH")
        assert "'../evil.py'" in r.json()["error"]["message"]
        bad_recipe = b'RecipeFormatVersion: "2020-01-25"\nComponentName: com.example.X\nComponentVersion: banana\n'
        r = publish(admin, files={}, recipe=bad_recipe)
        assert (r.status_code, error_code(r)) == (422, "RECIPE_INVALID")
        assert "ComponentVersion" in r.json()["error"]["message"]
        r = publish(admin, files={}, recipe=b"ComponentName: [unclosed")
        assert (r.status_code, error_code(r)) == (422, "RECIPE_INVALID")
        r = publish(admin, files={"other.py": b"x"}, recipe=make_recipe(files=("hello.py",)))
        assert (r.status_code, error_code(r)) == (422, "ARTIFACT_MISSING")
        assert "hello.py" in r.json()["error"]["message"]
        r = admin.post("/v1/components", content=b"{}", headers={"content-type": "application/json"})
        assert (r.status_code, error_code(r)) == (422, "INVALID_UPLOAD")
        r = admin.get("/v1/components/com.example.Nope/1.0.0")
        assert (r.status_code, error_code(r)) == (404, "COMPONENT_NOT_FOUND")
        r = admin.get("/v1/artifacts/com.example.X/1.0.0/..")
        assert r.status_code in (400, 404)
        r = admin.get("/v1/artifacts/com.example.X/1.0.0/%2e%2e")
        assert r.status_code in (400, 404)
        r = admin.get("/v1/artifacts/com.example.X/1.0.0/a%5cb")
        assert (r.status_code, error_code(r)) == (400, "INVALID_PATH")
        r = admin.post("/v1/deployments", json={"target": "group:g", "components": {"com.example.Nope": "1.0.0"}})
        assert (r.status_code, error_code(r)) == (422, "UNKNOWN_COMPONENT")
        assert "com.example.Nope" in r.json()["error"]["message"]
        r = admin.post("/v1/deployments", json={"target": "device:ghost", "components": {}})
        assert (r.status_code, error_code(r)) == (404, "DEVICE_NOT_FOUND")
        r = admin.get("/v1/deployments/not-a-uuid")
        assert (r.status_code, error_code(r)) == (404, "DEPLOYMENT_NOT_FOUND")
        r = admin.post("/v1/deployments", json={"target": "group:nogroup", "components": {}})
        assert (r.status_code, error_code(r)) == (404, "GROUP_NOT_FOUND")
        assert "nogroup" in r.json()["error"]["message"]
        assert all(g["name"] != "nogroup" for g in admin.get("/v1/groups").json())
        r = admin.post("/v1/deployments", json={"target": "group:nogroup", "components": {}, "create_group": True})
        assert r.status_code == 201 and r.json()["target"] == "group:nogroup"
        prefix = r.json()["id"][:8]
        r = admin.get(f"/v1/deployments/{prefix}")
        assert r.status_code == 200 and r.json()["id"].startswith(prefix)
        r = admin.post(f"/v1/deployments/{prefix}/cancel")
        assert (r.status_code, error_code(r)) == (409, "DEPLOYMENT_FINISHED")  # no devices: COMPLETED at once


def test_device_isolation(hub_server: HubServer) -> None:
    cred_a = enroll_device(hub_server, "iso-a")
    cred_b = enroll_device(hub_server, "iso-b")
    with hub_server.client() as admin:
        assert publish(admin, "com.example.Secret", "1.0.0").status_code == 201
        r = admin.post("/v1/deployments", json={"target": "device:iso-a",
                                                "components": {"com.example.Secret": "1.0.0"}})
        assert r.status_code == 201
    with hub_server.client(token=cred_a) as a, hub_server.client(token=cred_b) as b:
        state_a = a.get("/v1/device/desired").json()
        assert set(state_a["components"]) == {"com.example.Secret"}
        state_b = b.get("/v1/device/desired").json()
        assert state_b["components"] == {}
        r = b.get("/v1/artifacts/com.example.Secret/1.0.0/hello.py")
        assert (r.status_code, error_code(r)) == (403, "ARTIFACT_FORBIDDEN")
        assert a.get("/v1/artifacts/com.example.Secret/1.0.0/hello.py").status_code == 200
    # Revocation cuts the device off at once.
    with hub_server.client() as admin:
        assert admin.post("/v1/devices/iso-a/revoke").json()["revoked"] is True
    with hub_server.client(token=cred_a) as a:
        # The hub remembers credentials it has checked; revocation still holds on every device call.
        r = a.get("/v1/device/desired")
        assert (r.status_code, error_code(r)) == (401, "DEVICE_REVOKED")
        r = a.post("/v1/device/reports", json={"reports": [{"id": "late", "revision": 1}]})
        assert (r.status_code, error_code(r)) == (401, "DEVICE_REVOKED")
        r = a.get("/v1/artifacts/com.example.Secret/1.0.0/hello.py")
        assert (r.status_code, error_code(r)) == (401, "DEVICE_REVOKED")


def test_long_poll_wakes_on_deployment_and_reports(hub_server: HubServer) -> None:
    credential = enroll_device(hub_server, "lp-1", group="lp")
    with hub_server.client(token=credential) as dev, hub_server.client() as admin:
        assert publish(admin, "com.example.A", "1.0.0").status_code == 201
        first = dev.get("/v1/device/desired").json()
        start = time.monotonic()
        r = dev.get("/v1/device/desired", params={"after": first["revision"], "wait": 1})
        assert r.status_code == 204 and 0.9 <= time.monotonic() - start < 5
        result: dict[str, httpx.Response] = {}

        def poll() -> None:
            result["r"] = dev.get("/v1/device/desired", params={"after": first["revision"], "wait": 20})

        thread = threading.Thread(target=poll)
        start = time.monotonic()
        thread.start()
        time.sleep(0.5)
        dep = admin.post("/v1/deployments", json={"target": "group:lp", "components": {"com.example.A": "1.0.0"},
                                                  "configuration": {"com.example.A": {"MERGE": {"k": "v"}}}}).json()
        thread.join(timeout=25)
        assert time.monotonic() - start < 5
        state = result["r"].json()
        assert state["revision"] > first["revision"] and state["deployments"] == [dep["id"]]
        comp = state["components"]["com.example.A"]
        assert comp["version"] == "1.0.0" and comp["configuration"] == {"MERGE": {"k": "v"}}
        assert comp["recipe"]["Manifests"][0]["Artifacts"][0]["Digest"]
        report = {"id": "r-1", "deployment_id": dep["id"], "revision": state["revision"], "status": "SUCCEEDED",
                  "components": {"com.example.A": {"version": "1.0.0", "state": "RUNNING"}},
                  "at": "2030-01-01T00:00:00Z"}
        r = dev.post("/v1/device/reports", json={"reports": [report]})
        assert r.status_code == 200 and r.json() == {"accepted": ["r-1"], "duplicates": [], "revisions_ignored": []}
        r = dev.post("/v1/device/reports", json={"reports": [report]})
        assert r.json() == {"accepted": [], "duplicates": ["r-1"], "revisions_ignored": []}
        info = admin.get(f"/v1/deployments/{dep['id']}").json()
        assert info["status"] == "COMPLETED" and info["counts"]["SUCCEEDED"] == 1
        assert info["devices"][0]["device"] == "lp-1"
        device = admin.get("/v1/devices/lp-1").json()
        assert device["components"] == {"com.example.A": {"version": "1.0.0", "state": "RUNNING"}}
        assert device["status"] == "ONLINE" and device["groups"] == ["lp"]
        assert admin.get("/v1/deployments").json()[0]["id"] == dep["id"]
        r = admin.post(f"/v1/deployments/{dep['id']}/cancel")
        assert (r.status_code, error_code(r)) == (409, "DEPLOYMENT_FINISHED")


def test_groups_and_labels_endpoints(hub_server: HubServer) -> None:
    enroll_device(hub_server, "g-1")
    with hub_server.client() as admin:
        r = admin.post("/v1/groups/edge/members", json={"devices": ["g-1"]})
        assert r.status_code == 200 and r.json() == {"name": "edge", "devices": ["g-1"]}
        assert admin.get("/v1/groups").json() == [{"name": "edge", "devices": ["g-1"]}]
        r = admin.put("/v1/devices/g-1/labels", json={"labels": {"machine": "xavier"}})
        assert r.json()["labels"] == {"machine": "xavier"}
        r = admin.delete("/v1/groups/edge/members/g-1")
        assert r.json()["devices"] == []
        r = admin.post("/v1/groups/edge/members", json={"devices": ["nobody"]})
        assert (r.status_code, error_code(r)) == (404, "DEVICE_NOT_FOUND")
        r = admin.get("/v1/devices/nobody")
        assert (r.status_code, error_code(r)) == (404, "DEVICE_NOT_FOUND")


@pytest.mark.parametrize("path", ["/v1/nowhere", "/openapi.json"])
def test_unknown_paths_and_openapi(hub_server: HubServer, path: str) -> None:
    with hub_server.client() as admin:
        r = admin.get(path)
    if path == "/openapi.json":
        assert r.status_code == 200 and "/v1/device/desired" in r.json()["paths"]
    else:
        assert (r.status_code, error_code(r)) == (404, "NOT_FOUND")


def test_device_downloads_small_artifacts_from_memory_and_large_ones_streamed(hub_server: HubServer) -> None:
    import hashlib

    from roost.hub.store import INLINE_ARTIFACT_BYTES

    small, large = b"tiny\n" * 10, bytes(range(256)) * (INLINE_ARTIFACT_BYTES // 256 + 300)
    credential = enroll_device(hub_server, "dl-1")
    with hub_server.client() as admin:
        assert publish(admin, "com.example.Dl", "1.0.0", files={"s.txt": small, "l.bin": large}).status_code == 201
        assert admin.post("/v1/deployments", json={"target": "device:dl-1",
                                                   "components": {"com.example.Dl": "1.0.0"}}).status_code == 201
    with hub_server.client(token=credential) as dev:
        for file_name, data in (("s.txt", small), ("l.bin", large)):
            r = dev.get(f"/v1/artifacts/com.example.Dl/1.0.0/{file_name}")
            assert r.status_code == 200 and r.content == data
            assert r.headers["x-roost-sha256"] == hashlib.sha256(data).hexdigest()
            assert r.headers["content-type"] == "application/octet-stream"
            assert file_name in r.headers["content-disposition"]
        r = dev.get("/v1/artifacts/com.example.Dl/1.0.0/absent.bin")
        assert (r.status_code, error_code(r)) == (404, "ARTIFACT_NOT_FOUND")


def test_a_device_reports_only_on_its_own_deployments_and_revisions(hub_server: HubServer) -> None:
    own = enroll_device(hub_server, "rep-own")
    other = enroll_device(hub_server, "rep-other")
    with hub_server.client() as admin:
        assert publish(admin, "com.example.A", "1.0.0").status_code == 201
        dep = admin.post("/v1/deployments", json={"target": "device:rep-own",
                                                  "components": {"com.example.A": "1.0.0"}}).json()
    running = {"com.example.A": {"version": "1.0.0", "state": "RUNNING"}}
    with hub_server.client(token=own) as a, hub_server.client(token=other) as b, hub_server.client() as admin:
        given_a = a.get("/v1/device/desired").json()["revision"]
        given_b = b.get("/v1/device/desired").json()["revision"]
        assert given_b < given_a
        # Another device's deployment: 403, and nothing of the request is applied.
        forged = {"id": "forged", "deployment_id": dep["id"], "revision": given_b, "status": "FAILED",
                  "components": running}
        r = b.post("/v1/device/reports", json={"reports": [forged]})
        assert (r.status_code, error_code(r)) == (403, "DEPLOYMENT_NOT_FOR_DEVICE")
        assert dep["id"] in r.json()["error"]["message"]
        # A revision this device was never given (another device's): 409, nothing applied.
        r = b.post("/v1/device/reports", json={"reports": [{"id": "future", "revision": given_a}]})
        assert (r.status_code, error_code(r)) == (409, "REVISION_NOT_GIVEN")
        info = admin.get(f"/v1/deployments/{dep['id']}").json()
        assert [(d["device"], d["status"]) for d in info["devices"]] == [("rep-own", "IN_PROGRESS")]
        device_b = admin.get("/v1/devices/rep-other").json()
        assert device_b["applied_revision"] is None and device_b["components"] == {}
        # The device's own deployment and revision: accepted; an older revision later is not applied.
        done = {"id": "done", "deployment_id": dep["id"], "revision": given_a, "status": "SUCCEEDED",
                "components": running}
        r = a.post("/v1/device/reports", json={"reports": [done]})
        assert r.status_code == 200 and r.json() == {"accepted": ["done"], "duplicates": [], "revisions_ignored": []}
        r = a.post("/v1/device/reports", json={"reports": [{"id": "reset", "revision": 0}]})
        assert r.status_code == 200 and r.json() == {"accepted": ["reset"], "duplicates": [],
                                                     "revisions_ignored": ["reset"]}
        device_a = admin.get("/v1/devices/rep-own").json()
        assert device_a["applied_revision"] == given_a
        assert admin.get(f"/v1/deployments/{dep['id']}").json()["status"] == "COMPLETED"


def test_a_forged_report_in_a_coalesced_batch_is_refused_alone(hub_server: HubServer) -> None:
    """Reports of several devices held while the database is locked go to the store as one batch;
    the forged ones get their own 403/409, the honest ones are applied."""
    import sqlite3

    names = [f"bat-{i}" for i in range(5)]
    creds = {n: enroll_device(hub_server, n, group="bat") for n in names}
    intruder = enroll_device(hub_server, "bat-intruder")
    with hub_server.client() as admin:
        assert publish(admin, "com.example.A", "1.0.0").status_code == 201
        dep = admin.post("/v1/deployments", json={"target": "group:bat",
                                                  "components": {"com.example.A": "1.0.0"}}).json()
    given = {}
    for name, cred in [*creds.items(), ("bat-intruder", intruder)]:
        with hub_server.client(token=cred) as dev:
            given[name] = dev.get("/v1/device/desired").json()["revision"]
    blocker = (creds["bat-4"], {"id": "bat-4-ok", "deployment_id": dep["id"], "revision": given["bat-4"],
                                "status": "SUCCEEDED"})
    bodies: list[tuple[str, dict[str, object]]] = [
        (creds[n], {"id": f"{n}-ok", "deployment_id": dep["id"], "revision": given[n], "status": "SUCCEEDED"})
        for n in names[:3]]
    bodies.insert(1, (intruder, {"id": "intruder", "deployment_id": dep["id"], "revision": given["bat-intruder"],
                                 "status": "FAILED"}))
    bodies.insert(3, (creds["bat-3"], {"id": "too-new", "deployment_id": dep["id"],
                                       "revision": given["bat-3"] + 1, "status": "SUCCEEDED"}))
    app = hub_server._server.config.app
    assert isinstance(app, FastAPI)
    coalescer = app.state.device_batches.reports
    answers: dict[str, httpx.Response] = {}

    def send(cred: str, report: dict[str, object]) -> None:
        with hub_server.client(token=cred) as dev:
            answers[str(report["id"])] = dev.post("/v1/device/reports", json={"reports": [report]})

    def until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 20  # a bound on a hang, not a measurement
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.01)

    threads = [threading.Thread(target=send, args=body) for body in [blocker, *bodies]]
    lock = sqlite3.connect(hub_server.root / "hub.db", timeout=30, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the hub's report transactions wait for this write lock
    try:
        batches_before = coalescer.batches
        # On SQLite one batch runs at a time: the blocker's, waiting for the lock; the others queue
        # behind it and go together as the next batch.
        threads[0].start()
        until(lambda: coalescer._in_flight == 1, "the first report did not reach the store")
        for t in threads[1:]:
            t.start()
        until(lambda: len(coalescer._queue) == len(bodies), "the reports did not queue")
    finally:
        lock.execute("COMMIT")
        lock.close()
    for t in threads:
        t.join(timeout=30)
    assert coalescer.batches - batches_before == 2 and coalescer.largest_batch >= len(bodies)
    codes = {k: (r.status_code, r.json().get("error", {}).get("code")) for k, r in answers.items()}
    assert codes == {"bat-0-ok": (200, None), "bat-1-ok": (200, None), "bat-2-ok": (200, None),
                     "bat-4-ok": (200, None), "intruder": (403, "DEPLOYMENT_NOT_FOR_DEVICE"),
                     "too-new": (409, "REVISION_NOT_GIVEN")}
    with hub_server.client() as admin:
        info = admin.get(f"/v1/deployments/{dep['id']}").json()
        assert {d["device"]: d["status"] for d in info["devices"]} == {
            "bat-0": "SUCCEEDED", "bat-1": "SUCCEEDED", "bat-2": "SUCCEEDED", "bat-3": "IN_PROGRESS",
            "bat-4": "SUCCEEDED"}
        applied = {n: admin.get(f"/v1/devices/{n}").json()["applied_revision"] for n in [*names, "bat-intruder"]}
    assert applied == {**{n: given[n] for n in ("bat-0", "bat-1", "bat-2", "bat-4")}, "bat-3": None,
                       "bat-intruder": None}
