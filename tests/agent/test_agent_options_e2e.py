"""`roost agent start` options reach the agent process (IPC limits), end to end."""

from __future__ import annotations

import socket

import pytest

from roost.ipc.client import SyncIpcClient
from roost.ipc.errors import AgentBusyError
from tests.agent.helpers import wait_until
from tests.conftest import Cli


def test_ipc_max_connections_from_the_command_line(cli: Cli) -> None:
    start = cli.run("agent", "start", "--detach", "--ipc-max-connections", "2")
    assert start.returncode == 0, start.stdout + start.stderr
    held: list[socket.socket] = []
    try:
        token = (cli.root / "cli.token").read_text()
        for _ in range(2):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(cli.root / "ipc.socket"))
            held.append(s)
        with pytest.raises(AgentBusyError) as err:
            SyncIpcClient(str(cli.root / "ipc.socket"), token, timeout=10)
        assert "connection limit (2)" in str(err.value)
        for s in held:
            s.close()
        held.clear()
        # Once the two idle connections are gone, the CLI gets in again.
        wait_until(lambda: cli.run("component", "list").returncode == 0, what="the CLI to get in again")
    finally:
        for s in held:
            s.close()
        cli.run("agent", "stop")
