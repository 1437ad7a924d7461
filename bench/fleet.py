"""Fleet benchmark: simulated devices speaking the real sync protocol to a real hub.

One run (per database and fleet size):

1. a fresh hub root (and, for PostgreSQL, a fresh database ``roost_bench_<pid>`` on the local
   server, dropped afterwards); ``python -m roost hub init --json`` for the admin token, then
   ``python -m roost hub serve`` as a real process on 127.0.0.1 (``--log-level warning``);
2. setup (timed separately): publish one small component (recipe + a 64-byte artifact), create N
   enrolment tokens for group ``fleet`` and redeem each with ``POST /v1/enroll`` (bounded
   concurrency);
3. the devices: ``--clients`` client processes (this file with ``--_client``), each running its
   share of devices as asyncio tasks, one keep-alive HTTP/1.1 connection per device, written on
   raw asyncio streams (under uvloop) rather than httpx: httpx costs ~1 ms of client CPU per request,
   which at 10,000 devices would put the load generator, not the hub, on the critical path of this
   2-core machine. Each device does what ``roost.agent.sync.HubSync`` does, minus running the
   component: a first ``GET /v1/device/desired?after=0&wait=25`` and a heartbeat report, then
   the long poll ``after=<rev>&wait=25`` (sleeping 1 s after a 204 that came in under 1 s), and a
   heartbeat report every ``HEARTBEAT`` seconds (the agent's default; each device starts at a
   random phase; sent between two polls, as a device has one connection here); on a
   new revision, a report IN_PROGRESS for each new deployment, the download of every artifact
   (SHA-256 checked against ``X-Roost-Sha256`` and the recipe's ``Digest``), then a report
   SUCCEEDED (with component states) — every report with a unique id. Reports go on the same
   connection, sequentially (the agent sends them from a second task; same requests, same order);
4. the rollout: once every device sits in its long poll, t0 = ``POST /v1/deployments`` to
   ``group:fleet``; the deployment's counts are polled every 0.5 s (``GET /v1/deployments``, the
   list form with counts; ``GET /v1/deployments/{id}`` would also serialise 10,000 device rows
   every time) until SUCCEEDED == N, bounded by ``--timeout``.

Measured: time to all SUCCEEDED (from the counts poll, and client side: when the last device's
SUCCEEDED report was acknowledged); hub RSS (sum over the hub's processes, sampled every 0.2 s;
peak during the rollout) and hub CPU seconds during the rollout (psutil); CPU of the PostgreSQL
server processes and of the client processes too; latency of every request the devices made
during the rollout: reports and artifact downloads ("API latency"), and separately the delivery
latency of the long polls that returned the new revision (t0 → response). ``os.getloadavg()``
is recorded at the start and end of each run: other work on the machine inflates every number.

    .venv/bin/python bench/fleet.py                   # 1,000 and 10,000 devices, SQLite and PostgreSQL
    .venv/bin/python bench/fleet.py --quick           # 1,000 only
    .venv/bin/python bench/fleet.py --devices 5000 --db postgres --json OUT.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from roost.agent.spool import Backoff
from roost.hub.contract import SHA256_HEADER
from roost.hub.contract import DeviceDeploymentStatus as Row

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PG_ADMIN = os.environ.get("ROOST_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
GROUP = "fleet"
COMPONENT, VERSION, ARTIFACT = "com.example.FleetBench", "1.0.0", "hello.py"
ARTIFACT_BYTES = b"print('hello from the fleet benchmark')\n" + b"#" * 23 + b"\n"
POLL_WAIT = 25
#: The agent's heartbeat period (roost.agent.sync.HubSync's heartbeat_seconds default).
HEARTBEAT = 300.0
LONG_POLL_GRACE = 15.0
CALL_TIMEOUT = 30.0


def log(msg: str) -> None:
    print(f"[fleet {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# =================================================================================================
# A minimal HTTP/1.1 keep-alive client on asyncio streams (loopback only, bounded by timeouts)


class HttpError(Exception):
    pass


class Conn:
    """One keep-alive connection (reconnects when the server closed it); one request at a time."""

    def __init__(self, host: str, port: int, token: str | None) -> None:
        self.host, self.port = host, port
        self.base = (f"Host: {host}:{port}\r\nUser-Agent: roost-fleet-bench\r\nAccept: */*\r\n"
                     + (f"Authorization: Bearer {token}\r\n" if token else ""))
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reconnects = 0

    async def _connect(self) -> None:
        self.close()
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout=10.0)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: Any = None, timeout: float = CALL_TIMEOUT,
                      ) -> tuple[int, dict[bytes, bytes], bytes]:
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        head = f"{method} {path} HTTP/1.1\r\n{self.base}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        data = (head + "\r\n").encode() + payload
        for attempt in range(4):
            fresh = self.writer is None
            try:
                if fresh:
                    await self._connect()
                assert self.writer is not None and self.reader is not None
                self.writer.write(data)
                async with asyncio.timeout(timeout):
                    status, headers, content = await self._response(self.reader)
                if headers.get(b"connection", b"").lower() == b"close":
                    self.close()
                return status, headers, content
            except (ConnectionError, asyncio.IncompleteReadError, OSError) as err:
                # A keep-alive connection the server closed meanwhile: reconnect and retry (every
                # request here is idempotent: GETs, and reports are deduplicated by id).
                self.close()
                if attempt == 3:
                    raise HttpError(f"{method} {path}: {type(err).__name__}: {err}") from err
                self.reconnects += 1
                await asyncio.sleep(0.05 * attempt)
            except TimeoutError as err:
                self.close()
                raise HttpError(f"{method} {path}: no answer within {timeout} s") from err
        raise AssertionError("unreachable")

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(b":")
                headers[key.strip().lower()] = value.strip()
        if b"content-length" in headers:
            content = await reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await reader.readexactly(size + 2))
                if size == 0:
                    break
            content = b"".join(p[:-2] for p in parts)
        elif status == 204 or status == 304 or status < 200:
            content = b""
        else:
            content = await reader.read()
            headers[b"connection"] = b"close"
        return status, headers, content


# =================================================================================================
# The simulated device (client process side)


@dataclass
class Stats:
    #: (kind, wall start, seconds, status) of every request
    calls: list[tuple[str, float, float, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    succeeded_at: dict[str, float] = field(default_factory=dict)
    revisions: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0


class SimDevice:
    def __init__(self, name: str, credential: str, host: str, port: int, stats: Stats) -> None:
        self.name = name
        self.conn = Conn(host, port, credential)
        self.stats = stats
        self.revision = 0
        self.seq = 0
        self.succeeded: set[str] = set()
        self.states: dict[str, dict[str, str]] = {}
        self.backoff = Backoff()  # the agent's own: full jitter, 0.5 s doubling to 60 s
        self.next_heartbeat = time.monotonic() + random.uniform(0.0, HEARTBEAT)

    async def call(self, kind: str, method: str, path: str, body: Any = None,
                   timeout: float = CALL_TIMEOUT) -> tuple[int, dict[bytes, bytes], bytes]:
        wall, start = time.time(), time.perf_counter()
        status, headers, content = await self.conn.request(method, path, body, timeout)
        self.stats.calls.append((kind, wall, time.perf_counter() - start, status))
        if status >= 400:
            raise HttpError(f"{method} {path} → {status}: {content[:300]!r}")
        return status, headers, content

    def _report(self, status: str | None, deployment_id: str | None, revision: int) -> dict[str, Any]:
        self.seq += 1
        body: dict[str, Any] = {"id": f"{self.name}-{self.seq}", "revision": revision, "components": self.states,
                                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if status:
            body["status"] = status
        if deployment_id:
            body["deployment_id"] = deployment_id
        return body

    async def send(self, kind: str, reports: list[dict[str, Any]]) -> None:
        await self.call(kind, "POST", "/v1/device/reports", {"reports": reports})

    async def poll(self, kind: str) -> dict[str, Any] | None:
        status, _h, content = await self.call(
            kind, "GET", f"/v1/device/desired?after={self.revision}&wait={POLL_WAIT}",
            timeout=POLL_WAIT + LONG_POLL_GRACE)
        if status == 204 or not content:
            return None
        data: dict[str, Any] = json.loads(content)
        return data

    async def first_sync(self) -> None:
        """The agent's first poll (applied revision 0) and the heartbeat it sends after it."""
        desired = await self.poll("poll-first")
        if desired is not None:
            await self.apply(desired, first=True)
        await self.send("report-heartbeat", [self._report(None, None, self.revision)])

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                desired = await self.poll("poll")
            except HttpError as err:
                self.stats.errors.append(f"{self.name}: {err}")
                await self.backoff.wait()
                continue
            self.backoff.reset()
            if desired is not None and int(desired["revision"]) > self.revision:
                try:
                    await self.apply(desired)
                except HttpError as err:
                    self.stats.errors.append(f"{self.name}: {err}")
                    await self.backoff.wait()
                continue
            if time.monotonic() >= self.next_heartbeat:
                self.next_heartbeat += HEARTBEAT
                try:
                    await self.send("report-heartbeat", [self._report(None, None, self.revision)])
                except HttpError as err:
                    self.stats.errors.append(f"{self.name}: {err}")
                    await self.backoff.wait()
                continue
            if time.monotonic() - started < 1.0:
                await asyncio.sleep(1.0)

    async def apply(self, desired: dict[str, Any], *, first: bool = False) -> None:
        revision = int(desired["revision"])
        ids = [d for d in desired.get("deployments", []) if d not in self.succeeded]
        for deployment_id in ids:
            await self.send("report-in-progress", [self._report(Row.IN_PROGRESS, deployment_id, self.revision)])
        states: dict[str, dict[str, str]] = {}
        for name, comp in sorted(desired.get("components", {}).items()):
            version = comp["version"]
            for manifest in comp["recipe"].get("Manifests", []):
                for art in manifest.get("Artifacts", []) or []:
                    file_name = str(art["URI"]).rsplit("/", 1)[-1]
                    _s, headers, content = await self.call(
                        "artifact", "GET", f"/v1/artifacts/{quote(name)}/{quote(version)}/{quote(file_name)}")
                    digest = hashlib.sha256(content)
                    if headers.get(SHA256_HEADER.lower().encode(), b"").decode() != digest.hexdigest():
                        raise HttpError(f"{name}/{file_name}: SHA-256 differs from {SHA256_HEADER}")
                    want = art.get("Digest")
                    if want and base64.b64decode(want) != digest.digest():
                        raise HttpError(f"{name}/{file_name}: SHA-256 differs from the recipe's Digest")
                break  # the first manifest (the bench recipe has one, for linux)
            states[name] = {"version": version, "state": "RUNNING"}
        self.states = states
        self.revision = revision
        if ids:
            self.succeeded |= set(ids)
            await self.send("report-succeeded", [self._report(Row.SUCCEEDED, d, revision) for d in ids])
            self.stats.succeeded_at[self.name] = time.time()
        elif not first:
            await self.send("report-heartbeat", [self._report(None, None, revision)])
        self.stats.revisions[self.name] = revision


