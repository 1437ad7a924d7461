"""The CLI's numbered exit codes and messages where no agent runs, in process (Typer's CliRunner).

The same commands against a running agent, as separate processes, are in the ``*_e2e.py`` files;
these need no agent, so they run in the unit tier without an interpreter start-up each.
"""

from __future__ import annotations

import json

import pytest

from roost import __version__
from tests.conftest import InProcessCli

#: README: 0 success, 2 bad command line, 3 invalid input, 4 not found, 5 no agent running.
NO_AGENT = 5


def test_version(cli_inproc: InProcessCli) -> None:
    out = cli_inproc.run("--version", root=False)
    assert (out.returncode, out.stdout) == (0, f"roost {__version__}\n")


def test_ipc_limits_must_be_positive(cli_inproc: InProcessCli) -> None:
    out = cli_inproc.run("agent", "start", "--detach", "--ipc-max-connections", "0")
    assert out.returncode == 2 and "--ipc-max-connections" in out.stdout + out.stderr
    assert not (cli_inproc.root / "agent.pid").exists() and not (cli_inproc.root / "ipc.socket").exists()


def test_an_unknown_command_is_a_bad_command_line(cli_inproc: InProcessCli) -> None:
    out = cli_inproc.run("nope", root=False)
    assert out.returncode == 2 and "No such command 'nope'" in out.stderr


@pytest.mark.parametrize("argv", [
    ["component", "list"], ["component", "details", "com.test.X"], ["deployment", "list"],
    ["deployment", "status", "abcd1234"],
])
def test_commands_that_need_the_agent_say_how_to_start_it(cli_inproc: InProcessCli, argv: list[str]) -> None:
    out = cli_inproc.run(*argv)
    assert out.returncode == NO_AGENT, (out.stdout, out.stderr)
    said = " ".join(out.stderr.split())  # rich wraps at 80 columns
    assert "AGENT_NOT_RUNNING" in said and f"roost agent start --root {cli_inproc.root} --detach" in said


def test_agent_status_without_an_agent(cli_inproc: InProcessCli) -> None:
    out = cli_inproc.run("agent", "status", "--json")
    assert out.returncode == NO_AGENT
    assert json.loads(out.stdout) == {"running": False, "pid": None, "root": str(cli_inproc.root)}
    assert cli_inproc.run("agent", "stop").returncode == 0  # nothing to stop is not an error


def test_a_malformed_merge_is_invalid_input(cli_inproc: InProcessCli) -> None:
    out = cli_inproc.run("deployment", "create", "--merge", "bad")
    assert out.returncode == 3 and "INVALID_ARGUMENT" in out.stderr and "NAME=VERSION" in out.stderr


def test_in_process_and_subprocess_agree(cli_inproc: InProcessCli) -> None:
    """The in-process runner is a faithful stand-in for ``python -m roost`` (one subprocess, once)."""
    import subprocess
    import sys

    argv = ["component", "list", "--root", str(cli_inproc.root)]
    proc = subprocess.run([sys.executable, "-m", "roost", *argv], capture_output=True, text=True, timeout=120,
                          check=False)
    inproc = cli_inproc.run(*argv[:2])
    assert (inproc.returncode, inproc.stdout, inproc.stderr) == (proc.returncode, proc.stdout, proc.stderr)
