"""The client side of the wire: environment names, prebuilt headers, the socket connect, the asyncio
protocol that feeds received frames to :class:`~roost.ipc.async_client.IpcClient`, and small helpers."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Callable
from typing import Any, Final, Protocol, cast

from roost.ipc import rpc
from roost.ipc.errors import AgentBusyError, FrameError, IpcConnectionClosedError, IpcError, ProtocolError
from roost.ipc.eventstream import Message, MessageDecoder, encode_header

ENV_SOCKET: Final = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
ENV_TOKEN: Final = "SVCUID"
ENV_ROOST_SOCKET: Final = "ROOST_IPC_SOCKET"
ENV_ROOST_TOKEN: Final = "ROOST_SVCUID"
REPLY_TOPIC_PREFIX: Final = "roost/reply/"
DEFAULT_TIMEOUT: Final = 10.0
_NOT_CONFIGURED: Final = "IPC_NOT_CONFIGURED"

_loads = json.loads
_dumps = rpc.dumps
_PUBLISH_HEADER: Final = rpc.header_prefix(
    rpc.APPLICATION_MESSAGE, 0, rpc.request_model(rpc.OP_PUBLISH_TO_TOPIC), rpc.OP_PUBLISH_TO_TOPIC
)
#: A publish whose response nobody awaits: a Roost agent may send the response lazily.
_PUBLISH_HEADER_DEFERRED: Final = _PUBLISH_HEADER + encode_header(rpc.H_DEFER_ACK, True)


class _Stream:
    """An open stream. ``future`` gets the first answer; without a future (a call nobody awaits)
    ``on_end`` gets the error, or None when the answer was a success."""

    __slots__ = ("future", "on_end", "on_event")

    def __init__(
        self,
        future: asyncio.Future[bytes] | None,
        on_event: Callable[[bytes], None] | None,
        on_end: Callable[[BaseException | None], None] | None,
    ) -> None:
        self.future = future
        self.on_event = on_event
        self.on_end = on_end


class FrameSink(Protocol):
    """What :class:`_ClientProtocol` feeds: the client (:class:`~roost.ipc.async_client.IpcClient`).

    A Protocol, so this module does not import the client, not even for annotations.
    """

    _transport: asyncio.Transport | None

    def _abort(self, error: IpcError | None) -> None: ...

    def _on_message(self, message: Message) -> None: ...

    def _begin_batch(self) -> bool: ...

    def _end_batch(self, was_corked: bool) -> None: ...

    def _connection_lost(self, exc: Exception | None) -> None: ...


class _ClientProtocol(asyncio.BufferedProtocol):
    """Reads into the decoder's reused buffer (no fresh 256 KiB ``bytes`` per read)."""

    def __init__(self, client: FrameSink, max_message_size: int) -> None:
        self.client = client
        self.decoder = MessageDecoder(max_message_size)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.client._transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        try:
            messages = self.decoder.buffer_updated(nbytes)
        except FrameError as err:
            self.client._abort(ProtocolError(f"malformed frame from the IPC server: {err.message}"))
            return
        client = self.client
        on_message = client._on_message
        was_corked = client._begin_batch()
        try:
            for message in messages:
                on_message(message)
        finally:
            client._end_batch(was_corked)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._connection_lost(exc)


def _connect_socket(path: str) -> socket.socket:
    """A connected non-blocking Unix socket, or a specific error.

    A full listen backlog answers a non-blocking ``connect`` with EAGAIN at once: that is the
    agent being overloaded (:class:`AgentBusyError`), not a lost connection.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(path)
    except BlockingIOError as err:
        sock.close()
        raise AgentBusyError(
            f"the IPC server at {path} is not accepting connections: its listen backlog is full "
            "(too many connections waiting); retry later"
        ) from err
    except OSError as err:
        sock.close()
        raise IpcConnectionClosedError(f"cannot connect to the IPC socket {path}: {err}") from err
    return sock


def _expire(future: asyncio.Future[Any], make_error: Callable[[], BaseException]) -> None:
    if not future.done():
        future.set_exception(make_error())


def _fail(future: asyncio.Future[Any], error: BaseException | None) -> None:
    if error is not None and not future.done():
        future.set_exception(error)


def _full_operation(operation: str) -> str:
    return operation if "#" in operation else rpc.PREFIX + operation


def _publish_message(payload: bytes | str | dict[str, Any] | list[Any]) -> dict[str, Any]:
    if isinstance(payload, dict | list):
        return {"jsonMessage": {"message": payload}}
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    if isinstance(payload, bytes | bytearray | memoryview):
        return {"binaryMessage": {"message": base64.b64encode(payload).decode("ascii")}}
    raise TypeError(f"cannot publish a {type(payload).__name__}: use bytes, str, dict or list")
