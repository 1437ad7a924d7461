"""The stream protocol between a client and a replica: frames, replies, errors, the original protocol.

One module for both ends: :mod:`roost.cluster.replica` decodes what :mod:`roost.cluster.stream_client`
encodes, and the other way round. ``docs/cluster-streaming.md`` describes the same, for people.

Roost protocol (path :data:`STREAM_PATH`, a session token in ``Authorization: Bearer`` or ``?token=``):

- the replica speaks first: :class:`Hello` (JSON text) with the features the model expects, in order;
- a tabular window is one message: a binary frame (:data:`TABULAR_HEADER`: magic ``RSW1``, seq u32,
  rows u16, cols u16, little-endian, then ``rows x cols`` float32 LE) or a JSON text
  ``{"type": "window", "seq", "rows": [[...], ...], "columns": [...]}`` (``columns`` optional: the
  names of the row values, which the replica reorders and drops to the model's features);
- an image is one binary frame (:data:`IMAGE_HEADER`: magic ``RSI1``, seq u32, then the encoded image);
- the first window of a session is the warm-up: the replica runs the model on it and only then answers,
  with a reply of type ``ready`` (carrying that window's result); every later window is answered with
  a ``result``; a malformed window with an :class:`ErrorReply`, after which the session goes on.

The original protocol (any other path, no token, only while the replica holds a claim): 40 JSON text
frames per window, each one CSV row as an object keyed by column name; ``Model ready`` after the
warm-up window; then one text reply per window in :func:`format_legacy_result`'s format. Images: one
``{"data": "<base64>", ...}`` text frame each, answered with an image result (JSON text).

Nothing here does I/O or imports a websocket library.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from roost.cluster.errors import StreamMessageError, StreamProtocolError

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_IDLE",
    "CLOSE_IDLE_REASON",
    "CLOSE_TOO_BIG",
    "DEFAULT_MAX_FRAME_BYTES",
    "IMAGE_HEADER",
    "IMAGE_INVALID",
    "IMAGE_MAGIC",
    "LEGACY_READY",
    "MAX_ROWS_LIMIT",
    "MAX_SEQ",
    "STREAM_FRAME_INVALID",
    "STREAM_MESSAGE_INVALID",
    "STREAM_PATH",
    "TABULAR_HEADER",
    "TABULAR_MAGIC",
    "WINDOW_INVALID",
    "ColumnSource",
    "ErrorReply",
    "Hello",
    "ImageLabel",
    "ImageResult",
    "Kind",
    "LegacyResult",
    "Reply",
    "TabularResult",
    "Window",
    "decode_image_frame",
    "decode_legacy_image",
    "decode_legacy_row",
    "decode_window",
    "encode_image_frame",
    "encode_json_window",
    "encode_tabular_window",
    "format_legacy_result",
    "parse_legacy_result",
    "parse_server_message",
    "plan_columns",
]

Kind = Literal["tabular", "image"]
Matrix = npt.NDArray[np.float32]

STREAM_PATH: Final = "/v1/stream"
TABULAR_MAGIC: Final = b"RSW1"
IMAGE_MAGIC: Final = b"RSI1"
#: magic, seq, rows, cols (little-endian), then rows x cols float32 LE.
TABULAR_HEADER: Final = struct.Struct("<4sIHH")
#: magic, seq (little-endian), then the encoded image.
IMAGE_HEADER: Final = struct.Struct("<4sI")
MAX_SEQ: Final = 2**32 - 1
#: The most rows a binary window can say it has (u16).
MAX_ROWS_LIMIT: Final = 65535
#: Default largest message a replica accepts, per kind (JSON windows are ~10x their binary size;
#: images are bounded like ``roost serve``'s, 10 MiB, plus base64 for the original protocol).
DEFAULT_MAX_FRAME_BYTES: Final[dict[str, int]] = {"tabular": 1024 * 1024, "image": 16 * 1024 * 1024}

#: Close codes: the replica stops (1001), a message over ``maxFrameBytes`` (1009), the idle timeout.
CLOSE_GOING_AWAY: Final = 1001
CLOSE_TOO_BIG: Final = 1009
CLOSE_IDLE: Final = 4000
CLOSE_IDLE_REASON: Final = "idle timeout"

#: What the original protocol's server sends once the warm-up window was answered.
LEGACY_READY: Final = "Model ready"

# Codes of one message's error reply (registered in roost.errors.CODES).
WINDOW_INVALID: Final = "WINDOW_INVALID"
IMAGE_INVALID: Final = "IMAGE_INVALID"
STREAM_FRAME_INVALID: Final = "STREAM_FRAME_INVALID"
STREAM_MESSAGE_INVALID: Final = "STREAM_MESSAGE_INVALID"


# -- what the replica sends -----------------------------------------------------------------------


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    def to_text(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), separators=(",", ":"))


class Hello(_Message):
    """The replica's first message on a Roost-protocol connection."""

    type: Literal["hello"] = "hello"
    session: str
    replica: str
    kind: Kind
    #: The model's features, in the order binary windows carry them (tabular; empty for images).
    features: list[str] = Field(default_factory=list)
    #: Rows per window the service type uses (the original's 40); a window may hold 1 to ``maxRows``.
    window: int
    max_rows: int = Field(alias="maxRows")
    max_frame_bytes: int = Field(alias="maxFrameBytes")


