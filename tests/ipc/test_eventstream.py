"""The event-stream codec: round trips, malformed input, arbitrary chunking."""

from __future__ import annotations

import struct
import uuid
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.ipc import rpc
from roost.ipc.errors import FrameCrcError, FrameError, FrameTooLargeError, FrameTruncatedError
from roost.ipc.eventstream import (
    Byte,
    Int16,
    Int32,
    Int64,
    Message,
    MessageDecoder,
    Timestamp,
    encode_message,
)

ALL_TYPES = {
    "true": True,
    "false": False,
    "byte": Byte(-7),
    "int16": Int16(-30000),
    "int32": 2_000_000_000,
    "int32w": Int32(-5),
    "int64": Int64(-(2**62)),
    "bytes": b"\x00\xffraw",
    "string": "héllo ✓",
    "timestamp": Timestamp(1_700_000_000_123),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}


def decode_all(data: bytes, **kwargs: int) -> list[Message]:
    return MessageDecoder(**kwargs).feed(data)


def test_every_header_type_round_trips_with_its_type() -> None:
    [msg] = decode_all(encode_message(ALL_TYPES, b"payload"))
    assert msg.payload == b"payload"
    assert msg.headers == ALL_TYPES
    for name, value in ALL_TYPES.items():
        got = msg.headers[name]
        expected_type = int if type(value) is Int32 else type(value)
        assert type(got) is expected_type, name


def test_wire_layout_matches_the_spec() -> None:
    frame = encode_message({"a": 1}, b"xy")
    total, hlen, pcrc = struct.unpack(">III", frame[:12])
    assert total == len(frame) == 12 + hlen + 2 + 4
    assert pcrc == zlib.crc32(frame[:8])
    assert frame[12 : 12 + hlen] == b"\x01a\x04\x00\x00\x00\x01"
    assert struct.unpack(">I", frame[-4:])[0] == zlib.crc32(frame[:-4])


def test_empty_message_and_several_per_feed() -> None:
    frames = encode_message({}, b"") + rpc.ping(b"p") + rpc.connect_message("tok")
    msgs = decode_all(frames)
    assert [m.payload for m in msgs] == [b"", b"p", b'{"authToken":"tok"}']
    assert msgs[2].headers[rpc.H_VERSION] == "0.1.0"


def test_rpc_builders_carry_the_standard_headers() -> None:
    [msg] = decode_all(rpc.application_message(7, "m#Resp", b"{}", operation="m#Op", terminate=True))
    assert msg.headers == {
        ":message-type": 0,
        ":message-flags": 2,
        "operation": "m#Op",
        ":content-type": "application/json",
        "service-model-type": "m#Resp",
        ":stream-id": 7,
    }


def _corrupt(frame: bytes, index: int) -> bytes:
    data = bytearray(frame)
    data[index] ^= 0x01
    return bytes(data)


def test_bad_prelude_crc() -> None:
    with pytest.raises(FrameCrcError):
        decode_all(_corrupt(encode_message({"a": "b"}, b"x"), 9))


def test_bad_message_crc() -> None:
    frame = encode_message({"a": "b"}, b"xyz")
    with pytest.raises(FrameCrcError):
        decode_all(_corrupt(frame, len(frame) - 5))


def _prelude(total: int, hlen: int) -> bytes:
    head = struct.pack(">II", total, hlen)
    return head + struct.pack(">I", zlib.crc32(head))


def test_too_small_and_too_large_lengths() -> None:
    with pytest.raises(FrameError) as small:
        decode_all(_prelude(15, 0))
    assert small.value.code == "FRAME_INVALID"
    with pytest.raises(FrameTooLargeError) as large:
        decode_all(_prelude(2000, 0), max_message_size=1000)
    assert large.value.code == "FRAME_TOO_LARGE"


def test_headers_length_inconsistent() -> None:
    with pytest.raises(FrameError, match="headers length"):
        decode_all(_prelude(20, 10))


def _frame(headers: bytes, payload: bytes = b"") -> bytes:
    pre = _prelude(16 + len(headers) + len(payload), len(headers))
    body = pre + headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


