"""One component connection: framing, CONNECT, limits, buffers and write coalescing, streams,
authorisation, and dispatch to the operation handlers (:mod:`roost.agent.ipc.operations`)."""


from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

from roost.agent import authz
from roost.agent.errors import IpcNotAuthenticatedError, IpcStreamLimitError
from roost.agent.ipc.operations import _EMPTY_JSON, _HANDLERS, _error_shape
from roost.agent.ipc.types import ServerSide
from roost.errors import InvalidInputError, UnauthorizedError
from roost.ipc import rpc
from roost.ipc.errors import AgentBusyError, FrameError
from roost.ipc.eventstream import Message, MessageDecoder, encode_frame

logger = logging.getLogger(__name__)

#: Read buffer of a connection that has not completed CONNECT (and of an idle one after a trim).
PRECONNECT_BUFFER: Final = 2048
#: Refused (over-cap) connections lingering at once to read their refusal; beyond, closed at once.
MAX_LINGERING: Final = 64
#: The code of a request refused for its size alone (the connection stays).
MESSAGE_TOO_LARGE: Final = "IPC_MESSAGE_TOO_LARGE"
#: Where data from refused connections is read into and dropped (shared: costs nothing per connection).
_DISCARD: Final = memoryview(bytearray(4096))

_PUBLISH_ACK_HEADER: Final = rpc.header_prefix(
    rpc.APPLICATION_MESSAGE, rpc.FLAG_TERMINATE_STREAM, rpc.response_model(rpc.OP_PUBLISH_TO_TOPIC)
)


def _is_request(headers: dict[str, Any]) -> bool:
    """An oversized message worth refusing alone: an application message on a stream (else fatal)."""
    sid = headers.get(rpc.H_STREAM_ID)
    return headers.get(rpc.H_MESSAGE_TYPE) == rpc.APPLICATION_MESSAGE and type(sid) is int and sid > 0


class _Connection(asyncio.BufferedProtocol):
    """One component connection.

    A :class:`asyncio.BufferedProtocol`: the transport reads into the decoder's reused buffer
    (asyncio's plain protocols allocate a fresh 256 KiB ``bytes`` per read, which glibc turns
    into an mmap/munmap per message).
    """

    def __init__(self, server: ServerSide[_Connection]) -> None:
        self.server = server
        self.core = server.core
        self.decoder = MessageDecoder(server.limits.preconnect_max_frame, PRECONNECT_BUFFER)
        self.transport: asyncio.Transport | None = None
        #: the final answer is sent: reads are dropped, the connection no longer counts
        self.refused = False
        self._linger_timer: asyncio.TimerHandle | None = None
        self.principal: str | None = None
        self.privileged = False
        #: traffic of this connection (roost.agent.ipc.counters folds it into per-component totals)
        self.messages_in = 0
        self.bytes_in = 0
        self.bytes_out = 0
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
            self.bytes_in += nbytes
            self.messages_in += len(messages)
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
        self.server.ipc_counters.dropped(self.principal)
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
        self.server.ipc_counters.fold(self)

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
        self.bytes_out += len(data)
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
        if message.oversized:
            self._on_oversized(headers, mtype, message.oversized)
            return
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

    def _on_oversized(self, headers: dict[str, Any], mtype: Any, size: int) -> None:
        """A request over ``max_message_size`` (read and dropped by the decoder): refuse it alone."""
        limit = self.server.max_message_size
        sid = headers.get(rpc.H_STREAM_ID)
        operation = headers.get(rpc.H_OPERATION)
        if mtype != rpc.APPLICATION_MESSAGE or self.principal is None or type(sid) is not int or sid <= 0:
            self._protocol_failure(f"malformed frame (FRAME_TOO_LARGE): event-stream message of {size} bytes "
                                   f"exceeds the limit of {limit}", "oversized frame")
            return
        if sid in self.streams or sid <= self.last_stream_id:
            self.server.refused_operations.note(f"oversized stream message ({MESSAGE_TOO_LARGE})",
                                                f"{self._who()}: {size} bytes on stream {sid}, dropped")
            return
        self.last_stream_id = sid
        name = rpc.short_name(operation) if isinstance(operation, str) else "IPC"
        err = InvalidInputError(
            f"the {name} request is {size} bytes, over the agent's IPC message size limit of {limit} bytes (a "
            f"payload of at most {rpc.MAX_PAYLOAD_SIZE} bytes fits); the request was refused, the connection stays "
            "open", code="IPC_MESSAGE_TOO_LARGE")
        self._write_error(sid, operation if isinstance(operation, str) else "", err)

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
        self.decoder.skip_limit = self.server.limits.max_skipped_message_size
        self.decoder.skip_if = _is_request
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
        if isinstance(err, UnauthorizedError | IpcStreamLimitError) or (
                isinstance(err, InvalidInputError) and err.code == MESSAGE_TOO_LARGE):
            code = err.code
            self.server.ipc_counters.refused(self.principal)
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
