"""What the parts of the IPC server see of each other, as Protocols (typing only).

:mod:`~roost.agent.ipc.server` imports :mod:`~roost.agent.ipc.connection`, which imports
:mod:`~roost.agent.ipc.operations`. The way back is typed against these Protocols, so the modules
form no import cycle, not even one made of ``if TYPE_CHECKING:`` imports:

* a connection sees its server as :class:`ServerSide` (what :class:`~roost.agent.ipc.server.IpcServer` has);
* an operation handler sees its connection as :class:`ConnectionSide` (what
  :class:`~roost.agent.ipc.connection._Connection` has), and the server through it as :class:`PublishSide`.

mypy checks that the real classes match where they are passed (``_Connection(self)`` in the server,
``handler(self, ...)`` in the connection).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from roost.agent.iotcore import IotCore
from roost.agent.ipc.counters import IpcCounters
from roost.agent.ipc.direct import DirectChannels
from roost.agent.ipc.limits import IpcLimits
from roost.agent.ipc_core import IpcCore
from roost.agent.logfile import RateLimitedLog
from roost.agent.pubsub import PubSub

#: The connection class the server holds (``_Connection``); a parameter, so this module needs no import of it.
C = TypeVar("C")


class PublishSide(Protocol):
    """The server as an operation handler uses it: pub/sub, fan-out and the event loop."""

    pubsub: PubSub
    #: direct request/reply channel offers and grants
    direct: DirectChannels
    #: Reading another component's configuration needs an aws.greengrass.ipc.config policy.
    strict_config_reads: bool
    #: The agent's IoT Core (its MQTT broker); None when no broker is configured.
    iot_core: IotCore | None

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def _publish(self, topic: str, message: Any, publisher: str, b64: str | None) -> int: ...

    def event_payload(self, topic: str, message: Any) -> bytes: ...


class ServerSide(PublishSide, Protocol[C]):
    """The server as a connection uses it: limits, counters, refusal logs, write coalescing."""

    core: IpcCore
    limits: IpcLimits
    connect_timeout: float
    max_message_size: int
    write_buffer_cap: int
    refused_connections: RateLimitedLog
    refused_operations: RateLimitedLog
    ipc_counters: IpcCounters
    _connections: set[C]
    _dirty: list[C]
    _streams_by_principal: dict[str, int]
    _lingering: int
    _batch: int

    def open_streams(self, principal: str) -> int: ...

    def _flush(self) -> None: ...


class ConnectionSide(Protocol):
    """One authenticated connection as an operation handler uses it."""

    core: IpcCore

    @property
    def server(self) -> PublishSide: ...

    @property
    def closing(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def require_principal(self) -> str: ...

    def authorize(self, service: str, operation: str, resource: str | None) -> None: ...

    def check_stream_capacity(self) -> None: ...

    def add_stream(self, sid: int, end: Callable[[], None]) -> None: ...

    def end_stream(self, sid: int) -> None: ...

    def send_config_event(self, sid: int, component: str, key_path: list[str]) -> None: ...
