"""Messages over the IPC size limit: the decoder skips them without buffering (CRC-checked), and
the server refuses that one request with IPC_MESSAGE_TOO_LARGE while the connection goes on."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.agent.ipc import IpcServer
from roost.ipc import rpc
from roost.ipc.errors import FrameCrcError, FrameTooLargeError
from roost.ipc.eventstream import MAX_HEADERS_SIZE, Message, MessageDecoder, encode_message

from .conftest import ClientFactory


def _request(sid: int, payload: bytes, op: str = rpc.OP_PUBLISH_TO_TOPIC) -> bytes:
    return rpc.application_message(sid, rpc.request_model(op), payload, operation=op)


def _skipping(max_size: int = 4096, limit: int = 1 << 20) -> MessageDecoder:
    decoder = MessageDecoder(max_message_size=max_size)
    decoder.skip_limit = limit
    return decoder


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 70_000))
def test_oversized_message_is_skipped_in_any_chunking_then_decoding_goes_on(chunk: int) -> None:
    big = _request(1, b"x" * 300_000)
    small = _request(2, b'{"topic": "t"}')
    data = big + small
    decoder = _skipping()
    out: list[Message] = []
    for i in range(0, len(data), chunk):
        out += decoder.feed(data[i : i + chunk])
        assert decoder.capacity <= 128 * 1024  # never the message: at most the busy-peer buffer
    assert [m.oversized for m in out] == [len(big), 0]
    assert out[0].headers[":stream-id"] == 1 and out[0].headers["operation"] == rpc.OP_PUBLISH_TO_TOPIC
    assert out[0].payload == b""
    assert out[1].payload == b'{"topic": "t"}' and out[1].headers[":stream-id"] == 2
    decoder.check_eof()


def test_skipped_message_with_a_bad_crc_is_fatal() -> None:
    frame = bytearray(_request(1, b"y" * 10_000))
    frame[5000] ^= 0x01
    with pytest.raises(FrameCrcError):
        _skipping().feed(bytes(frame))


def test_beyond_the_skip_limit_or_without_a_request_it_is_fatal_at_once() -> None:
    frame = _request(1, b"z" * 20_000)
    with pytest.raises(FrameTooLargeError, match="exceeds the limit of 8192"):
        _skipping(limit=8192).feed(frame[:12])  # the prelude alone decides
    with pytest.raises(FrameTooLargeError, match="exceeds the limit of 4096"):
        MessageDecoder(max_message_size=4096).feed(frame[:12])  # no skip limit: as before
    ping = encode_message({":message-type": rpc.PING, ":message-flags": 0, ":stream-id": 0}, b"p" * 10_000)
    decoder = _skipping()
    decoder.skip_if = lambda h: h.get(":message-type") == rpc.APPLICATION_MESSAGE
    with pytest.raises(FrameTooLargeError):
        decoder.feed(ping[:200])  # refused as soon as its headers are read
    huge_headers = encode_message({"h": "v" * 30_000, "i": "v" * 30_000, "j": "v" * 30_000, "k": "v" * 30_000,
                                   "l": "v" * 30_000})
    assert len(huge_headers) > MAX_HEADERS_SIZE
    with pytest.raises(FrameTooLargeError):
        _skipping(limit=1 << 20).feed(huge_headers[:12])


def test_eof_inside_a_skipped_message_is_truncation() -> None:
    decoder = _skipping()
    decoder.feed(_request(1, b"q" * 50_000)[:30_000])
    with pytest.raises(Exception, match="inside a skipped message"):
        decoder.check_eof()


async def test_server_refuses_the_oversized_request_alone(server: IpcServer, connect: ClientFactory) -> None:
    client = await connect("tok-a")
    sub = await client.subscribe("sensors/#")
    reader, writer = await asyncio.open_unix_connection(str(server.socket_path))
    writer.write(rpc.connect_message("tok-b"))
    decoder = MessageDecoder()
    got = decoder.feed(await asyncio.wait_for(reader.read(65536), 5))  # as clients do: CONNECT_ACK first
    size_of_payload = rpc.MAX_PAYLOAD_SIZE * 2
    body = json.dumps({"topic": "sensors/big", "publishMessage": {"binaryMessage": {
        "message": base64.b64encode(b"b" * size_of_payload).decode()}}}).encode()
    big = _request(1, body)
    small = _request(2, json.dumps({"topic": "sensors/small", "publishMessage": {"jsonMessage": {
        "message": {"ok": True}}}}).encode())
    writer.write(big + small)
    await writer.drain()
    while len(got) < 3:
        data = await asyncio.wait_for(reader.read(65536), 5)
        assert data, f"the server closed the connection after {got}"
        got += decoder.feed(data)
    ack, refused, answered = got
    assert ack.headers[":message-type"] == rpc.CONNECT_ACK
    assert refused.headers[":stream-id"] == 1 and refused.headers["service-model-type"] == rpc.ERR_INVALID_ARGUMENTS
    doc = json.loads(refused.payload)
    assert doc["context"]["code"] == "IPC_MESSAGE_TOO_LARGE"
    assert f"the PublishToTopic request is {len(big)} bytes" in doc["message"]
    assert f"limit of {server.max_message_size} bytes" in doc["message"] and "connection stays open" in doc["message"]
    assert answered.headers[":stream-id"] == 2 and answered.headers[":message-type"] == rpc.APPLICATION_MESSAGE
    assert answered.headers["service-model-type"] == rpc.response_model(rpc.OP_PUBLISH_TO_TOPIC)
    # Only the small message was published; the connections are all still there.
    assert (await sub.get(2)).topic == "sensors/small"
    assert server.connection_count == 2
    writer.close()


def test_the_skip_limit_is_validated() -> None:
    from roost.agent.ipc import IpcLimits
    from roost.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="max_skipped_message_size must be at least 1") as err:
        IpcLimits(max_skipped_message_size=0)
    assert err.value.code == "INVALID_IPC_LIMIT"
    assert IpcLimits().max_skipped_message_size == 16 * 1024 * 1024
