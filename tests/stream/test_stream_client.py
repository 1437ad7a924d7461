"""The stream client's data side: CSV columns by name, windows and their wrap-around, the summary, the
plot; and `roost stream`'s argument errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from roost.cluster.errors import StreamDataError
from roost.cluster.stream_client import (
    StreamReport,
    WindowStat,
    _window_rows,
    load_csv,
    load_csv_records,
    write_plot,
)
from roost.serve.wine import DATA_CSV, FEATURES, load_wine
from tests.conftest import InProcessCli


def test_csv_columns_are_taken_by_name_with_one_hot_colour() -> None:
    x = load_csv(DATA_CSV, list(FEATURES))
    expected, _ = load_wine()
    np.testing.assert_array_equal(x, expected)  # quality dropped, color made color_red/color_white


def test_csv_columns_reordered_and_extras_dropped(tmp_path: Path) -> None:
    csv = tmp_path / "can.csv"
    csv.write_text("timestamp,b,Class,a\n2024,2.5,R,1\n2025,3.5,T,-1e3\n")
    np.testing.assert_array_equal(load_csv(csv, ["a", "b"]), np.array([[1, 2.5], [-1000, 3.5]], dtype=np.float32))
    assert load_csv_records(csv)[0] == {"timestamp": 2024, "b": 2.5, "Class": "R", "a": 1}


@pytest.mark.parametrize(("text", "code", "fragment"), [
    ("a,c\n1,2\n", "DATA_COLUMN_MISSING", "no column 'b'"),
    ("a,b\n1,x\n", "STREAM_DATA_INVALID", "line 2, column 'b': 'x' is not a finite number"),
    ("a,b\n1,nan\n", "STREAM_DATA_INVALID", "'nan' is not a finite number"),
    ("a,b\n1,2,3\n", "STREAM_DATA_INVALID", "line 2 has 3 fields"),
    ("", "STREAM_DATA_INVALID", "is empty"),
    ("a,b\n", "STREAM_DATA_INVALID", "no rows"),
])
def test_unusable_csv_files_are_named(tmp_path: Path, text: str, code: str, fragment: str) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    with pytest.raises(StreamDataError) as info:
        load_csv(csv, ["a", "b"])
    assert info.value.code == code and fragment in info.value.message
    with pytest.raises(StreamDataError, match="cannot read"):
        load_csv(tmp_path / "absent.csv", ["a"])


def test_windows_skip_the_warm_up_rows_when_they_wrap() -> None:
    windows = _window_rows(10, 3)
    got = [next(windows).tolist() for _ in range(5)]
    assert got == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 3, 4], [5, 6, 7]]
    small = _window_rows(5, 3)  # under two windows: the whole file goes round
    assert [next(small).tolist() for _ in range(3)] == [[0, 1, 2], [0, 1, 2], [3, 4, 0]]
    with pytest.raises(StreamDataError, match="fewer than one window of 40"):
        next(_window_rows(39, 40))


def _report() -> StreamReport:
    report = StreamReport("scalar", "ws://h:1/v1/stream", False, "binary")
    report.warmup = WindowStat(0, 0.0, 50.0, 10.0, 2100, 800)
    report.windows = [WindowStat(i, i * 0.1, float(i), 0.5, 2100, 800 + i) for i in range(1, 101)]
    report.add_error(7, "WINDOW_INVALID", "bad")
    return report


def test_the_summary_shape_and_numbers() -> None:
    doc = _report().summary()
    assert list(doc) == ["type", "endpoint", "offloaded", "windows", "e2e_ms", "server_ms", "bytes_per_window",
                         "errors"]
    assert doc["windows"] == 100
    assert doc["e2e_ms"] == {"mean": 50.5, "p50": 50.5, "p99": 99.01}  # the warm-up's 50 ms is not in it
    assert doc["server_ms"]["p99"] == 0.5
    assert doc["bytes_per_window"] == {"sent": 2100.0, "received": 850.5}
    assert doc["errors"] == [{"seq": 7, "code": "WINDOW_INVALID", "message": "bad"}]
    empty = StreamReport("image", "ws://h:1/v1/stream", True, "legacy").summary()
    assert empty["e2e_ms"] == {"mean": None, "p50": None, "p99": None} and empty["offloaded"] is True
    json.dumps(empty)


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    out = write_plot(_report(), tmp_path / "plots" / "latency.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("args", "fragment"), [
    (["--endpoint", "ws://127.0.0.1:1/v1/stream"], "either --data"),
    (["--endpoint", "ws://127.0.0.1:1/v1/stream", "--data", "x.csv", "--images", "d"], "either --data"),
    (["--endpoint", "http://127.0.0.1:1/", "--data", "x.csv"], "expected ws://"),
    (["--endpoint", "ws://h:1/v1/stream", "--data", "x.csv", "--format", "xml"], "--format 'xml'"),
    (["--data", "x.csv", "--format", "legacy"], "--format legacy needs a claim"),
    (["--data", "x.csv"], "no hub given"),
])
def test_roost_stream_argument_errors(cli_inproc: InProcessCli, args: list[str], fragment: str) -> None:
    proc = cli_inproc.run("stream", *args, "--json", root=False, env={"ROOST_HUB": "", "ROOST_TOKEN": ""})
    assert proc.returncode == 3, proc.stdout + proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert fragment in error["message"] and error["code"] in ("INVALID_ARGUMENT", "HUB_REQUIRED")


def test_roost_stream_to_nothing_is_replica_unreachable(cli_inproc: InProcessCli, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    proc = cli_inproc.run("stream", "--endpoint", f"ws://127.0.0.1:{port}/v1/stream", "--data", str(DATA_CSV),
                          "--json", root=False)
    assert proc.returncode == 1 and json.loads(proc.stdout)["error"]["code"] == "REPLICA_UNREACHABLE"
