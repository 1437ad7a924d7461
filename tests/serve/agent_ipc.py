"""Talking to a test agent's IPC as its privileged local CLI principal (the tests' way to be a component)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from roost.ipc.client import IpcClient
from roost.ipc.errors import IpcTimeoutError
from tests.conftest import Cli, running_agent

__all__ = ["agent_client", "running_agent", "until_serving"]


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