def test_unknown_header_type() -> None:
    with pytest.raises(FrameError, match="unknown header type 10"):
        decode_all(_frame(b"\x01a\x0a"))


@pytest.mark.parametrize(
    "headers",
    [b"\x05ab", b"\x01a\x04\x00\x00", b"\x01a\x07\x00\x09abc", b"\x01a\x09" + b"\x00" * 8, b"\x01a\x05\x00"],
)
def test_truncated_header(headers: bytes) -> None:
    with pytest.raises(FrameTruncatedError):
        decode_all(_frame(headers))


def test_non_utf8_header_name() -> None:
    with pytest.raises(FrameError, match="UTF-8"):
        decode_all(_frame(b"\x01\xff\x00"))


def test_partial_frames_wait_for_more_and_check_eof() -> None:
    frame = encode_message({"x": "y"}, b"p" * 100)
    decoder = MessageDecoder()
    assert decoder.feed(frame[:5]) == []
    assert decoder.feed(frame[5:50]) == []
    assert decoder.buffered == 50
    with pytest.raises(FrameTruncatedError):
        decoder.check_eof()
    [msg] = decoder.feed(frame[50:])
    assert msg.payload == b"p" * 100
    decoder.check_eof()


def test_encoder_rejects_bad_headers() -> None:
    with pytest.raises(FrameError):
        encode_message({"": 1})
    with pytest.raises(FrameError):
        encode_message({"a": "x" * 40000})
    with pytest.raises(FrameError):
        encode_message({"a": 2**40})
    with pytest.raises(FrameError):
        encode_message({"a": 1.5})  # type: ignore[dict-item]


header_values = st.one_of(
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-128, 127).map(Byte),
    st.integers(-(2**15), 2**15 - 1).map(Int16),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.integers(-(2**63), 2**63 - 1).map(Timestamp),
    st.binary(max_size=64),
    st.text(max_size=32),
    st.uuids(),
)
header_maps = st.dictionaries(st.text(min_size=1, max_size=20), header_values, max_size=6)
messages = st.tuples(header_maps, st.binary(max_size=300))


@given(st.lists(messages, min_size=1, max_size=5), st.data())
@settings(max_examples=150, deadline=None)
def test_arbitrary_chunking_decodes_identically(msgs: list[tuple[dict, bytes]], data: st.DataObject) -> None:
    stream = b"".join(encode_message(h, p) for h, p in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = MessageDecoder()
    out: list[Message] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out.extend(decoder.feed(stream[prev:cut]))
        prev = cut
    assert [(m.headers, m.payload) for m in out] == [(h, p) for h, p in msgs]
    assert decoder.buffered == 0


@given(st.binary(max_size=400))
@settings(max_examples=300, deadline=None)
def test_random_bytes_raise_only_frame_errors(blob: bytes) -> None:
    try:
        MessageDecoder(max_message_size=4096).feed(blob)
    except FrameError:
        pass


@given(messages, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
@settings(max_examples=300, deadline=None)
def test_mutated_frames_raise_only_frame_errors(msg: tuple[dict, bytes], edits: list[tuple[int, int]]) -> None:
    data = bytearray(encode_message(*msg))
    for index, value in edits:
        data[index % len(data)] = value
    try:
        MessageDecoder(max_message_size=4096).feed(bytes(data))
    except FrameError:
        pass


@given(messages, st.integers(1, 1000))
@settings(max_examples=100, deadline=None)
def test_mutated_with_fixed_crcs_raise_only_frame_errors(msg: tuple[dict, bytes], seed: int) -> None:
    """Corrupt the header section but keep both CRCs valid, so header parsing is exercised."""
    frame = bytearray(encode_message(*msg))
    _total, hlen, _ = struct.unpack(">III", frame[:12])
    if hlen:
        frame[12 + seed % hlen] = (frame[12 + seed % hlen] + seed) % 256
    body = bytes(frame[:-4])
    fixed = body + struct.pack(">I", zlib.crc32(body))
    try:
        MessageDecoder().feed(fixed)
    except FrameError:
        pass
