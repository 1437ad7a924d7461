"""Bounded logs: a size-capped rotating file for one component's output (:class:`RotatingLog`),
the agent's own rotating log (:func:`configure_agent_logging`), and :class:`RateLimitedLog`,
which turns a flood of identical refusals into one line per interval.

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
import logging
import logging.handlers
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
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


# -- the agent's own log ---------------------------------------------------------------------------

AGENT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The agent's own log: 10 MiB per file, 3 backups (at most 40 MiB).
AGENT_LOG_MAX_BYTES = DEFAULT_MAX_BYTES
AGENT_LOG_BACKUPS = DEFAULT_BACKUPS


class CappedRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """:class:`logging.handlers.RotatingFileHandler` that also truncates a record longer than the
    cap (a huge traceback), so no file of the log ever exceeds ``maxBytes``."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        limit = self.maxBytes - 1 if self.maxBytes > 0 else 0
        if limit and len(text.encode("utf-8", "replace")) > limit:
            text = text.encode("utf-8", "replace")[: limit - 16].decode("utf-8", "ignore") + " …[truncated]"
        return text


def configure_agent_logging(level: str, log_file: Path | None = None, *, max_bytes: int = AGENT_LOG_MAX_BYTES,
                            backups: int = AGENT_LOG_BACKUPS) -> logging.Handler:
    """Set up the agent process' logging: stderr (foreground) or a size-capped rotating file.

    With ``log_file`` every record goes to that file, rotated to ``.1`` .. ``.<backups>`` at
    ``max_bytes``; warnings and uncaught exceptions of threads and of the main thread are routed
    through logging too, so only output that bypasses Python (a C-level crash) reaches the
    process' stderr.
    """
    if max_bytes < 1024:
        raise ValueError("the agent log's max_bytes must be at least 1024")
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler()
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = CappedRotatingFileHandler(log_file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    handler.setFormatter(logging.Formatter(AGENT_LOG_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    if log_file is not None:
        crash_log = logging.getLogger("roost.agent.crash")

        def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
            crash_log.critical("uncaught exception", exc_info=(exc_type, exc, tb))
            sys.__excepthook__(exc_type, exc, tb)  # also to stderr: the start failure shows it

        def thread_hook(args: threading.ExceptHookArgs) -> None:
            if args.exc_value is not None:
                crash_log.error("uncaught exception in thread %s", getattr(args.thread, "name", "?"),
                                exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

        sys.excepthook = excepthook
        threading.excepthook = thread_hook
    return handler


# -- rate-limited logging of repeated refusals ----------------------------------------------------------


class RateLimitedLog:
    """Log a flood of the same kind of event (refused connections, ...) in O(1) lines.

    The first event after a quiet period is logged at once (the degradation), with a note that
    further ones are counted; every ``interval`` seconds :meth:`tick` logs one summary line with
    the count per reason (``refused 1234 IPC connections in the last 60 s: 1200 unknown or
    missing authToken, 34 ...``); the first interval without events logs the recovery once.
    Each event is also logged at DEBUG with its detail. Call :meth:`tick` periodically (the IPC
    server does, from its housekeeping timer); :meth:`note` is cheap.
    """

    def __init__(self, logger: logging.Logger, what: str, *, verb: str = "refused", interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, level: int = logging.WARNING) -> None:
        self.logger = logger
        self.what = what
        self.verb = verb
        self.interval = interval
        self.clock = clock
        self.level = level
        self.total = 0
        self.degraded = False
        self._window_start = 0.0
        self._counts: Counter[str] = Counter()

    def note(self, reason: str, detail: str = "") -> None:
        """One event of kind ``reason`` (short, stable text); ``detail`` goes to the DEBUG line only."""
        self.total += 1
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("%s %s: %s%s", self.verb, self.what, reason, f" ({detail})" if detail else "")
        if not self.degraded:
            self.degraded = True
            self._window_start = self.clock()
            self.logger.log(self.level, "%s %s: %s%s; further ones are counted and logged every %g s",
                            self.verb, self.what, reason, f" ({detail})" if detail else "", self.interval)
            return
        self._counts[reason] += 1

    def tick(self) -> None:
        """Log the summary of the interval that ended (or the recovery) if one is due."""
        if not self.degraded:
            return
        now = self.clock()
        if now - self._window_start < self.interval:
            return
        counts, self._counts = self._counts, Counter()
        elapsed = now - self._window_start
        self._window_start = now
        if counts:
            total = sum(counts.values())
            reasons = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
            self.logger.log(self.level, "%s %d %s in the last %.0f s: %s", self.verb, total, self.what, elapsed,
                            reasons)
        else:
            self.degraded = False
            self.logger.info("no %s %s in the last %.0f s (%d in all so far)", self.what, self.verb, elapsed,
                             self.total)