class TabularResult(_Message):
    """One window's answer (``type`` ``ready`` for the warm-up window, ``result`` after).

    A classifier's ``result`` is the window's majority class and ``confidence`` the mean probability
    of that class over the window's rows (``None`` when the model gives no probabilities); a
    regressor's ``result`` is the mean of its predictions and ``confidence`` is ``None``.
    ``predictions`` holds one value per row (the class, or the predicted value).
    """

    type: Literal["result", "ready"] = "result"
    seq: int
    result: float
    confidence: float | None
    predictions: list[float]
    server_ms: float


class ImageLabel(_Message):
    label: str
    score: float


class ImageResult(_Message):
    """One image's answer: the top-k labels, best first (``ready`` for the first image)."""

    type: Literal["result", "ready"] = "result"
    seq: int
    labels: list[ImageLabel]
    server_ms: float


class ErrorReply(_Message):
    """One message could not be used; the session goes on. ``seq`` is ``None`` when unreadable."""

    type: Literal["error"] = "error"
    seq: int | None
    code: str
    message: str

    @classmethod
    def of(cls, err: StreamMessageError) -> ErrorReply:
        return cls(seq=err.seq, code=err.code, message=err.message)


Reply = Hello | TabularResult | ImageResult | ErrorReply


def parse_server_message(text: str | bytes, kind: Kind) -> Reply:
    """A replica's JSON text message as its model (``kind`` says which result shape to expect)."""
    if isinstance(text, bytes):
        raise StreamProtocolError("the replica sent a binary message; it answers in JSON text only")
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise StreamProtocolError(f"the replica sent a message that is not JSON: {text[:80]!r}") from err
    kinds: dict[str, type[_Message]] = {"hello": Hello, "error": ErrorReply}
    result_type: type[_Message] = TabularResult if kind == "tabular" else ImageResult
    what = doc.get("type") if isinstance(doc, dict) else None
    model = kinds.get(what, result_type) if what in ("hello", "error", "result", "ready") else None
    if model is None:
        raise StreamProtocolError(f"the replica sent a message of unknown type {what!r}")
    try:
        parsed = model.model_validate(doc)
    except ValidationError as err:
        first = err.errors()[0]
        raise StreamProtocolError(f"the replica's {what} message is malformed: {first['msg']} at "
                                  f"{'.'.join(str(p) for p in first['loc'])}") from err
    assert isinstance(parsed, Hello | TabularResult | ImageResult | ErrorReply)
    return parsed


# -- windows ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A decoded tabular window: float32 ``(rows, features)`` in the model's feature order."""

    seq: int
    matrix: Matrix


def encode_tabular_window(seq: int, matrix: Matrix) -> bytes:
    """A binary window frame of ``matrix`` (rows x features, made float32 little-endian)."""
    rows, cols = matrix.shape
    if not 0 <= seq <= MAX_SEQ or not 0 < rows <= MAX_ROWS_LIMIT or not 0 < cols <= 65535:
        raise ValueError(f"seq {seq}, rows {rows}, cols {cols} do not fit the binary window header")
    body = np.ascontiguousarray(matrix, dtype="<f4").tobytes()
    return TABULAR_HEADER.pack(TABULAR_MAGIC, seq, rows, cols) + body


