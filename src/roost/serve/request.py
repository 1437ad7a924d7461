"""Decoding inference requests: Lambda-style events and tabular documents.

Two pure steps, both raising :class:`~roost.serve.errors.RequestError` with a stable code and a
message that names what was wrong (row, feature, position):

* :func:`unwrap_event` turns the message a requester published (parsed JSON, or raw bytes/str) into
  the inner document plus reply metadata (``replyTo``, ``correlationId``). A Lambda-style event
  ``{"body": "<JSON text>", "isBase64Encoded": false}`` is unwrapped; a plain document is used as is.
* :func:`decode_tabular` turns the inner document into a float32 ``(rows, features)`` matrix in the
  model's feature order. Accepted shapes: a list of records keyed by feature name, a single record,
  ``{"records": [...]}`` and ``{"columns": [...], "data": [[...], ...]}``.

Value rules: ``int`` and ``float`` are accepted; ``bool`` is accepted as 0/1 (one-hot columns such
as ``color_red`` are often sent as booleans); NaN and infinities (also the strings ``"NaN"``,
``"inf"``, ``"Infinity"``) are refused with NON_FINITE; any other string, ``null``, lists and
objects are refused with WRONG_TYPE. Numeric strings such as ``"6.6"`` are refused too: a requester
that quotes numbers has a bug worth hearing about.

Single-record requests are on the hot path, so decoding avoids pandas and per-value numpy work:
values are gathered in model order with a precomputed :func:`operator.itemgetter`, type-checked
by set operations and converted by one ``numpy.array`` call.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import operator
from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import chain
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from roost.serve.errors import (
    EMPTY_REQUEST,
    FEATURE_MISMATCH,
    INVALID_BASE64,
    INVALID_JSON,
    NON_FINITE,
    PAYLOAD_TOO_LARGE,
    WRONG_TYPE,
    RequestError,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ROWS",
    "META_KEYS",
    "TabularDecoder",
    "decode_tabular",
    "unwrap_event",
]

DEFAULT_MAX_BYTES: Final = 4 * 1024 * 1024
DEFAULT_MAX_ROWS: Final = 100_000
META_KEYS: Final = ("replyTo", "correlationId")
_EVENT_KEYS: Final = frozenset({"body", "isBase64Encoded", *META_KEYS})
_NUMERIC_TYPES: Final = frozenset({float, int, bool})
_F32_MAX: Final = float(np.finfo(np.float32).max)
_NON_FINITE_WORDS: Final = frozenset(
    {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
)


# --------------------------------------------------------------------------------------------
# events


def _too_large(size: int, max_bytes: int, what: str) -> RequestError:
    return RequestError(f"{what} is {size} bytes; the limit is {max_bytes} bytes", code=PAYLOAD_TOO_LARGE)


def _loads(text: str | bytes, what: str) -> Any:
    # orjson parses a 1,000-record request several times faster than json; what it refuses (NaN and
    # Infinity literals, which json accepts and decode_tabular then refuses as NON_FINITE, or
    # malformed text) goes through json, so the answer and its message stay the same.
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RequestError(
            f"{what} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno} (char {err.pos})",
            code=INVALID_JSON,
        ) from err
    except UnicodeDecodeError as err:
        raise RequestError(
            f"{what} is not valid JSON: not UTF-8 text ({err.reason} at byte {err.start})", code=INVALID_JSON
        ) from err


def unwrap_event(payload: Any, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Any, dict[str, Any]]:
    """Return ``(inner document, meta)`` for one request message.

    ``payload`` is the parsed JSON message (dict or list) or its raw text (bytes/str). If the outer
    document is a dict with a ``body`` key it is a Lambda-style event: the body (JSON text,
    base64-encoded when ``isBase64Encoded`` is true, or an already-parsed list/dict) is the inner
    document. Otherwise the outer document itself is. ``meta`` holds ``replyTo`` and
    ``correlationId`` when the outer document has them (they are removed from a plain document so
    they are not taken for features).
    """
    if isinstance(payload, bytes | bytearray | memoryview):
        raw = bytes(payload)
        if len(raw) > max_bytes:
            raise _too_large(len(raw), max_bytes, "payload")
        payload = _loads(raw, "payload")
    elif isinstance(payload, str):
        # A str's UTF-8 size is between len(s) and 4 * len(s): encode only when that decides it.
        size = len(payload)
        if size <= max_bytes < 4 * size:
            size = len(payload.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise _too_large(size, max_bytes, "payload")
        payload = _loads(payload, "payload")

    if not isinstance(payload, dict):
        return payload, {}

    meta: dict[str, Any] = {}
    for key in META_KEYS:
        if key in payload:
            value = payload[key]
            if not isinstance(value, str):
                raise RequestError(f"{key} must be a string, not {_type_name(value)}", code=WRONG_TYPE)
            meta[key] = value

    if "body" not in payload:
        if meta:
            payload = {k: v for k, v in payload.items() if k not in meta}
        return payload, meta

    body = payload["body"]
    flag = payload.get("isBase64Encoded", False)
    if not isinstance(flag, bool):
        raise RequestError(f"isBase64Encoded must be true or false, not {_type_name(flag)}", code=WRONG_TYPE)
    if isinstance(body, dict | list):
        if flag:
            raise RequestError("isBase64Encoded is true but body is not a string", code=WRONG_TYPE)
        return body, meta
    if not isinstance(body, str):
        raise RequestError(f"body must be a JSON string, not {_type_name(body)}", code=WRONG_TYPE)
    if len(body) > max_bytes:
        raise _too_large(len(body), max_bytes, "body")
    data: str | bytes = body
    if flag:
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as err:
            raise RequestError(f"body is not valid base64: {err}", code=INVALID_BASE64) from err
    return _loads(data, "body"), meta


# --------------------------------------------------------------------------------------------
# tabular documents


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


class TabularDecoder:
    """Decodes tabular documents for one model's feature list (precomputed lookups)."""

    __slots__ = ("_getter", "_index", "_name_set", "feature_names", "n_features")

    def __init__(self, feature_names: Sequence[str]) -> None:
        names = list(feature_names)
        if not names:
            raise ValueError("a tabular model needs at least one feature name")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature names in {names}")
        self.feature_names: tuple[str, ...] = tuple(names)
        self.n_features = len(names)
        self._index = {name: i for i, name in enumerate(names)}
        self._name_set = frozenset(names)
        getter = operator.itemgetter(*names)
        # itemgetter of one key returns the bare value, not a 1-tuple.
        self._getter: Callable[[dict[str, Any]], tuple[Any, ...]] = (
            (lambda rec: (getter(rec),)) if len(names) == 1 else getter
        )

    # ---- entry point

    def __call__(self, doc: Any, *, max_rows: int = DEFAULT_MAX_ROWS) -> npt.NDArray[np.float32]:
        if isinstance(doc, list):
            return self._records(doc, max_rows)
        if isinstance(doc, dict):
            if "columns" in doc and "data" in doc and len(doc) == 2:
                return self._columns(doc["columns"], doc["data"], max_rows)
            if "records" in doc and len(doc) == 1:
                records = doc["records"]
                if not isinstance(records, list):
                    raise RequestError(f"records must be an array, not {_type_name(records)}", code=WRONG_TYPE)
                return self._records(records, max_rows)
            return self._records([doc], max_rows)
        raise RequestError(f"request must be an array of records or an object, not {_type_name(doc)}", code=WRONG_TYPE)

    # ---- records

    def _records(self, records: list[Any], max_rows: int) -> npt.NDArray[np.float32]:
        n = len(records)
        if n == 0:
            raise RequestError("request has no rows", code=EMPTY_REQUEST)
        if n > max_rows:
            raise RequestError(f"request has {n} rows; the limit is {max_rows}", code=PAYLOAD_TOO_LARGE)
        names = self._name_set
        getter = self._getter
        f = self.n_features
        if n == 1:
            rec = records[0]
            if type(rec) is not dict or len(rec) != f or rec.keys() != names:
                self._bad_record(rec, 0)
            row = getter(rec)
            try:
                # One C-level pass: abs() refuses str/None/containers (TypeError), and a sum of
                # magnitudes within float32 range proves every value finite and in range.
                fast = sum(map(abs, row)) <= _F32_MAX
            except OverflowError:  # an int beyond float range: the checked path names it
                fast = False
            except TypeError:
                self._bad_values([row])
                raise  # pragma: no cover - _bad_values always raises here
            if fast:
                out = np.empty((1, f), dtype=np.float32)
                out[0] = row
                return out
            return self._checked([row], [row])
        rows = []
        for r, rec in enumerate(records):
            if type(rec) is not dict or len(rec) != f or rec.keys() != names:
                self._bad_record(rec, r)
            rows.append(getter(rec))
        try:
            fast = sum(map(abs, chain.from_iterable(rows))) <= _F32_MAX
        except OverflowError:
            fast = False
        except TypeError:
            self._bad_values(rows)
            raise  # pragma: no cover
        if fast:
            return np.array(rows, dtype=np.float32)
        return self._checked(rows, rows)

    def _bad_record(self, rec: Any, row: int) -> None:
        if not isinstance(rec, dict):
            raise RequestError(f"row {row}: a record must be an object, not {_type_name(rec)}", code=WRONG_TYPE)
        keys = set(rec)
        missing = [name for name in self.feature_names if name not in keys]
        unknown = [str(k) for k in rec if k not in self._name_set]
        raise RequestError(f"row {row}: missing: {missing}; unknown: {unknown}", code=FEATURE_MISMATCH)

    def _bad_values(self, rows: Sequence[Sequence[Any]], order: Sequence[str] | None = None) -> None:
        """Raise for the first value that is not a number (rows hold values in ``order``)."""
        names = order if order is not None else self.feature_names
        for r, row in enumerate(rows):
            for name, value in zip(names, row, strict=True):
                if type(value) in _NUMERIC_TYPES:
                    continue
                if isinstance(value, str) and value.strip().lower() in _NON_FINITE_WORDS:
                    raise RequestError(f"row {r}, feature {name!r}: {value!r} is not a finite number", code=NON_FINITE)
                if isinstance(value, float | int):  # numpy scalars and other number subclasses
                    continue
                raise RequestError(
                    f"row {r}, feature {name!r}: expected a number, got {_type_name(value)}", code=WRONG_TYPE
                )

    def _checked(self, values: Any, rows: Sequence[Sequence[Any]]) -> npt.NDArray[np.float32]:
        """Convert ``values`` with a full finiteness check; ``rows`` are the rows in model order."""
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                out = np.ascontiguousarray(np.array(values, dtype=np.float32).reshape(len(rows), self.n_features))
        except OverflowError as err:  # an int too large for a C double
            self._big_ints(rows)
            raise AssertionError("unreachable") from err  # pragma: no cover
        if not np.isfinite(out).all():
            self._non_finite(out, rows)
        return out

    def _big_ints(self, rows: Sequence[Sequence[Any]]) -> None:
        for r, row in enumerate(rows):
            for name, value in zip(self.feature_names, row, strict=True):
                try:
                    float(value)
                except OverflowError as err:
                    raise RequestError(
                        f"row {r}, feature {name!r}: {value} is out of range for a float", code=NON_FINITE
                    ) from err

    def _non_finite(self, out: npt.NDArray[np.float32], rows: Sequence[Sequence[Any]]) -> None:
        r, c = (int(i) for i in np.argwhere(~np.isfinite(out))[0])
        original = rows[r][c]
        what = (
            "is not a finite number"
            if not (isinstance(original, int) or math.isfinite(original))
            else ("is out of range for float32")
        )
        raise RequestError(f"row {r}, feature {self.feature_names[c]!r}: {original!r} {what}", code=NON_FINITE)

    # ---- columns + data

    def _columns(self, columns: Any, data: Any, max_rows: int) -> npt.NDArray[np.float32]:
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise RequestError("columns must be an array of feature names", code=WRONG_TYPE)
        if not isinstance(data, list):
            raise RequestError(f"data must be an array of rows, not {_type_name(data)}", code=WRONG_TYPE)
        if len(set(columns)) != len(columns):
            dup = sorted({c for c in columns if columns.count(c) > 1})
            raise RequestError(f"columns: duplicate feature names {dup}", code=FEATURE_MISMATCH)
        if len(columns) != self.n_features or set(columns) != self._name_set:
            missing = [name for name in self.feature_names if name not in set(columns)]
            unknown = [c for c in columns if c not in self._name_set]
            raise RequestError(f"columns: missing: {missing}; unknown: {unknown}", code=FEATURE_MISMATCH)
        n = len(data)
        if n == 0:
            raise RequestError("request has no rows", code=EMPTY_REQUEST)
        if n > max_rows:
            raise RequestError(f"request has {n} rows; the limit is {max_rows}", code=PAYLOAD_TOO_LARGE)
        f = self.n_features
        for r, row in enumerate(data):
            if type(row) is not list:
                raise RequestError(f"row {r}: a data row must be an array, not {_type_name(row)}", code=WRONG_TYPE)
            if len(row) != f:
                raise RequestError(f"row {r}: has {len(row)} values for {f} columns", code=FEATURE_MISMATCH)
        try:
            fast = sum(map(abs, chain.from_iterable(data))) <= _F32_MAX
        except OverflowError:
            fast = False
        except TypeError:
            self._bad_values(data, columns)
            raise  # pragma: no cover
        if columns == list(self.feature_names):
            return np.array(data, dtype=np.float32) if fast else self._checked(data, data)
        perm = [columns.index(name) for name in self.feature_names]
        if fast:
            return np.ascontiguousarray(np.array(data, dtype=np.float32)[:, perm])
        reordered = [[row[i] for i in perm] for row in data]
        return self._checked(reordered, reordered)


@lru_cache(maxsize=64)
def _decoder(feature_names: tuple[str, ...]) -> TabularDecoder:
    return TabularDecoder(feature_names)


def decode_tabular(
    doc: Any, feature_names: Sequence[str], *, max_rows: int = DEFAULT_MAX_ROWS
) -> npt.NDArray[np.float32]:
    """Decode a tabular request into a C-contiguous float32 ``(rows, features)`` matrix in model order.

    A :class:`TabularDecoder` per feature list is cached; hold one yourself to skip the lookup.
    """
    names = feature_names if isinstance(feature_names, tuple) else tuple(feature_names)
    return _decoder(names)(doc, max_rows=max_rows)
