"""Direct request/reply channels (roost.agent.ipc.direct, roost.ipc.direct) on a real IpcServer.

The requester and the responder are real IpcClients on real sockets; the agent's core is the
MemoryCore test double. "Through the agent" is observed by counting the server's publishes.
"""

from __future__ import annotations

import asyncio
import copy
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from roost.agent.ipc import IpcServer
from roost.ipc.client import IpcClient, Received
from roost.ipc.errors import ConflictIpcError, InvalidArgumentsIpcError
from tests.conftest import require_module

from .conftest import COMP_A, ClientFactory, MemoryCore

TOPIC = "req/direct"


def count_publishes(server: IpcServer, topic: str) -> Callable[[], int]:
    """Count the publishes to ``topic`` that go through the agent's broker."""
    seen = [0]
    real = server.pubsub.publish

    def spy(t: str, message: Any, publisher: str) -> int:
        if t == topic:
            seen[0] += 1
        return real(t, message, publisher)

    server.pubsub.publish = spy  # type: ignore[method-assign]
    return lambda: seen[0]


async def responder_on(client: IpcClient, topic: str = TOPIC, *, direct: bool = True) -> list[Received]:
    got: list[Received] = []

    def answer(msg: Received) -> None:
        got.append(msg)
        client.reply_nowait(msg.json, {"echo": msg.json["n"]})

    await client.subscribe(topic, answer, direct=direct)
    return got


async def test_requests_go_over_the_direct_channel_not_through_the_agent(
    connect: ClientFactory, server: IpcServer
) -> None:
    published = count_publishes(server, TOPIC)
    responder = await connect("tok-b")
    got = await responder_on(responder)
    requester = await connect("tok-a", direct=True)
    replies = await asyncio.gather(*(requester.request(TOPIC, {"n": n}, timeout=2) for n in range(20)))
    assert [r["echo"] for r in replies] == list(range(20))
    assert server.direct.channel_count == 1 and requester.direct_channel_count == 1
    assert published() == 0  # not one of the 20 went through the agent's broker
    assert len(got) == 20 and all(m.topic == TOPIC for m in got)


async def test_without_an_offer_requests_go_through_the_agent(connect: ClientFactory, server: IpcServer) -> None:
    published = count_publishes(server, TOPIC)
    responder = await connect("tok-b")
    await responder_on(responder, direct=False)
    requester = await connect("tok-a", direct=True)
    assert (await requester.request(TOPIC, {"n": 7}, timeout=2))["echo"] == 7
    assert server.direct.channel_count == 0
    assert published() == 1


async def test_a_second_subscriber_revokes_the_channel_and_sees_later_requests(
    connect: ClientFactory, server: IpcServer
) -> None:
    published = count_publishes(server, TOPIC)
    responder = await connect("tok-b")
    await responder_on(responder)
    requester = await connect("tok-a", direct=True)
    assert (await requester.request(TOPIC, {"n": 1}, timeout=2))["echo"] == 1
    assert server.direct.channel_count == 1
    listener = await connect("tok-b")
    overheard = await listener.subscribe(TOPIC)  # another subscription matching the topic
    assert server.direct.channel_count == 0
    await asyncio.sleep(0.05)  # the revocation event reaches the requester
    assert requester.direct_channel_count == 0
    assert (await requester.request(TOPIC, {"n": 2}, timeout=2))["echo"] == 2
    assert published() == 1
    assert (await overheard.get(2)).json["n"] == 2  # pub/sub semantics: the new subscriber sees it


async def test_a_policy_change_revokes_the_channel(connect: ClientFactory, server: IpcServer, core: MemoryCore) -> None:
    responder = await connect("tok-b")
    await responder_on(responder)
    requester = await connect("tok-a", direct=True)
    assert (await requester.request(TOPIC, {"n": 1}, timeout=2))["echo"] == 1
    acl = copy.deepcopy(core.acl)
    acl[COMP_A]["aws.greengrass.ipc.pubsub"]["com.example.Sensor:pubsub:1"]["resources"] = ["roost/reply/*"]
    core.acl = acl
    assert server.direct.recheck() == 1
    assert server.direct.channel_count == 0
    await asyncio.sleep(0.05)
    with pytest.raises(Exception, match="not authorized"):
        await requester.request(TOPIC, {"n": 2}, timeout=2)  # through the agent: refused


