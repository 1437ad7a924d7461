"""The AWS event-stream message codec (the framing under Greengrass IPC).

A message is::

    total length (u32 BE) | headers length (u32 BE) | CRC32 of those 8 bytes
    headers | payload | CRC32 of everything before it

and a header is ``name length (u8) | name | type (u8) | value`` with the value types
0/1 bool true/false, 2 byte, 3 int16, 4 int32, 5 int64, 6 bytes (u16 length), 7 string
(u16 length), 8 timestamp (int64 ms since the epoch), 9 UUID (16 bytes).

Python values map to header types by type: ``bool`` → 0/1, ``int`` → int32, ``bytes`` → 6,
``str`` → 7, :class:`uuid.UUID` → 9; the int subclasses :class:`Byte`, :class:`Int16`,
:class:`Int64` and :class:`Timestamp` select the other integer types. Decoding returns the
same wrapper types, so a decode of an encode compares equal (and has equal types).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

from roost.ipc.errors import FrameCrcError, FrameError, FrameTooLargeError, FrameTruncatedError

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "Byte",
    "HeaderValue",
    "Int16",
    "Int32",
    "Int64",
    "Message",
    "MessageDecoder",
    "Timestamp",
    "encode_frame",
    "encode_header",
    "encode_headers",
    "encode_message",
]

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
PRELUDE_SIZE = 12
MIN_MESSAGE_SIZE = 16
MAX_HEADER_VALUE_LENGTH = 32767


class Byte(int):
    """An int sent as header type 2 (signed 8-bit)."""


class Int16(int):
    """An int sent as header type 3 (signed 16-bit)."""


class Int32(int):
    """An int sent as header type 4 (the default for plain ``int``)."""


class Int64(int):
    """An int sent as header type 5 (signed 64-bit)."""


class Timestamp(int):
    """Milliseconds since the epoch, sent as header type 8."""


HeaderValue = bool | int | bytes | str | uuid.UUID


class Message(NamedTuple):
    """One decoded event-stream message."""

    headers: dict[str, Any]
    payload: bytes


_U32 = struct.Struct(">I")
_PRELUDE = struct.Struct(">III")
_LENGTHS = struct.Struct(">II")
_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_crc32 = zlib.crc32


def _int_bytes(struct_: struct.Struct, type_byte: int, value: int, name: str) -> bytes:
    try:
        return bytes((type_byte,)) + struct_.pack(value)
    except struct.error as err:
        raise FrameError(f"header {name!r}: value {value} out of range") from err


def encode_header(name: str, value: HeaderValue) -> bytes:
    """Encode one header (name, type byte and value)."""
    raw_name = name.encode("utf-8")
    if not 0 < len(raw_name) <= 255:
        raise FrameError(f"header name {name!r} must be 1..255 bytes")
    head = bytes((len(raw_name),)) + raw_name
    vt = type(value)
    body: bytes
    if vt is bool:
        body = b"\x00" if value else b"\x01"
    elif vt is int or vt is Int32:
        body = _int_bytes(_I32, 4, value, name)  # type: ignore[arg-type]
    elif isinstance(value, str | bytes | bytearray):
        if isinstance(value, str):
            raw = value.encode("utf-8")
            type_byte = 7
        else:
            raw = bytes(value)
            type_byte = 6
        if len(raw) > MAX_HEADER_VALUE_LENGTH:
            raise FrameError(f"header {name!r}: value longer than {MAX_HEADER_VALUE_LENGTH} bytes")
        body = bytes((type_byte,)) + _U16.pack(len(raw)) + raw
    elif vt is Int64:
        body = _int_bytes(_I64, 5, value, name)  # type: ignore[arg-type]
    elif vt is Timestamp:
        body = _int_bytes(_I64, 8, value, name)  # type: ignore[arg-type]
    elif vt is Int16:
        body = _int_bytes(_I16, 3, value, name)  # type: ignore[arg-type]
    elif vt is Byte:
        body = _int_bytes(_I8, 2, value, name)  # type: ignore[arg-type]
    elif isinstance(value, uuid.UUID):
        body = b"\x09" + value.bytes
    else:
        raise FrameError(f"header {name!r}: unsupported value type {vt.__name__}")
    return head + body


def encode_headers(headers: Mapping[str, HeaderValue]) -> bytes:
    """Encode a header section (precompute this for headers that never change)."""
    return b"".join([encode_header(name, value) for name, value in headers.items()])


def encode_frame(header_bytes: bytes, payload: bytes = b"") -> bytes:
    """Frame an already-encoded header section and a payload."""
    hlen = len(header_bytes)
    lengths = _LENGTHS.pack(hlen + len(payload) + MIN_MESSAGE_SIZE, hlen)
    prelude_crc = _crc32(lengths)
    prelude = lengths + _U32.pack(prelude_crc)
    crc = _crc32(payload, _crc32(header_bytes, _crc32(_U32.pack(prelude_crc), prelude_crc)))
    return b"".join((prelude, header_bytes, payload, _U32.pack(crc)))


def encode_message(headers: Mapping[str, HeaderValue], payload: bytes = b"") -> bytes:
    """Encode one complete message."""
    return encode_frame(encode_headers(headers), payload)


def decode_headers(data: bytes, pos: int, end: int) -> dict[str, Any]:
    """Decode the header section ``data[pos:end]``."""
    headers: dict[str, Any] = {}
    i8, i16, i32, i64 = _I8.unpack_from, _I16.unpack_from, _I32.unpack_from, _I64.unpack_from
    try:
        while pos < end:
            nlen = data[pos]
            pos += 1
            if pos + nlen + 1 > end:
                raise FrameTruncatedError("header name runs past the header section")
            name = data[pos : pos + nlen].decode("utf-8")
            pos += nlen
            htype = data[pos]
            pos += 1
            value: Any
            if htype == 7 or htype == 6:
                if pos + 2 > end:
                    raise FrameTruncatedError(f"header {name!r}: length runs past the header section")
                vlen = (data[pos] << 8) | data[pos + 1]
                pos += 2
                if pos + vlen > end:
                    raise FrameTruncatedError(f"header {name!r}: value runs past the header section")
                raw = data[pos : pos + vlen]
                pos += vlen
                value = raw.decode("utf-8") if htype == 7 else bytes(raw)
            elif htype == 4:
                if pos + 4 > end:
                    raise FrameTruncatedError(f"header {name!r}: value runs past the header section")
                value = i32(data, pos)[0]
                pos += 4
            elif htype == 0:
                value = True
            elif htype == 1:
                value = False
            elif htype == 5 or htype == 8:
                if pos + 8 > end:
                    raise FrameTruncatedError(f"header {name!r}: value runs past the header section")
                n = i64(data, pos)[0]
                value = Int64(n) if htype == 5 else Timestamp(n)
                pos += 8
            elif htype == 3:
                if pos + 2 > end:
                    raise FrameTruncatedError(f"header {name!r}: value runs past the header section")
                value = Int16(i16(data, pos)[0])
                pos += 2
            elif htype == 2:
                if pos + 1 > end:
                    raise FrameTruncatedError(f"header {name!r}: value runs past the header section")
                value = Byte(i8(data, pos)[0])
                pos += 1
            elif htype == 9:
                if pos + 16 > end:
                    raise FrameTruncatedError(f"header {name!r}: value runs past the header section")
                value = uuid.UUID(bytes=bytes(data[pos : pos + 16]))
                pos += 16
            else:
                raise FrameError(f"header {name!r}: unknown header type {htype}")
            headers[name] = value
    except UnicodeDecodeError as err:
        raise FrameError("header name or string value is not UTF-8") from err
    return headers


class MessageDecoder:
    """Incremental decoder: feed it bytes as they arrive, get complete messages back.

    Any :class:`~roost.ipc.errors.FrameError` leaves the decoder unusable (the stream has
    lost its framing); close the connection.
    """

    __slots__ = ("_max", "_need", "_pending")

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._max = max_message_size
        self._pending = bytearray()
        self._need = 0

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a complete message."""
        return len(self._pending)

    def check_eof(self) -> None:
        """Raise :class:`FrameTruncatedError` if the stream ended inside a message."""
        if self._pending:
            raise FrameTruncatedError(f"stream ended inside a message ({len(self._pending)} bytes pending)")

    def feed(self, data: bytes) -> list[Message]:
        """Consume ``data``; return every message it completes, in order."""
        pending = self._pending
        if type(data) is not bytes:
            data = bytes(data)
        if pending:
            pending += data
            if len(pending) < self._need:
                return []
            data = bytes(pending)
            pending.clear()
        out: list[Message] = []
        n = len(data)
        pos = 0
        view = memoryview(data)
        try:
            while n - pos >= PRELUDE_SIZE:
                total, hlen, prelude_crc = _PRELUDE.unpack_from(data, pos)
                if _crc32(view[pos : pos + 8]) != prelude_crc:
                    raise FrameCrcError("event-stream prelude CRC mismatch")
                if total < MIN_MESSAGE_SIZE:
                    raise FrameError(f"event-stream message length {total} is below {MIN_MESSAGE_SIZE}")
                if total > self._max:
                    raise FrameTooLargeError(f"event-stream message of {total} bytes exceeds the limit of {self._max}")
                if hlen > total - MIN_MESSAGE_SIZE:
                    raise FrameError(f"headers length {hlen} does not fit in a message of {total} bytes")
                end = pos + total
                if end > n:
                    self._need = total
                    break
                (crc,) = _U32.unpack_from(data, end - 4)
                if _crc32(view[pos : end - 4]) != crc:
                    raise FrameCrcError("event-stream message CRC mismatch")
                hstart = pos + PRELUDE_SIZE
                hend = hstart + hlen
                headers = decode_headers(data, hstart, hend) if hlen else {}
                out.append(Message(headers, data[hend : end - 4]))
                pos = end
            else:
                self._need = PRELUDE_SIZE
        finally:
            view.release()
        if pos < n:
            pending += data[pos:] if pos else data
        return out
