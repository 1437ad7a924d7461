"""The stream protocol's codec: round trips, and every malformed frame's error (code, seq, message)."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest

from roost.cluster.errors import StreamMessageError, StreamProtocolError
from roost.cluster.protocol import (
    IMAGE_MAGIC,
    TABULAR_HEADER,
    TABULAR_MAGIC,
    ErrorReply,
    Hello,
    ImageResult,
    TabularResult,
    decode_image_frame,
    decode_legacy_image,
    decode_legacy_row,
    decode_window,
    encode_image_frame,
    encode_json_window,
    encode_tabular_window,
    format_legacy_result,
    parse_legacy_result,
    parse_server_message,
    plan_columns,
)

FEATURES = ["a", "b", "c"]


def _matrix(rows: int = 4) -> np.ndarray:
    return np.arange(rows * 3, dtype=np.float32).reshape(rows, 3) / 7


def _raises(message: bytes | str, code: str, seq: int | None, fragment: str, max_rows: int = 10) -> None:
    with pytest.raises(StreamMessageError) as info:
        decode_window(message, FEATURES, max_rows)
    assert (info.value.code, info.value.seq) == (code, seq)
    assert fragment in info.value.message


def test_binary_window_round_trip() -> None:
    m = _matrix()
    frame = encode_tabular_window(7, m)
    assert frame[:4] == TABULAR_MAGIC and len(frame) == TABULAR_HEADER.size + m.size * 4
    window = decode_window(frame, FEATURES, 10)
    assert window.seq == 7 and window.matrix.dtype == np.float32
    np.testing.assert_array_equal(window.matrix, m)


def test_json_window_round_trip_and_columns_reorder_and_drop_by_name() -> None:
    m = _matrix()
    assert np.array_equal(decode_window(encode_json_window(3, m.tolist()), FEATURES, 10).matrix, m)
    rows = [[r[2], 99.0, r[0], r[1]] for r in m.tolist()]  # c, extra, a, b
    window = decode_window(encode_json_window(4, rows, ["c", "Class", "a", "b"]), FEATURES, 10)
    assert window.seq == 4
    np.testing.assert_allclose(window.matrix, m)


@pytest.mark.parametrize(("frame", "code", "seq", "fragment"), [
    (b"RSW1\x00", "STREAM_FRAME_INVALID", None, "shorter than its 12-byte header"),
    (TABULAR_HEADER.pack(b"XXXX", 1, 1, 3) + b"\x00" * 12, "STREAM_FRAME_INVALID", None, "not the magic"),
    (TABULAR_HEADER.pack(TABULAR_MAGIC, 2, 2, 3) + b"\x00" * 12, "STREAM_FRAME_INVALID", 2, "truncated"),
    (TABULAR_HEADER.pack(TABULAR_MAGIC, 3, 1, 3) + b"\x00" * 16, "STREAM_FRAME_INVALID", 3, "longer than"),
    (TABULAR_HEADER.pack(TABULAR_MAGIC, 4, 1, 2) + b"\x00" * 8, "WINDOW_INVALID", 4, "expects 3 features"),
    (TABULAR_HEADER.pack(TABULAR_MAGIC, 5, 0, 3), "WINDOW_INVALID", 5, "no rows"),
    (TABULAR_HEADER.pack(TABULAR_MAGIC, 6, 11, 3) + b"\x00" * 132, "WINDOW_INVALID", 6, "at most 10"),
    (TABULAR_HEADER.pack(TABULAR_MAGIC, 7, 1, 3) + struct.pack("<3f", 1, float("nan"), 2), "WINDOW_INVALID", 7,
     "'b' is nan"),
    (TABULAR_HEADER.pack(TABULAR_MAGIC, 8, 1, 3) + struct.pack("<3f", 1, 2, float("-inf")), "WINDOW_INVALID", 8,
     "'c' is -inf"),
])
def test_malformed_binary_windows(frame: bytes, code: str, seq: int | None, fragment: str) -> None:
    _raises(frame, code, seq, fragment)


@pytest.mark.parametrize(("text", "code", "seq", "fragment"), [
    ("not json", "STREAM_MESSAGE_INVALID", None, "not valid JSON"),
    ('{"type": "image", "seq": 1}', "STREAM_MESSAGE_INVALID", None, "must be a JSON window"),
    ('{"type": "window", "rows": [[1, 2, 3]]}', "WINDOW_INVALID", None, "seq must be an integer"),
    ('{"type": "window", "seq": true, "rows": [[1, 2, 3]]}', "WINDOW_INVALID", None, "seq must be an integer"),
    ('{"type": "window", "seq": 1, "rows": {"a": 1}}', "WINDOW_INVALID", 1, "list of lists"),
    ('{"type": "window", "seq": 1, "rows": []}', "WINDOW_INVALID", 1, "no rows"),
    ('{"type": "window", "seq": 1, "rows": [[1, 2]]}', "WINDOW_INVALID", 1, "row 0 has 2 values; expected 3"),
    ('{"type": "window", "seq": 1, "rows": [5]}', "WINDOW_INVALID", 1, "row 0 is not a list"),
    ('{"type": "window", "seq": 1, "rows": [[1, "x", 3]]}', "WINDOW_INVALID", 1, "'b' is \"x\", not a number"),
    ('{"type": "window", "seq": 1, "rows": [[1, true, 3]]}', "WINDOW_INVALID", 1, "'b' is true, not a number"),
    ('{"type": "window", "seq": 1, "rows": [[1, NaN, 3]]}', "STREAM_MESSAGE_INVALID", None, "NaN is not a finite"),
    ('{"type": "window", "seq": 1, "rows": [[1, 2, 1e300]]}', "WINDOW_INVALID", 1, "beyond float32"),
    ('{"type": "window", "seq": 2, "rows": [[1, 2, 3]], "columns": ["a", "b"]}', "WINDOW_INVALID", 2,
     "lack the model feature(s) c"),
    ('{"type": "window", "seq": 2, "rows": [[1, 2, 3]], "columns": ["a", "a", "b", "c"]}', "WINDOW_INVALID", 2,
     "names column(s) a twice"),
    ('{"type": "window", "seq": 2, "rows": [[1, 2]], "columns": ["c", "b", "a"]}', "WINDOW_INVALID", 2,
     "expected 3 (its columns)"),
    ('{"type": "window", "seq": 2, "rows": [[1, 2, 3]], "columns": "abc"}', "WINDOW_INVALID", 2, "list of names"),
])
def test_malformed_json_windows(text: str, code: str, seq: int | None, fragment: str) -> None:
    _raises(text, code, seq, fragment)


def test_json_window_with_too_many_rows() -> None:
    _raises(encode_json_window(9, [[1, 2, 3]] * 11), "WINDOW_INVALID", 9, "at most 10")


def test_image_frames() -> None:
    assert decode_image_frame(encode_image_frame(5, b"\xff\xd8jpeg")) == (5, b"\xff\xd8jpeg")
    cases: list[tuple[bytes | str, str, str]] = [("text", "STREAM_MESSAGE_INVALID", "binary image frames"),
                                    (b"RSI", "STREAM_FRAME_INVALID", "shorter than its 8-byte header"),
                                    (b"RSW1" + bytes(8), "STREAM_FRAME_INVALID", "not the magic"),
                                    (IMAGE_MAGIC + struct.pack("<I", 3), "IMAGE_INVALID", "no image bytes")]
    for message, code, fragment in cases:
        with pytest.raises(StreamMessageError) as info:
            decode_image_frame(message)
        assert info.value.code == code and fragment in info.value.message


def test_plan_columns_by_name_one_hot_and_missing() -> None:
    plan, missing = plan_columns(["x", "color_red", "color_white", "kind_of_blue", "gone"],
                                 ["Class", "color", "x", "kind", "kind_of", "timestamp"])
    assert [(p.column, p.equals) for p in plan] == [("x", None), ("color", "red"), ("color", "white"),
                                                    ("kind_of", "blue")]
    assert missing == ["gone"]


def test_legacy_rows_take_the_features_by_name_and_ignore_extras() -> None:
    row = json.dumps({"b": 2, "Class": "attack", "timestamp": "2024-01-01", "a": "1.5", "c": 3.25})
    assert decode_legacy_row(row, FEATURES) == [1.5, 2.0, 3.25]
    assert decode_legacy_row('{"x": 1, "color": "red"}', ["x", "color_red", "color_white"]) == [1.0, 1.0, 0.0]
    rows: list[tuple[bytes | str, str, str]] = [('{"a": 1, "b": 2}', "WINDOW_INVALID", "lacks the model feature(s) c"),
                                 ('{"a": 1, "b": "two", "c": 3}', "WINDOW_INVALID", "'b' is \"two\""),
                                 ('{"a": 1, "b": 1e999, "c": 3}', "WINDOW_INVALID", "'b'"),
                                 ("[1, 2, 3]", "WINDOW_INVALID", "JSON object"),
                                 ("{", "STREAM_MESSAGE_INVALID", "not valid JSON"),
                                 (b"{}", "STREAM_MESSAGE_INVALID", "not binary")]
    for text, code, fragment in rows:
        with pytest.raises(StreamMessageError) as info:
            decode_legacy_row(text, FEATURES)
        assert info.value.code == code and fragment in info.value.message, info.value.message


def test_legacy_images() -> None:
    data = base64.b64encode(b"\x89PNG...").decode()
    assert decode_legacy_image(json.dumps({"data": data, "timestamp": "t"}), 1000) == b"\x89PNG..."
    for text, fragment in [('{"data": "***"}', "not base64"), ('{"image": "x"}', '{"data"'),
                           (json.dumps({"data": "A" * 2000}), "over 1000 bytes")]:
        with pytest.raises(StreamMessageError) as info:
            decode_legacy_image(text, 1000)
        assert info.value.code == "IMAGE_INVALID" and fragment in info.value.message


def test_legacy_result_text_round_trips() -> None:
    text = format_legacy_result(1.0, 0.0123, 0.875)
    assert text == "[ Output result : [1], Execution_Time : 0.0123, confidence : 0.875 ]"
    parsed = parse_legacy_result(text)
    assert (parsed.result, parsed.execution_s, parsed.confidence) == (1.0, 0.0123, 0.875)
    regression = parse_legacy_result(format_legacy_result(5.75, 0.5, None))
    assert (regression.result, regression.confidence) == (5.75, None)
    with pytest.raises(StreamProtocolError, match="not the original protocol's result"):
        parse_legacy_result("Model ready")


def test_server_messages_parse_by_type_and_kind() -> None:
    hello = Hello.model_validate({"session": "s", "replica": "r", "kind": "tabular", "features": FEATURES,
                                  "window": 40, "maxRows": 40, "maxFrameBytes": 1024})
    assert json.loads(hello.to_text())["maxFrameBytes"] == 1024
    assert parse_server_message(hello.to_text(), "tabular") == hello
    result = TabularResult(type="ready", seq=0, result=5.5, confidence=None, predictions=[5.0, 6.0], server_ms=1.0)
    assert parse_server_message(result.to_text(), "tabular") == result
    image = ImageResult.model_validate({"seq": 1, "labels": [{"label": "espresso", "score": 0.9}], "server_ms": 2})
    assert parse_server_message(image.to_text(), "image") == image
    error = ErrorReply(seq=None, code="WINDOW_INVALID", message="m")
    assert parse_server_message(error.to_text(), "image") == error
    bad_messages: list[tuple[bytes | str, str]] = [
        ("{}", "unknown type None"), ('{"type": "nope"}', "unknown type 'nope'"), ("[", "not JSON"),
        (b"\x00", "binary"), ('{"type": "result", "seq": 1}', "malformed")]
    for bad, fragment in bad_messages:
        with pytest.raises(StreamProtocolError, match=fragment):
            parse_server_message(bad, "tabular")


def test_encoders_refuse_what_the_header_cannot_hold() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        encode_tabular_window(2**32, _matrix())
    with pytest.raises(ValueError, match="do not fit"):
        encode_tabular_window(0, np.zeros((0, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="does not fit"):
        encode_image_frame(-1, b"x")
