"""The CLI's connection to a running agent: the local IPC socket as the privileged CLI principal."""

from __future__ import annotations

import asyncio
from typing import Any

from roost.agent.daemon import running_pid
from roost.agent.paths import AgentPaths
from roost.errors import ConflictError, InvalidInputError, NotFoundError, RoostError, UnauthorizedError
from roost.ipc.client import IpcClient
from roost.ipc.errors import (
    ConflictIpcError,
    InvalidArgumentsIpcError,
    ResourceNotFoundIpcError,
    ServiceErrorResponse,
    UnauthorizedIpcError,
)

_AS_ROOST: dict[type[ServiceErrorResponse], type[RoostError]] = {
    UnauthorizedIpcError: UnauthorizedError, InvalidArgumentsIpcError: InvalidInputError,
    ResourceNotFoundIpcError: NotFoundError, ConflictIpcError: ConflictError,
}


class AgentNotRunningError(RoostError):
    code = "AGENT_NOT_RUNNING"


def call(root: str | None, operation: str, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """One CLI operation (``ListComponents``, ...) on the agent at ``root``."""
    paths = AgentPaths.at(root)
    if running_pid(paths) is None:
        raise AgentNotRunningError(f"no agent is running on {paths.root}; start one with "
                                   f"`roost agent start --root {paths.root} --detach`")
    try:
        token = paths.cli_token.read_text().strip()
    except OSError as err:
        raise AgentNotRunningError(f"cannot read the CLI credential {paths.cli_token}: {err.strerror}; "
                                   "run the CLI as the agent's user") from err

    async def run() -> dict[str, Any]:
        client = await IpcClient.connect(str(paths.ipc_socket), token, timeout=timeout)
        try:
            return await client.call(operation, request, timeout=timeout)
        finally:
            await client.close()

    try:
        return asyncio.run(run())
    except ServiceErrorResponse as err:
        # The agent's error, with its class and stable code, as if it had been raised here.
        context = err.payload.get("context") if isinstance(err.payload, dict) else None
        code = context.get("code") if isinstance(context, dict) else None
        cls = next((c for k, c in _AS_ROOST.items() if isinstance(err, k)), RoostError)
        raise cls(err.message, code=code if isinstance(code, str) else None) from err
