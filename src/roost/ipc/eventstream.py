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
from collections.abc import Callable, Mapping
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
#: The largest header section of a message (awscrt's event-stream limit, as Greengrass runs it).
MAX_HEADERS_SIZE = 128 * 1024
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
    """One decoded event-stream message.

    ``oversized`` is non-zero only for a message a decoder with a ``skip_limit`` skipped: its
    size in bytes (larger than ``max_message_size``); ``headers`` are its headers and ``payload``
    is empty (the payload was read and dropped, never buffered)."""

    headers: dict[str, Any]
    payload: bytes
    oversized: int = 0


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


def decode_headers(data: bytes | bytearray, pos: int, end: int) -> dict[str, Any]:
    """Decode the header section ``data[pos:end]``."""
    return _decode_headers(data, pos, end)[0]


def _decode_headers(data: bytes | bytearray, pos: int, end: int) -> tuple[dict[str, Any], int]:
    """The headers of ``data[pos:end]`` and the offset of the int32 ``:stream-id`` value (-1 if none)."""
    headers: dict[str, Any] = {}
    sid_at = -1
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
                if name == ":stream-id":
                    sid_at = pos
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
            if name in headers and name == ":stream-id":
                sid_at = -1  # a repeated :stream-id: never take the layout shortcut
            headers[name] = value
    except UnicodeDecodeError as err:
        raise FrameError("header name or string value is not UTF-8") from err
    return headers, sid_at


_MIN_READ = 16 * 1024
_BUFFER_SIZE = 64 * 1024
_MAX_LAYOUTS = 16


class _Layout:
    """A header section seen before: identical bytes around the ``:stream-id`` value decode identically."""

    __slots__ = ("headers", "hlen", "prefix", "sid_at", "suffix")

    def __init__(self, hlen: int, prefix: bytes, sid_at: int, suffix: bytes, headers: dict[str, Any]) -> None:
        self.hlen = hlen
        self.prefix = prefix
        self.sid_at = sid_at
        self.suffix = suffix
        self.headers = headers