async def test_the_responder_going_away_falls_back_to_the_agent(connect: ClientFactory, server: IpcServer) -> None:
    first = await connect("tok-b")
    await responder_on(first)
    requester = await connect("tok-a", direct=True)
    assert (await requester.request(TOPIC, {"n": 1}, timeout=2))["echo"] == 1
    await first.close()
    await asyncio.sleep(0.05)
    assert server.direct.channel_count == 0
    second = await connect("tok-b")
    await responder_on(second, direct=False)
    assert (await requester.request(TOPIC, {"n": 2}, timeout=2))["echo"] == 2


async def test_a_connection_without_the_agents_token_gets_nothing(connect: ClientFactory, server: IpcServer) -> None:
    responder = await connect("tok-b")
    got = await responder_on(responder)
    requester = await connect("tok-a", direct=True)
    assert (await requester.request(TOPIC, {"n": 1}, timeout=2))["echo"] == 1
    assert responder._direct is not None and responder._direct._address is not None
    address = "\0" + responder._direct._address[1:]
    reader, writer = await asyncio.open_unix_connection(path=address)
    for frame in (b"0" * 64, b'{"n": 99, "replyTo": "roost/reply/x", "correlationId": "1"}'):
        writer.write(struct.pack(">I", len(frame)) + frame)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 2) == b""  # closed: a second frame before a valid token
    writer.close()
    assert [m.json["n"] for m in got] == [1]


async def test_bad_offers_and_opens_are_refused_by_name(connect: ClientFactory) -> None:
    client = await connect("tok-b")
    with pytest.raises(InvalidArgumentsIpcError, match="address"):
        await client.call("roost#OfferDirectChannel", {"topic": TOPIC, "address": "/tmp/evil.sock"})
    with pytest.raises(InvalidArgumentsIpcError, match="without a subscription"):
        await client.call("roost#OfferDirectChannel", {"topic": TOPIC, "address": "@roost-direct-" + "a" * 24})
    with pytest.raises(InvalidArgumentsIpcError, match="topic is required"):
        await client.call("roost#OfferDirectChannel", {"address": "@roost-direct-" + "a" * 24})
    with pytest.raises(InvalidArgumentsIpcError, match="wildcards"):
        await client.call("roost#OpenDirectChannel", {"topic": "req/#", "replyTopic": "roost/reply/x"})
    with pytest.raises(InvalidArgumentsIpcError, match="replyTopic is required"):
        await client.call("roost#OpenDirectChannel", {"topic": TOPIC})
    with pytest.raises(ConflictIpcError, match="0 subscriptions") as err:
        await client.call("roost#OpenDirectChannel", {"topic": TOPIC, "replyTopic": "roost/reply/x"})
    assert err.value.payload["context"]["code"] == "DIRECT_CHANNEL_UNAVAILABLE"


async def test_an_unauthorised_requester_gets_no_channel(connect: ClientFactory) -> None:
    responder = await connect("tok-b")
    await responder_on(responder, "other/topic")
    requester = await connect("tok-a")  # COMP_A may not publish to other/topic
    with pytest.raises(ConflictIpcError, match="may not publish"):
        await requester.call("roost#OpenDirectChannel", {"topic": "other/topic", "replyTopic": "roost/reply/x"})


def test_direct_channels_under_uvloop(sock_dir: Path) -> None:
    """uvloop refuses abstract socket names in create_unix_connection: the client connects its own socket."""
    uvloop = require_module("uvloop")

    async def scenario() -> tuple[list[int], int, int]:
        server = IpcServer(sock_dir / "uv.socket", MemoryCore())
        await server.start()
        try:
            published = count_publishes(server, TOPIC)
            responder = await IpcClient.connect(str(server.socket_path), "tok-b")
            await responder_on(responder)
            requester = await IpcClient.connect(str(server.socket_path), "tok-a", direct=True)
            replies = [(await requester.request(TOPIC, {"n": n}, timeout=2))["echo"] for n in range(5)]
            granted = server.direct.channel_count
            await requester.close()
            await responder.close()
            return replies, granted, published()
        finally:
            await server.stop()

    replies, granted, published = uvloop.run(scenario())
    assert replies == list(range(5)) and granted == 1 and published == 0
