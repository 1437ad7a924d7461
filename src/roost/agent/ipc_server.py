"""The agent's local IPC server: Greengrass event-stream RPC over a Unix socket.

Components connect with the path in ``AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT`` and
authenticate with their ``SVCUID``; both awsiotsdk's ``GreengrassCoreIPCClientV2`` and Roost's
own :class:`roost.ipc.client.IpcClient` work. The server is a thin transport: it parses,
authorises (:mod:`roost.agent.authz`), calls the agent's :class:`~roost.agent.ipc_core.IpcCore`
or the :class:`~roost.agent.pubsub.PubSub` broker, and serialises.

Connection rules (the limits are :class:`IpcLimits`):

* At most ``max_connections`` connections at once. One more is accepted only to be told why:
  a PROTOCOL_ERROR ``agent at its connection limit (N)`` with code ``IPC_BUSY`` (Roost's client
  raises :class:`~roost.ipc.errors.AgentBusyError`; awsiotsdk sees a failed connect), then
  the server half-closes it and drops it when the client closes, or after ``refused_linger`` s.
  The listen backlog is sized for the cap, so bursts of connects wait instead of failing.
* The first frame must be CONNECT (``:version`` 0.1.0, payload ``{"authToken": ...}``) within
  ``connect_timeout`` seconds, else the connection is closed. Before CONNECT succeeds a frame
  may be at most ``preconnect_max_frame`` bytes (the CONNECT frame is ~150 bytes) and the read
  buffer is 2 KiB, so an unauthenticated peer costs almost nothing; after CONNECT frames may be
  ``max_message_size``. The read buffer grows for a busy or large message and is trimmed back
  when the connection is idle. A wrong token gets a CONNECT_ACK without the accepted flag,
  then the connection is closed.
* A component (all its connections together) may hold ``max_streams_per_component`` open
  streams (subscriptions), and one connection ``max_streams_per_connection``; one more is
  answered with a ServiceError carrying code ``IPC_STREAM_LIMIT``; its other streams go on.
* Refusals (failed CONNECTs, over-cap connections, malformed or oversized frames, unauthorised
  operations) are logged once, then counted and summarised once per ``refusal_log_interval``
  (:class:`~roost.agent.logfile.RateLimitedLog`), then the recovery once: a flood of them
  cannot fill the disk.
* Every request gets an answer, a response or an application error; awsiotsdk's blocking calls
  would wait forever otherwise.
* A malformed frame (bad CRC, too large, garbage) gets a PROTOCOL_ERROR and closes only that
  connection. A consumer whose unsent data exceeds ``write_buffer_cap`` is disconnected
  rather than buffered without bound.

The socket file is created with mode 0660: components run as the agent's user or group on
Roost (no per-component users), and the SVCUID is what authenticates a connection.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import inspect
import json
import logging
import os
import resource
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

from roost.agent import authz
from roost.agent.errors import IpcNotAuthenticatedError, IpcStreamLimitError
from roost.agent.ipc_core import IpcCore
from roost.agent.logfile import RateLimitedLog
from roost.agent.pubsub import RECEIVE_ALL_MESSAGES, PubSub, validate_topic, validate_topic_filter
from roost.errors import ConflictError, InvalidInputError, NotFoundError, RoostError, UnauthorizedError
from roost.ipc import rpc
from roost.ipc.errors import AgentBusyError, FrameError
from roost.ipc.eventstream import Message, MessageDecoder, encode_frame

logger = logging.getLogger(__name__)

MAX_PAYLOAD_SIZE: Final = rpc.MAX_PAYLOAD_SIZE
#: A 1 MiB binary message grows by a third in base64, plus headers and JSON framing.
DEFAULT_MAX_MESSAGE_SIZE: Final = rpc.MAX_FRAME_SIZE
DEFAULT_WRITE_BUFFER_CAP: Final = 8 * 1024 * 1024
SOCKET_MODE: Final = 0o660
#: Read buffer of a connection that has not completed CONNECT (and of an idle one after a trim).
PRECONNECT_BUFFER: Final = 2048
#: Refused (over-cap) connections lingering at once to read their refusal; beyond, closed at once.
MAX_LINGERING: Final = 64
#: Where data from refused connections is read into and dropped (shared: costs nothing per connection).
_DISCARD: Final = memoryview(bytearray(4096))
LIFECYCLE_STATES: Final = ("RUNNING", "ERRORED")

_EMPTY_JSON: Final = b"{}"
_PUBLISH_ACK_HEADER: Final = rpc.header_prefix(
    rpc.APPLICATION_MESSAGE, rpc.FLAG_TERMINATE_STREAM, rpc.response_model(rpc.OP_PUBLISH_TO_TOPIC)
)


def _error_shape(operation: str, err: BaseException) -> tuple[str, str, dict[str, Any] | None]:
    """Map an exception raised while handling ``operation`` to (error type, message, extra)."""
    # Every RoostError carries its stable code in ``context.code`` (awsiotsdk ignores the field;
    # Roost's CLI turns it back into the same error and exit code).
    code = {"context": {"code": err.code}} if isinstance(err, RoostError) else None
    if isinstance(err, UnauthorizedError):
        return rpc.ERR_UNAUTHORIZED, err.message, code
    if isinstance(err, InvalidInputError):
        return rpc.ERR_INVALID_ARGUMENTS, err.message, code
    if isinstance(err, NotFoundError):
        if operation in (rpc.OP_RESTART_COMPONENT, rpc.OP_STOP_COMPONENT):
            return rpc.ERR_COMPONENT_NOT_FOUND, err.message, code
        return rpc.ERR_RESOURCE_NOT_FOUND, err.message, code
    if isinstance(err, ConflictError):
        return rpc.ERR_CONFLICT, err.message, code
    if isinstance(err, RoostError):
        return rpc.ERR_SERVICE, err.message, {"context": {"code": err.code}}
    logger.error("IPC %s failed with an unexpected error", rpc.short_name(operation), exc_info=err)
    return rpc.ERR_SERVICE, f"internal error while handling {rpc.short_name(operation)}", None


def _string_field(request: dict[str, Any], field: str, *, required: bool = True) -> str | None:
    value = request.get(field)
    if value is None:
        if required:
            raise InvalidInputError(f"{field} is required")
        return None
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{field} must be a non-empty string, got {value!r}")
    return value


def _key_path(request: dict[str, Any]) -> list[str]:
    value = request.get("keyPath")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise InvalidInputError(f"keyPath must be a list of strings, got {value!r}")
    return value


_Result = dict[str, Any] | Awaitable[dict[str, Any]] | None
Handler = Callable[["_Connection", int, str, dict[str, Any]], _Result]


@dataclass(frozen=True)
class IpcLimits:
    """The IPC server's resource bounds (see the module docstring for what each one does)."""

    #: Connections held at once (authenticated or not); one more is refused with IPC_BUSY.
    max_connections: int = 1024
    #: Seconds a new connection has to complete CONNECT.
    connect_timeout: float = 5.0
    #: Largest frame accepted before CONNECT succeeds (the CONNECT frame itself is tiny).
    preconnect_max_frame: int = 8 * 1024
    #: Largest frame accepted after CONNECT.
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Open streams (subscriptions) per component, across all its connections.
    max_streams_per_component: int = 1024
    #: Open streams per connection.
    max_streams_per_connection: int = 1024
    #: Unsent bytes per connection before a slow consumer is dropped.
    write_buffer_cap: int = DEFAULT_WRITE_BUFFER_CAP
    #: Seconds between two summary lines of repeated refusals.
    refusal_log_interval: float = 60.0
    #: Seconds between housekeeping passes (trimming idle read buffers, refusal summaries).
    housekeeping_interval: float = 10.0
    #: Seconds a refused (over-cap) connection may stay open to read its refusal.
    refused_linger: float = 2.0

    def __post_init__(self) -> None:
        for name in ("max_connections", "preconnect_max_frame", "max_message_size", "max_streams_per_component",
                     "max_streams_per_connection", "write_buffer_cap"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"IPC limit {name} must be at least 1, got {getattr(self, name)}",
                                        code="INVALID_IPC_LIMIT")
        for name in ("connect_timeout", "refusal_log_interval", "housekeeping_interval", "refused_linger"):
            if getattr(self, name) <= 0:
                raise InvalidInputError(f"IPC limit {name} must be positive, got {getattr(self, name)}",
                                        code="INVALID_IPC_LIMIT")

    @property
    def backlog(self) -> int:
        """Listen backlog sized for the cap (the kernel clamps it to net.core.somaxconn)."""
        return max(128, min(self.max_connections, 65535))


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
        **overrides: Any,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.core = core
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


