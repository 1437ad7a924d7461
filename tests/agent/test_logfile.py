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


# -- the agent's own log and rate-limited refusals -------------------------------------------------


def test_agent_log_handler_rotates_at_the_cap_and_truncates_huge_records(tmp_path: Path) -> None:
    import logging

    from roost.agent.logfile import CappedRotatingFileHandler

    path = tmp_path / "logs" / "agent.log"
    path.parent.mkdir()
    handler = CappedRotatingFileHandler(path, maxBytes=4096, backupCount=2, encoding="utf-8")
    log = logging.getLogger("test.agentlog.rotation")
    log.propagate = False
    log.addHandler(handler)
    try:
        for i in range(2000):
            log.warning("refused connection %d: unknown or missing authToken", i)
        log.error("x" * 100_000)  # one record far above the cap
    finally:
        log.removeHandler(handler)
        handler.close()
    files = sorted(path.parent.iterdir())
    assert [f.name for f in files] == ["agent.log", "agent.log.1", "agent.log.2"]
    assert all(f.stat().st_size <= 4096 for f in files), [f.stat().st_size for f in files]
    assert "[truncated]" in path.read_text()


def test_rate_limited_log_is_o1_lines_per_interval_and_logs_recovery_once() -> None:
    import logging

    from roost.agent.logfile import RateLimitedLog

    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    log = logging.getLogger("test.ratelimited")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(Collect())
    now = [100.0]
    rl = RateLimitedLog(log, "IPC connections", interval=60.0, clock=lambda: now[0])
    for i in range(1234):
        rl.note("unknown or missing authToken" if i % 2 else "connection limit (1024)")
    assert len(records) == 1 and records[0].startswith("refused IPC connections: connection limit (1024)")
    rl.tick()  # the interval has not passed: nothing
    assert len(records) == 1
    now[0] += 60
    rl.tick()
    assert records[1] == ("refused 1233 IPC connections in the last 60 s: 617 unknown or missing authToken, "
                          "616 connection limit (1024)")
    now[0] += 60
    rl.tick()  # a quiet interval: the recovery, once
    assert records[2] == "no IPC connections refused in the last 60 s (1234 in all so far)"
    now[0] += 60
    rl.tick()
    assert len(records) == 3 and not rl.degraded
    rl.note("unknown or missing authToken")  # a new degradation is logged at once again
    assert len(records) == 4
