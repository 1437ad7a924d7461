"""The Roost client's two ends of direct request/reply channels (see :mod:`roost.agent.ipc.direct`).

A responder that subscribes with ``subscribe(topic, callback, direct=True)`` listens on an
abstract-namespace Unix socket of its own and offers it to the agent for that topic. A client
connected with ``IpcClient.connect(direct=True)`` asks the agent for a channel the first time it
sends a :meth:`~roost.ipc.async_client.IpcClient.request` to a topic; when the agent grants it,
requests and their replies go over that socket, and ``reply``/``reply_nowait`` on the responder
answer there. Whenever no channel is granted (another subscriber, no offer, a policy, a container
in another network namespace), or the agent revokes one, requests go through the agent as
before; a refused topic is retried after :data:`RETRY_S`.

The wire between the two ends: each frame is a 4-byte big-endian length and that many bytes. The
requester's first frame is the token the agent gave it; the responder accepts a connection only
with a token the agent gave it too (constant-time comparison; an unknown token waits at most
:data:`TOKEN_WAIT_S` for the agent's word, then the connection is closed). After that, frames from
the requester are request messages (the same JSON document a request publishes, with ``replyTo``
and ``correlationId``) and frames from the responder are reply documents.

What differs from publishing through the agent: a message in flight when a channel is revoked
(another component subscribes to the topic, a policy changes) reaches only the responder; a
revoked channel keeps answering for :data:`GRACE_S` so replies in flight arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import struct
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from roost.ipc import rpc
from roost.ipc.errors import IpcError
from roost.ipc.protocol import _connect_socket, _dumps, _loads
from roost.ipc.subscriptions import Received, Subscription

logger = logging.getLogger(__name__)

_LEN: Final = struct.Struct(">I")
#: How long a connection with an unknown token waits for the agent's ``open`` event.
TOKEN_WAIT_S: Final = 5.0
#: A revoked channel stays open this long for replies in flight.
GRACE_S: Final = 1.0
#: After the agent refuses a channel for a topic, requests go through the agent this long before asking again.
RETRY_S: Final = 1.0
#: Connections on the responder's socket that have not shown a valid token yet, at most.
MAX_UNAUTHENTICATED: Final = 16
#: Largest frame either end accepts (the agent's own payload limit).
MAX_FRAME: Final = rpc.MAX_PAYLOAD_SIZE


class DirectOwner(Protocol):
    """The :class:`~roost.ipc.async_client.IpcClient` as the direct ends use it."""

    _loop: asyncio.AbstractEventLoop

    async def _invoke(self, operation: str, header: bytes, payload: bytes, timeout: float,
                      on_event: Callable[[bytes], None] | None = None,
                      on_end: Callable[[BaseException | None], None] | None = None) -> tuple[int, bytes]: ...

    def _end_stream(self, sid: int) -> None: ...

    def _on_reply(self, message: Received) -> None: ...


def _parse_event(payload: bytes) -> dict[str, Any]:
    event = _loads(payload).get("channelEvent")
    if not isinstance(event, dict):
        raise ValueError("not a channelEvent")
    return event


class _Frames(asyncio.Protocol):
    """Length-prefixed frames over a stream socket; ``on_frame`` gets each, ``on_lost`` the end."""

    def __init__(self, on_frame: Callable[[_Frames, bytes], None], on_lost: Callable[[_Frames], None]) -> None:
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None
        #: the token a responder-side connection showed before the agent's word arrived
        self.token: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            if size > MAX_FRAME:
                logger.warning("direct channel: a %d-byte frame exceeds the %d-byte limit; closing", size, MAX_FRAME)
                self.close()
                return
            end = pos + 4 + size
            if end > n:
                break
            frame = bytes(buf[pos + 4 : end])
            pos = end
            self._on_frame(self, frame)
            if self.transport is None or self.transport.is_closing():
                return
        if pos:
            del buf[:pos]

    def send(self, payload: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(_LEN.pack(len(payload)) + payload)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(self)


class _Grant:
    """What the agent told the responder about one channel."""

    __slots__ = ("cid", "expiry", "reply_topic", "token", "topic")

    def __init__(self, cid: int, token: str, topic: str, reply_topic: str) -> None:
        self.cid = cid
        self.token = token
        self.topic = topic
        self.reply_topic = reply_topic
        self.expiry: asyncio.TimerHandle | None = None


class DirectChannel:
    """One granted channel, on the requester's side."""

    __slots__ = ("cid", "frames", "sid", "usable")

    def __init__(self, cid: int, frames: _Frames) -> None:
        self.cid = cid
        self.frames = frames
        self.sid = 0
        self.usable = True


