"""The agent's local IPC server: Greengrass event-stream RPC over a Unix socket.

Components connect with the path in ``AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT`` and
authenticate with their ``SVCUID``; both awsiotsdk's ``GreengrassCoreIPCClientV2`` and Roost's
own :class:`roost.ipc.client.IpcClient` work. The server is a thin transport: it parses,
authorises (:mod:`roost.agent.authz`), calls the agent's :class:`~roost.agent.ipc_core.IpcCore`
or the :class:`~roost.agent.pubsub.PubSub` broker, and serialises.

Connection rules:

* The first frame must be CONNECT (``:version`` 0.1.0, payload ``{"authToken": ...}``) within
  ``connect_timeout`` seconds, else the connection is closed. A wrong token gets a CONNECT_ACK
  without the accepted flag, then the connection is closed.
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
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, cast

from roost.agent import authz
from roost.agent.ipc_core import IpcCore
from roost.agent.pubsub import RECEIVE_ALL_MESSAGES, PubSub, validate_topic, validate_topic_filter
from roost.errors import ConflictError, InvalidInputError, NotFoundError, RoostError, UnauthorizedError
from roost.ipc import rpc
from roost.ipc.errors import FrameError
from roost.ipc.eventstream import Message, MessageDecoder, encode_frame

logger = logging.getLogger(__name__)

MAX_PAYLOAD_SIZE: Final = rpc.MAX_PAYLOAD_SIZE
#: A 1 MiB binary message grows by a third in base64, plus headers and JSON framing.
DEFAULT_MAX_MESSAGE_SIZE: Final = rpc.MAX_FRAME_SIZE
DEFAULT_WRITE_BUFFER_CAP: Final = 8 * 1024 * 1024
SOCKET_MODE: Final = 0o660
LIFECYCLE_STATES: Final = ("RUNNING", "ERRORED")

_EMPTY_JSON: Final = b"{}"
_PUBLISH_ACK_HEADER: Final = rpc.header_prefix(
    rpc.APPLICATION_MESSAGE, rpc.FLAG_TERMINATE_STREAM, rpc.response_model(rpc.OP_PUBLISH_TO_TOPIC)
)


class _Reject(Exception):
    """An answer with a specific IPC error shape (raised inside handlers)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def _error_shape(operation: str, err: BaseException) -> tuple[str, str, dict[str, Any] | None]:
    """Map an exception raised while handling ``operation`` to (error type, message, extra)."""
    if isinstance(err, _Reject):
        return err.error_type, err.message, None
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


class IpcServer:
    """The asyncio Unix-socket server. ``await start()``; ``await stop()``."""

    def __init__(
        self,
        socket_path: Path,
        core: IpcCore,
        *,
        connect_timeout: float = 5.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_streams_per_connection: int = 1024,
        write_buffer_cap: int = DEFAULT_WRITE_BUFFER_CAP,
        pubsub: PubSub | None = None,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.core = core
        self.connect_timeout = connect_timeout
        self.max_message_size = max_message_size
        self.max_streams_per_connection = max_streams_per_connection
        self.write_buffer_cap = write_buffer_cap
        self.pubsub = pubsub if pubsub is not None else PubSub()
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
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

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        path = self.socket_path
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()  # a stale socket from a previous agent run
        self._server = await self._loop.create_unix_server(lambda: _Connection(self), path=str(path))
        os.chmod(path, SOCKET_MODE)
        logger.info("IPC server listening on %s", path)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
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
        self.decoder = MessageDecoder(server.max_message_size)
        self.transport: asyncio.Transport | None = None
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
        self.server._connections.add(self)
        transport.set_write_buffer_limits(high=self.server.write_buffer_cap)
        self._connect_timer = self.server.loop.call_later(self.server.connect_timeout, self._connect_timed_out)

    def get_buffer(self, sizehint: int) -> memoryview:
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
                self._protocol_failure(f"malformed frame ({err.code}): {err.message}")
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
        logger.warning(
            "dropping IPC connection of %s: more than %d bytes waiting to be sent (consumer too slow)",
            self._who(),
            self.server.write_buffer_cap,
        )
        transport = self.transport
        if transport is not None:
            self.server.loop.call_soon(transport.abort)

    def resume_writing(self) -> None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        streams, self.streams = self.streams, {}
        for end in streams.values():
            try:
                end()
            except Exception:
                logger.exception("ending an IPC subscription of %s failed", self._who())
        for task in self.tasks:
            task.cancel()
        self.server._connections.discard(self)

    # -- helpers ----------------------------------------------------------------------------

    def _who(self) -> str:
        return self.principal if self.principal is not None else "an unauthenticated peer"

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

    def _protocol_failure(self, reason: str) -> None:
        logger.warning("closing IPC connection of %s: %s", self._who(), reason)
        self.write(rpc.protocol_error(reason))
        self.close()

    def _connect_timed_out(self) -> None:
        self._connect_timer = None
        if self.principal is None and not self.closing:
            logger.info("closing IPC connection: no CONNECT within %.1f s", self.server.connect_timeout)
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
            logger.info("IPC connection rejected: unknown or missing authToken")
            self.write(rpc.connect_ack(False))
            self.close()
            return
        self.principal = principal
        self.privileged = bool(self.core.is_privileged(principal))
        self.write(rpc.connect_ack(True))

    def _on_application_message(self, headers: dict[str, Any], payload: bytes) -> None:
        sid = headers.get(rpc.H_STREAM_ID)
        if type(sid) is not int or sid <= 0:
            self._protocol_failure(f"application message with invalid :stream-id {sid!r}")
            return
        end = self.streams.get(sid)
        if end is not None:
            if headers.get(rpc.H_MESSAGE_FLAGS, 0) & rpc.FLAG_TERMINATE_STREAM:
                del self.streams[sid]
                end()
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
        if self.privileged:
            return
        principal = self.principal
        assert principal is not None
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
        if len(self.streams) >= self.server.max_streams_per_connection:
            raise _Reject(
                rpc.ERR_SERVICE,
                f"too many open streams on this connection (limit {self.server.max_streams_per_connection})",
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
    principal = conn.principal
    assert principal is not None
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
    principal = conn.principal
    assert principal is not None
    conn.write(rpc.application_message(sid, rpc.response_model(operation), rpc.dumps({"topicName": topic})))
    pubsub = conn.server.pubsub
    handle = pubsub.subscribe(topic, principal, _TopicStream(conn, sid).deliver, mode)
    conn.streams[sid] = lambda: pubsub.unsubscribe(handle)
    return None


async def _get_configuration(conn: _Connection, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    principal = conn.principal
    assert principal is not None
    component = _string_field(request, "componentName", required=False) or principal
    key_path = _key_path(request)
    if component != principal:
        conn.authorize(authz.CONFIG_SERVICE, operation, component)
    value = await conn.core.get_configuration(principal, component, key_path)
    if key_path and not isinstance(value, dict):
        value = {key_path[-1]: value}  # Greengrass wraps a leaf as {lastKey: value}
    return {"componentName": component, "value": value}


async def _update_configuration(conn: _Connection, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    principal = conn.principal
    assert principal is not None
    key_path = _key_path(request)
    if "valueToMerge" not in request:
        raise InvalidInputError("valueToMerge is required")
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
    principal = conn.principal
    assert principal is not None
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
    conn.streams[sid] = unsubscribe
    return None


async def _update_state(conn: _Connection, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    principal = conn.principal
    assert principal is not None
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
    principal = conn.principal
    assert principal is not None
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
