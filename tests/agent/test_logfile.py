"""RotatingLog: format, buffering, rotation and the cap on disk."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from roost.agent.logfile import RotatingLog

LINE = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[(stdout|stderr)\] (.*)$")


def _total(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def test_lines_are_timestamped_and_tagged(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "logs" / "a.log")
    log.write("stdout", b"hello")
    log.write("stderr", b"oops\r\n")
    log.flush()
    lines = (tmp_path / "logs" / "a.log").read_bytes().splitlines()
    assert [LINE.match(line).groups() for line in lines] == [  # type: ignore[union-attr]
        (b"stdout", b"hello"), (b"stderr", b"oops")]
    log.close()
    log.write("stdout", b"ignored after close")
    assert len((tmp_path / "logs" / "a.log").read_bytes().splitlines()) == 2


def test_writes_are_buffered_until_flush(tmp_path: Path) -> None:
    path = tmp_path / "b.log"
    log = RotatingLog(path)
    log.write("stdout", b"x")
    assert path.read_bytes() == b""
    log.write_lines("stdout", [b"y", b"z"])
    assert len(path.read_bytes().splitlines()) == 3
    log.close()


def test_rotation_caps_the_size_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    cap = 64 * 1024
    log = RotatingLog(path, max_bytes=cap, backups=3)
    chunk = [b"%06d " % i + b"x" * 1000 for i in range(100)]
    written = 0
    while written < 5 * 1024 * 1024:
        log.write_lines("stdout", chunk)
        written += sum(len(c) for c in chunk)
        assert _total(path) <= 4 * cap
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["big.log", "big.log.1", "big.log.2", "big.log.3"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= cap
    assert _total(path) <= 4 * cap
    # The newest lines are in big.log, and the backups hold older, consecutive lines.
    last = path.read_bytes().splitlines()[-1]
    assert last.endswith(chunk[-1])
    assert log.files() == [path] + [tmp_path / f"big.log.{i}" for i in (1, 2, 3)]


def test_huge_line_is_truncated_and_zero_backups_truncates(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    log = RotatingLog(path, max_bytes=1024, backups=0)
    log.write("stdout", b"a" * 5000)
    log.write("stdout", b"b" * 10)
    log.close()
    assert path.stat().st_size <= 1024
    assert list(tmp_path.iterdir()) == [path]
    assert b"bbbbbbbbbb" in path.read_bytes()


def test_existing_oversized_file_is_rotated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    path.write_bytes(b"old\n" * 1000)
    log = RotatingLog(path, max_bytes=1024, backups=1)
    log.write_lines("stderr", [b"new"])
    log.close()
    assert (tmp_path / "d.log.1").read_bytes().startswith(b"old")
    assert b"[stderr] new" in path.read_bytes()


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        RotatingLog(tmp_path / "e.log", max_bytes=10)
    with pytest.raises(ValueError, match="backups"):
        RotatingLog(tmp_path / "e.log", backups=-1)