class _Connection(asyncio.BufferedProtocol):
    """One component connection.

    A :class:`asyncio.BufferedProtocol`: the transport reads into the decoder's reused buffer
    (asyncio's plain protocols allocate a fresh 256 KiB ``bytes`` per read, which glibc turns
    into an mmap/munmap per message).
    """

    def __init__(self, server: IpcServer) -> None:
        self.server = server
        self.core = server.core
        self.decoder = MessageDecoder(server.limits.preconnect_max_frame, PRECONNECT_BUFFER)
        self.transport: asyncio.Transport | None = None
        #: the final answer is sent: reads are dropped, the connection no longer counts
        self.refused = False
        self._linger_timer: asyncio.TimerHandle | None = None
        self.principal: str | None = None
        self.privileged = False
        self.closing = False
        self.last_stream_id = 0
        #: open streams (subscriptions): stream id → function that ends the subscription
        self.streams: dict[int, Callable[[], None]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._connect_timer: asyncio.TimerHandle | None = None
        self._acl: Any = None
        self._acl_cache: dict[tuple[str, str, str | None], bool] = {}
        self._out: list[bytes] = []
        #: successful responses the client asked to receive lazily (rpc.H_DEFER_ACK)
        self._deferred: list[bytes] = []
        self._deferred_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport = cast(asyncio.Transport, transport)
        server = self.server
        cap = server.limits.max_connections
        if len(server._connections) >= cap:
            self._refuse_for_load(transport, cap)
            return
        server._connections.add(self)
        transport.set_write_buffer_limits(high=server.write_buffer_cap)
        self._connect_timer = server.loop.call_later(server.connect_timeout, self._connect_timed_out)

    def _refuse_for_load(self, transport: asyncio.Transport, cap: int) -> None:
        """Tell an over-cap peer why (IPC_BUSY) and let it go, without counting it."""
        self.server.refused_connections.note(f"connection limit ({cap})")
        transport.write(rpc.protocol_error(f"agent at its connection limit ({cap}); retry later", AgentBusyError.code))
        self._linger_close()

    def _linger_close(self) -> None:
        """Close after a final answer so that the peer can read it.

        Closing a Unix socket with unread input resets the peer, which then loses what was
        sent to it. So: send what is pending, half-close (the peer can still write its CONNECT
        or the rest of a frame: no EPIPE), drop everything it sends into a shared scratch
        buffer, and go when it closes or after ``refused_linger`` s. The connection stops
        counting against the cap at once; at most :data:`MAX_LINGERING` linger at a time
        (beyond that, plain close).
        """
        if self.refused:
            return
        if self._deferred:
            self.write(b"")
        self.flush()
        self._release()
        self.closing = self.refused = True
        transport = self.transport
        if transport is None:
            return
        server = self.server
        if server._lingering >= MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        server._lingering += 1
        transport.write_eof()
        self._linger_timer = server.loop.call_later(server.limits.refused_linger, transport.abort)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.refused:
            return _DISCARD
        return self.decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        if self.closing:
            return
        server = self.server
        server._batch += 1
        try:
            try:
                messages = self.decoder.buffer_updated(nbytes)
            except FrameError as err:
                kind = "oversized frame" if err.code == "FRAME_TOO_LARGE" else "malformed frame"
                if self.principal is None:
                    kind += " before CONNECT"
                self._protocol_failure(f"malformed frame ({err.code}): {err.message}", kind)
                return
            on_message = self._on_message
            for message in messages:
                if self.closing:
                    return
                on_message(message)
        finally:
            server._batch -= 1
            if not server._batch and server._dirty:
                server._flush()

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.server.refused_connections.note(
            f"slow consumer dropped (more than {self.server.write_buffer_cap} bytes waiting to be sent)", self._who()
        )
        transport = self.transport
        if transport is not None:
            self.server.loop.call_soon(transport.abort)

    def resume_writing(self) -> None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
            self.server._lingering -= 1
        self._release()

    def _release(self) -> None:
        """End the connection's streams, tasks and timers; it no longer counts (idempotent)."""
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        streams, self.streams = self.streams, {}
        for sid in list(streams):
            self._stream_closed(streams.pop(sid))
        for task in self.tasks:
            task.cancel()
        self.server._connections.discard(self)

    # -- helpers ----------------------------------------------------------------------------

    def _who(self) -> str:
        return self.principal if self.principal is not None else "an unauthenticated peer"

    def require_principal(self) -> str:
        """The authenticated principal; :class:`IpcNotAuthenticatedError` if CONNECT has not succeeded."""
        principal = self.principal
        if principal is None:
            raise IpcNotAuthenticatedError("this IPC connection has not completed CONNECT: no operation is allowed")
        return principal

    def add_stream(self, sid: int, end: Callable[[], None]) -> None:
        """Record an open stream (counted against the component's limit); ``end`` closes it."""
        principal = self.require_principal()
        self.streams[sid] = end
        counts = self.server._streams_by_principal
        counts[principal] = counts.get(principal, 0) + 1

    def end_stream(self, sid: int) -> None:
        end = self.streams.pop(sid, None)
        if end is not None:
            self._stream_closed(end)

    def _stream_closed(self, end: Callable[[], None]) -> None:
        principal = self.principal
        if principal is not None:
            counts = self.server._streams_by_principal
            left = counts.get(principal, 0) - 1
            if left > 0:
                counts[principal] = left
            else:
                counts.pop(principal, None)
        try:
            end()
        except Exception:
            logger.exception("ending an IPC subscription of %s failed", self._who())

    def close(self) -> None:
        if not self.closing:
            if self._deferred:
                self.write(b"")
            self.flush()
            self.closing = True
            if self.transport is not None:
                self.transport.close()

    def write(self, data: bytes) -> None:
        if self.closing or self.transport is None:
            return
        if self._deferred:
            data = b"".join((*self._deferred, data))
            self._deferred.clear()
            if self._deferred_timer is not None:
                self._deferred_timer.cancel()
                self._deferred_timer = None
        if self.server._batch:
            out = self._out
            if not out:
                self.server._dirty.append(self)
            out.append(data)
        else:
            self.transport.write(data)

    def defer(self, data: bytes) -> None:
        """Send ``data`` with the next frame written to this connection, or after a short delay."""
        if self.closing:
            return
        self._deferred.append(data)
        if self._deferred_timer is None:
            self._deferred_timer = self.server.loop.call_later(rpc.DEFERRED_ACK_DELAY, self._deferred_due)

    def _deferred_due(self) -> None:
        self._deferred_timer = None
        if self._deferred:
            self.write(b"")

    def flush(self) -> None:
        out = self._out
        if not out:
            return
        transport = self.transport
        if not self.closing and transport is not None:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _protocol_failure(self, reason: str, kind: str | None = None) -> None:
        self.server.refused_connections.note(kind or "protocol error", f"{self._who()}: {reason}")
        self.write(rpc.protocol_error(reason))
        self._linger_close()

    def _connect_timed_out(self) -> None:
        self._connect_timer = None
        if self.principal is None and not self.closing:
            self.server.refused_connections.note(f"no CONNECT within {self.server.connect_timeout:g} s")
            self.close()

    # -- messages ---------------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        headers = message.headers
        mtype = headers.get(rpc.H_MESSAGE_TYPE)
        if mtype == rpc.APPLICATION_MESSAGE and self.principal is not None:
            self._on_application_message(headers, message.payload)
        elif self.principal is None:
            if mtype == rpc.CONNECT:
                self._on_connect(message)
            else:
                self._protocol_failure(f"expected CONNECT as the first message, got message type {mtype!r}")
        elif mtype == rpc.PING:
            self.write(rpc.ping_response(message.payload))
        elif mtype == rpc.PING_RESPONSE:
            return
        else:
            self._protocol_failure(f"unexpected message type {mtype!r}")

    def _on_connect(self, message: Message) -> None:
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        version = message.headers.get(rpc.H_VERSION)
        if version != rpc.VERSION:
            self._protocol_failure(f"CONNECT with unsupported :version {version!r} (expected {rpc.VERSION})")
            return
        token: Any = None
        try:
            doc = json.loads(message.payload) if message.payload else {}
            if isinstance(doc, dict):
                token = doc.get("authToken")
        except ValueError:
            token = None
        principal: str | None = None
        if isinstance(token, str) and token:
            try:
                principal = self.core.authenticate(token)
            except Exception:
                logger.exception("IPC authentication failed with an unexpected error")
                principal = None
        if principal is None:
            self.server.refused_connections.note("unknown or missing authToken")
            self.write(rpc.connect_ack(False))
            self._linger_close()
            return
        self.principal = principal
        self.privileged = bool(self.core.is_privileged(principal))
        self.decoder.max_message_size = self.server.max_message_size
        self.write(rpc.connect_ack(True))

    def _on_application_message(self, headers: dict[str, Any], payload: bytes) -> None:
        sid = headers.get(rpc.H_STREAM_ID)
        if type(sid) is not int or sid <= 0:
            self._protocol_failure(f"application message with invalid :stream-id {sid!r}")
            return
        if sid in self.streams:
            if headers.get(rpc.H_MESSAGE_FLAGS, 0) & rpc.FLAG_TERMINATE_STREAM:
                self.end_stream(sid)
            return
        if sid <= self.last_stream_id:
            return  # a late message (e.g. terminate) on a stream that already ended
        self.last_stream_id = sid
        operation = headers.get(rpc.H_OPERATION)
        if not isinstance(operation, str):
            self.write(rpc.application_error(sid, rpc.ERR_SERVICE, "missing operation header"))
            return
        handler = _HANDLERS.get(operation)
        if handler is None:
            self.write(rpc.application_error(sid, rpc.ERR_SERVICE, f"unsupported operation {operation!r}"))
            return
        try:
            request = json.loads(payload) if payload else {}
            if not isinstance(request, dict):
                raise InvalidInputError(f"the {rpc.short_name(operation)} request must be a JSON object")
        except ValueError as err:
            msg = f"the {rpc.short_name(operation)} request is not valid JSON: {err}"
            self.write(rpc.application_error(sid, rpc.ERR_INVALID_ARGUMENTS, msg))
            return
        except InvalidInputError as err:
            self.write(rpc.application_error(sid, rpc.ERR_INVALID_ARGUMENTS, err.message))
            return
        try:
            result = handler(self, sid, operation, request)
        except Exception as err:
            self._write_error(sid, operation, err)
            return
        if result is None:
            return
        if type(result) is not dict and inspect.isawaitable(result):
            task = self.server.loop.create_task(self._finish(sid, operation, result))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return
        if not result and headers.get(rpc.H_DEFER_ACK) is True:
            self.defer(encode_frame(_PUBLISH_ACK_HEADER + rpc.stream_id_header(sid), _EMPTY_JSON))
            return
        self._respond(sid, operation, result)

    def _respond(self, sid: int, operation: str, result: dict[str, Any]) -> None:
        payload = rpc.dumps(result) if result else _EMPTY_JSON
        self.write(rpc.application_message(sid, rpc.response_model(operation), payload, terminate=True))

    def _write_error(self, sid: int, operation: str, err: BaseException) -> None:
        error_type, message, extra = _error_shape(operation, err)
        if isinstance(err, UnauthorizedError | IpcStreamLimitError):
            code = err.code
            self.server.refused_operations.note(f"{rpc.short_name(operation)} ({code})", f"{self._who()}: {message}")
        self.write(rpc.application_error(sid, error_type, message, extra=extra))

    async def _finish(self, sid: int, operation: str, pending: Awaitable[dict[str, Any]]) -> None:
        try:
            result = await pending
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self._write_error(sid, operation, err)
            return
        try:
            self._respond(sid, operation, result)
        except Exception as err:  # e.g. the core returned something that is not JSON
            self._write_error(sid, operation, err)

    def authorize(self, service: str, operation: str, resource: str | None) -> None:
        principal = self.require_principal()
        if self.privileged:
            return
        acl = self.core.access_control(principal)
        # Decisions are cached while the core hands back the very same accessControl object;
        # a new object (the configuration changed) starts a fresh cache.
        if acl is not self._acl:
            self._acl = acl
            self._acl_cache.clear()
        key = (service, operation, resource)
        allowed = self._acl_cache.get(key)
        if allowed is None:
            allowed = authz.authorize(acl, service, operation, resource)
            if len(self._acl_cache) >= 1024:
                self._acl_cache.clear()
            self._acl_cache[key] = allowed
        if not allowed:
            target = f" on resource {resource}" if resource is not None else ""
            raise UnauthorizedError(f"principal {principal} is not authorized to perform {service}:{operation}{target}")

    def check_stream_capacity(self) -> None:
        """Raise :class:`IpcStreamLimitError` if one more stream would exceed a limit."""
        principal = self.require_principal()
        limits = self.server.limits
        if len(self.streams) >= limits.max_streams_per_connection:
            raise IpcStreamLimitError(
                f"too many open streams on this connection (limit {limits.max_streams_per_connection}); "
                "close a subscription first"
            )
        if self.server.open_streams(principal) >= limits.max_streams_per_component:
            raise IpcStreamLimitError(
                f"too many open streams for {principal} across its connections "
                f"(limit {limits.max_streams_per_component}); close a subscription first"
            )

    def send_config_event(self, sid: int, component: str, key_path: list[str]) -> None:
        if sid not in self.streams or self.closing:
            return
        payload = rpc.dumps({"configurationUpdateEvent": {"componentName": component, "keyPath": key_path}})
        self.write(rpc.application_message(sid, rpc.CONFIGURATION_UPDATE_EVENTS, payload))


class _TopicStream:
    """Delivers pub/sub messages to one SubscribeToTopic stream."""

    __slots__ = ("conn", "header", "server")

    def __init__(self, conn: _Connection, sid: int) -> None:
        self.conn = conn
        self.server = conn.server
        self.header = rpc.header_prefix(
            rpc.APPLICATION_MESSAGE, 0, rpc.SUBSCRIPTION_RESPONSE_MESSAGE
        ) + rpc.stream_id_header(sid)

    def deliver(self, topic: str, message: Any, publisher: str) -> None:
        conn = self.conn
        if conn.closing:
            return
        conn.write(encode_frame(self.header, self.server.event_payload(topic, message)))


# -- operation handlers ------------------------------------------------------------------------


def _publish_to_topic(conn: _Connection, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    topic = validate_topic(request.get("topic"))
    publish_message = request.get("publishMessage")
    if not isinstance(publish_message, dict):
        raise InvalidInputError("publishMessage must be an object with jsonMessage or binaryMessage")
    conn.authorize(authz.PUBSUB_SERVICE, operation, topic)
    principal = conn.require_principal()
    json_message = publish_message.get("jsonMessage")
    if json_message is not None:
        if not isinstance(json_message, dict):
            raise InvalidInputError("publishMessage.jsonMessage must be an object")
        conn.server._publish(topic, json_message.get("message"), principal, None)
        return {}
    binary_message = publish_message.get("binaryMessage")
    if not isinstance(binary_message, dict):
        raise InvalidInputError("publishMessage must contain a jsonMessage or a binaryMessage object")
    b64 = binary_message.get("message", "")
    if not isinstance(b64, str):
        raise InvalidInputError("publishMessage.binaryMessage.message must be a base64 string")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidInputError("publishMessage.binaryMessage.message is not valid base64") from err
    conn.server._publish(topic, raw, principal, b64)
    return {}


def _subscribe_to_topic(conn: _Connection, sid: int, operation: str, request: dict[str, Any]) -> None:
    topic = validate_topic_filter(request.get("topic"))
    mode = request.get("receiveMode")
    if mode is None:
        mode = RECEIVE_ALL_MESSAGES
    elif mode not in rpc.RECEIVE_MODES:
        raise InvalidInputError(f"receiveMode must be one of {', '.join(rpc.RECEIVE_MODES)}, got {mode!r}")
    conn.authorize(authz.PUBSUB_SERVICE, operation, topic)
    conn.check_stream_capacity()
    principal = conn.require_principal()
    conn.write(rpc.application_message(sid, rpc.response_model(operation), rpc.dumps({"topicName": topic})))
    pubsub = conn.server.pubsub
    handle = pubsub.subscribe(topic, principal, _TopicStream(conn, sid).deliver, mode)
    conn.add_stream(sid, lambda: pubsub.unsubscribe(handle))
    return None


async def _get_configuration(conn: _Connection, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    principal = conn.require_principal()
    component = _string_field(request, "componentName", required=False) or principal
    key_path = _key_path(request)
    if component != principal:
        conn.authorize(authz.CONFIG_SERVICE, operation, component)
    value = await conn.core.get_configuration(principal, component, key_path)
    if key_path and not isinstance(value, dict):
        value = {key_path[-1]: value}  # Greengrass wraps a leaf as {lastKey: value}
    return {"componentName": component, "value": value}


async def _update_configuration(conn: _Connection, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    principal = conn.require_principal()
    key_path = _key_path(request)
    if "valueToMerge" not in request:
        raise InvalidInputError("valueToMerge is required")
    # Policy changes only through a deployment: the whole update is refused, nothing changes.
    authz.check_configuration_update(principal, key_path, request["valueToMerge"])
    raw_ts = request.get("timestamp")
    if raw_ts is None:
        timestamp = time.time()
    elif isinstance(raw_ts, int | float) and not isinstance(raw_ts, bool):
        timestamp = float(raw_ts) / 1000.0 if raw_ts > 1e11 else float(raw_ts)
    else:
        raise InvalidInputError(f"timestamp must be a number (seconds since the epoch), got {raw_ts!r}")
    await conn.core.update_configuration(principal, key_path, request["valueToMerge"], timestamp)
    return {}


def _subscribe_to_configuration_update(conn: _Connection, sid: int, operation: str, request: dict[str, Any]) -> None:
    principal = conn.require_principal()
    component = _string_field(request, "componentName", required=False) or principal
    key_path = _key_path(request)
    if component != principal:
        conn.authorize(authz.CONFIG_SERVICE, operation, component)
    conn.check_stream_capacity()
    loop = conn.server.loop

    def changed(changed_component: str, changed_path: list[str]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the agent is shutting down
            loop.call_soon_threadsafe(conn.send_config_event, sid, changed_component, list(changed_path))

    unsubscribe = conn.core.subscribe_configuration(principal, component, key_path, changed)
    conn.write(rpc.application_message(sid, rpc.response_model(operation), _EMPTY_JSON))
    conn.add_stream(sid, unsubscribe)
    return None


async def _update_state(conn: _Connection, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    principal = conn.require_principal()
    state = request.get("state")
    if state not in LIFECYCLE_STATES:
        raise InvalidInputError(f"state must be one of {', '.join(LIFECYCLE_STATES)}, got {state!r}")
    await conn.core.update_state(principal, state)
    return {}


_CLI_RESOURCE_FIELD: Final = {
    rpc.OP_GET_COMPONENT_DETAILS: "componentName",
    rpc.OP_RESTART_COMPONENT: "componentName",
    rpc.OP_STOP_COMPONENT: "componentName",
    rpc.OP_GET_LOCAL_DEPLOYMENT_STATUS: "deploymentId",
    rpc.OP_CANCEL_LOCAL_DEPLOYMENT: "deploymentId",
}


async def _cli_operation(conn: _Connection, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    principal = conn.require_principal()
    field = _CLI_RESOURCE_FIELD.get(operation)
    resource = _string_field(request, field) if field is not None else None
    conn.authorize(authz.CLI_SERVICE, operation, resource)
    result = await conn.core.cli_operation(principal, rpc.short_name(operation), request)
    if not isinstance(result, dict):
        raise TypeError(f"cli_operation({rpc.short_name(operation)}) returned {type(result).__name__}")
    return result


_HANDLERS: Final[dict[str, Handler]] = {
    rpc.OP_PUBLISH_TO_TOPIC: _publish_to_topic,
    rpc.OP_SUBSCRIBE_TO_TOPIC: _subscribe_to_topic,
    rpc.OP_GET_CONFIGURATION: _get_configuration,
    rpc.OP_UPDATE_CONFIGURATION: _update_configuration,
    rpc.OP_SUBSCRIBE_TO_CONFIGURATION_UPDATE: _subscribe_to_configuration_update,
    rpc.OP_UPDATE_STATE: _update_state,
    **{op: _cli_operation for op in rpc.CLI_OPERATIONS},
}


def registered_operations() -> list[str]:
    """Every operation the server answers (full names), for docs/ipc.md's table and its test."""
    return sorted(_HANDLERS)


def _ensure_fd_limit(max_connections: int) -> None:
    """Raise the soft RLIMIT_NOFILE so the connection cap, not EMFILE, is what limits connections."""
    wanted = max_connections + 256  # components' pipes, the store, log files, sockets to the hub
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if new > soft:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
                soft = new
    if soft != resource.RLIM_INFINITY and soft < wanted:
        logger.warning(
            "the open-file limit (%d) is below what %d IPC connections need (~%d): connections may be "
            "refused by the OS before the agent's own limit; raise the hard limit (ulimit -Hn)",
            soft, max_connections, wanted,
        )
