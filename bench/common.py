"""Helpers shared by the agent benchmarks (``bench/ipc.py``, ``bench/inference.py``).

* :func:`roost` runs the CLI (``python -m roost ...``) with a timeout;
* :class:`Workspace` writes recipes and artifacts into a temp dir for ``deployment create``;
* :class:`Agent` starts one agent in a private root, deploys into it and stops it (falling back
  to SIGKILL of the agent and of every process started from its root, see :func:`kill_own`).

Every call here is bounded by a timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared"


def roost(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roost", *args], capture_output=True, text=True,
                          timeout=timeout, check=False, cwd=REPO)


def bench_tmp(prefix: str) -> Path:
    """A private temp folder the agent's component users can search (mode 0711): run as root, the
    agent runs components as an unprivileged user, who must reach the agent root inside it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o711)
    return path


def run_header(targets: dict[str, Any]) -> dict[str, Any]:
    """The first keys of a results file: the targets, the machine's CPU count, the time (UTC) and the load."""
    return {"targets": targets, "cpu": os.cpu_count(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load_before": round(os.getloadavg()[0], 2)}


def write_results(results: dict[str, Any], path: str) -> None:
    """Print ``results`` as JSON and, when ``path`` is not empty, write it there too."""
    text = json.dumps(results, indent=1)
    if path:
        Path(path).write_text(text + "\n")
    print(text)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- recipes -------------------------------------------------------------------------------------


class Workspace:
    """Recipes and artifacts of the bench components; ``script`` is copied into each component
    created with ``script=True``, ``files`` into its artifact folder too."""

    def __init__(self, base: Path, script: Path | None = None) -> None:
        self.recipes = base / "recipes"
        self.artifacts = base / "artifacts"
        self.script = script
        self.recipes.mkdir(parents=True, exist_ok=True)
        self.artifacts.mkdir(parents=True, exist_ok=True)

    def component(self, name: str, run: str, config: dict[str, Any], *, script: bool = True,
                  dependencies: dict[str, Any] | None = None, files: list[Path] | None = None,
                  setenv: dict[str, str] | None = None, version: str = "1.0.0") -> None:
        art_dir = self.artifacts / name / version
        art_dir.mkdir(parents=True, exist_ok=True)
        sources = ([self.script] if script and self.script is not None else []) + list(files or [])
        artifacts = []
        for src in sources:
            shutil.copy(src, art_dir / src.name)
            artifacts.append({"URI": f"s3://bench/{name}/{version}/{src.name}"})
        lifecycle: dict[str, Any] = {"Run": run}
        if setenv:
            lifecycle["Setenv"] = setenv
        recipe: dict[str, Any] = {
            "RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": version,
            "ComponentConfiguration": {"DefaultConfiguration": config},
            "Manifests": [{"Platform": {"os": "*"}, "Lifecycle": lifecycle, "Artifacts": artifacts}],
        }
        if dependencies:
            recipe["ComponentDependencies"] = dependencies
        (self.recipes / f"{name}-{version}.json").write_text(json.dumps(recipe, indent=1))

    def args(self) -> list[str]:
        return ["--recipe-dir", str(self.recipes), "--artifact-dir", str(self.artifacts)]


def pubsub_acl(name: str, resources: list[str]) -> dict[str, Any]:
    return {"aws.greengrass.ipc.pubsub": {f"{name}:pubsub:1": {
        "policyDescription": "bench request/reply",
        "operations": ["aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic"],
        "resources": resources}}}


# -- agent handling ------------------------------------------------------------------------------


class Agent:
    """One agent root; ``stop()`` is safe to call at any time and more than once."""

    def __init__(self, root: Path, loop: str = "default") -> None:
        self.root = root
        self.loop = loop
        self.pid: int | None = None

    def start(self) -> float:
        if self.loop == "uvloop":
            return self._start_uvloop()
        t0 = time.perf_counter()
        proc = roost("agent", "start", "--root", str(self.root), "--detach", "--json", "--thing-name", "bench",
                     timeout=60)
        el = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"agent start failed: {proc.stdout}{proc.stderr}")
        self.pid = int(json.loads(proc.stdout)["pid"])
        return el

    def _start_uvloop(self) -> float:
        """Experiment: the agent in the background under uvloop (what `roost agent start` does
        once run_agent's loop is uvloop). Returns like `start --detach`: socket accepting."""
        boot = ("import asyncio, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
                "sys.argv[0] = 'roost'; from roost.cli.main import main; main()")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        t0 = time.perf_counter()
        with open(self.root / "logs" / "agent.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-c", boot, "agent", "start", "--root", str(self.root),
                                     "--thing-name", "bench"], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True, cwd=REPO)
        self.pid = proc.pid
        sock = self.root / "ipc.socket"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"uvloop agent exited with {proc.returncode}")
            if sock.exists():
                with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(sock))
                    return time.perf_counter() - t0
            time.sleep(0.02)
        raise TimeoutError("uvloop agent did not open its socket")

    def deploy(self, ws: Workspace, *args: str, timeout: float = 120) -> dict[str, Any]:
        proc = roost("deployment", "create", "--root", str(self.root), *ws.args(), *args, "--wait", "--json",
                     "--timeout", str(timeout), timeout=timeout + 30)
        if proc.returncode != 0:
            raise RuntimeError(f"deployment {args} failed: {proc.stdout}{proc.stderr}")
        out: dict[str, Any] = json.loads(proc.stdout)
        return out

    def process(self) -> psutil.Process:
        assert self.pid is not None
        return psutil.Process(self.pid)

    def rss_mb(self) -> float:
        return self.process().memory_info().rss / 1e6

    def stop(self) -> None:
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            proc = roost("agent", "stop", "--root", str(self.root), "--timeout", "30", timeout=60)
            if proc.returncode == 0:
                return
            log(f"agent stop failed: {proc.stdout}{proc.stderr}")
        except subprocess.TimeoutExpired:
            log("agent stop timed out")
        kill_own(pid, self.root)


def kill_own(agent_pid: int, root: Path) -> None:
    """SIGKILL the agent, its descendants and the processes started from this (private, temp) root."""
    victims = []
    with contextlib.suppress(psutil.Error):
        victims += psutil.Process(agent_pid).children(recursive=True)
    for p in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if p.info["pid"] == agent_pid or any(str(root) in part for part in (p.info["cmdline"] or [])):
                victims.append(p)
    for p in victims:
        with contextlib.suppress(psutil.Error):
            p.kill()
