"""Roost's IpcClient against a real IpcServer on a real Unix socket (MemoryCore behind it)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import struct
import zlib
from typing import Any

import pytest

from roost.agent.ipc import IpcServer
from roost.ipc import rpc
from roost.ipc.client import ConfigurationUpdate, IpcClient, Received, SyncIpcClient
from roost.ipc.errors import (
    ConflictIpcError,
    ConnectionRefusedByServer,
    InvalidArgumentsIpcError,
    IpcConnectionClosedError,
    IpcTimeoutError,
    ResourceNotFoundIpcError,
    ServiceIpcError,
    UnauthorizedIpcError,
)
from roost.ipc.eventstream import Message, MessageDecoder, encode_frame, encode_message

from .conftest import COMP_A, COMP_B, COMP_NONE, ClientFactory, MemoryCore, ServerFactory


async def test_socket_is_created_with_mode_0660(server: IpcServer) -> None:
    assert stat.S_IMODE(os.stat(server.socket_path).st_mode) == 0o660


async def test_publish_subscribe_with_wildcards_json_and_binary(connect: ClientFactory) -> None:
    a = await connect("tok-a")
    b = await connect("tok-b")
    plus = await a.subscribe("sensors/+/temp")
    hash_ = await a.subscribe("sensors/#")
    await b.publish("sensors/kitchen/temp", {"c": 21.5})
    await b.publish("sensors/kitchen/temp", b"\x00\x01raw")
    await b.publish("sensors/kitchen/humidity", "text")
    assert await plus.get(2) == Received("sensors/kitchen/temp", None, {"c": 21.5})
    second = await plus.get(2)
    assert (second.topic, second.payload, second.json) == ("sensors/kitchen/temp", b"\x00\x01raw", None)
    got = [await hash_.get(2) for _ in range(3)]
    assert [(m.topic, m.payload) for m in got] == [
        ("sensors/kitchen/temp", b'{"c":21.5}'),
        ("sensors/kitchen/temp", b"\x00\x01raw"),
        ("sensors/kitchen/humidity", b"text"),
    ]
    with pytest.raises(IpcTimeoutError):
        await plus.get(0.1)  # humidity does not match sensors/+/temp


async def test_receive_modes(connect: ClientFactory) -> None:
    a = await connect("tok-a")
    b = await connect("tok-b")
    others = await a.subscribe("local/x", receive_mode=rpc.RECEIVE_MESSAGES_FROM_OTHERS)
    everyone = await a.subscribe("local/x")
    await a.publish("local/x", {"from": "a"})
    await b.publish("local/x", {"from": "b"})
    assert (await others.get(2)).json == {"from": "b"}
    assert [(await everyone.get(2)).json for _ in range(2)] == [{"from": "a"}, {"from": "b"}]


async def test_callbacks_sync_and_async(connect: ClientFactory) -> None:
    a = await connect("tok-a")
    b = await connect("tok-b")
    seen: list[Any] = []
    done = asyncio.Event()

    async def on_async(msg: Received) -> None:
        seen.append(("async", msg.json))
        done.set()

    await a.subscribe("local/cb", lambda m: seen.append(("sync", m.json)))
    await a.subscribe("local/cb", on_async)
    await b.publish("local/cb", [1, 2])
    await asyncio.wait_for(done.wait(), 2)
    assert sorted(seen) == [("async", [1, 2]), ("sync", [1, 2])]


async def test_request_reply_between_two_clients(connect: ClientFactory) -> None:
    requester = await connect("tok-a")
    responder = await connect("tok-b")

    async def answer(msg: Received) -> None:
        await responder.reply(msg.json, {"predictions": [len(msg.json["records"])]})

    await responder.subscribe("req/inference", answer)
    replies = await asyncio.gather(
        *(requester.request("req/inference", {"records": list(range(n))}, timeout=2) for n in range(5))
    )
    assert [r["predictions"] for r in replies] == [[0], [1], [2], [3], [4]]
    assert all(r["correlationId"] for r in replies)


async def test_request_without_responder_times_out_naming_the_topic(connect: ClientFactory) -> None:
    requester = await connect("tok-a")
    with pytest.raises(IpcTimeoutError, match=r"req/nobody.*0.2"):
        await requester.request("req/nobody", {}, timeout=0.2)


async def test_get_and_update_configuration(connect: ClientFactory, core: MemoryCore, server: IpcServer) -> None:
    a = await connect("tok-a")
    assert await a.get_configuration() == core.config[COMP_A]
    assert await a.get_configuration(["model"]) == {"name": "wine", "version": "1.0.0"}
    assert await a.get_configuration(["threshold"]) == {"threshold": 0.5}  # Greengrass wraps leaves
    assert await a.get_configuration(["batch"], component_name=COMP_B) == {"batch": 40}
    await a.update_configuration(["model"], {"version": "2.0.0"})
    assert core.config[COMP_A]["model"] == {"name": "wine", "version": "2.0.0"}
    with pytest.raises(ResourceNotFoundIpcError, match="nope"):
        await a.get_configuration(["nope"])
    b = await connect("tok-b")
    # As on Greengrass, any component reads any component's configuration by default ...
    assert await b.get_configuration(["model"], component_name=COMP_A) == {"name": "wine", "version": "2.0.0"}
    # ... and in strict mode only with an aws.greengrass.ipc.config policy naming <component>:<keyPath>.
    server.strict_config_reads = True
    with pytest.raises(UnauthorizedIpcError, match=f"{COMP_B}.*aws.greengrass.ipc.config.*{COMP_A}:\\*"):
        await b.get_configuration(component_name=COMP_A)
    with pytest.raises(UnauthorizedIpcError, match=f"{COMP_A}:/model"):
        await b.get_configuration(["model"], component_name=COMP_A)
    assert await a.get_configuration(["batch"], component_name=COMP_B) == {"batch": 40}  # A holds a policy
    assert await b.get_configuration(["batch"]) == {"batch": 40}  # one's own configuration needs no policy
    none = await connect("tok-none")
    with pytest.raises(UnauthorizedIpcError, match=f"{COMP_NONE}.*SubscribeToConfigurationUpdate"):
        await none.subscribe_to_configuration_update(key_path=["batch"], component_name=COMP_B)
    with pytest.raises(ConflictIpcError):
        await a.call("UpdateConfiguration", {"keyPath": [], "timestamp": 1.0, "valueToMerge": {"x": 1}})
    with pytest.raises(InvalidArgumentsIpcError, match="keyPath"):
        await a.call("GetConfiguration", {"keyPath": "threshold"})


async def test_configuration_update_subscription(connect: ClientFactory, core: MemoryCore) -> None:
    a = await connect("tok-a")
    sub = await a.subscribe_to_configuration_update(key_path=["model"])
    await a.update_configuration(["model"], {"version": "3"})
    await a.update_configuration(["threshold"], 0.9)  # outside the watched path
    assert await sub.get(2) == ConfigurationUpdate(COMP_A, ["model"])
    with pytest.raises(IpcTimeoutError):
        await sub.get(0.1)
    sub.close()
    await asyncio.sleep(0.05)
    assert core.watchers == []


async def test_update_state(connect: ClientFactory, core: MemoryCore) -> None:
    a = await connect("tok-a")
    await a.update_state("RUNNING")
    assert core.states == {COMP_A: "RUNNING"}
    with pytest.raises(InvalidArgumentsIpcError, match="state"):
        await a.update_state("DANCING")


async def test_unauthorised_publish_and_subscribe(connect: ClientFactory) -> None:
    a = await connect("tok-a")
    with pytest.raises(UnauthorizedIpcError, match=r"aws\.greengrass#PublishToTopic on resource secret/x"):
        await a.publish("secret/x", {"x": 1})
    with pytest.raises(UnauthorizedIpcError):
        await a.subscribe("#")
    nobody = await connect("tok-none")
    with pytest.raises(UnauthorizedIpcError) as err:
        await nobody.publish("sensors/x", b"1")
    assert err.value.error_type == "aws.greengrass#UnauthorizedError"
    await a.publish("sensors/x", b"still works")


async def test_unknown_operation_and_bad_arguments(connect: ClientFactory) -> None:
    a = await connect("tok-a")
    with pytest.raises(ServiceIpcError, match=r"aws\.greengrass#FlyToTheMoon"):
        await a.call("FlyToTheMoon", {})
    with pytest.raises(InvalidArgumentsIpcError, match="'a/#/b'"):
        await a.subscribe("a/#/b")
    with pytest.raises(InvalidArgumentsIpcError, match="publishMessage"):
        await a.call("PublishToTopic", {"topic": "sensors/x"})
    with pytest.raises(InvalidArgumentsIpcError, match="topic"):
        await a.call("PublishToTopic", {"topic": 5, "publishMessage": {"jsonMessage": {"message": {}}}})
    with pytest.raises(InvalidArgumentsIpcError, match="base64"):
        await a.call("PublishToTopic", {"topic": "sensors/x", "publishMessage": {"binaryMessage": {"message": "!"}}})
    with pytest.raises(InvalidArgumentsIpcError, match="receiveMode"):
        await a.subscribe("sensors/x", receive_mode="SOMETIMES")
    # malformed JSON straight on the wire
    assert a._transport is not None
    a._transport.write(rpc.application_message(999, "x", b"{not json", operation=rpc.OP_PUBLISH_TO_TOPIC))
    a._next_sid = 1000
    await a.publish("sensors/x", b"connection still fine")


async def test_cli_operations(connect: ClientFactory, core: MemoryCore) -> None:
    cli = await connect("tok-cli")
    listed = await cli.call("ListComponents", {})
    assert [c["componentName"] for c in listed["components"]] == sorted(core.config)
    with pytest.raises(ResourceNotFoundIpcError, match="ghost"):
        await cli.call("RestartComponent", {"componentName": "ghost"})
    with pytest.raises(ServiceIpcError) as err:
        await cli.call("GetLocalDeploymentStatus", {"deploymentId": "d1"})
    assert "exploded" not in err.value.message  # internals are not leaked
    assert "GetLocalDeploymentStatus" in err.value.message
    b = await connect("tok-b")
    assert (await b.call("RestartComponent", {"componentName": COMP_A}))["restartStatus"] == "SUCCEEDED"
    with pytest.raises(UnauthorizedIpcError):
        await b.call("RestartComponent", {"componentName": COMP_B})
    with pytest.raises(UnauthorizedIpcError):
        await b.call("StopComponent", {"componentName": COMP_A})
    a = await connect("tok-a")
    with pytest.raises(UnauthorizedIpcError):
        await a.call("ListComponents", {})


async def test_wrong_svcuid_is_rejected(server: IpcServer) -> None:
    with pytest.raises(ConnectionRefusedByServer):
        await IpcClient.connect(str(server.socket_path), "wrong-token")
    await asyncio.sleep(0.05)
    assert server.connection_count == 0


async def test_connect_uses_environment(server: IpcServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", str(server.socket_path))
    monkeypatch.setenv("SVCUID", "tok-a")
    async with await IpcClient.connect() as client:
        assert await client.get_configuration(["threshold"]) == {"threshold": 0.5}


async def _raw(server: IpcServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(str(server.socket_path))


async def _read_until_eof(reader: asyncio.StreamReader, timeout: float = 3) -> list[Message]:
    data = await asyncio.wait_for(reader.read(), timeout)
    return MessageDecoder().feed(data)


async def test_silent_peer_is_closed_after_connect_timeout(
    server: IpcServer, connect: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="roost.agent.ipc")
    reader, writer = await _raw(server)
    a = await connect("tok-a")
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await _read_until_eof(reader) == []
    assert 0.4 < loop.time() - start < 2
    await a.publish("sensors/x", b"ok")
    assert "no CONNECT within" in caplog.text
    assert "Traceback" not in caplog.text
    writer.close()


def _connect_frame(token: str = "tok-a") -> bytes:
    return rpc.connect_message(token)


@pytest.mark.parametrize("kind", ["garbage", "bad_crc", "oversized", "not_connect_first"])
async def test_bad_frames_close_only_that_connection(
    kind: str, server: IpcServer, connect: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    a = await connect("tok-a")
    sub = await a.subscribe("sensors/#")
    reader, writer = await _raw(server)
    if kind == "garbage":
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    elif kind == "bad_crc":
        frame = bytearray(_connect_frame())
        frame[-1] ^= 0xFF
        writer.write(bytes(frame))
    elif kind == "oversized":
        writer.write(_connect_frame())
        head = struct.pack(">II", server.max_message_size + 1, 0)
        writer.write(head + struct.pack(">I", zlib.crc32(head)))
    else:
        writer.write(rpc.ping())
    msgs = await _read_until_eof(reader)
    types = [m.headers[":message-type"] for m in msgs]
    assert types[-1] == rpc.PROTOCOL_ERROR
    writer.close()
    await a.publish("sensors/y", b"still here")
    assert (await sub.get(2)).payload == b"still here"
    assert server.connection_count == 1
    assert caplog.text.count("refused IPC connections: ") == 1


async def test_ping_and_raw_conversation(server: IpcServer) -> None:
    reader, writer = await _raw(server)
    writer.write(_connect_frame() + rpc.ping(b"hi"))
    decoder = MessageDecoder()
    msgs: list[Message] = []
    while len(msgs) < 2:
        msgs += decoder.feed(await asyncio.wait_for(reader.read(4096), 2))
    assert msgs[0].headers[":message-type"] == rpc.CONNECT_ACK
    assert msgs[0].headers[":message-flags"] & rpc.FLAG_CONNECTION_ACCEPTED
    assert (msgs[1].headers[":message-type"], msgs[1].payload) == (rpc.PING_RESPONSE, b"hi")
    # a request with no operation header still gets an answer
    writer.write(rpc.build(rpc.APPLICATION_MESSAGE, 1, b"{}"))
    while len(msgs) < 3:
        msgs += decoder.feed(await asyncio.wait_for(reader.read(4096), 2))
    assert msgs[2].headers["service-model-type"] == rpc.ERR_SERVICE
    assert json.loads(msgs[2].payload)["_service"] == rpc.SERVICE_NAME
    writer.close()


async def test_subscription_ends_when_closed_or_disconnected(server: IpcServer, connect: ClientFactory) -> None:
    a = await connect("tok-a")
    sub = await a.subscribe("sensors/#")
    await a.subscribe("local/x")
    assert server.pubsub.subscription_count == 2
    sub.close()
    await a.publish("sensors/x", b"1")  # a round trip: the terminate was processed before it
    assert server.pubsub.subscription_count == 1
    with pytest.raises(StopAsyncIteration):
        await sub.__anext__()
    await a.close()
    await asyncio.sleep(0.05)
    assert server.pubsub.subscription_count == 0


async def test_pending_calls_fail_when_the_server_goes_away(server: IpcServer, connect: ClientFactory) -> None:
    a = await connect("tok-a")
    sub = await a.subscribe("sensors/#")
    pending = asyncio.create_task(a.request("req/slow", {}, timeout=5))
    await asyncio.sleep(0.05)
    await server.stop()
    with pytest.raises(IpcConnectionClosedError, match="closed"):
        await pending
    with pytest.raises(IpcConnectionClosedError):
        await sub.__anext__()
    with pytest.raises(IpcConnectionClosedError):
        await a.publish("sensors/x", b"1")


async def test_slow_consumer_is_dropped(make_server: ServerFactory, core: MemoryCore) -> None:
    server = await make_server(write_buffer_cap=64 * 1024)
    publisher = await IpcClient.connect(str(server.socket_path), "tok-b")
    try:
        _reader, writer = await _raw(server)
        sub_req = rpc.dumps({"topic": "flood"})
        writer.write(
            _connect_frame("tok-b") + rpc.application_message(1, "x", sub_req, operation=rpc.OP_SUBSCRIBE_TO_TOPIC)
        )
        await asyncio.sleep(0.1)
        assert server.connection_count == 2
        blob = b"x" * 16384
        for _ in range(400):  # ~8.7 MB of events: more than socket buffers plus the cap
            await publisher.publish("flood", blob)
            if server.connection_count == 1:
                break
        await asyncio.sleep(0.05)
        assert server.connection_count == 1
        await publisher.publish("flood", b"publisher unaffected")
        writer.close()
    finally:
        await publisher.close()


async def test_stream_limit(make_server: ServerFactory) -> None:
    server = await make_server(max_streams_per_connection=2)
    async with await IpcClient.connect(str(server.socket_path), "tok-a") as a:
        await a.subscribe("sensors/1")
        await a.subscribe("sensors/2")
        with pytest.raises(ServiceIpcError, match="too many open streams"):
            await a.subscribe("sensors/3")


async def test_agent_side_publish_reaches_ipc_subscribers(server: IpcServer, connect: ClientFactory) -> None:
    a = await connect("tok-a")
    sub = await a.subscribe("local/+")
    assert server.publish("local/agent", {"hello": 1}, "agent") == 1
    assert server.publish("local/agent", b"\x01", "agent") == 1
    assert (await sub.get(2)).json == {"hello": 1}
    assert (await sub.get(2)).payload == b"\x01"


async def test_sync_client(server: IpcServer, connect: ClientFactory) -> None:
    responder = await connect("tok-b")

    async def answer(msg: Received) -> None:
        await responder.reply(msg.json, {"ok": True})

    await responder.subscribe("req/sync", answer)

    def script() -> tuple[Any, Any, bytes, Any]:
        with SyncIpcClient(str(server.socket_path), "tok-a") as client:
            config = client.get_configuration(["threshold"])
            reply = client.request("req/sync", {"q": 1}, timeout=2)
            with client.subscribe("sensors/sync") as sub:
                client.publish("sensors/sync", b"sync bytes")
                got = sub.get(2)
            client.update_state("RUNNING")
            try:
                client.publish("secret", b"x")
                denied = None
            except UnauthorizedIpcError as err:
                denied = err.error_type
            return config, reply["ok"], got.payload, denied

    config, ok, payload, denied = await asyncio.to_thread(script)
    assert config == {"threshold": 0.5}
    assert ok is True
    assert payload == b"sync bytes"
    assert denied == "aws.greengrass#UnauthorizedError"


async def test_large_binary_message_round_trips(connect: ClientFactory) -> None:
    a = await connect("tok-a")
    sub = await a.subscribe("sensors/big")
    blob = os.urandom(1024 * 1024)
    await a.publish("sensors/big", blob)
    assert (await sub.get(5)).payload == blob


def test_encode_message_is_what_the_builders_use() -> None:
    headers = {":message-type": 5, ":message-flags": 1, ":stream-id": 0}
    assert rpc.connect_ack(True) == encode_message(headers)
    assert rpc.connect_ack(True) == encode_frame(rpc.header_prefix(5, 1) + rpc.stream_id_header(0))


async def test_request_to_a_forbidden_topic_fails_fast(connect: ClientFactory) -> None:
    requester = await connect("tok-a")
    with pytest.raises(UnauthorizedIpcError, match="secret/topic"):
        await requester.request("secret/topic", {}, timeout=5)
    assert requester._streams.keys() == {1}  # only the reply subscription is left open
