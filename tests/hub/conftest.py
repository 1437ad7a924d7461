"""Hub fixtures: databases (SQLite file, PostgreSQL), stores with a fake clock, real uvicorn servers.

Reusable by other hub tests (console, agent sync, CLI):

* ``hub_server`` — a real uvicorn server on 127.0.0.1 (free port, SQLite under ``tmp_path``),
  yields :class:`HubServer` (``url``, ``token`` (admin), ``root``, ``store``, ``client()``).
* ``hub_server_factory`` — ``make(db_url=None, max_artifact_bytes=..., clock=None) -> HubServer``
  for several servers or special settings (stopped at teardown).
* ``hub_process_factory`` — ``make(db_url, root) -> HubProcess``: ``roost hub serve`` as a real
  subprocess (``url``), stopped at teardown.
* ``pg_url`` — a fresh PostgreSQL database for the session (dropped at the end); skips when the
  server at 127.0.0.1:5432 is unreachable, unless ``ROOST_REQUIRE_SERVICES=1``.
* ``make_recipe`` / ``publish`` helpers for components.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from roost.hub.app import HubConfig, create_app, open_store
from roost.hub.store import Store
from tests.conftest import require_service

PG_ADMIN_URL = os.environ.get("ROOST_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


# -- clock ---------------------------------------------------------------------------------------


class FakeClock:
    """An injectable clock: ``clock()`` is the time, ``advance(seconds=...)`` moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2030, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, **delta: float) -> None:
        with self._lock:
            self.now += timedelta(**delta)


# -- PostgreSQL ----------------------------------------------------------------------------------


def _pg_available() -> tuple[bool, str]:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True, ""
    except Exception as err:
        return False, f"cannot connect to {PG_ADMIN_URL}: {err}"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL for this test session."""
    ok, why = _pg_available()
    require_service("PostgreSQL", ok, why)
    import psycopg

    name = f"roost_hub_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _truncate_pg(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        tables = [r[0] for r in conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"))]
        if tables:
            conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
            conn.execute(text("INSERT INTO meta(key, value) VALUES ('revision', 0)"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each backend of the shared storage suite: a SQLite file, or the session's PostgreSQL (emptied)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
        return
    url: str = request.getfixturevalue("db_url_pg_clean")
    yield url


@pytest.fixture
def db_url_pg_clean(pg_url: str) -> str:
    """The session's PostgreSQL database, migrated and emptied."""
    from roost.hub import migrate
    from roost.hub.db import Database

    db = Database(pg_url)
    migrate.upgrade(db)
    db.dispose()
    _truncate_pg(pg_url)
    return pg_url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(db_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    s = open_store(HubConfig(root=tmp_path / "hub", db_url=db_url, max_artifact_bytes=1024 * 1024))
    s.clock = clock
    yield s
    s.db.dispose()


# -- recipes -------------------------------------------------------------------------------------


def make_recipe(name: str = "com.example.Hello", version: str = "1.0.0",
                files: tuple[str, ...] = ("hello.py",), extra: str = "") -> bytes:
    artifacts = "".join(f"      - URI: s3://bucket/{name}/{version}/{f}\n" for f in files)
    text = (f'RecipeFormatVersion: "2020-01-25"\nComponentName: {name}\nComponentVersion: {version}\n'
            f"Manifests:\n  - Platform: {{os: linux}}\n    Lifecycle:\n      Run: python3 -u {{artifacts:path}}/x\n")
    if files:
        text += "    Artifacts:\n" + artifacts
    return (text + extra).encode()


def publish_to_store(store: Store, name: str = "com.example.Hello", version: str = "1.0.0",
                     files: dict[str, bytes] | None = None) -> Any:
    files = {"hello.py": b"print('hello')\n"} if files is None else files
    staging = store.artifacts.staging()
    staged = []
    for file_name, data in files.items():
        writer = staging.open(file_name)
        writer.write(data)
        staged.append(writer.finish())
    try:
        return store.publish_component(make_recipe(name, version, tuple(files)), staging, staged)
    finally:
        staging.cleanup()


# -- servers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class HubServer:
    url: str
    token: str
    root: Path
    store: Store
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def client(self, token: str | None = "admin", timeout: float = 40.0) -> httpx.Client:
        headers = {}
        if token == "admin":
            token = self.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)