def encode_json_window(seq: int, rows: Sequence[Sequence[float]], columns: Sequence[str] | None = None) -> str:
    doc: dict[str, Any] = {"type": "window", "seq": seq, "rows": [list(map(float, r)) for r in rows]}
    if columns is not None:
        doc["columns"] = list(columns)
    return json.dumps(doc, separators=(",", ":"))


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def _check_matrix(matrix: Matrix, seq: int, features: Sequence[str], max_rows: int) -> Matrix:
    rows, cols = matrix.shape
    if rows == 0:
        raise StreamMessageError("the window has no rows", code=WINDOW_INVALID, seq=seq)
    if rows > max_rows:
        raise StreamMessageError(f"the window has {rows} rows; this replica takes at most {max_rows}",
                                 code=WINDOW_INVALID, seq=seq)
    if cols != len(features):
        raise StreamMessageError(f"the window's rows have {cols} values; the model expects {len(features)} "
                                 f"features ({', '.join(features)})", code=WINDOW_INVALID, seq=seq)
    finite = np.isfinite(matrix)
    if not finite.all():
        r, c = (int(i) for i in np.argwhere(~finite)[0])
        raise StreamMessageError(f"row {r}, feature {features[c]!r} is {float(matrix[r, c])}, not a finite number "
                                 "(NaN and infinities are refused)", code=WINDOW_INVALID, seq=seq)
    return matrix


def _decode_binary_window(data: bytes, features: Sequence[str], max_rows: int) -> Window:
    if len(data) < TABULAR_HEADER.size:
        raise StreamMessageError(f"the binary window is {len(data)} bytes, shorter than its "
                                 f"{TABULAR_HEADER.size}-byte header", code=STREAM_FRAME_INVALID)
    magic, seq, rows, cols = TABULAR_HEADER.unpack_from(data)
    if magic != TABULAR_MAGIC:
        raise StreamMessageError(f"the binary window starts with {magic!r}, not the magic {TABULAR_MAGIC!r}",
                                 code=STREAM_FRAME_INVALID)
    expected = TABULAR_HEADER.size + rows * cols * 4
    if len(data) != expected:
        how = "truncated" if len(data) < expected else "longer than its header says"
        raise StreamMessageError(f"the binary window is {how}: {len(data)} bytes for {rows} rows x {cols} "
                                 f"float32 (expected {expected})", code=STREAM_FRAME_INVALID, seq=seq)
    matrix = np.frombuffer(data, dtype="<f4", offset=TABULAR_HEADER.size).reshape(rows, cols)
    return Window(seq, _check_matrix(matrix.astype(np.float32), seq, features, max_rows))


def _seq_of(doc: Mapping[str, Any]) -> int | None:
    seq = doc.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq <= MAX_SEQ else None


def _decode_json_window(text: str, features: Sequence[str], max_rows: int) -> Window:
    try:
        doc = json.loads(text, parse_constant=_no_constants)
    except ValueError as err:
        raise StreamMessageError(f"the window is not valid JSON: {err}", code=STREAM_MESSAGE_INVALID) from err
    if not isinstance(doc, dict) or doc.get("type") != "window":
        raise StreamMessageError('a text message must be a JSON window {"type": "window", "seq", "rows"}',
                                 code=STREAM_MESSAGE_INVALID)
    seq = _seq_of(doc)
    if seq is None:
        raise StreamMessageError(f"the window's seq must be an integer 0..{MAX_SEQ}", code=WINDOW_INVALID)
    rows = doc.get("rows")
    if not isinstance(rows, list):
        raise StreamMessageError("the window's rows must be a list of lists of numbers", code=WINDOW_INVALID,
                                 seq=seq)
    if len(rows) > max_rows:
        raise StreamMessageError(f"the window has {len(rows)} rows; this replica takes at most {max_rows}",
                                 code=WINDOW_INVALID, seq=seq)
    columns = doc.get("columns")
    order: list[int] | None = None
    width = len(features)
    if columns is not None:
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise StreamMessageError("the window's columns must be a list of names", code=WINDOW_INVALID, seq=seq)
        if len(set(columns)) != len(columns):
            dupes = sorted({c for c in columns if columns.count(c) > 1})
            raise StreamMessageError(f"the window names column(s) {', '.join(dupes)} twice", code=WINDOW_INVALID,
                                     seq=seq)
        missing = [f for f in features if f not in columns]
        if missing:
            raise StreamMessageError(f"the window's columns lack the model feature(s) {', '.join(missing)}",
                                     code=WINDOW_INVALID, seq=seq)
        order = [columns.index(f) for f in features]
        width = len(columns)
    values: list[list[float]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise StreamMessageError(f"row {i} is not a list of numbers", code=WINDOW_INVALID, seq=seq)
        if len(row) != width:
            wanted = f"{width} (its columns)" if order is not None else \
                f"{width} features ({', '.join(features)})"
            raise StreamMessageError(f"row {i} has {len(row)} values; expected {wanted}", code=WINDOW_INVALID,
                                     seq=seq)
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, int | float):
                name = columns[j] if columns is not None else features[j]
                raise StreamMessageError(f"row {i}, {name!r} is {json.dumps(v)[:40]}, not a number",
                                         code=WINDOW_INVALID, seq=seq)
        values.append(row if order is None else [row[k] for k in order])
    try:
        matrix = np.array(values, dtype=np.float64).reshape(len(values), len(features))
    except OverflowError as err:  # an integer beyond float64
        raise StreamMessageError(f"a value is too large for a number: {err}", code=WINDOW_INVALID, seq=seq) from err
    too_large = ~np.isfinite(matrix) | (np.abs(matrix) > np.finfo(np.float32).max)
    if too_large.any():
        bad = np.argwhere(too_large)[0]
        raise StreamMessageError(f"row {int(bad[0])}, feature {features[int(bad[1])]!r} is beyond float32's range",
                                 code=WINDOW_INVALID, seq=seq)
    return Window(seq, _check_matrix(matrix.astype(np.float32), seq, features, max_rows))


