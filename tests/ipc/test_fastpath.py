"""The hot-path pieces: reused read buffer, header-layout cache, deferred publish acks, uvloop."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from roost.agent.ipc import IpcServer
from roost.ipc import rpc
from roost.ipc.client import IpcClient, Received
from roost.ipc.eventstream import MessageDecoder, encode_frame
from tests.conftest import require_module

from .conftest import ClientFactory, MemoryCore


def test_buffered_decoding_with_header_layout_cache() -> None:
    prefix = rpc.header_prefix(rpc.APPLICATION_MESSAGE, 0, "m", "aws.greengrass#Op")
    other = rpc.header_prefix(rpc.APPLICATION_MESSAGE, 0, "n", "aws.greengrass#Op")  # same length, one byte differs
    frames = [encode_frame(prefix + rpc.stream_id_header(sid), b"p%d" % sid) for sid in (1, 2, 70000)]
    frames.append(encode_frame(other + rpc.stream_id_header(3), b"q"))
    blob = b"".join(frames) * 50
    decoder = MessageDecoder()
    out = []
    pos = 0
    step = 7
    while pos < len(blob):  # the transport's way: read into the decoder's own buffer
        dest = decoder.get_buffer(-1)
        k = min(len(dest), step, len(blob) - pos)
        dest[:k] = blob[pos : pos + k]
        out += decoder.buffer_updated(k)
        pos += k
        step = step * 3 % 4093 + 1
    assert decoder.buffered == 0
    assert len(out) == 200
    assert [m.headers[":stream-id"] for m in out[:4]] == [1, 2, 70000, 3]
    assert [m.headers["service-model-type"] for m in out[:4]] == ["m", "m", "m", "n"]
    assert out[2].payload == b"p70000" and out[3].payload == b"q"
    assert out[4:8] == out[:4]


def test_large_message_grows_then_shrinks_the_buffer() -> None:
    decoder = MessageDecoder()
    big = encode_frame(rpc.header_prefix(0) + rpc.stream_id_header(1), b"x" * 300_000)
    [msg] = decoder.feed(big)
    assert len(msg.payload) == 300_000
    assert len(decoder.get_buffer(-1)) <= 64 * 1024


async def test_reply_nowait_and_deferred_acks(connect: ClientFactory) -> None:
    requester = await connect("tok-a")
    responder = await connect("tok-b")

    def answer(msg: Received) -> None:
        responder.reply_nowait(msg.json, {"n": msg.json["n"] + 1})

    await responder.subscribe("req/fast", answer)
    replies = await asyncio.gather(*(requester.request("req/fast", {"n": n}, timeout=2) for n in range(100)))
    assert [r["n"] for r in replies] == list(range(1, 101))
    # The deferred publish acks all arrive (with later frames or after the short delay).
    for _ in range(100):
        if set(requester._streams) == {1} and set(responder._streams) == {1}:
            break
        await asyncio.sleep(0.01)
    assert set(requester._streams) == {1} and set(responder._streams) == {1}


async def test_publish_nowait_failure_is_logged_once(connect: ClientFactory, caplog: pytest.LogCaptureFixture) -> None:
    client = await connect("tok-a")
    with caplog.at_level(logging.ERROR, logger="roost.ipc.async_client"):
        client.publish_nowait("secret/topic", {"a": 1})
        client.publish_nowait("secret/topic", {"a": 2})
        await client.publish("sensors/ok", {"a": 3})  # answered after both failures
        await asyncio.sleep(0.05)
    assert sum("publish_nowait" in r.getMessage() for r in caplog.records) == 1


def test_server_and_client_under_uvloop(tmp_path: Path) -> None:
    uvloop = require_module("uvloop")
    result: list[object] = []

    async def main() -> None:
        async with IpcServer(tmp_path / "uv.sock", MemoryCore()):
            a = await IpcClient.connect(str(tmp_path / "uv.sock"), "tok-a")
            b = await IpcClient.connect(str(tmp_path / "uv.sock"), "tok-b")
            await b.subscribe("req/uv", lambda m: b.reply_nowait(m.json, {"ok": True}))
            result.append(await a.request("req/uv", {}, timeout=2))
            await a.close()
            await b.close()

    t = threading.Thread(target=lambda: uvloop.run(main()))
    t.start()
    t.join(10)
    assert result and result[0]["ok"] is True  # type: ignore[index]


async def test_oversized_publish_is_refused_by_the_client_and_the_connection_survives(
        connect: ClientFactory) -> None:
    from roost.ipc.errors import InvalidArgumentsIpcError

    client = await connect("tok-a")
    too_big = b"x" * (rpc.MAX_PAYLOAD_SIZE * 2)
    with pytest.raises(InvalidArgumentsIpcError, match="exceeds the IPC limit"):
        await client.publish("sensors/x", too_big)
    with pytest.raises(InvalidArgumentsIpcError, match="exceeds the IPC limit"):
        client.publish_nowait("sensors/x", too_big)
    got: list[Received] = []
    await client.subscribe("sensors/x", got.append)
    await client.publish("sensors/x", b"still connected")
    for _ in range(100):
        if got:
            break
        await asyncio.sleep(0.01)
    assert got[0].payload == b"still connected"
