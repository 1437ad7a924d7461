"""`roost hub init|serve` as real processes; several hubs sharing one PostgreSQL; migrations."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.hub.conftest import HubProcess, _truncate_pg, hub_init, make_recipe, wait_ready


def test_hub_init_and_serve_sqlite(tmp_path: Path, hub_process_factory: Callable[..., HubProcess]) -> None:
    root = tmp_path / "hub"
    token = hub_init(root)
    assert token.startswith("rst_admin_")
    with sqlite3.connect(root / "hub.db") as conn:
        stored = [r[0] for r in conn.execute("SELECT token_hash FROM api_tokens")]
    assert token not in stored and len(stored) == 1
    hub = hub_process_factory(root)
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(hub.url + "/v1/devices", headers=headers).json() == []
    assert httpx.get(hub.url + "/v1/devices").status_code == 401
    assert token not in hub.log.read_text()


def test_init_reports_a_bad_database_url(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "roost", "hub", "init", "--root", str(tmp_path / "h"),
                           "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none", "--json"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0


def test_two_hub_processes_share_postgresql(tmp_path: Path, pg_url: str,
                                            hub_process_factory: Callable[..., HubProcess]) -> None:
    from roost.hub import migrate
    from roost.hub.db import Database

    db = Database(pg_url)
    migrate.upgrade(db)
    db.dispose()
    _truncate_pg(pg_url)
    # Both processes start (and migrate) at once: the advisory lock serialises them.
    one = hub_process_factory(tmp_path / "one", pg_url, wait=False)
    two = hub_process_factory(tmp_path / "two", pg_url, wait=False)
    wait_ready(one)
    wait_ready(two)
    token = hub_init(tmp_path / "init", pg_url)
    admin = {"Authorization": f"Bearer {token}"}
    # Enrol on one, see it on the other.
    enroll = httpx.post(one.url + "/v1/enroll-tokens", headers=admin, json={"group": "shared"}).json()["token"]
    r = httpx.post(two.url + "/v1/enroll", json={"token": enroll, "name": "pg-dev", "labels": {}})
    assert r.status_code == 201, r.text
    credential = r.json()["credential"]
    assert [d["name"] for d in httpx.get(one.url + "/v1/devices", headers=admin).json()] == ["pg-dev"]
    r = httpx.post(one.url + "/v1/enroll", json={"token": enroll, "name": "pg-dev-2"})
    assert r.status_code == 410
    # Artifacts live in each process's own folder here, so publish without files.
    recipe = make_recipe("com.example.Pg", "1.0.0", files=())
    r = httpx.post(one.url + "/v1/components", headers=admin, files=[("recipe", ("r.yaml", recipe))])
    assert r.status_code == 201, r.text
    r = httpx.post(two.url + "/v1/components", headers=admin, files=[("recipe", ("r.yaml", recipe))])
    assert r.status_code == 409
    dev = {"Authorization": f"Bearer {credential}"}
    first = httpx.get(two.url + "/v1/device/desired", headers=dev).json()
    # A long poll on one process wakes for a deployment made through the other.
    result: dict[str, httpx.Response] = {}
    poll = threading.Thread(target=lambda: result.setdefault("r", httpx.get(
        two.url + "/v1/device/desired", headers=dev, params={"after": first["revision"], "wait": 20}, timeout=30)))
    poll.start()
    dep = httpx.post(one.url + "/v1/deployments", headers=admin,
                     json={"target": "group:shared", "components": {"com.example.Pg": "1.0.0"}}).json()
    poll.join(timeout=30)
    assert result["r"].status_code == 200 and result["r"].json()["deployments"] == [dep["id"]]
    # Revoking on one process cuts the device off on the other at once.
    httpx.post(one.url + "/v1/devices/pg-dev/revoke", headers=admin)
    assert httpx.get(two.url + "/v1/device/desired", headers=dev).status_code == 401


def test_migrations_match_the_models(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from roost.hub import migrate
    from roost.hub.db import Database
    from roost.hub.models import Base

    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    migrate.upgrade(db)
    migrate.upgrade(db)  # idempotent
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    db.dispose()
    assert diff == [], json.dumps([str(d) for d in diff])


def test_sigterm_answers_long_polls_and_exits_cleanly(tmp_path: Path,
                                                      hub_process_factory: Callable[..., HubProcess]) -> None:
    """SIGTERM while a device long-polls: the poll gets an answer (not a 5xx), no traceback, exit 0."""
    import signal

    root = tmp_path / "hub"
    token = hub_init(root)
    hub = hub_process_factory(root)
    admin = {"Authorization": f"Bearer {token}"}
    enroll = httpx.post(hub.url + "/v1/enroll-tokens", headers=admin, json={}).json()["token"]
    credential = httpx.post(hub.url + "/v1/enroll", json={"token": enroll, "name": "poller"}).json()["credential"]
    dev = {"Authorization": f"Bearer {credential}"}
    first = httpx.get(hub.url + "/v1/device/desired", headers=dev).json()
    result: dict[str, object] = {}

    def poll() -> None:
        try:
            result["r"] = httpx.get(hub.url + "/v1/device/desired", headers=dev,
                                    params={"after": first["revision"], "wait": 30}, timeout=60)
        except httpx.HTTPError as err:  # a clean close is acceptable too
            result["error"] = err

    poller = threading.Thread(target=poll)
    poller.start()
    # The poll is in flight once the hub has counted the device's request (its access log is off):
    # wait until the server has the connection open, then a little for the request to arrive.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _has_connection(hub.proc.pid):
        time.sleep(0.05)
    time.sleep(0.5)
    hub.proc.send_signal(signal.SIGTERM)
    code = hub.proc.wait(timeout=20)
    poller.join(timeout=30)
    log = hub.log.read_text()
    assert code == 0, log
    assert "Traceback" not in log and "CancelledError" not in log, log
    if "r" in result:
        response = result["r"]
        assert isinstance(response, httpx.Response)
        assert response.status_code < 500, (response.status_code, response.text)
        assert response.status_code == 204
    else:
        assert isinstance(result.get("error"), httpx.RemoteProtocolError | httpx.ReadError), result


def _has_connection(pid: int) -> bool:
    import psutil

    try:
        return any(c.status == psutil.CONN_ESTABLISHED for c in psutil.Process(pid).net_connections("tcp"))
    except psutil.Error:
        return False
