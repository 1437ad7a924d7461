"""Request decoding: every bad input gets its stable code and a message naming row/feature."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from roost.serve.request import TabularDecoder, decode_tabular, unwrap_event
from roost.serve.wine import FEATURES, sample_records

NAMES = list(FEATURES)
RECORDS: list[dict[str, Any]] = sample_records()
EXPECTED = np.array([[r[n] for n in NAMES] for r in RECORDS], dtype=np.float32)


def _err(fn: Any, *args: Any, **kwargs: Any) -> RequestError:
    with pytest.raises(RequestError) as info:
        fn(*args, **kwargs)
    return info.value


# ---- unwrap_event


def test_lambda_event_plain_and_base64() -> None:
    body = json.dumps(RECORDS)
    doc, meta = unwrap_event({"body": body, "isBase64Encoded": False})
    assert doc == RECORDS and meta == {}
    b64 = base64.b64encode(body.encode()).decode()
    doc, meta = unwrap_event(json.dumps({"body": b64, "isBase64Encoded": True, "replyTo": "r/1"}).encode())
    assert doc == RECORDS and meta == {"replyTo": "r/1"}


def test_meta_from_plain_documents() -> None:
    doc, meta = unwrap_event({"records": RECORDS, "replyTo": "a", "correlationId": "c-1"})
    assert doc == {"records": RECORDS} and meta == {"replyTo": "a", "correlationId": "c-1"}
    doc, meta = unwrap_event(json.dumps({"columns": ["x"], "data": [[1]], "replyTo": "b"}))
    assert doc == {"columns": ["x"], "data": [[1]]} and meta == {"replyTo": "b"}
    doc, meta = unwrap_event({"body": json.dumps(RECORDS[0]), "correlationId": "z"})
    assert doc == RECORDS[0] and meta == {"correlationId": "z"}
    doc, meta = unwrap_event(RECORDS)
    assert doc == RECORDS and meta == {}


def test_invalid_json_names_position() -> None:
    err = _err(unwrap_event, b'{"body": [1, 2}')
    assert err.code == INVALID_JSON and "line 1 column" in err.message and "payload" in err.message
    err = _err(unwrap_event, {"body": "[{]", "isBase64Encoded": False})
    assert err.code == INVALID_JSON and "body" in err.message and "char 2" in err.message
    assert _err(unwrap_event, b"\xff\xfe\xfa").code == INVALID_JSON


def test_invalid_base64() -> None:
    err = _err(unwrap_event, {"body": "not base64!!", "isBase64Encoded": True})
    assert err.code == INVALID_BASE64 and "base64" in err.message
    b64 = base64.b64encode(b"[1, ").decode()
    assert _err(unwrap_event, {"body": b64, "isBase64Encoded": True}).code == INVALID_JSON


def test_payload_too_large() -> None:
    big = json.dumps(RECORDS * 100)
    err = _err(unwrap_event, big.encode(), max_bytes=1000)
    assert err.code == PAYLOAD_TOO_LARGE and "1000" in err.message
    assert _err(unwrap_event, big, max_bytes=1000).code == PAYLOAD_TOO_LARGE
    assert _err(unwrap_event, "é" * 600, max_bytes=1000).code == PAYLOAD_TOO_LARGE  # 1200 UTF-8 bytes
    assert _err(unwrap_event, {"body": big}, max_bytes=1000).code == PAYLOAD_TOO_LARGE


def test_meta_must_be_strings() -> None:
    err = _err(unwrap_event, {"body": "[]", "replyTo": 5})
    assert err.code == WRONG_TYPE and "replyTo" in err.message
    assert _err(unwrap_event, {"body": "[]", "isBase64Encoded": "yes"}).code == WRONG_TYPE
    assert _err(unwrap_event, {"body": 12}).code == WRONG_TYPE


# ---- decode_tabular: shapes


def test_all_document_shapes_decode_the_same() -> None:
    shuffled = [dict(reversed(list(r.items()))) for r in RECORDS]
    cols = list(reversed(NAMES))
    docs: list[Any] = [
        RECORDS,
        shuffled,
        {"records": RECORDS},
        {"columns": NAMES, "data": [[r[n] for n in NAMES] for r in RECORDS]},
        {"columns": cols, "data": [[r[n] for n in cols] for r in RECORDS]},
    ]
    for doc in docs:
        out = decode_tabular(doc, NAMES)
        assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == (2, 13)
        np.testing.assert_array_equal(out, EXPECTED)
    one = decode_tabular(RECORDS[1], NAMES)
    assert one.shape == (1, 13) and one.flags.c_contiguous
    np.testing.assert_array_equal(one[0], EXPECTED[1])


def test_bools_are_zero_and_one() -> None:
    rec = dict(RECORDS[0], color_red=False, color_white=True)
    out = decode_tabular(rec, NAMES)
    assert out[0, 11] == 0.0 and out[0, 12] == 1.0


# ---- decode_tabular: bad input


def test_feature_mismatch_lists_missing_unknown_and_row() -> None:
    bad = dict(RECORDS[1])
    del bad["pH"]
    bad["ph"] = 3.0
    err = _err(decode_tabular, [RECORDS[0], bad], NAMES)
    assert err.code == FEATURE_MISMATCH
    assert "row 1" in err.message and "missing: ['pH']" in err.message and "unknown: ['ph']" in err.message
    extra = dict(RECORDS[0], colour="red")
    err = _err(decode_tabular, extra, NAMES)
    assert err.code == FEATURE_MISMATCH and "unknown: ['colour']" in err.message and "row 0" in err.message
    err = _err(decode_tabular, {"columns": [*NAMES[:-1], "x"], "data": [[0] * 13]}, NAMES)
    assert err.code == FEATURE_MISMATCH and "missing: ['color_white']" in err.message and "'x'" in err.message
    err = _err(decode_tabular, {"columns": NAMES, "data": [[0] * 13, [0] * 12]}, NAMES)
    assert err.code == FEATURE_MISMATCH and "row 1" in err.message


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), "NaN", "inf", "-Infinity", 1e39, 10**400])
def test_non_finite_names_row_and_feature(value: Any) -> None:
    bad = dict(RECORDS[1], alcohol=value)
    for doc in (
        [RECORDS[0], bad],
        {"columns": NAMES, "data": [[RECORDS[0][n] for n in NAMES], [bad[n] for n in NAMES]]},
    ):
        err = _err(decode_tabular, doc, NAMES)
        assert err.code == NON_FINITE, (value, err)
        assert "row 1" in err.message and "'alcohol'" in err.message
    err = _err(decode_tabular, bad, NAMES)
    assert err.code == NON_FINITE and "row 0" in err.message and "'alcohol'" in err.message


@pytest.mark.parametrize(
    ("value", "type_name"), [("6.6", "string"), ("abc", "string"), (None, "null"), ([1], "array"), ({"a": 1}, "object")]
)
def test_wrong_type_names_row_feature_and_type(value: Any, type_name: str) -> None:
    bad = dict(RECORDS[0], pH=value)
    err = _err(decode_tabular, [RECORDS[1], RECORDS[1], bad], NAMES)
    assert err.code == WRONG_TYPE and "row 2" in err.message and "'pH'" in err.message and type_name in err.message
    err = _err(decode_tabular, bad, NAMES)
    assert err.code == WRONG_TYPE and "row 0" in err.message and "'pH'" in err.message
    cols = list(reversed(NAMES))
    err = _err(decode_tabular, {"columns": cols, "data": [[bad[n] for n in cols]]}, NAMES)
    assert err.code == WRONG_TYPE and "row 0" in err.message and "'pH'" in err.message


def test_empty_too_many_and_odd_shapes() -> None:
    assert _err(decode_tabular, [], NAMES).code == EMPTY_REQUEST
    assert _err(decode_tabular, {"records": []}, NAMES).code == EMPTY_REQUEST
    assert _err(decode_tabular, {"columns": NAMES, "data": []}, NAMES).code == EMPTY_REQUEST
    err = _err(decode_tabular, RECORDS * 3, NAMES, max_rows=5)
    assert err.code == PAYLOAD_TOO_LARGE and "6 rows" in err.message
    assert _err(decode_tabular, "hello", NAMES).code == WRONG_TYPE
    err = _err(decode_tabular, [RECORDS[0], 5], NAMES)
    assert err.code == WRONG_TYPE and "row 1" in err.message
    assert _err(decode_tabular, {"records": "x"}, NAMES).code == WRONG_TYPE
    assert _err(decode_tabular, {"columns": NAMES, "data": [5]}, NAMES).code == WRONG_TYPE
    assert _err(decode_tabular, {"columns": [*NAMES[:-1], NAMES[0]], "data": [[0] * 13]}, NAMES).code == (
        FEATURE_MISMATCH
    )


def test_large_finite_values_are_kept() -> None:
    # Sum of magnitudes above float32 max takes the checked path, which must still accept them.
    rec = dict(RECORDS[0], density=3e38, chlorides=-3e38)
    out = decode_tabular(rec, NAMES)
    assert out[0, 7] == np.float32(3e38) and out[0, 4] == np.float32(-3e38)


def test_single_feature_model() -> None:
    out = TabularDecoder(["x"])([{"x": 1}, {"x": 2.5}])
    np.testing.assert_array_equal(out, [[1.0], [2.5]])
    np.testing.assert_array_equal(TabularDecoder(["x"])({"x": 3}), [[3.0]])


# ---- properties

finite = st.floats(allow_nan=False, allow_infinity=False, width=32) | st.integers(-(10**6), 10**6)
rows_st = st.lists(st.lists(finite, min_size=13, max_size=13), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(rows=rows_st, data=st.data())
def test_records_with_shuffled_keys_decode_identically(rows: list[list[float]], data: st.DataObject) -> None:
    records = [dict(zip(NAMES, row, strict=True)) for row in rows]
    shuffled = []
    for rec in records:
        keys = data.draw(st.permutations(NAMES))
        shuffled.append({k: rec[k] for k in keys})
    a = decode_tabular(records, NAMES)
    b = decode_tabular(shuffled, NAMES)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, np.array(rows, dtype=np.float32))


@settings(max_examples=60, deadline=None)
@given(rows=rows_st, order=st.permutations(NAMES))
def test_columns_are_reordered_to_the_model(rows: list[list[float]], order: list[str]) -> None:
    records = [dict(zip(NAMES, row, strict=True)) for row in rows]
    doc = {"columns": order, "data": [[rec[c] for c in order] for rec in records]}
    out = decode_tabular(doc, NAMES)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, decode_tabular(records, NAMES))


@settings(max_examples=100, deadline=None)
@given(value=st.none() | st.booleans() | st.text(max_size=5) | st.floats() | st.integers() | st.lists(st.integers()))
def test_any_value_decodes_or_raises_request_error(value: Any) -> None:
    rec = dict(RECORDS[0], sulphates=value)
    error: RequestError | None = None
    try:
        out = decode_tabular(rec, NAMES)
    except RequestError as err:
        error = err
    if error is None:
        assert math.isfinite(float(out[0, 9]))
    else:
        assert error.code in (WRONG_TYPE, NON_FINITE) and "'sulphates'" in error.message