def decode_window(message: bytes | str, features: Sequence[str], max_rows: int) -> Window:
    """A tabular window from one message (binary or JSON), checked against the model's ``features``.

    Raises :class:`StreamMessageError` (``STREAM_FRAME_INVALID``, ``STREAM_MESSAGE_INVALID`` or
    ``WINDOW_INVALID``, with the seq when it could be read) naming what was wrong.
    """
    if isinstance(message, str):
        return _decode_json_window(message, features, max_rows)
    return _decode_binary_window(bytes(message), features, max_rows)


def encode_image_frame(seq: int, image: bytes) -> bytes:
    if not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"seq {seq} does not fit the image frame header")
    return IMAGE_HEADER.pack(IMAGE_MAGIC, seq) + image


def decode_image_frame(message: bytes | str) -> tuple[int, bytes]:
    """``(seq, encoded image)`` of an image frame; :class:`StreamMessageError` when it is not one."""
    if isinstance(message, str):
        raise StreamMessageError("an image session takes binary image frames (magic RSI1, seq, image bytes), "
                                 "not text", code=STREAM_MESSAGE_INVALID)
    if len(message) < IMAGE_HEADER.size:
        raise StreamMessageError(f"the image frame is {len(message)} bytes, shorter than its "
                                 f"{IMAGE_HEADER.size}-byte header", code=STREAM_FRAME_INVALID)
    magic, seq = IMAGE_HEADER.unpack_from(message)
    if magic != IMAGE_MAGIC:
        raise StreamMessageError(f"the image frame starts with {magic!r}, not the magic {IMAGE_MAGIC!r}",
                                 code=STREAM_FRAME_INVALID)
    image = bytes(message[IMAGE_HEADER.size:])
    if not image:
        raise StreamMessageError("the image frame carries no image bytes", code=IMAGE_INVALID, seq=seq)
    return seq, image


# -- columns by name (CSV files, the original protocol's row objects) ---------------------------------


@dataclass(frozen=True)
class ColumnSource:
    """Where a feature's value comes from: column ``column`` as a number, or, when ``equals`` is set,
    1.0 where that column's text equals it and 0.0 elsewhere (a one-hot feature named
    ``<column>_<value>``, pandas ``get_dummies`` style, e.g. ``color_red`` from ``color``)."""

    column: str
    equals: str | None = None


