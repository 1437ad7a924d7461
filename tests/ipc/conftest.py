"""A real IpcServer on a real Unix socket, served by an in-memory IpcCore test double.

``MemoryCore`` stands in for the agent's core (components, tokens, accessControl,
configuration); everything between the client and the core is the real thing.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from roost.agent.ipc import IpcServer
from roost.agent.ipc_core import CLI_PRINCIPAL
from roost.errors import ConflictError, InvalidInputError, NotFoundError
from roost.ipc.client import IpcClient

COMP_A = "com.example.Sensor"
COMP_B = "com.example.Inference"
COMP_NONE = "com.example.NoPolicy"

TOKENS = {"tok-a": COMP_A, "tok-b": COMP_B, "tok-none": COMP_NONE, "tok-cli": CLI_PRINCIPAL}

ACL: dict[str, dict[str, Any]] = {
    COMP_A: {
        "aws.greengrass.ipc.pubsub": {
            "com.example.Sensor:pubsub:1": {
                "policyDescription": "sensor data and replies",
                "operations": ["aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic"],
                "resources": ["sensors/#", "req/*", "roost/reply/*", "local/+"],
            }
        },
        "aws.greengrass.ipc.config": {
            "com.example.Sensor:config:1": {
                "operations": ["aws.greengrass#GetConfiguration"],
                "resources": [COMP_B],
            }
        },
    },
    COMP_B: {
        "aws.greengrass.ipc.pubsub": {
            "com.example.Inference:pubsub:1": {"operations": ["*"], "resources": ["*"]},
        },
        "aws.greengrass.Cli": {
            "com.example.Inference:cli:1": {
                "operations": ["aws.greengrass#ListComponents", "aws.greengrass#RestartComponent"],
                "resources": [COMP_A],
            }
        },
    },
}


class MemoryCore:
    """In-memory IpcCore: tokens → components, accessControl and configuration dicts."""

    def __init__(self) -> None:
        self.tokens = dict(TOKENS)
        self.acl = ACL
        self.config: dict[str, dict[str, Any]] = {
            COMP_A: {"threshold": 0.5, "model": {"name": "wine", "version": "1.0.0"}},
            COMP_B: {"batch": 40},
            COMP_NONE: {},
        }
        self.timestamps: dict[str, float] = {}
        self.states: dict[str, str] = {}
        self.watchers: list[tuple[str, list[str], Callable[[str, list[str]], None]]] = []
        self.cli_calls: list[tuple[str, str, dict[str, Any]]] = []

    def authenticate(self, token: str) -> str | None:
        return self.tokens.get(token)

    def access_control(self, principal: str) -> Mapping[str, Any]:
        return self.acl.get(principal, {})

    def is_privileged(self, principal: str) -> bool:
        return principal == CLI_PRINCIPAL

    async def get_configuration(self, principal: str, component: str, key_path: list[str]) -> Any:
        if component not in self.config:
            raise NotFoundError(f"component {component} does not exist")
        node: Any = self.config[component]
        for key in key_path:
            if not isinstance(node, dict) or key not in node:
                raise NotFoundError(f"key path {'/'.join(key_path)} not found in {component}")
            node = node[key]
        return node

    async def update_configuration(
        self, principal: str, key_path: list[str], value_to_merge: Any, timestamp: float
    ) -> None:
        if timestamp < self.timestamps.get(principal, 0.0):
            raise ConflictError("the stored configuration is newer than the update")
        self.timestamps[principal] = timestamp
        node = self.config.setdefault(principal, {})
        for key in key_path[:-1]:
            node = node.setdefault(key, {})
        if key_path:
            last = key_path[-1]
            if isinstance(value_to_merge, dict) and isinstance(node.get(last), dict):
                node[last].update(value_to_merge)
            else:
                node[last] = value_to_merge
        else:
            if not isinstance(value_to_merge, dict):
                raise InvalidInputError("valueToMerge at the root must be an object")
            node.update(value_to_merge)
        for component, prefix, callback in list(self.watchers):
            if component == principal and key_path[: len(prefix)] == prefix:
                callback(principal, list(key_path))

    def subscribe_configuration(
        self,
        principal: str,
        component: str,
        key_path: list[str],
        callback: Callable[[str, list[str]], None],
    ) -> Callable[[], None]:
        if component not in self.config:
            raise NotFoundError(f"component {component} does not exist")
        entry = (component, list(key_path), callback)
        self.watchers.append(entry)
        return lambda: self.watchers.remove(entry)

    async def update_state(self, principal: str, state: str) -> None:
        self.states[principal] = state

    async def cli_operation(self, principal: str, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        self.cli_calls.append((principal, operation, request))
        if operation == "ListComponents":
            return {
                "components": [
                    {"componentName": c, "version": "1.0.0", "state": "RUNNING"} for c in sorted(self.config)
                ]
            }
        if operation in ("RestartComponent", "StopComponent"):
            name = request.get("componentName")
            if name not in self.config:
                raise NotFoundError(f"component {name} does not exist")
            return {"restartStatus": "SUCCEEDED", "message": ""}
        if operation == "GetLocalDeploymentStatus":
            raise RuntimeError("deployment store exploded")
        return {}


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # Unix socket paths are limited to ~108 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="roost-ipc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def core() -> MemoryCore:
    return MemoryCore()


ServerFactory = Callable[..., Awaitable[IpcServer]]


@pytest.fixture
async def make_server(sock_dir: Path, core: MemoryCore) -> AsyncIterator[ServerFactory]:
    servers: list[IpcServer] = []

    async def make(**kwargs: Any) -> IpcServer:
        kwargs.setdefault("connect_timeout", 0.5)
        server = IpcServer(sock_dir / f"ipc{len(servers)}.socket", core, **kwargs)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def server(make_server: ServerFactory) -> IpcServer:
    return await make_server()


ClientFactory = Callable[..., Awaitable[IpcClient]]


@pytest.fixture
async def connect(server: IpcServer) -> AsyncIterator[ClientFactory]:
    clients: list[IpcClient] = []

    async def make(token: str = "tok-a", **kwargs: Any) -> IpcClient:
        client = await IpcClient.connect(str(server.socket_path), token, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
