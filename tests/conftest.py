"""Shared fixtures: real agents in temp roots, the CLI as a subprocess, seed data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def _searchable(path: Path) -> None:
    """Let other users pass through ``path`` and its parents below the temp folder (o+x, no listing)."""
    top = Path(tempfile.gettempdir()).resolve()
    for folder in (path, *path.parents):
        if folder == top or folder == folder.parent:
            break
        mode = folder.stat().st_mode
        if not mode & 0o001:
            os.chmod(folder, (mode & 0o7777) | 0o711)


# An agent run as root (as in CI) runs components as an unprivileged user, who must reach the
# agent's root folder; pytest makes its temp folders 0700, so they are opened to search here.
_pytest_mktemp = pytest.TempPathFactory.mktemp


def _mktemp_searchable(self: pytest.TempPathFactory, basename: str, numbered: bool = True) -> Path:
    path = _pytest_mktemp(self, basename, numbered)
    _searchable(path)
    return path


pytest.TempPathFactory.mktemp = _mktemp_searchable  # type: ignore[method-assign]


def require_service(name: str, available: bool, why: str) -> None:
    """Skip when a machine service is absent, except in CI (ROOST_REQUIRE_SERVICES=1)."""
    if available:
        return
    if os.environ.get("ROOST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{name} is required here (ROOST_REQUIRE_SERVICES=1) but {why}")
    pytest.skip(f"{name} not available: {why}")


@pytest.fixture
def seed_data() -> Path:
    path = SHARED / "seed-data"
    if not path.is_dir():
        pytest.skip("../shared/seed-data is absent (a fresh clone has no ../shared)")
    return path


class Cli:
    """Runs `python -m roost ...` against one agent root and returns (exit code, stdout, stderr)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, *args: str, timeout: float = 120, root: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "roost", *args]
        if root:
            cmd += ["--root", str(self.root)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def json(self, *args: str, timeout: float = 120) -> Any:
        proc = self.run(*args, "--json", timeout=timeout)
        assert proc.returncode == 0, f"{args} exited {proc.returncode}: {proc.stdout} {proc.stderr}"
        return json.loads(proc.stdout)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "root")


@pytest.fixture
def agent(cli: Cli) -> Iterator[Cli]:
    """A real agent process on a fresh root, stopped (and checked stopped) at teardown."""
    proc = cli.run("agent", "start", "--detach", "--thing-name", "test-device")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    try:
        yield cli
    finally:
        stop = cli.run("agent", "stop")
        assert stop.returncode == 0, stop.stderr
