"""Bytes on the socket: websocket connections that count what crosses their TCP transport.

``roost stream`` reports bandwidth per window from these counters, and a replica's ``/status`` its
sessions' ``bytes_in``/``bytes_out``: every byte the transport wrote or received, the HTTP upgrade and
websocket framing (headers, masks, pings, the close handshake) included, not payload sizes.

Imports ``websockets``: only the replica and the stream client use this module.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection

__all__ = ["ByteCounter", "CountingClientConnection", "CountingServerConnection", "CountingTransport"]


@dataclass
class ByteCounter:
    """Bytes written to (``sent``) and received from (``received``) one TCP connection."""

    sent: int = 0
    received: int = 0


class CountingTransport:
    """A transport that counts what is written through it; everything else goes to the real one."""

    def __init__(self, transport: asyncio.Transport, counter: ByteCounter) -> None:
        self._transport = transport
        self._counter = counter

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._counter.sent += len(data)
        self._transport.write(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Counting:
    """What both counting connections add to websockets' own: a :attr:`counter` of their socket's bytes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counter = ByteCounter()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it: no isinstance check.
        super().connection_made(CountingTransport(cast(asyncio.Transport, transport), self.counter))  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        self.counter.received += len(data)
        super().data_received(data)  # type: ignore[misc]


class CountingServerConnection(_Counting, ServerConnection):
    """A server connection whose :attr:`counter` holds the bytes of its socket."""


class CountingClientConnection(_Counting, ClientConnection):
    """A client connection whose :attr:`counter` holds the bytes of its socket."""
