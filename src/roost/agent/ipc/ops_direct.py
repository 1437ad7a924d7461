"""The handlers of the direct-channel operations (Roost extensions; see :mod:`roost.agent.ipc.direct`).

``roost#OfferDirectChannel {topic, address}`` — a responder subscribed to ``topic`` offers to take
requests on it over its abstract socket ``address``; a stream: channel ``open`` and ``revoked``
events arrive on it. ``roost#OpenDirectChannel {topic, replyTopic}`` — a requester asks for a
channel; the answer is ``{channel, address, token, responder}``, then a stream of ``revoked``
events. Refusals are ``ConflictError`` with code ``DIRECT_CHANNEL_UNAVAILABLE``: the client then
publishes through the agent as before.
"""

from __future__ import annotations

from typing import Any, Final

from roost.agent.ipc.types import ConnectionSide
from roost.errors import InvalidInputError
from roost.ipc import rpc


def _field(request: dict[str, Any], name: str) -> str:
    value = request.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{name} is required (a non-empty string), got {value!r}")
    return value


def _offer_direct_channel(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> None:
    principal = conn.require_principal()
    topic = _field(request, "topic")
    address = _field(request, "address")
    conn.check_stream_capacity()
    withdraw = conn.server.direct.offer(conn, sid, principal, topic, address)
    conn.write(rpc.application_message(sid, rpc.response_model(operation), rpc.dumps({"topic": topic})))
    conn.add_stream(sid, withdraw)


def _open_direct_channel(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> None:
    principal = conn.require_principal()
    topic = _field(request, "topic")
    reply_topic = _field(request, "replyTopic")
    conn.check_stream_capacity()
    answer, end = conn.server.direct.open(conn, sid, principal, topic, reply_topic)
    conn.write(rpc.application_message(sid, rpc.response_model(operation), rpc.dumps(answer)))
    conn.add_stream(sid, end)


HANDLERS: Final = {
    rpc.OP_OFFER_DIRECT_CHANNEL: _offer_direct_channel,
    rpc.OP_OPEN_DIRECT_CHANNEL: _open_direct_channel,
}
