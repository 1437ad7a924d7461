"""The demo's processes: the CLI run as ``python -m roost ...`` (each command a real process, as a person would
type it), the hub (``roost hub serve`` on a free port), and free ports for everything else."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from roost.demo.steps import StepFailed

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_range(size: int, tries: int = 200) -> tuple[int, int]:
    """``size`` consecutive ports that are free now (for a node's replicas), from 40000-59999."""
    rng = random.Random()
    for _ in range(tries):
        low = rng.randrange(40000, 60000 - size)
        if all(_bindable(p) for p in range(low, low + size)):
            return low, low + size - 1
    raise StepFailed(f"found no {size} consecutive free ports in 40000-59999 after {tries} tries")


def roost(*args: str, timeout: float = 120.0, env: dict[str, str] | None = None,
          input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """One CLI command as a process (bounded by ``timeout``)."""
    try:
        return subprocess.run([sys.executable, "-m", "roost", *args], capture_output=True, text=True,
                              timeout=timeout, check=False, env={**os.environ, **(env or {})}, input=input_text,
                              stdin=None if input_text is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as err:
        raise StepFailed(f"`roost {' '.join(args[:3])} ...` did not finish within {timeout:g} s") from err


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def roost_json(*args: str, what: str, timeout: float = 120.0, env: dict[str, str] | None = None) -> Any:
    """``roost ARGS --json``: its JSON, or StepFailed naming ``what`` with the command's error."""
    proc = roost(*args, "--json", timeout=timeout, env=env)
    try:
        doc = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        doc = None
    if proc.returncode != 0:
        why = doc["error"]["message"] if isinstance(doc, dict) and isinstance(doc.get("error"), dict) else \
            _tail(proc.stderr or proc.stdout)
        raise StepFailed(f"{what}: `roost {args[0]} {args[1] if len(args) > 1 else ''}` exited {proc.returncode}: "
                         f"{why}")
    if doc is None:
        raise StepFailed(f"{what}: the command printed no JSON: {_tail(proc.stdout + proc.stderr)}")
    return doc


@dataclass
class HubProcess:
    """``roost hub serve`` on 127.0.0.1 (SQLite in its root); :meth:`stop` ends it (SIGTERM, then SIGKILL)."""

    root: Path
    port: int
    token: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> list[str]:
        return [*args, "--hub", self.url, "--token", self.token]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_hub(root: Path, log_path: Path, timeout: float = 60.0) -> HubProcess:
    """``roost hub init`` (the admin token) then ``roost hub serve`` on a free port, ready (``/healthz``)."""
    token = roost_json("hub", "init", "--root", str(root), what="hub init")["token"]
    port = free_port()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "roost", "hub", "serve", "--root", str(root), "--port",
                                 str(port), "--log-level", "warning"], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    hub = HubProcess(root, port, token, proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StepFailed(f"the hub exited {proc.returncode}: {_tail(log_path.read_text(errors='replace'))}")
        try:
            if httpx.get(hub.url + "/healthz", timeout=1).status_code == 200:
                return hub
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    hub.stop()
    raise StepFailed(f"the hub did not answer /healthz within {timeout:g} s: {_tail(log_path.read_text())}")


def wait_until(pred: Any, timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``pred()`` until it is truthy (returned), else StepFailed naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StepFailed(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