async def client_main(spec_path: Path) -> None:
    spec = json.loads(await asyncio.to_thread(spec_path.read_text))
    host, port = spec["host"], int(spec["port"])
    stats = Stats()
    devices = [SimDevice(d["name"], d["credential"], host, port, stats) for d in spec["devices"]]
    gate = asyncio.Semaphore(int(spec.get("setup_concurrency", 200)))

    async def first(dev: SimDevice) -> None:
        async with gate:
            try:
                await dev.first_sync()
            except HttpError as err:
                stats.errors.append(f"{dev.name} first sync: {err}")

    started = time.perf_counter()
    await asyncio.gather(*(first(d) for d in devices))
    tasks = [asyncio.create_task(d.run()) for d in devices]
    await asyncio.sleep(0.5)  # let every device send its long poll
    print("READY " + json.dumps({"devices": len(devices), "seconds": time.perf_counter() - started,
                                 "errors": len(stats.errors)}), flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)  # "STOP\n" or EOF
    del line
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for d in devices:
        d.conn.close()
        stats.reconnects += d.conn.reconnects
    out = {"calls": stats.calls, "errors": stats.errors[:50], "error_count": len(stats.errors),
           "succeeded_at": stats.succeeded_at, "revisions": stats.revisions, "reconnects": stats.reconnects}
    await asyncio.to_thread(Path(spec["out"]).write_text, json.dumps(out))
    print("DONE", flush=True)


