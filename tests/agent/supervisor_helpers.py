"""Helpers of the supervisor tests: specs with short timeouts, a state recorder, process checks."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psutil

from roost.agent.component_spec import ComponentSpec, StepSpec
from roost.agent.states import ComponentState

Step = str | StepSpec | None


def step(value: Step, timeout: float = 5.0) -> StepSpec | None:
    if value is None or isinstance(value, StepSpec):
        return value
    return StepSpec(script=value, timeout=timeout)


def make_spec(tmp_path: Path, name: str = "com.example.A", *, install: Step = None, startup: Step = None,
              run: Step = None, shutdown: Step = None, recover: Step = None,
              env: dict[str, str] | None = None, **kw: Any) -> ComponentSpec:
    kw.setdefault("restart_backoff", (0.05, 0.2))
    return ComponentSpec(
        name=name, version="1.0.0", install=step(install), startup=step(startup), run=step(run),
        shutdown=step(shutdown), recover=step(recover),
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
        work_dir=tmp_path / "work" / name, log_path=tmp_path / "logs" / f"{name}.log", **kw)


class Recorder:
    """Collects on_state calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ComponentState, ComponentState, str | None]] = []

    def __call__(self, name: str, old: ComponentState, new: ComponentState, reason: str | None) -> None:
        self.calls.append((name, old, new, reason))

    def path(self, name: str) -> list[ComponentState]:
        """The states ``name`` went through, in order."""
        return [new for n, _, new, _ in self.calls if n == name]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.02)
    return gone(pid)


def read_pid(path: Path, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text().strip()
            if text:
                return int(text)
        time.sleep(0.01)
    raise AssertionError(f"{path} was never written")