class MessageDecoder:
    """Incremental decoder: feed it bytes as they arrive, get complete messages back.

    Two ways to feed it: :meth:`feed` with any bytes, or, from an :class:`asyncio.BufferedProtocol`,
    :meth:`get_buffer` (the transport reads straight into the decoder's reused buffer: no
    allocation per read) then :meth:`buffer_updated`.

    Memory: the buffer starts at ``buffer_size`` bytes. A read that fills all the space offered
    marks the peer as busy: from then on reads get up to 16 KiB into a buffer of 64 KiB (or of
    ``max_message_size``, if that is smaller). A message larger than the buffer grows it to
    that message's size (never above ``max_message_size``: the prelude is checked first); once
    the message is consumed it shrinks back. :meth:`trim` returns an idle decoder to its
    initial size, so a server with many quiet connections pays ``buffer_size`` per connection,
    not 64 KiB.

    Header sections that differ from an earlier one only in the ``:stream-id`` value (every
    request of a kind, from one peer) are not decoded again: the earlier decode is copied and
    the stream id patched in.

    Any :class:`~roost.ipc.errors.FrameError` leaves the decoder unusable (the stream has
    lost its framing); close the connection.

    Oversized messages: with a ``skip_limit`` above ``max_message_size``, a message larger than
    ``max_message_size`` but at most ``skip_limit`` bytes (with headers of at most
    :data:`MAX_HEADERS_SIZE`) is not an error: its headers are buffered and decoded, its payload
    is read and dropped as it arrives (checked against the message CRC, never buffered), and it
    comes out as a :class:`Message` with ``oversized`` set to its size, so that the receiver can
    refuse that one request and keep the connection.
    """

    __slots__ = ("_base", "_buf", "_end", "_initial", "_layouts", "_max", "_min_read", "_need", "_offered",
                 "_skip_crc", "_skip_headers", "_skip_left", "_skip_size", "_skip_tail", "_start", "skip_if",
                 "skip_limit")

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE, buffer_size: int = _BUFFER_SIZE) -> None:
        if buffer_size < PRELUDE_SIZE:
            raise ValueError(f"buffer_size must be at least {PRELUDE_SIZE}")
        self._max = max_message_size
        self._initial = buffer_size
        self._base = buffer_size
        self._min_read = min(_MIN_READ, buffer_size)
        self._buf = bytearray(buffer_size)
        self._start = 0
        self._end = 0
        self._need = 0
        self._offered = 0
        self._layouts: list[_Layout] = []
        #: Messages larger than max_message_size up to this size are skipped, not fatal (0: fatal).
        self.skip_limit = 0
        #: Which oversized messages (by their headers) are skipped; the others raise at once.
        self.skip_if: Callable[[dict[str, Any]], bool] | None = None
        self._skip_left = 0
        self._skip_size = 0
        self._skip_crc = 0
        self._skip_tail = b""
        self._skip_headers: dict[str, Any] = {}

    @property
    def max_message_size(self) -> int:
        """Frames whose declared total length exceeds this raise :class:`FrameTooLargeError`."""
        return self._max

    @max_message_size.setter
    def max_message_size(self, value: int) -> None:
        self._max = value

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a complete message."""
        return self._end - self._start

    @property
    def capacity(self) -> int:
        """Bytes currently allocated for the read buffer."""
        return len(self._buf)

    def check_eof(self) -> None:
        """Raise :class:`FrameTruncatedError` if the stream ended inside a message."""
        if self._skip_left:
            raise FrameTruncatedError(f"stream ended inside a skipped message ({self._skip_left} bytes missing)")
        if self._end > self._start:
            raise FrameTruncatedError(f"stream ended inside a message ({self._end - self._start} bytes pending)")

    def trim(self) -> bool:
        """Give an idle decoder (nothing pending) its initial small buffer back; True if it shrank."""
        if self._end != self._start or (len(self._buf) <= self._initial and self._base == self._initial):
            return False
        self._buf = bytearray(self._initial)
        self._start = self._end = self._need = 0
        self._base = self._initial
        self._min_read = min(_MIN_READ, self._initial)
        return True

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Free space to read into (then call :meth:`buffer_updated` with the count read)."""
        buf = self._buf
        start, end = self._start, self._end
        size = len(buf)
        pending = end - start
        min_read = self._min_read
        base = self._base
        want = max(self._need, pending + min_read)
        if pending == 0 and size > base and want <= base:
            self._buf = buf = bytearray(base)  # a large message is done: shrink back
            self._start = self._end = 0
        elif size < base or size - start < want or size - end < min_read:
            if want > size or size < base:
                new = bytearray(max(want, size * 2 if want > size else 0, base))
                new[:pending] = buf[start:end]
                self._buf = buf = new
            else:
                buf[:pending] = buf[start:end]
            self._start, self._end = 0, pending
        view = memoryview(buf)[self._end :]
        self._offered = len(view)
        return view

    def buffer_updated(self, nbytes: int) -> list[Message]:
        """``nbytes`` were written at the start of the last :meth:`get_buffer`; return the messages completed."""
        if nbytes >= self._offered and self._base < _BUFFER_SIZE:
            # The read filled all the space offered: a busy peer; read in large chunks from now on
            # (never more than one message may hold: under a small cap the buffer stays small).
            self._base = min(_BUFFER_SIZE, max(self._max, self._initial))
            self._min_read = min(_MIN_READ, self._base)
        self._end += nbytes
        return self._parse()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Consume ``data``; return every message it completes, in order."""
        view = memoryview(data).cast("B")
        out: list[Message] = []
        pos, n = 0, len(view)
        while pos < n:
            dest = self.get_buffer()
            k = min(len(dest), n - pos)
            dest[:k] = view[pos : pos + k]
            dest.release()
            pos += k
            out += self.buffer_updated(k)
        return out

    def _parse(self) -> list[Message]:
        buf = self._buf
        pos, n = self._start, self._end
        out: list[Message] = []
        view = memoryview(buf)
        try:
            if self._skip_left:
                pos = self._skip(view, pos, n, out)
            while n - pos >= PRELUDE_SIZE:
                total, hlen, prelude_crc = _PRELUDE.unpack_from(buf, pos)
                if _crc32(view[pos : pos + 8]) != prelude_crc:
                    raise FrameCrcError("event-stream prelude CRC mismatch")
                if total < MIN_MESSAGE_SIZE:
                    raise FrameError(f"event-stream message length {total} is below {MIN_MESSAGE_SIZE}")
                if total > self._max and (total > self.skip_limit or hlen > MAX_HEADERS_SIZE):
                    limit = max(self._max, self.skip_limit)
                    raise FrameTooLargeError(f"event-stream message of {total} bytes exceeds the limit of {limit}")
                if hlen > total - MIN_MESSAGE_SIZE:
                    raise FrameError(f"headers length {hlen} does not fit in a message of {total} bytes")
                if total > self._max:
                    hend = pos + PRELUDE_SIZE + hlen
                    if hend > n:  # buffer the headers (at most MAX_HEADERS_SIZE), never the payload
                        self._need = PRELUDE_SIZE + hlen
                        break
                    headers = self._headers(buf, pos + PRELUDE_SIZE, hend, hlen) if hlen else {}
                    if self.skip_if is not None and not self.skip_if(headers):
                        raise FrameTooLargeError(f"event-stream message of {total} bytes exceeds the limit of "
                                                 f"{self._max}")
                    self._skip_headers = headers
                    self._skip_crc = _crc32(view[pos:hend])
                    self._skip_size = total
                    self._skip_left = total - PRELUDE_SIZE - hlen
                    self._skip_tail = b""
                    self._need = 0
                    pos = self._skip(view, hend, n, out)
                    continue
                end = pos + total
                if end > n:
                    self._need = total
                    break
                (crc,) = _U32.unpack_from(buf, end - 4)
                if _crc32(view[pos : end - 4]) != crc:
                    raise FrameCrcError("event-stream message CRC mismatch")
                hstart = pos + PRELUDE_SIZE
                hend = hstart + hlen
                out.append(Message(self._headers(buf, hstart, hend, hlen) if hlen else {}, bytes(view[hend : end - 4])))
                pos = end
            else:
                self._need = 0
        finally:
            view.release()
        if pos == n:
            self._start = self._end = 0
        else:
            self._start = pos
        return out

    def _skip(self, view: memoryview, pos: int, n: int, out: list[Message]) -> int:
        """Drop the next bytes of a skipped message (CRC-checked); emit it when it is whole."""
        take = min(self._skip_left, n - pos)
        body = max(0, min(take, self._skip_left - 4))  # the last 4 bytes are the CRC, not under it
        if body:
            self._skip_crc = zlib.crc32(view[pos : pos + body], self._skip_crc)
        if take > body:
            self._skip_tail += bytes(view[pos + body : pos + take])
        self._skip_left -= take
        pos += take
        if self._skip_left == 0:
            (crc,) = _U32.unpack(self._skip_tail)
            if crc != self._skip_crc & 0xFFFFFFFF:
                raise FrameCrcError("event-stream message CRC mismatch")
            out.append(Message(self._skip_headers, b"", self._skip_size))
            self._skip_headers, self._skip_tail = {}, b""
        return pos

    def _headers(self, buf: bytearray, hstart: int, hend: int, hlen: int) -> dict[str, Any]:
        for layout in self._layouts:
            if layout.hlen == hlen and buf.startswith(layout.prefix, hstart, hend):
                at = hstart + layout.sid_at
                if buf.startswith(layout.suffix, at + 4, hend):
                    headers = layout.headers.copy()
                    headers[":stream-id"] = _I32.unpack_from(buf, at)[0]
                    return headers
        headers, sid_at = _decode_headers(buf, hstart, hend)
        if sid_at >= 0:
            layouts = self._layouts
            if len(layouts) >= _MAX_LAYOUTS:
                del layouts[0]
            layouts.append(_Layout(hlen, bytes(buf[hstart:sid_at]), sid_at - hstart, bytes(buf[sid_at + 4 : hend]),
                                   headers.copy()))
        return headers