def _start(config: HubConfig, clock: Callable[[], datetime] | None = None) -> HubServer:
    store = open_store(config)
    if clock is not None:
        store.clock = clock
    token = store.create_admin_token("test")
    app = create_app(config, store=store)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, name=f"hub-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the hub server did not start")
        time.sleep(0.02)
    return HubServer(f"http://127.0.0.1:{port}", token, config.root, store, server, thread)


@pytest.fixture
def hub_server_factory(tmp_path: Path) -> Iterator[Callable[..., HubServer]]:
    servers: list[HubServer] = []

    def make(db_url: str | None = None, max_artifact_bytes: int = 64 * 1024 * 1024,
             clock: Callable[[], datetime] | None = None, root: Path | None = None) -> HubServer:
        config = HubConfig(root=root or tmp_path / f"hub{len(servers)}", db_url=db_url,
                           max_artifact_bytes=max_artifact_bytes, poll_interval=0.1)
        server = _start(config, clock)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def hub_server(hub_server_factory: Callable[..., HubServer]) -> HubServer:
    """A real hub (uvicorn, SQLite) on a free port: ``.url``, ``.token`` (admin), ``.root``."""
    return hub_server_factory()


@dataclass
class HubProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def hub_process_factory(tmp_path: Path) -> Iterator[Callable[..., HubProcess]]:
    """``roost hub serve`` as real subprocesses (several may share one PostgreSQL)."""
    procs: list[HubProcess] = []

    def make(root: Path, db_url: str | None = None, wait: bool = True) -> HubProcess:
        port = free_port()
        log = tmp_path / f"hub-{port}.log"
        cmd = [sys.executable, "-m", "roost", "hub", "serve", "--root", str(root), "--port", str(port),
               "--log-level", "warning"]
        if db_url:
            cmd += ["--db", db_url]
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        hub = HubProcess(f"http://127.0.0.1:{port}", proc, log)
        procs.append(hub)
        if wait:
            wait_ready(hub)
        return hub

    yield make
    for hub in procs:
        if hub.proc.poll() is None:
            hub.proc.terminate()
            try:
                hub.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                hub.proc.kill()
                hub.proc.wait()


def wait_ready(hub: HubProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hub.proc.poll() is not None:
            raise RuntimeError(f"hub exited {hub.proc.returncode}: {hub.log.read_text()}")
        try:
            if httpx.get(hub.url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"hub did not become ready: {hub.log.read_text()}")


def hub_init(root: Path, db_url: str | None = None) -> str:
    cmd = [sys.executable, "-m", "roost", "hub", "init", "--root", str(root), "--json"]
    if db_url:
        cmd += ["--db", db_url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    token: str = json.loads(proc.stdout)["token"]
    return token


# -- API helpers ---------------------------------------------------------------------------------


def publish(client: httpx.Client, name: str = "com.example.Hello", version: str = "1.0.0",
            files: dict[str, bytes] | None = None, recipe: bytes | None = None) -> httpx.Response:
    files = {"hello.py": b"print('hello')\n"} if files is None else files
    parts: list[tuple[str, tuple[str, bytes, str]]] = [
        ("recipe", ("recipe.yaml", recipe if recipe is not None else make_recipe(name, version, tuple(files)),
                    "application/yaml"))]
    parts += [("artifacts", (fname, data, "application/octet-stream")) for fname, data in files.items()]
    return client.post("/v1/components", files=parts)


def enroll_device(hub: HubServer, name: str, group: str | None = None) -> str:
    with hub.client() as admin:
        body: dict[str, Any] = {"group": group} if group else {}
        token = admin.post("/v1/enroll-tokens", json=body).json()["token"]
    r = httpx.post(hub.url + "/v1/enroll", json={"token": token, "name": name, "labels": {"arch": "x86_64"}})
    assert r.status_code == 201, r.text
    credential: str = r.json()["credential"]
    return credential