def plan_columns(features: Sequence[str], columns: Sequence[str]) -> tuple[list[ColumnSource], list[str]]:
    """For each feature, the column it is read from; and the features no column provides.

    A feature is read from the column of its name; failing that, from the longest column ``C`` such
    that the feature is ``C_<value>`` (one-hot). Other columns (``Class``, ``timestamp``, ``quality``)
    are ignored.
    """
    present = set(columns)
    plan: list[ColumnSource] = []
    missing: list[str] = []
    for feature in features:
        if feature in present:
            plan.append(ColumnSource(feature))
            continue
        prefixes = [c for c in columns if feature.startswith(c + "_") and len(feature) > len(c) + 1]
        if prefixes:
            column = max(prefixes, key=len)
            plan.append(ColumnSource(column, feature[len(column) + 1:]))
        else:
            missing.append(feature)
    return plan, missing


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def decode_legacy_row(text: str | bytes, features: Sequence[str]) -> list[float]:
    """The model's feature values of one row frame of the original protocol (a JSON object keyed by
    column name, extras such as ``Class`` and ``timestamp`` ignored)."""
    if isinstance(text, bytes):
        raise StreamMessageError("the original protocol sends rows as JSON text, not binary",
                                 code=STREAM_MESSAGE_INVALID)
    try:
        row = json.loads(text, parse_constant=_no_constants)
    except ValueError as err:
        raise StreamMessageError(f"the row is not valid JSON: {err}", code=STREAM_MESSAGE_INVALID) from err
    if not isinstance(row, dict):
        raise StreamMessageError("a row must be a JSON object keyed by column name", code=WINDOW_INVALID)
    plan, missing = plan_columns(features, list(row))
    if missing:
        raise StreamMessageError(f"the row lacks the model feature(s) {', '.join(missing)}", code=WINDOW_INVALID)
    out: list[float] = []
    for feature, source in zip(features, plan, strict=True):
        raw = row[source.column]
        if source.equals is not None:
            out.append(1.0 if str(raw) == source.equals else 0.0)
            continue
        value = _number(raw)
        if value is None or not math.isfinite(value) or abs(value) > float(np.finfo(np.float32).max):
            raise StreamMessageError(f"the row's {feature!r} is {json.dumps(raw)[:40]}, not a finite number",
                                     code=WINDOW_INVALID)
        out.append(value)
    return out


def decode_legacy_image(text: str | bytes, max_bytes: int) -> bytes:
    """The image of an original-protocol frame ``{"data": "<base64>", "timestamp": ...}``."""
    if isinstance(text, bytes):
        raise StreamMessageError('the original protocol sends images as JSON text {"data": "<base64>"}',
                                 code=STREAM_MESSAGE_INVALID)
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise StreamMessageError(f"the image message is not valid JSON: {err}", code=STREAM_MESSAGE_INVALID) from err
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, str) or not data:
        raise StreamMessageError('an image message must be {"data": "<base64 of the image>"}', code=IMAGE_INVALID)
    if len(data) > (max_bytes * 4) // 3 + 4:
        raise StreamMessageError(f"the image is over {max_bytes} bytes", code=IMAGE_INVALID)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise StreamMessageError(f"the image's data is not base64: {err}", code=IMAGE_INVALID) from err


_LEGACY_RE = re.compile(r"^\[ Output result : \[(?P<result>[^\]]*)\], Execution_Time : (?P<time>[^,]+), "
                        r"confidence : (?P<confidence>[^\]]+) \]$")


@dataclass(frozen=True)
class LegacyResult:
    result: float
    execution_s: float
    confidence: float | None


def _legacy_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def format_legacy_result(result: float, execution_s: float, confidence: float | None) -> str:
    """The original server's reply to one window: ``[ Output result : [k], Execution_Time : t,
    confidence : c ]`` (``t`` in seconds; ``c`` is ``None`` for a regressor, as Python prints it)."""
    conf = "None" if confidence is None else repr(float(confidence))
    return f"[ Output result : [{_legacy_number(result)}], Execution_Time : {execution_s!r}, confidence : {conf} ]"


def parse_legacy_result(text: str | bytes) -> LegacyResult:
    """A reply of :func:`format_legacy_result` (what ``roost stream --format legacy`` reads)."""
    if isinstance(text, bytes):
        raise StreamProtocolError("the replica answered a window of the original protocol in binary")
    match = _LEGACY_RE.match(text.strip())
    if match is None:
        raise StreamProtocolError(f"the replica's reply is not the original protocol's result: {text[:80]!r}")
    try:
        conf_text = match["confidence"].strip()
        return LegacyResult(float(match["result"]), float(match["time"]),
                            None if conf_text == "None" else float(conf_text))
    except ValueError as err:
        raise StreamProtocolError(f"the replica's reply has a field that is not a number: {text[:80]!r}") from err