# =================================================================================================
# The orchestrator (parent process)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def pg_database(name: str) -> Iterator[str]:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.split("://", 1)[1].rsplit("/", 1)[0]
    try:
        yield f"postgresql+psycopg://{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def recipe_yaml() -> bytes:
    return (f'RecipeFormatVersion: "2020-01-25"\nComponentName: {COMPONENT}\nComponentVersion: {VERSION}\n'
            "Manifests:\n  - Platform: {os: linux}\n    Lifecycle:\n"
            "      Run: python3 -u {artifacts:path}/hello.py\n"
            f"    Artifacts:\n      - URI: s3://bench/{COMPONENT}/{VERSION}/{ARTIFACT}\n").encode()


class HubProc:
    def __init__(self, root: Path, db_url: str, workers: int) -> None:
        self.root, self.db_url, self.workers = root, db_url, workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root.parent / "hub.log"

    def init(self) -> str:
        proc = subprocess.run([sys.executable, "-m", "roost", "hub", "init", "--root", str(self.root), "--db",
                               self.db_url, "--json"], capture_output=True, text=True, timeout=120, check=False,
                              cwd=REPO)
        if proc.returncode != 0:
            raise RuntimeError(f"hub init failed: {proc.stdout}{proc.stderr}")
        token: str = json.loads(proc.stdout)["token"]
        return token

    def start(self) -> None:
        import httpx

        cmd = [sys.executable, "-m", "roost", "hub", "serve", "--root", str(self.root), "--db", self.db_url,
               "--port", str(self.port), "--log-level", "warning", "--workers", str(self.workers)]
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the hub did not become ready within 60 s")

    def processes(self) -> list[Any]:
        import psutil

        assert self.proc is not None
        try:
            top = psutil.Process(self.proc.pid)
            return [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            for p in reversed(self.processes()):
                with contextlib.suppress(Exception):
                    p.kill()
            self.proc.kill()
            self.proc.wait(timeout=30)


def cpu_seconds(procs: list[Any]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(Exception):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def rss_mb(procs: list[Any]) -> float:
    total = 0
    for p in procs:
        with contextlib.suppress(Exception):
            total += p.memory_info().rss
    return total / 1e6


def postgres_processes() -> list[Any]:
    import psutil

    out = []
    for p in psutil.process_iter(["name", "username"]):
        if (p.info["name"] or "").startswith("postgres"):
            out.append(p)
    return out


class Sampler(threading.Thread):
    """Peak RSS of the hub's processes, sampled every 0.2 s."""

    def __init__(self, hub: HubProc) -> None:
        super().__init__(daemon=True)
        self.hub = hub
        self.peak = 0.0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            self.peak = max(self.peak, rss_mb(self.hub.processes()))
            self.stop_flag.wait(0.2)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def enrol(hub: HubProc, token: str, n: int, concurrency: int) -> list[dict[str, str]]:
    """N enrolment tokens for the group, each redeemed by a new device (bounded concurrency)."""
    admin = [Conn("127.0.0.1", hub.port, token) for _ in range(concurrency)]
    anon = [Conn("127.0.0.1", hub.port, None) for _ in range(concurrency)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    out: list[dict[str, str]] = []

    async def worker(k: int) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            name = f"dev-{i:05d}"
            s, _h, body = await admin[k].request("POST", "/v1/enroll-tokens", {"group": GROUP, "ttl_seconds": 7200})
            if s != 201:
                raise RuntimeError(f"enroll-token: {s} {body[:200]!r}")
            enroll_token = json.loads(body)["token"]
            s, _h, body = await anon[k].request("POST", "/v1/enroll", {
                "token": enroll_token, "name": name, "labels": {"arch": "x86_64", "bench": "fleet"}})
            if s != 201:
                raise RuntimeError(f"enroll {name}: {s} {body[:200]!r}")
            out.append({"name": name, "credential": json.loads(body)["credential"]})

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    for c in admin + anon:
        c.close()
    return out


def run_one(db: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    import psutil

    result: dict[str, Any] = {"db": db, "devices": n, "workers": args.workers, "clients": args.clients,
                              "load_start": load(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    base = Path(tempfile.mkdtemp(prefix="roost-fleet-"))
    stack = contextlib.ExitStack()
    clients: list[subprocess.Popen[str]] = []
    hub: HubProc | None = None
    try:
        if db == "postgres":
            db_url = stack.enter_context(pg_database(f"roost_bench_{os.getpid()}"))
        else:
            db_url = f"sqlite:///{base / 'hub' / 'hub.db'}"
        hub = HubProc(base / "hub", db_url, args.workers)
        token = hub.init()
        hub.start()
        log(f"{db} {n} devices: hub on {hub.url} (workers {args.workers}), load {load()}")
        admin = httpx.Client(base_url=hub.url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
        stack.callback(admin.close)
        r = admin.post("/v1/components", files=[("recipe", ("recipe.yaml", recipe_yaml(), "application/yaml")),
                                                ("artifacts", (ARTIFACT, ARTIFACT_BYTES, "application/octet-stream"))])
        r.raise_for_status()

        t = time.perf_counter()
        devices = asyncio.run(enrol(hub, token, n, args.enrol_concurrency))
        result["enrol_seconds"] = round(time.perf_counter() - t, 2)
        log(f"enrolled {n} devices in {result['enrol_seconds']} s, load {load()}")

        # Client processes, each with its share of the devices.
        t = time.perf_counter()
        k = max(1, min(args.clients, n))
        outs = []
        for c in range(k):
            spec = {"host": "127.0.0.1", "port": hub.port, "devices": devices[c::k],
                    "out": str(base / f"client{c}.json"), "setup_concurrency": max(1, args.setup_concurrency // k)}
            spec_path = base / f"client{c}-spec.json"
            spec_path.write_text(json.dumps(spec))
            outs.append(Path(spec["out"]))
            clients.append(subprocess.Popen([sys.executable, __file__, "--_client", str(spec_path)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO))
        for c in clients:
            assert c.stdout is not None
            line = c.stdout.readline()  # bounded: the client's calls all have timeouts
            if not line.startswith("READY"):
                raise RuntimeError(f"a client process failed to start its devices: {line!r}")
            ready = json.loads(line[6:])
            if ready["errors"]:
                log(f"client: {ready['errors']} device(s) failed their first sync")
        result["first_sync_seconds"] = round(time.perf_counter() - t, 2)
        log(f"{n} devices in long poll after {result['first_sync_seconds']} s, load {load()}")
        time.sleep(1.0)

        # The rollout.
        procs = hub.processes()
        pg = postgres_processes() if db == "postgres" else []
        client_procs = [psutil.Process(c.pid) for c in clients]
        cpu0, cl0 = cpu_seconds(procs), cpu_seconds(client_procs)
        pg0 = {p.pid: cpu_seconds([p]) for p in pg}
        result["hub_rss_before_mb"] = round(rss_mb(procs), 1)
        sampler = Sampler(hub)
        sampler.start()
        result["load_rollout_start"] = load()
        spy = None
        if args.py_spy:
            args.py_spy.mkdir(parents=True, exist_ok=True)
            hub_pid = str(hub.proc.pid if hub.proc else 0)
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--nonblocking", "--gil",
                                    "-p", hub_pid, "--subprocesses", "-r", "50", "-f", "raw", "-o",
                                    str(args.py_spy / f"hub-{db}-{n}.txt")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0_wall, t0 = time.time(), time.perf_counter()
        r = admin.post("/v1/deployments", json={"target": f"group:{GROUP}", "components": {COMPONENT: VERSION}})
        r.raise_for_status()
        deployment_id = r.json()["id"]
        result["create_seconds"] = round(time.perf_counter() - t0, 3)
        done_at: float | None = None
        counts: dict[str, int] = {}
        timeline = []
        while time.perf_counter() - t0 < args.timeout:
            time.sleep(0.5)
            try:
                rows = admin.get("/v1/deployments", timeout=30).json()
            except httpx.HTTPError as err:
                log(f"counts poll: {type(err).__name__} {err}")
                continue
            counts = next(d["counts"] for d in rows if d["id"] == deployment_id)
            timeline.append((round(time.perf_counter() - t0, 2), counts.get(Row.SUCCEEDED, 0)))
            if counts.get(Row.SUCCEEDED, 0) >= n:
                done_at = time.perf_counter() - t0
                break
        cpu1, cl1 = cpu_seconds(procs), cpu_seconds(client_procs)
        # PostgreSQL backends started during the rollout count in full.
        pg_cpu = sum(cpu_seconds([p]) - pg0.get(p.pid, 0.0) for p in postgres_processes()) if pg else 0.0
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        sampler.stop_flag.set()
        sampler.join()
        result["load_rollout_end"] = load()
        result["all_succeeded_seconds"] = round(done_at, 2) if done_at is not None else None
        result["final_counts"] = {k_: v for k_, v in counts.items() if v}
        result["timeline"] = timeline
        result["hub_rss_peak_mb"] = round(sampler.peak, 1)
        result["hub_cpu_seconds"] = round(cpu1 - cpu0, 2)
        result["postgres_cpu_seconds"] = round(pg_cpu, 2) if pg else None
        result["client_cpu_seconds"] = round(cl1 - cl0, 2)
        log(f"{db} {n}: all SUCCEEDED in {result['all_succeeded_seconds']} s; counts {result['final_counts']}; "
            f"load {load()}")

        # Reports the hub has committed (and counted) may still be on their way back to the devices:
        # let them arrive before the clients stop (the numbers above are already taken).
        time.sleep(3.0)
        for c in clients:
            assert c.stdin is not None and c.stdout is not None
            c.stdin.write("STOP\n")
            c.stdin.flush()
        for c in clients:
            assert c.stdout is not None
            c.stdout.readline()
            c.wait(timeout=60)
        calls: list[list[Any]] = []
        succeeded_at: dict[str, float] = {}
        errors: list[str] = []
        error_count = reconnects = 0
        for path in outs:
            data = json.loads(path.read_text())
            calls += data["calls"]
            succeeded_at.update(data["succeeded_at"])
            errors += data["errors"]
            error_count += data["error_count"]
            reconnects += data["reconnects"]
        end_wall = t0_wall + (done_at if done_at is not None else args.timeout)
        during = [c for c in calls if t0_wall <= c[1] <= end_wall]
        api = [c[2] for c in during if not c[0].startswith("poll")]
        delivered = [c[1] + c[2] - t0_wall for c in calls
                     if c[0] == "poll" and c[3] == 200 and c[1] + c[2] >= t0_wall]
        result["client_last_succeeded_seconds"] = (round(max(succeeded_at.values()) - t0_wall, 2)
                                                   if len(succeeded_at) >= n else None)
        result["devices_succeeded_client_side"] = len(succeeded_at)
        result["requests_during_rollout"] = len(during)
        result["api_latency_ms"] = {"n": len(api), "p50": round(pct(api, 0.5) * 1e3, 1),
                                    "p99": round(pct(api, 0.99) * 1e3, 1), "max": round(max(api, default=0) * 1e3, 1)}
        by_kind = {}
        for kind in ("artifact", "report-in-progress", "report-succeeded", "report-heartbeat"):
            v = [c[2] for c in during if c[0] == kind]
            if v:
                by_kind[kind] = {"n": len(v), "p50": round(pct(v, 0.5) * 1e3, 1), "p99": round(pct(v, 0.99) * 1e3, 1)}
        result["latency_by_kind_ms"] = by_kind
        result["delivery_s"] = {"n": len(delivered), "p50": round(pct(delivered, 0.5), 2),
                                "p99": round(pct(delivered, 0.99), 2)}
        result["client_errors"] = error_count
        result["client_error_samples"] = errors[:5]
        result["client_reconnects"] = reconnects
        return result
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
                c.wait(timeout=10)
        if hub is not None:
            hub.stop()
            if hub.log.exists():
                tail = hub.log.read_text(errors="replace")[-2000:]
                if "Traceback" in tail or "ERROR" in tail:
                    log(f"hub log tail:\n{tail}")
        stack.close()
        shutil.rmtree(base, ignore_errors=True)


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| devices | DB | all SUCCEEDED (s) | last device report (s) | hub RSS peak (MB) | hub CPU (s) "
             "| PG CPU (s) | API p50 / p99 (ms) | delivery p50 / p99 (s) | enrol (s) | load 1-min (start→end) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        lat, dl = r["api_latency_ms"], r["delivery_s"]
        lines.append(
            f"| {r['devices']:,} | {r['db']} | {r['all_succeeded_seconds'] or 'not reached'} "
            f"| {r['client_last_succeeded_seconds']} | {r['hub_rss_peak_mb']} | {r['hub_cpu_seconds']} "
            f"| {r['postgres_cpu_seconds'] if r['postgres_cpu_seconds'] is not None else '-'} "
            f"| {lat['p50']} / {lat['p99']} | {dl['p50']} / {dl['p99']} | {r['enrol_seconds']} "
            f"| {r['load_rollout_start'].split()[0]} → {r['load_rollout_end'].split()[0]} |")
    return "\n".join(lines)


def linearity(results: list[dict[str, Any]]) -> list[str]:
    out = []
    by = {(r["db"], r["devices"]): r for r in results}
    for db in ("sqlite", "postgres"):
        small, big = by.get((db, 1000)), by.get((db, 10000))
        if not small or not big:
            continue
        for key in ("all_succeeded_seconds", "hub_cpu_seconds"):
            a, b = small.get(key), big.get(key)
            if a and b:
                out.append(f"{db} {key}: 10k/1k = {b / a:.1f}x (linear = 10x)")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--_client", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="1,000 devices only")
    p.add_argument("--devices", type=int, action="append", help="fleet size (repeatable)")
    p.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--workers", type=int, default=1, help="hub worker processes (roost hub serve --workers)")
    p.add_argument("--clients", type=int, default=2, help="client processes simulating the devices")
    p.add_argument("--timeout", type=float, default=300.0, help="longest wait for all SUCCEEDED (s)")
    p.add_argument("--enrol-concurrency", type=int, default=16)
    p.add_argument("--setup-concurrency", type=int, default=200, help="devices doing their first sync at once")
    p.add_argument("--json", type=Path, help="write every number to this file")
    p.add_argument("--py-spy", type=Path, help="record the hub with py-spy during the rollout into this folder "
                   "(py-spy must be installed in the venv; not a project dependency)")
    args = p.parse_args()
    if args._client:
        try:
            import uvloop
            uvloop.run(client_main(Path(args._client)))
        except ImportError:
            asyncio.run(client_main(Path(args._client)))
        return
    sizes = args.devices or ([1000] if args.quick else [1000, 10000])
    dbs = ["postgres", "sqlite"] if args.db == "both" else [args.db]
    results = []
    for db in dbs:
        for n in sizes:
            results.append(run_one(db, n, args))
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))
    print(table(results))
    for line in linearity(results):
        print(line)


if __name__ == "__main__":
    main()
