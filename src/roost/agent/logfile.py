"""A size-capped, rotating log file for one component's output.

Each line is written as ``<UTC timestamp> [<stream>] <line>\\n``, for example::

    2025-01-31T12:00:00.123Z [stdout] model loaded

``name.log`` is the current file; when the next record would make it exceed ``max_bytes`` it
is renamed to ``name.log.1`` (``name.log.1`` to ``name.log.2``, ...; the oldest beyond
``backups`` is deleted), so the files of one log never take more than
``(backups + 1) * max_bytes`` bytes. A single record longer than ``max_bytes`` is truncated.

Writes are buffered in memory and reach the file on :meth:`RotatingLog.flush` (the process
pumps flush once per batch of lines read), so logging costs one ``write`` per batch. The class is
meant for the agent's event loop and is not thread-safe.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 3
#: Flush by itself once this much is buffered, even without a call to flush().
_BUFFER_LIMIT = 64 * 1024


def _timestamp(now: float) -> bytes:
    ms = int((now % 1) * 1000)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{ms:03d}Z").encode()


class RotatingLog:
    """Append timestamped, tagged lines to ``path``, rotating at ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES,
                 backups: int = DEFAULT_BACKUPS) -> None:
        if max_bytes < 64:
            raise ValueError("max_bytes must be at least 64")
        if backups < 0:
            raise ValueError("backups must be >= 0")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: BinaryIO | None = None
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._size = 0  # bytes in the current file, including the buffer
        self._opened = False
        self._closed = False

    # -- writing ---------------------------------------------------------------------------

    def write(self, stream: str, line: bytes) -> None:
        """Buffer one line (without its newline) from ``stream`` (``stdout``/``stderr``/...)."""
        if self._closed:
            return
        self._ensure_open()
        record = b"%s [%s] %s\n" % (_timestamp(time.time()), stream.encode(), line.rstrip(b"\r\n"))
        if len(record) > self.max_bytes:
            record = record[: self.max_bytes - 1] + b"\n"
        if self._size + len(record) > self.max_bytes and self._size > 0:
            self._rotate()
        self._buffer.append(record)
        self._buffered += len(record)
        self._size += len(record)
        if self._buffered >= _BUFFER_LIMIT:
            self.flush()

    def write_lines(self, stream: str, lines: Iterable[bytes]) -> None:
        """Write several lines, then flush once."""
        for line in lines:
            self.write(stream, line)
        self.flush()

    def flush(self) -> None:
        """Write the buffered records to disk."""
        if not self._buffer or self._file is None:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        self._file.write(data)
        self._file.flush()

    def close(self) -> None:
        """Flush and close; later writes are ignored."""
        if self._closed:
            return
        with contextlib.suppress(OSError):
            self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
        self._closed = True

    def files(self) -> list[Path]:
        """The files of this log that exist, newest first."""
        candidates = [self.path] + [self._backup(i) for i in range(1, self.backups + 1)]
        return [p for p in candidates if p.exists()]

    # -- internals -------------------------------------------------------------------------

    def _backup(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def _ensure_open(self) -> None:
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the log's lifetime
        self._size = self._file.tell() + self._buffered
        if not self._opened and self._size > self.max_bytes:
            # A previous agent left an oversized file (other cap): start a fresh one.
            self._opened = True
            self._rotate()
        self._opened = True

    def _rotate(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.backups == 0:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        else:
            for index in range(self.backups - 1, 0, -1):
                src = self._backup(index)
                if src.exists():
                    os.replace(src, self._backup(index + 1))
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path, self._backup(1))
        self._file = open(self.path, "ab")  # noqa: SIM115 - kept open for the log's lifetime
        self._size = 0

    def __enter__(self) -> RotatingLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
