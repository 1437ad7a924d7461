"""The listening side: :class:`IpcServer` (the socket, its connections, pub/sub fan-out, housekeeping)."""


from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import stat
from pathlib import Path
from typing import Any, Final

from roost.agent.iotcore import IotCore
from roost.agent.ipc.connection import _Connection
from roost.agent.ipc.counters import IpcCounters, Traffic
from roost.agent.ipc.direct import DirectChannels
from roost.agent.ipc.limits import IpcLimits, _ensure_fd_limit
from roost.agent.ipc_core import IpcCore
from roost.agent.logfile import RateLimitedLog
from roost.agent.pubsub import PubSub, validate_topic
from roost.ipc import rpc

logger = logging.getLogger(__name__)

SOCKET_MODE: Final = 0o660


class IpcServer:
    """The asyncio Unix-socket server. ``await start()``; ``await stop()``.

    ``limits`` bounds what connections may cost (:class:`IpcLimits`); the keyword arguments
    override single fields of it (``IpcServer(path, core, max_connections=64)``).
    """

    def __init__(
        self,
        socket_path: Path,
        core: IpcCore,
        *,
        limits: IpcLimits | None = None,
        pubsub: PubSub | None = None,
        strict_config_reads: bool = False,
        **overrides: Any,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.core = core
        #: Reading another component's configuration needs an aws.greengrass.ipc.config policy
        #: (``--strict-config-reads``); by default any component reads any, as on Greengrass.
        self.strict_config_reads = strict_config_reads
        #: The agent's IoT Core (PublishToIoTCore / SubscribeToIoTCore); the agent sets it when it has a broker.
        self.iot_core: IotCore | None = None
        base = limits if limits is not None else IpcLimits()
        if overrides:
            unknown = set(overrides) - set(IpcLimits.__dataclass_fields__)
            if unknown:
                raise TypeError(f"unknown IpcServer option(s): {', '.join(sorted(unknown))}")
            base = IpcLimits(**{**base.__dict__, **overrides})
        self.limits = base
        self.connect_timeout = base.connect_timeout
        self.max_message_size = base.max_message_size
        self.max_streams_per_connection = base.max_streams_per_connection
        self.write_buffer_cap = base.write_buffer_cap
        self.pubsub = pubsub if pubsub is not None else PubSub()
        self.direct = DirectChannels(self.pubsub, core)
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: open streams per principal, across its connections
        self._streams_by_principal: dict[str, int] = {}
        self._lingering = 0
        self._housekeeping: asyncio.TimerHandle | None = None
        interval = base.refusal_log_interval
        self.refused_connections = RateLimitedLog(logger, "IPC connections", interval=interval)
        self.refused_operations = RateLimitedLog(logger, "IPC operations", interval=interval)
        #: traffic, drops and refusals per component (the metrics endpoint reads them)
        self.ipc_counters = IpcCounters()
        # One-entry cache of the SubscriptionResponseMessage payload during a fan-out.
        self._cache_msg: Any = None
        self._cache_topic: str | None = None
        self._cache_payload: bytes | None = None
        # Write coalescing: while >0, frames for connections queue up and go out in one write per
        # connection when the outermost input callback ends (see _Connection.buffer_updated).
        self._batch = 0
        self._topic_suffix: dict[str, bytes] = {}
        self._dirty: list[_Connection] = []

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    def traffic(self) -> dict[str, Traffic]:
        """IPC traffic per component since the agent started (closed and open connections)."""
        return self.ipc_counters.totals(self._connections)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("IpcServer is not started")
        return self._loop

    def open_streams(self, principal: str) -> int:
        """Streams (subscriptions) ``principal`` holds open across its connections."""
        return self._streams_by_principal.get(principal, 0)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        path = self.socket_path
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()  # a stale socket from a previous agent run
        _ensure_fd_limit(self.limits.max_connections)
        self._server = await self._loop.create_unix_server(
            lambda: _Connection(self), path=str(path), backlog=self.limits.backlog
        )
        os.chmod(path, SOCKET_MODE)
        self._housekeeping = self._loop.call_later(self.limits.housekeeping_interval, self._housekeep)
        logger.info("IPC server listening on %s (at most %d connections)", path, self.limits.max_connections)

    def _housekeep(self) -> None:
        """Periodic: give idle connections their small read buffer back; log refusal summaries."""
        self._housekeeping = None
        for conn in self._connections:
            if not conn.closing:
                conn.decoder.trim()
        self.refused_connections.tick()
        self.refused_operations.tick()
        if self._server is not None:
            self._housekeeping = self.loop.call_later(self.limits.housekeeping_interval, self._housekeep)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None
        server.close()
        for conn in list(self._connections):
            conn.close()
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        logger.info("IPC server on %s stopped", self.socket_path)

    async def __aenter__(self) -> IpcServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def publish(self, topic: str, message: Any, publisher: str) -> int:
        """Publish from inside the agent (``message``: bytes or a JSON value) to every subscriber."""
        validate_topic(topic)
        return self._publish(topic, message, publisher, None)

    def _publish(self, topic: str, message: Any, publisher: str, b64: str | None) -> int:
        self._cache_msg = message
        self._cache_topic = topic
        self._cache_payload = None if b64 is None else self._binary_event(topic, b64)
        try:
            return self.pubsub.publish(topic, message, publisher)
        finally:
            self._cache_msg = self._cache_topic = self._cache_payload = None

    @staticmethod
    def _binary_event(topic: str, b64: str) -> bytes:
        return b"".join(
            (
                b'{"binaryMessage":{"message":"',
                b64.encode("ascii"),
                b'","context":{"topic":',
                rpc.dumps(topic),
                b"}}}",
            )
        )

    def event_payload(self, topic: str, message: Any) -> bytes:
        """The ``SubscriptionResponseMessage`` JSON for one delivery (encoded once per publish)."""
        if message is self._cache_msg and topic == self._cache_topic:
            payload = self._cache_payload
            if payload is not None:
                return payload
        if isinstance(message, bytes | bytearray | memoryview):
            payload = self._binary_event(topic, base64.b64encode(message).decode("ascii"))
        else:
            suffix = self._topic_suffix.get(topic)
            if suffix is None:
                if len(self._topic_suffix) >= 4096:
                    self._topic_suffix.clear()
                suffix = self._topic_suffix[topic] = b',"context":{"topic":' + rpc.dumps(topic) + b"}}}"
            payload = b'{"jsonMessage":{"message":' + rpc.dumps(message) + suffix
        if message is self._cache_msg and topic == self._cache_topic:
            self._cache_payload = payload
        return payload
