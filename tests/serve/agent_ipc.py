"""Talking to a test agent's IPC as its privileged local CLI principal (the tests' way to be a component)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from roost.ipc.client import IpcClient
from roost.ipc.errors import IpcTimeoutError
from tests.conftest import Cli


@contextmanager
def running_agent(root: Path, thing_name: str) -> Iterator[Cli]:
    """A real agent (``roost agent start --detach``) on ``root``, stopped (and checked) at the end."""
    cli = Cli(root)
    proc = cli.run("agent", "start", "--detach", "--thing-name", thing_name)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    try:
        yield cli
    finally:
        stop = cli.run("agent", "stop")
        assert stop.returncode == 0, stop.stderr


@asynccontextmanager
async def agent_client(cli: Cli) -> AsyncIterator[IpcClient]:
    ipc = await IpcClient.connect(str(cli.root / "ipc.socket"), (cli.root / "cli.token").read_text().strip())
    try:
        yield ipc
    finally:
        await ipc.close()


async def until_serving(ipc: IpcClient, topic: str, payload: dict[str, Any], timeout: float = 120,
                        per_try: float = 2) -> Any:
    """The first reply to ``payload``: the component may still be loading when the deployment ends."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await ipc.request(topic, payload, timeout=per_try)
        except IpcTimeoutError:
            if time.monotonic() > deadline:
                raise
