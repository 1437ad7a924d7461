"""One open session on a tabular replica, used as a remote model: send windows, get their answers.

``roost stream`` (:mod:`roost.cluster.stream_client`) measures a session by streaming a file round
and round; joint and parallel inference (:mod:`roost.learn.joint`, :mod:`roost.learn.parallel`)
instead use a session as a model that answers the rows they choose. :class:`ReplicaSession` is that:
it connects with the session token, reads the hello (the replica's features, its rows per window),
then sends binary windows (:func:`~roost.cluster.protocol.encode_tabular_window`) and reads their
replies in order. Several windows may be in flight (the replica answers them in the order sent).

Refusals before the upgrade raise as ``roost stream``'s do (``SESSION_TOKEN_INVALID``,
``REPLICA_FULL``, ...); a socket that cannot be opened is ``REPLICA_UNREACHABLE``; one that drops,
a reply that does not come within ``reply_timeout``, or a replica closing the session, raise
:class:`~roost.cluster.errors.SessionLostError`. Bytes are counted on the socket
(:mod:`roost.cluster.wire_bytes`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from roost.cluster.errors import SessionLostError, StreamMessageError, StreamProtocolError
from roost.cluster.protocol import ErrorReply, Hello, TabularResult, encode_tabular_window, parse_server_message

__all__ = ["ReplicaSession", "ReplicaTarget"]

log = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ReplicaTarget:
    """Where a session streams: its endpoint (``ws://HOST:PORT/v1/stream``) and session token."""

    endpoint: str
    token: str | None = None
    #: A name for reports (the hub's replica id, or the endpoint).
    name: str | None = None

    @property
    def label(self) -> str:
        return self.name or self.endpoint


class ReplicaSession:
    """An open session on a tabular replica; ``async with`` it, or :meth:`open` and :meth:`close`."""

    def __init__(self, target: ReplicaTarget, *, connect_timeout: float = 10.0, reply_timeout: float = 30.0) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self._ws: Any = None
        self.hello: Hello | None = None

    async def __aenter__(self) -> ReplicaSession:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> Hello:
        """Connect and read the hello; raises the replica's refusal, or ``REPLICA_UNREACHABLE``."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

        from roost.cluster.stream_client import _refusal
        from roost.cluster.wire_bytes import CountingClientConnection

        headers = {"Authorization": f"Bearer {self.target.token}"} if self.target.token else {}
        try:
            self._ws = await connect(self.target.endpoint, additional_headers=headers,
                                     create_connection=CountingClientConnection, open_timeout=self.connect_timeout,
                                     compression=None, max_size=4 * 1024 * 1024, ping_interval=20,
                                     ping_timeout=20, close_timeout=2)
        except InvalidStatus as err:
            raise _refusal(err, self.target.endpoint) from err
        except (OSError, TimeoutError, InvalidHandshake) as err:
            raise SessionLostError(f"cannot connect to the replica at {self.target.endpoint}: {err}",
                                   code="REPLICA_UNREACHABLE") from err
        try:
            first = parse_server_message(await self._recv(), "tabular")
        except ConnectionClosed as err:
            raise SessionLostError(f"the replica at {self.target.endpoint} closed the session before its "
                                   "hello") from err
        if not isinstance(first, Hello):
            raise StreamProtocolError(f"the replica's first message is a {first.type}, not its hello")
        if first.kind != "tabular":
            raise StreamProtocolError(f"the replica at {self.target.endpoint} serves {first.kind} sessions, "
                                      "not tabular windows")
        self.hello = first
        return first

    @property
    def features(self) -> list[str]:
        assert self.hello is not None, "open() first"
        return list(self.hello.features)

    @property
    def max_rows(self) -> int:
        assert self.hello is not None, "open() first"
        return int(self.hello.max_rows)

    @property
    def sent(self) -> int:
        """Bytes sent on the socket so far (TCP payload: framing, masks and control frames included)."""
        return int(self._ws.counter.sent) if self._ws is not None else 0

    @property
    def received(self) -> int:
        return int(self._ws.counter.received) if self._ws is not None else 0

    async def _recv(self) -> str | bytes:
        try:
            async with asyncio.timeout(self.reply_timeout):
                message: str | bytes = await self._ws.recv()
                return message
        except TimeoutError as err:
            raise SessionLostError(f"the replica at {self.target.endpoint} sent no reply within "
                                   f"{self.reply_timeout:g} s") from err

    async def send(self, seq: int, matrix: Matrix) -> None:
        """Send one window (``rows x features`` float32, at most :attr:`max_rows` rows)."""
        from websockets.exceptions import ConnectionClosed

        try:
            await self._ws.send(encode_tabular_window(seq, matrix))
        except (ConnectionClosed, OSError) as err:
            raise self._lost(err) from err

    async def receive(self) -> TabularResult:
        """The next reply (replies come in the order windows were sent); an error reply for a window
        raises :class:`StreamMessageError` with its code and seq."""
        from websockets.exceptions import ConnectionClosed

        try:
            reply = parse_server_message(await self._recv(), "tabular")
        except (ConnectionClosed, OSError) as err:
            raise self._lost(err) from err
        if isinstance(reply, ErrorReply):
            raise StreamMessageError(f"the replica refused window {reply.seq}: {reply.message}", code=reply.code,
                                     seq=reply.seq)
        if not isinstance(reply, TabularResult):
            raise StreamProtocolError(f"the replica answered a window with a {reply.type} message")
        return reply

    async def predict(self, seq: int, matrix: Matrix) -> TabularResult:
        """One window, sent and answered (nothing else in flight)."""
        await self.send(seq, matrix)
        reply = await self.receive()
        if reply.seq != seq:
            raise StreamProtocolError(f"the replica answered window {reply.seq}, expected {seq}")
        return reply

    def _lost(self, err: Exception) -> SessionLostError:
        from websockets.exceptions import ConnectionClosed

        if isinstance(err, ConnectionClosed) and err.rcvd is not None:
            return SessionLostError(f"the replica at {self.target.endpoint} closed the session "
                                    f"({err.rcvd.code} {err.rcvd.reason or 'no reason'})")
        return SessionLostError(f"the connection to the replica at {self.target.endpoint} dropped "
                                f"({type(err).__name__}: {err})")

    async def close(self) -> None:
        if self._ws is not None:
            try:
                await self._ws.close()
            except OSError as err:  # the socket is already gone
                log.debug("closing the session on %s: %s", self.target.endpoint, err)
