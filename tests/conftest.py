"""Shared fixtures: real agents in temp roots, the CLI as a subprocess or in process, seed data,
the one gate every skip goes through, and the test tiers.

Tiers: ``make test-fast`` runs ``pytest -m "not slow"``, the unit tier. ``slow`` marks the end-to-end
tests that start real agents, hubs or browsers as processes: files that say so themselves
(``pytestmark = pytest.mark.slow``), every ``*_e2e.py`` file, the files in :data:`SLOW_FILES`, and
every test that uses a fixture of :data:`SLOW_FIXTURES` (see :func:`pytest_collection_modifyitems`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
SHARED = REPO.parent / "shared"
SEED_DATA = SHARED / "seed-data"

#: Test files (relative to tests/) that start real agents, hubs or browsers as processes without a
#: ``*_e2e.py`` name or a ``slow`` mark of their own.
SLOW_FILES: frozenset[str] = frozenset({
    "hub/test_processes.py",        # `roost hub init/serve` processes, two hubs on one PostgreSQL
    "hub/test_console_browser.py",  # Chromium
    "hub/test_schemathesis.py",     # a live hub server per backend, property-based runs against the whole API
})
#: Fixtures that start a real agent process: a test using one is end to end.
SLOW_FIXTURES: frozenset[str] = frozenset({"agent", "magent"})


def is_slow(relpath: str, fixturenames: list[str] | tuple[str, ...]) -> bool:
    """Whether a test of file ``relpath`` (relative to tests/) using ``fixturenames`` is in the slow tier."""
    return relpath.endswith("_e2e.py") or relpath in SLOW_FILES or bool(SLOW_FIXTURES & set(fixturenames))


#: The longest test files (minutes each, most of it waiting on real processes) run first: `make test`'s
#: workers take files in collection order (--dist loadfile), and one of these left for the end would
#: keep one worker busy alone while the other has nothing left to do.
LONGEST_FIRST: tuple[str, ...] = (
    "provision/test_provision_e2e.py",  # a real sshd, Ansible, a wheelhouse, a device installed over SSH
    "sync/test_sync_e2e.py",
    "serve/test_service_e2e.py",
    "cluster/test_cluster_e2e.py",
    "learn/test_federated_e2e.py",  # real Flower SuperLink and SuperNodes, 3 jobs
    "agent/test_docker_e2e.py",
    "observe/test_prometheus_e2e.py",
    "agent/test_pause_resume.py",
    "agent/test_agent_e2e.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank: dict[int, int] = {}
    for item in items:
        try:
            rel = item.path.resolve().relative_to(TESTS).as_posix()
        except ValueError:
            continue
        if is_slow(rel, getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        rank[id(item)] = LONGEST_FIRST.index(rel) if rel in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=lambda item: rank.get(id(item), len(LONGEST_FIRST)))  # stable: files stay whole, in order


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


def require_service(name: str, available: bool, why: str, *, optional: bool = False) -> None:
    """Skip when a machine service is absent, except in CI (ROOST_REQUIRE_SERVICES=1).

    The one gate: every skip of the suite goes through it (tests/layout/test_skips.py checks), so
    nothing vanishes silently where everything is required. Usable at module level too.

    ``optional=True`` is for a service that no machine of this project (a developer's or CI's) ever has,
    which a person brings along by hand: a real Kubernetes cluster (``KUBECONFIG``). Such a test skips even
    under ROOST_REQUIRE_SERVICES=1; tests/layout/test_skips.py allows it only in the files of its
    ``OPTIONAL_SERVICES``.
    """
    if available:
        return
    if os.environ.get("ROOST_REQUIRE_SERVICES") == "1" and not optional:
        pytest.fail(f"{name} is required here (ROOST_REQUIRE_SERVICES=1) but {why}", pytrace=False)
    pytest.skip(f"{name} not available: {why}", allow_module_level=True)


def require_module(name: str) -> ModuleType:
    """``import name``, or skip through :func:`require_service` (awsiotsdk, uvloop, ...)."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        require_service(name, False, f"it does not import: {err}")
        raise  # not reached: require_service skipped or failed


def require_seed_data(*names: str) -> Path:
    """``../shared/seed-data`` holding ``names``, or skip through :func:`require_service`."""
    missing = [n for n in names if not (SEED_DATA / n).is_file()]
    present = SEED_DATA.is_dir() and not missing
    require_service("../shared/seed-data", present,
                    f"{SEED_DATA}{' lacks ' + ', '.join(missing) if SEED_DATA.is_dir() else ' is absent'}"
                    " (a fresh clone has no ../shared)")
    return SEED_DATA


@pytest.fixture
def seed_data() -> Path:
    return require_seed_data()


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

    def log(self, component: str) -> str:
        """A component's log on this root so far ('' before it has one)."""
        path = self.root / "logs" / f"{component}.log"
        return path.read_text() if path.exists() else ""

    def deploy(self, *args: str, timeout: float = 180) -> tuple[int, dict[str, Any]]:
        """``deployment create ARGS --wait --json``: (exit code, the deployment's JSON)."""
        out = self.run("deployment", "create", *args, "--wait", "--json", timeout=timeout)
        return out.returncode, json.loads(out.stdout)


class InProcessCli:
    """``roost ...`` run in this process with Typer's CliRunner against :data:`roost.cli.main.app`:
    the same exit code, stdout and stderr as the subprocess of :class:`Cli`, without an interpreter
    start-up. For commands that need no running agent, or that talk to one over its socket; an agent
    itself (``agent start``) always runs as its own process through :class:`Cli`.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, *args: str, root: bool = True, input: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        from typer.testing import CliRunner

        from roost.cli.main import app

        argv = [*args, *(["--root", str(self.root)] if root else [])]
        result = CliRunner().invoke(app, argv, input=input, env=env, prog_name="roost")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            # A traceback in a subprocess would be on stderr: keep it visible in assertion messages.
            import traceback

            stderr = result.stderr + "".join(traceback.format_exception(result.exception))
        else:
            stderr = result.stderr
        return subprocess.CompletedProcess(["roost", *argv], result.exit_code, result.stdout, stderr)

    def json(self, *args: str) -> Any:
        proc = self.run(*args, "--json")
        assert proc.returncode == 0, f"roost {shlex.join(args)} exited {proc.returncode}: {proc.stdout} {proc.stderr}"
        return json.loads(proc.stdout)


@pytest.fixture
def cli_inproc(tmp_path: Path) -> InProcessCli:
    """The CLI in process, on the same root as the ``cli`` fixture."""
    return InProcessCli(tmp_path / "root")


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "root")


@contextlib.contextmanager
def running_agent(root: Path, thing_name: str = "test-device", *options: str) -> Iterator[Cli]:
    """A real agent (``roost agent start --detach [options]``) on ``root``, stopped (and checked) at the end."""
    cli = Cli(root)
    proc = cli.run("agent", "start", "--detach", "--thing-name", thing_name, *options)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    try:
        yield cli
    finally:
        stop = cli.run("agent", "stop")
        assert stop.returncode == 0, stop.stderr


@pytest.fixture
def agent(cli: Cli) -> Iterator[Cli]:
    """A real agent process on a fresh root, stopped (and checked stopped) at teardown."""
    with running_agent(cli.root) as running:
        yield running