class DirectEnds:
    """Both ends of the direct channels of one client (created on first use)."""

    def __init__(self, owner: DirectOwner) -> None:
        self._owner = owner
        self._loop = owner._loop
        self._closed = False
        # responder side
        self._server: asyncio.AbstractServer | None = None
        self._address: str | None = None
        self._offers: dict[str, Subscription[Received]] = {}
        self._offer_sids: dict[str, int] = {}
        self._grants: dict[str, _Grant] = {}                # token -> grant awaiting its connection
        self._waiting: dict[_Frames, asyncio.TimerHandle] = {}  # connected, token not yet shown
        self._bound: dict[_Frames, _Grant] = {}
        self._by_reply: dict[str, _Frames] = {}
        self._by_cid: dict[int, _Frames] = {}
        # requester side
        self._channels: dict[str, DirectChannel] = {}
        self._opening: dict[str, asyncio.Future[DirectChannel | None]] = {}
        self._retry_at: dict[str, float] = {}

    # -- responder ---------------------------------------------------------------------------

    async def _listen(self) -> str:
        if self._address is None:
            name = "roost-direct-" + os.urandom(12).hex()
            self._server = await self._loop.create_unix_server(
                lambda: _Frames(self._on_responder_frame, self._on_responder_lost), path="\0" + name
            )
            self._address = "@" + name
        return self._address

    async def offer(self, subscription: Subscription[Received], topic: str, timeout: float) -> None:
        """Offer a direct channel for ``topic``, whose requests go to ``subscription``."""
        address = await self._listen()
        op = rpc.OP_OFFER_DIRECT_CHANNEL
        header = rpc.header_prefix(rpc.APPLICATION_MESSAGE, 0, rpc.request_model(op), op)
        body = _dumps({"topic": topic, "address": address})
        sid, _ = await self._owner._invoke(op, header, body, timeout, self._on_offer_event,
                                           lambda error: self._offer_ended(topic))
        self._offers[topic] = subscription
        self._offer_sids[topic] = sid

    def _offer_ended(self, topic: str) -> None:
        self._offers.pop(topic, None)
        self._offer_sids.pop(topic, None)

    def _on_offer_event(self, payload: bytes) -> None:
        try:
            event = _parse_event(payload)
        except (ValueError, AttributeError):
            logger.warning("ignoring a malformed direct-channel event")
            return
        kind = event.get("type")
        cid = event.get("channel")
        if kind == "open":
            token, topic, reply_topic = event.get("token"), event.get("topic"), event.get("replyTopic")
            if not (isinstance(cid, int) and isinstance(token, str) and isinstance(topic, str)
                    and isinstance(reply_topic, str)):
                logger.warning("ignoring a malformed direct-channel open event")
                return
            grant = _Grant(cid, token, topic, reply_topic)
            for frames in self._waiting:  # the requester was quicker than the agent's event
                if frames.token is not None and hmac.compare_digest(frames.token.encode(), token.encode()):
                    self._bind(frames, grant)
                    return
            grant.expiry = self._loop.call_later(TOKEN_WAIT_S * 2, self._grants.pop, token, None)
            self._grants[token] = grant
        elif kind == "revoked" and isinstance(cid, int):
            bound = self._by_cid.get(cid)
            if bound is not None:
                self._loop.call_later(GRACE_S, bound.close)
            for token, grant in list(self._grants.items()):
                if grant.cid == cid:
                    del self._grants[token]

    def _find_grant(self, token: str) -> _Grant | None:
        for known, grant in self._grants.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return grant
        return None

    def _bind(self, frames: _Frames, grant: _Grant) -> None:
        timer = self._waiting.pop(frames, None)
        if timer is not None:
            timer.cancel()
        if grant.expiry is not None:
            grant.expiry.cancel()
        self._grants.pop(grant.token, None)
        self._bound[frames] = grant
        self._by_reply[grant.reply_topic] = frames
        self._by_cid[grant.cid] = frames

    def _on_responder_frame(self, frames: _Frames, payload: bytes) -> None:
        grant = self._bound.get(frames)
        if grant is not None:
            subscription = self._offers.get(grant.topic)
            if subscription is None or subscription.closed:
                frames.close()
                return
            try:
                doc = _loads(payload)
            except ValueError:
                logger.warning("direct channel %d: a request is not JSON; dropped", grant.cid)
                return
            subscription._deliver(Received(grant.topic, payload, doc))
            return
        if frames in self._waiting:
            frames.close()  # a second frame before the token was accepted
            return
        token = payload.decode("ascii", "replace")
        found = self._find_grant(token)
        if found is not None:
            self._bind(frames, found)
            return
        if len(self._waiting) >= MAX_UNAUTHENTICATED:
            frames.close()
            return
        frames.token = token
        self._waiting[frames] = self._loop.call_later(TOKEN_WAIT_S, frames.close)

    def _on_responder_lost(self, frames: _Frames) -> None:
        timer = self._waiting.pop(frames, None)
        if timer is not None:
            timer.cancel()
        grant = self._bound.pop(frames, None)
        if grant is not None:
            if self._by_reply.get(grant.reply_topic) is frames:
                del self._by_reply[grant.reply_topic]
            self._by_cid.pop(grant.cid, None)

    def reply(self, reply_to: str, message: dict[str, Any]) -> bool:
        """Send a reply over the channel of ``reply_to`` if there is one; False: publish it instead."""
        frames = self._by_reply.get(reply_to)
        if frames is None or frames.transport is None or frames.transport.is_closing():
            return False
        frames.send(_dumps(message))
        return True

    # -- requester ---------------------------------------------------------------------------

    async def channel_for(self, topic: str, reply_topic: str, timeout: float) -> DirectChannel | None:
        """The usable channel for ``topic``, opening one if allowed; None: publish through the agent."""
        channel = self._channels.get(topic)
        if channel is not None and channel.usable:
            return channel
        if self._closed or self._retry_at.get(topic, 0.0) > time.monotonic():
            return None
        pending = self._opening.get(topic)
        if pending is None:
            pending = self._loop.create_future()
            self._opening[topic] = pending
            try:
                result = await self._open(topic, reply_topic, timeout)
            except Exception as err:  # any failure means: use the agent path
                logger.debug("no direct channel for %s: %s", topic, err)
                self._retry_at[topic] = time.monotonic() + RETRY_S
                result = None
            finally:
                self._opening.pop(topic, None)
            pending.set_result(result)
            return result
        return await asyncio.shield(pending)

    async def _open(self, topic: str, reply_topic: str, timeout: float) -> DirectChannel | None:
        op = rpc.OP_OPEN_DIRECT_CHANNEL
        header = rpc.header_prefix(rpc.APPLICATION_MESSAGE, 0, rpc.request_model(op), op)
        holder: list[DirectChannel] = []

        def on_event(payload: bytes) -> None:
            with contextlib.suppress(ValueError, AttributeError):
                event = _parse_event(payload)
                if event.get("type") == "revoked" and holder:
                    self._drop(topic, holder[0])

        def on_end(error: BaseException | None) -> None:
            if holder:
                self._drop(topic, holder[0])

        sid, raw = await self._owner._invoke(op, header, _dumps({"topic": topic, "replyTopic": reply_topic}),
                                             timeout, on_event, on_end)
        answer = _loads(raw)
        address, token, cid = answer.get("address"), answer.get("token"), answer.get("channel")
        if not (isinstance(address, str) and address.startswith("@") and isinstance(token, str)
                and isinstance(cid, int)):
            self._owner._end_stream(sid)
            raise IpcError(f"malformed OpenDirectChannel answer: {answer!r}", code="PROTOCOL_ERROR")
        try:
            # A socket of our own: uvloop's create_unix_connection refuses abstract names.
            sock = _connect_socket("\0" + address[1:])
            async with asyncio.timeout(timeout):
                _, frames = await self._loop.create_unix_connection(
                    lambda: _Frames(self._on_requester_frame, lambda f: self._drop(topic, channel)), sock=sock
                )
        except BaseException:
            self._owner._end_stream(sid)
            raise
        channel = DirectChannel(cid, frames)
        channel.sid = sid
        holder.append(channel)
        frames.send(token.encode("ascii"))
        self._channels[topic] = channel
        return channel

    def _on_requester_frame(self, frames: _Frames, payload: bytes) -> None:
        try:
            doc = _loads(payload)
        except ValueError:
            logger.warning("direct channel: a reply is not JSON; dropped")
            return
        self._owner._on_reply(Received("", payload, doc))

    def _drop(self, topic: str, channel: DirectChannel) -> None:
        if not channel.usable:
            return
        channel.usable = False
        if self._channels.get(topic) is channel:
            del self._channels[topic]
        self._owner._end_stream(channel.sid)
        self._loop.call_later(GRACE_S, channel.frames.close)

    @property
    def channel_count(self) -> int:
        """Usable channels this client holds as a requester."""
        return sum(1 for channel in self._channels.values() if channel.usable)

    def send(self, channel: DirectChannel, message: dict[str, Any]) -> None:
        channel.frames.send(_dumps(message))

    # -- both --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close every channel and the listener (the client is closing or lost its connection)."""
        if self._closed:
            return
        self._closed = True
        for frames in [*self._waiting, *self._bound]:
            frames.close()
        for channel in list(self._channels.values()):
            channel.usable = False
            channel.frames.close()
        self._channels.clear()
        for grant in self._grants.values():
            if grant.expiry is not None:
                grant.expiry.cancel()
        self._grants.clear()
        if self._server is not None:
            self._server.close()
            self._server = None
