"""Fixtures for the agent-hub sync end-to-end tests: a real `roost hub serve` process that can be
stopped and restarted on the same port, and real agents (`roost agent start --detach --hub`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hub.conftest import HubProcess, free_port, hub_init, wait_ready

#: Short sync intervals so that the tests do not wait for production timings.
AGENT_ENV = {"ROOST_SYNC_HEARTBEAT_SECONDS": "1", "ROOST_SYNC_BACKOFF_CAP": "1.5"}


def roost(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roost", *args], capture_output=True, text=True, timeout=timeout,
                          check=False, env={**os.environ, **AGENT_ENV, **(env or {})})


def roost_json(*args: str, timeout: float = 120) -> Any:
    proc = roost(*args, "--json", timeout=timeout)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}: {proc.stdout} {proc.stderr}"
    return json.loads(proc.stdout)


@dataclass
class Hub:
    """A `roost hub serve` subprocess on a fixed port, restartable on the same root and port."""

    root: Path
    port: int
    token: str
    log_dir: Path
    process: HubProcess | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        log = self.log_dir / f"hub-{self.starts}.log"
        self.starts += 1
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "roost", "hub", "serve", "--root", str(self.root),
                                     "--port", str(self.port), "--log-level", "warning"],
                                    stdout=fh, stderr=subprocess.STDOUT)
        self.process = HubProcess(self.url, proc, log)
        wait_ready(self.process, timeout)

    def kill(self) -> None:
        """Stop the hub abruptly (SIGKILL), as a crash or a network cut would."""
        if self.process is not None and self.process.proc.poll() is None:
            self.process.proc.send_signal(signal.SIGKILL)
            self.process.proc.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.proc.poll() is None:
            self.process.proc.terminate()
            try:
                self.process.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.proc.kill()
                self.process.proc.wait()
        self.process = None

    def api(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token or self.token}"},
                            timeout=30)

    def cli(self, *args: str) -> list[str]:
        """Hub options for a CLI command."""
        return [*args, "--hub", self.url, "--token", self.token]


@dataclass
class Agent:
    name: str
    root: Path
    started: bool = field(default=False)

    @property
    def log(self) -> Path:
        return self.root / "logs" / "agent.log"

    def hub_config(self) -> dict[str, str]:
        data: dict[str, str] = json.loads((self.root / "hub.json").read_text())
        return data

    def spooled(self) -> list[Path]:
        spool = self.root / "spool"
        return sorted(p for p in spool.iterdir() if p.suffix == ".json") if spool.is_dir() else []

    def components(self) -> dict[str, tuple[str, str]]:
        comps = roost_json("component", "list", "--root", str(self.root))
        return {c["componentName"]: (c["version"], c["state"]) for c in comps}

    def stop(self) -> None:
        if self.started:
            proc = roost("agent", "stop", "--root", str(self.root))
            assert proc.returncode == 0, proc.stderr
            self.started = False


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    base = tmp_path_factory.mktemp("hub")
    token = hub_init(base / "root")
    server = Hub(base / "root", free_port(), token, base)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def agents(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Agent]]:
    """Two agents enrolled into group `fleet` (each with its own one-time token)."""
    base = tmp_path_factory.mktemp("agents")
    out: dict[str, Agent] = {}
    try:
        for name in ("edge-a", "edge-b"):
            token = roost_json(*hub.cli("device", "enroll-token", "--group", "fleet"))["token"]
            agent = Agent(name, base / name)
            proc = roost("agent", "start", "--root", str(agent.root), "--detach", "--hub", hub.url,
                         "--enroll-token", token, "--thing-name", name, "--label", "machine=xavier")
            assert proc.returncode == 0, proc.stdout + proc.stderr
            agent.started = True
            out[name] = agent
        yield out
    finally:
        for agent in out.values():
            agent.stop()


def wait_for(pred: Any, timeout: float = 30.0, what: str = "condition", interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def write_component(base: Path, name: str, version: str, *, body: str = "", s3: bool = True,
                    extra: str = "") -> tuple[Path, Path]:
    """A recipe (Greengrass style, s3:// URI) and its artifact folder; returns (recipe, artifacts dir).

    ``extra`` is appended to the recipe (top-level YAML, e.g. ``ComponentDependencies``)."""
    art = base / f"{name}-{version}-art"
    art.mkdir(parents=True, exist_ok=True)
    (art / "main.py").write_text(
        "import time\n" + body + f"print('{name} {version} up', flush=True)\nwhile True:\n    time.sleep(1)\n")
    uri = f"s3://my-bucket/artifacts/{name}/{version}/main.py" if s3 else "greengrass:main.py"
    recipe = base / f"{name}-{version}.yaml"
    recipe.write_text(
        'RecipeFormatVersion: "2020-01-25"\n'
        f"ComponentName: {name}\nComponentVersion: \"{version}\"\n"
        "ComponentConfiguration:\n  DefaultConfiguration:\n    greeting: hi\n"
        "Manifests:\n  - Platform:\n      os: linux\n"
        "    Lifecycle:\n      Run: python3 -u {artifacts:path}/main.py\n"
        f"    Artifacts:\n      - URI: {uri}\n" + extra)
    return recipe, art
