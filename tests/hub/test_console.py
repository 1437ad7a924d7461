"""The web console over a real hub (uvicorn) with plain httpx: auth redirects, sign-in and
sign-out with CSRF checks, sessions shared by hub processes, every page rendered and escaped.

``seed`` (also used by the Chromium test) creates a small fleet through the REST API.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import update

from roost.hub.console import sessions
from roost.hub.models import ApiToken
from roost.hub.store import Store
from tests.hub.conftest import HubServer, enroll_device, make_recipe, publish

XSS = "<script>alert('x')</script>"
IMG = '<img src=x onerror="alert(1)">'


@dataclass
class Fleet:
    deployment_id: str
    failed_deployment_id: str


def seed(hub: HubServer) -> Fleet:
    """Devices, components, deployments and device reports, created through the REST API."""
    creds = {name: enroll_device(hub, name, group="line-a") for name in ("edge-01", "edge-02", "edge-03")}
    creds["edge-04"] = enroll_device(hub, "edge-04")
    with hub.client() as admin:
        for name, labels in (("edge-01", {"arch": "aarch64", "machine": "xavier", "memory": "32GB"}),
                             ("edge-02", {"arch": "aarch64", "machine": "tx2", "memory": "8GB"}),
                             ("edge-03", {"arch": "x86_64", "note": XSS})):
            assert admin.put(f"/v1/devices/{name}/labels", json={"labels": labels}).status_code == 200
        assert publish(admin, "com.example.WineQuality", "1.0.0",
                       files={"model.json": b"{}" * 900, "handler.py": b"print('hi')\n"}).status_code == 201
        assert publish(admin, "com.example.WineQuality", "1.1.0",
                       files={"model.json": b"{}" * 1200, "handler.py": b"print('hi')\n"}).status_code == 201
        assert publish(admin, "com.example.Sensor", "0.3.0").status_code == 201
        dep = admin.post("/v1/deployments", json={
            "target": "group:line-a", "components": {"com.example.WineQuality": "1.1.0", "com.example.Sensor": "0.3.0"},
            "abort_failure_percent": 60, "abort_min_devices": 3}).json()
        solo = admin.post("/v1/deployments", json={
            "target": "device:edge-04", "components": {"com.example.Sensor": "0.3.0"}}).json()
    reports = {
        "edge-01": ("SUCCEEDED", None, None, {"com.example.WineQuality": ("1.1.0", "RUNNING"),
                                              "com.example.Sensor": ("0.3.0", "RUNNING")}),
        "edge-02": ("FAILED", "COMPONENT_BROKEN", f"Sensor exited 3 times {IMG}",
                    {"com.example.WineQuality": ("1.0.0", "RUNNING"), "com.example.Sensor": ("0.3.0", "BROKEN")}),
        "edge-04": ("FAILED", "INSTALL_FAILED", "pip install failed", {"com.example.Sensor": ("0.3.0", "ERRORED")}),
    }
    for name, (status, reason, message, components) in reports.items():
        deployment_id = solo["id"] if name == "edge-04" else dep["id"]
        with hub.client(token=creds[name]) as device:
            state = device.get("/v1/device/desired").json()
            report = {"id": f"r-{name}", "deployment_id": deployment_id, "revision": state["revision"],
                      "status": status, "reason_code": reason, "message": message,
                      "components": {c: {"version": v, "state": s} for c, (v, s) in components.items()},
                      "at": datetime.now(UTC).isoformat()}
            r = device.post("/v1/device/reports", json={"reports": [report]})
            assert r.status_code == 200 and r.json()["accepted"] == [f"r-{name}"], r.text
    with hub.client() as admin:
        assert admin.post("/v1/devices/edge-04/revoke").status_code == 200
    return Fleet(deployment_id=dep["id"], failed_deployment_id=solo["id"])


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def sign_in(hub: HubServer, client: httpx.Client) -> None:
    form = client.get("/console/login")
    r = client.post("/console/login", data={"token": hub.token, "csrf": csrf_of(form.text)})
    assert r.status_code == 303 and r.headers["location"] == "/console/devices", r.text


def browser(hub: HubServer) -> httpx.Client:
    return httpx.Client(base_url=hub.url, timeout=30)


def page_routes(fleet: Fleet | None = None) -> list[str]:
    dep = fleet.deployment_id if fleet else str(uuid.uuid4())
    return ["/console", "/console/", "/console/devices", "/console/devices/edge-01", "/console/components",
            "/console/deployments", f"/console/deployments/{dep}", "/console/cluster", "/console/learn"]


# -- auth ------------------------------------------------------------------------------------------


def test_every_page_redirects_to_sign_in_without_a_session(hub_server: HubServer) -> None:
    with httpx.Client(base_url=hub_server.url, timeout=30, follow_redirects=False) as client:
        for path in page_routes():
            r = client.get(path)
            assert r.status_code == 303, path
            location = r.headers["location"]
            assert location.startswith("/console/login") or location == "/console/devices", (path, location)
            if path.startswith(("/console/d", "/console/cluster", "/console/learn")) and path != "/console/devices":
                assert location == "/console/login?next=" + path.replace("/", "%2F"), location
        # Following the chain always lands on the sign-in form.
        r = client.get("/console/deployments", follow_redirects=True)
        assert r.status_code == 200 and "<h1>Sign in</h1>" in r.text
        # A bearer token is not a console session, and neither is a forged or garbage cookie.
        r = client.get("/console/devices", headers={"Authorization": f"Bearer {hub_server.token}"})
        assert r.status_code == 303
        client.cookies.set("roost_console", "eyJ0IjoxLCJjIjoieCJ9.AAAAAA.forged", path="/console")
        r = client.get("/console/devices")
        assert r.status_code == 303 and 'roost_console=""' in r.headers.get("set-cookie", "")
        r = client.post("/console/logout", data={"csrf": "x"})
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
        # The stylesheet is public (the sign-in page needs it) and local.
        css = client.get("/console/static/console.css")
        assert css.status_code == 200 and "text/css" in css.headers["content-type"]


def test_sign_in_rejects_wrong_tokens_and_forged_forms(hub_server: HubServer) -> None:
    credential = enroll_device(hub_server, "dev-1")
    with httpx.Client(base_url=hub_server.url, timeout=30) as client:
        form = client.get("/console/login")
        assert form.status_code == 200
        csp = form.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
        assert form.headers["x-frame-options"] == "DENY"
        login_cookie = form.headers["set-cookie"]
        assert "HttpOnly" in login_cookie and "SameSite=strict" in login_cookie and "Path=/console" in login_cookie
        csrf = csrf_of(form.text)

        r = client.post("/console/login", data={"token": "rst_admin_wrong", "csrf": csrf})
        assert r.status_code == 401 and "was not accepted" in r.text and "roost_console=" not in str(r.cookies)
        r = client.post("/console/login", data={"token": credential, "csrf": csrf_of(r.text)})
        assert r.status_code == 403 and "Device credentials cannot sign in" in r.text
        r = client.post("/console/login", data={"token": "", "csrf": csrf_of(r.text)})
        assert r.status_code == 401
        # The right token with a wrong, missing or cross-site form is refused.
        r = client.post("/console/login", data={"token": hub_server.token, "csrf": "not-the-nonce"})
        assert r.status_code == 403 and "expired or came from another site" in r.text
        r = client.post("/console/login", data={"token": hub_server.token, "csrf": csrf_of(r.text)},
                        headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
    with httpx.Client(base_url=hub_server.url, timeout=30) as fresh:  # no nonce cookie at all
        r = fresh.post("/console/login", data={"token": hub_server.token, "csrf": csrf})
        assert r.status_code == 403 and "roost_console" not in fresh.cookies


def test_session_cookie_holds_the_token_id_signed_and_http_only(hub_server: HubServer) -> None:
    with httpx.Client(base_url=hub_server.url, timeout=30) as client:
        form = client.get("/console/login", params={"next": "/console/components"})
        r = client.post("/console/login", data={"token": hub_server.token, "csrf": csrf_of(form.text),
                                                "next": "/console/components"})
        assert r.status_code == 303 and r.headers["location"] == "/console/components"
        set_cookie = next(v for v in r.headers.get_list("set-cookie") if v.startswith("roost_console="))
        assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie and "Path=/console" in set_cookie
        value = client.cookies["roost_console"]
        secret_part = hub_server.token.removeprefix("rst_admin_")
        assert secret_part not in value and secret_part[:12] not in value
        assert client.get("/console/components").status_code == 200
        # Signed: changing one character of the signature ends the session.
        # (its first character: all 6 of its bits are signature bits; the low bits of the last one are base64
        # padding, so changing only those can leave the signature as it was)
        head, _, sig = value.rpartition(".")
        client.cookies.set("roost_console", f"{head}.{'B' if sig[0] != 'B' else 'C'}{sig[1:]}", path="/console")
        assert client.get("/console/devices").status_code == 303
        # Signed in already: the form sends you on.
        client.cookies.set("roost_console", value, path="/console")
        assert client.get("/console/login").headers["location"] == "/console/devices"
    # Only console paths are allowed after sign-in (no open redirect).
    with httpx.Client(base_url=hub_server.url, timeout=30) as client:
        for evil in ("https://evil.example/", "//evil.example/x", "/v1/devices", "/console/\\evil"):
            client.cookies.clear()
            form = client.get("/console/login")
            r = client.post("/console/login", data={"token": hub_server.token, "csrf": csrf_of(form.text),
                                                    "next": evil})
            assert r.headers["location"] == "/console/devices", evil


def test_sign_out_needs_the_session_csrf_token(hub_server: HubServer) -> None:
    with browser(hub_server) as client:
        sign_in(hub_server, client)
        page = client.get("/console/devices")
        assert page.status_code == 200
        r = client.post("/console/logout", data={"csrf": "wrong"})
        assert r.status_code == 403 and "CSRF" in r.text
        assert client.get("/console/devices").status_code == 200  # still signed in
        r = client.post("/console/logout", data={"csrf": csrf_of(page.text)})
        assert r.status_code == 303 and r.headers["location"] == "/console/login?signed_out=1"
        assert "roost_console" not in client.cookies
        assert "You are signed out." in client.get(r.headers["location"]).text
        assert client.get("/console/devices").status_code == 303


def test_revoking_the_api_token_ends_its_sessions(hub_server: HubServer) -> None:
    with browser(hub_server) as client:
        sign_in(hub_server, client)
        assert client.get("/console/devices").status_code == 200
        with hub_server.store.db.write() as s:
            s.execute(update(ApiToken).values(revoked_at=datetime.now(UTC)))
        r = client.get("/console/devices")
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login")


def test_hub_processes_on_one_database_share_sessions(hub_server_factory: Callable[..., HubServer]) -> None:
    first = hub_server_factory()
    second = hub_server_factory(db_url=f"sqlite:///{first.root / 'hub.db'}")
    with browser(first) as client, browser(second) as other:
        sign_in(first, client)
        other.cookies.set("roost_console", client.cookies["roost_console"], path="/console")
        r = other.get("/console/devices")
        assert r.status_code == 200 and "<h1>Devices</h1>" in r.text


# -- pages ----------------------------------------------------------------------------------------


def test_pages_render_the_fleet_and_escape_everything(hub_server: HubServer) -> None:
    fleet = seed(hub_server)
    with browser(hub_server) as client:
        sign_in(hub_server, client)
        for path in page_routes(fleet):
            r = client.get(path, follow_redirects=True)
            assert r.status_code == 200 and r.url.path != "/console/login", (path, r.text)
            assert r.headers["content-type"].startswith("text/html")
            assert "<script" not in r.text and "<img" not in r.text, path

        devices = client.get("/console/devices").text
        for text in ("edge-01", "edge-02", "edge-03", "edge-04", "machine</b>=xavier", "line-a", "ONLINE",
                     "REVOKED", "UNHEALTHY", "HEALTHY", "just now"):
            assert text in devices, text
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in devices

        device = client.get("/console/devices/edge-02").text
        for text in ("com.example.Sensor", "BROKEN", "com.example.WineQuality", "1.0.0", "COMPONENT_BROKEN",
                     fleet.deployment_id, "group:line-a", "tx2"):
            assert text in device, text
        assert "Sensor exited 3 times &lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in device
        assert "&lt;script&gt;" in client.get("/console/devices/edge-03").text

        components = client.get("/console/components").text
        for text in ("com.example.WineQuality", "1.1.0", "1.0.0", "com.example.Sensor", "0.3.0", "model.json",
                     "handler.py", "2.3 KiB", "2 components · 3 versions", "latest 1.1.0"):
            assert text in components, text
        assert components.index("1.1.0") < components.index("1.0.0")  # newest first

        deployments = client.get("/console/deployments").text
        assert fleet.deployment_id[:8] in deployments and fleet.failed_deployment_id[:8] in deployments
        assert "1/3 done" in deployments or "2/3 done" in deployments

        page = client.get(f"/console/deployments/{fleet.deployment_id}").text
        for text in ("SUCCEEDED", "FAILED", "QUEUED", "COMPONENT_BROKEN", "edge-01", "edge-02", "edge-03",
                     "ROLLBACK", "abort above 60 %", 'class="bar"', "1 succeeded", "1 failed", "1 queued"):
            assert text in page, text
        assert "&lt;img src=x" in page
        widths = dict(re.findall(r'class="seg (\w+) w-(\d+)"', page))
        assert widths == {"ok": "34", "bad": "33", "wait": "33"}, widths

        revoked = client.get(f"/console/deployments/{fleet.failed_deployment_id}").text
        assert "INSTALL_FAILED" in revoked and "device:<a href=\"/console/devices/edge-04\">edge-04</a>" in revoked


def test_unknown_and_invalid_names_are_html_error_pages(hub_server: HubServer) -> None:
    with browser(hub_server) as client:
        sign_in(hub_server, client)
        r = client.get("/console/devices/nobody")
        assert r.status_code == 404 and "is not enrolled" in r.text
        assert r.headers["content-type"].startswith("text/html")
        r = client.get(f"/console/deployments/{uuid.uuid4()}")
        assert r.status_code == 404 and "does not exist" in r.text
        r = client.get("/console/devices/%3Cb%3E")
        assert r.status_code == 400 and "&lt;b&gt;" in r.text and "<b>'" not in r.text
        r = client.get("/console/nothing-here")
        assert r.status_code == 404


def test_learn_pages_show_each_job_its_reason_and_rounds(hub_server: HubServer) -> None:
    from roost.hub.contract import LearnJobIn
    from roost.learn.federated_job import JobState

    for name in ("vine-1", "vine-2", "vine-3"):
        enroll_device(hub_server, name, group="vines")
    store = hub_server.store  # the runner's record, as it writes it while the job runs
    job = store.create_learn_job(LearnJobIn(target="group:vines", task="wine", rounds=3, min_participants=2)).job
    store.update_learn_job(job, JobState.RUNNING)
    store.record_learn_round(job, {"round": 1, "participants": 3, "metric": 0.91234, "bytes": 2160, "seconds": 6.25,
                                   "rejected": []})
    store.record_learn_round(job, {"round": 2, "participants": 2, "metric": 0.8, "bytes": 1920, "seconds": 51.5,
                                   "rejected": [{"node": 42, "reason": f"corrupt update: {XSS}"}]})
    store.update_learn_job(job, JobState.FAILED, {"reason": f"LEARN_TOO_FEW_PARTICIPANTS: round 3 {IMG}"})
    with browser(hub_server) as client:
        sign_in(hub_server, client)
        listing = client.get("/console/learn").text
        for text in (job, "group:vines", "fedavg", "FAILED", "2/3", "0.8000", 'aria-current="page"'):
            assert text in listing, text
        page = client.get(f"/console/learn/{job}")
        assert page.status_code == 200 and "<script" not in page.text and "<img" not in page.text
        rows = re.findall(r"<tr>(.*?)</tr>", page.text.split('id="learn-rounds"')[1], re.S)
        cells = [found for row in rows if (found := re.findall(r'data-label="[^"]+"[^>]*>(.*?)</td>', row, re.S))]
        assert [c[:5] for c in cells] == [["1", "3", "0.9123", "2.1 KiB", "6.2"], ["2", "2", "0.8000", "1.9 KiB",
                                                                                  "51.5"]]
        assert "none" in cells[0][5] and "node 42: corrupt update: &lt;script&gt;" in cells[1][5]
        assert "LEARN_TOO_FEW_PARTICIPANTS: round 3 &lt;img src=x" in page.text
        for text in ("vine-1", "vine-3", "2 of 3", "2 of 3</dd>"):
            assert text in page.text, text
        missing = client.get("/console/learn/fl-nope")
        assert missing.status_code == 404 and "learn job fl-nope does not exist" in missing.text
        assert client.get("/console/learn/" + "x" * 65).status_code == 400


@pytest.mark.parametrize("path", ["/openapi.json"])
def test_console_is_not_in_the_api_document(hub_server: HubServer, path: str) -> None:
    with hub_server.client() as admin:
        paths = admin.get(path).json()["paths"]
    assert not [p for p in paths if p.startswith("/console")]


# -- the signing key --------------------------------------------------------------------------------


def test_signing_key_is_created_once_and_shared(store: Store) -> None:
    """Concurrent first uses agree on one key, kept in the database (SQLite and PostgreSQL)."""
    with ThreadPoolExecutor(max_workers=6) as pool:
        keys = set(pool.map(lambda _i: store.console_session_key(), range(12)))
    assert len(keys) == 1
    key = keys.pop()
    assert len(key) == 32 and store.console_session_key() == key
    cookie = sessions.new_session(key, 7)
    assert sessions.read_session(key, cookie) is not None
    assert sessions.read_session(b"x" * 32, cookie) is None
    assert sessions.read_session(key, cookie + "x") is None


def test_deployment_page_shows_the_resolved_dependencies(hub_server: HubServer) -> None:
    enroll_device(hub_server, "dep-edge")
    needs = "ComponentDependencies:\n  com.example.Base:\n    VersionRequirement: '^1.0.0'\n"
    with hub_server.client() as admin:
        assert publish(admin, "com.example.Base", "1.2.0").status_code == 201
        assert publish(admin, "com.example.App", "1.0.0",
                       recipe=make_recipe("com.example.App", "1.0.0", ("hello.py",), needs)).status_code == 201
        dep = admin.post("/v1/deployments", json={"target": "device:dep-edge",
                                                  "components": {"com.example.App": "1.0.0"}}).json()
        assert dep["dependencies"] == {"com.example.Base": "1.2.0"}
    with browser(hub_server) as client:
        sign_in(hub_server, client)
        page = client.get(f"/console/deployments/{dep['id']}").text
        assert "Dependencies" in page and "com.example.Base <b>1.2.0</b>" in page
