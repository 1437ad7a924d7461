"""The on-disk report spool and the retry policy of the agent's hub sync.

Every report the agent sends to the hub (a deployment result, a heartbeat) is first written to
``ROOT/spool/<seq>-<id>.json`` — to a hidden temporary file, fsynced, renamed into place, then
the folder fsynced — and deleted only once the hub has acknowledged it. So:

* **In order.** ``seq`` is a zero-padded, monotonic sequence number; :meth:`Spool.pending`
  returns reports by ``seq``, and the sender delivers a prefix of that list at a time.
* **Exactly once by id.** Each report carries a unique ``id`` (a UUID) that never changes. A
  crash after the hub stored a report but before the agent deleted it re-delivers the same
  ``id``, which the hub ignores (``device_reports`` is keyed by it).
* **Survives restarts.** The folder is the queue; a restarted agent resumes where it stopped.
  Temporary files of a write cut short by a crash are removed at open.
* **Bounded.** At most ``max_reports`` files. When a new report would exceed that, the oldest
  *heartbeats* (reports without a ``deployment_id``: periodic component-state snapshots, each
  superseded by the next) are dropped first — never the newest heartbeat, never a deployment
  result. Deployment results are kept even beyond the bound: there is one per hub deployment
  revision the device applied, so they stay few, and losing one would leave the hub without the
  outcome of a deployment.

:class:`Backoff` is the one retry policy: exponential backoff with full jitter
(``delay = random() * min(cap, base * 2**attempt)``, never below ``floor``), with the random
source and the sleep function injectable for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MAX_REPORTS = 1000
_NAME = re.compile(r"^(\d{12})-([0-9A-Za-z_.-]+)\.json$")
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class SpoolEntry:
    seq: int
    id: str
    path: Path
    heartbeat: bool
    report: dict[str, Any]


def new_report_id() -> str:
    return uuid.uuid4().hex


class Spool:
    """A folder of reports waiting for delivery. Not thread-safe: used from the agent's event loop."""

    def __init__(self, directory: Path, *, max_reports: int = DEFAULT_MAX_REPORTS) -> None:
        if max_reports < 1:
            raise ValueError("max_reports must be at least 1")
        self.directory = directory
        self.max_reports = max_reports
        self.dropped = 0
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        self._entries: list[SpoolEntry] = []
        self._load()
        self._next_seq = (self._entries[-1].seq + 1) if self._entries else 1

    # -- open --------------------------------------------------------------------------------------
    def _load(self) -> None:
        for path in self.directory.iterdir():
            if path.name.startswith(_TMP_PREFIX):
                # A write cut short before its rename: never acknowledged, never visible; drop it.
                path.unlink(missing_ok=True)
                continue
            match = _NAME.match(path.name)
            if match is None:
                continue
            try:
                report = json.loads(path.read_text())
                if not isinstance(report, dict) or report.get("id") != match.group(2):
                    raise ValueError("the report's id does not match its file name")
            except (OSError, ValueError) as err:
                bad = path.with_name(path.name + ".corrupt")
                log.error("spooled report %s is unreadable (%s); moved aside to %s", path.name, err, bad.name)
                with contextlib.suppress(OSError):
                    os.replace(path, bad)
                continue
            self._entries.append(SpoolEntry(int(match.group(1)), match.group(2), path,
                                            _is_heartbeat(report), report))
        self._entries.sort(key=lambda e: e.seq)

    # -- API -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def add(self, report: Mapping[str, Any]) -> SpoolEntry:
        """Write one report durably (fsync + atomic rename); give it an ``id`` if it has none."""
        data = dict(report)
        report_id = str(data.setdefault("id", new_report_id()))
        if not re.fullmatch(r"[0-9A-Za-z_.-]+", report_id):
            raise ValueError(f"invalid report id {report_id!r}")
        seq = self._next_seq
        self._next_seq += 1
        path = self.directory / f"{seq:012d}-{report_id}.json"
        tmp = self.directory / f"{_TMP_PREFIX}{seq:012d}-{report_id}"
        payload = json.dumps(data, separators=(",", ":")).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self._fsync_dir()
        entry = SpoolEntry(seq, report_id, path, _is_heartbeat(data), data)
        self._entries.append(entry)
        self._trim()
        return entry

    def pending(self, limit: int | None = None) -> list[SpoolEntry]:
        """Reports not yet acknowledged, oldest first."""
        return list(self._entries if limit is None else self._entries[:limit])

    def ack(self, ids: Iterable[str]) -> None:
        """The hub has stored these reports: delete them."""
        done = set(ids)
        if not done:
            return
        keep: list[SpoolEntry] = []
        for entry in self._entries:
            if entry.id in done:
                entry.path.unlink(missing_ok=True)
            else:
                keep.append(entry)
        self._entries = keep
        self._fsync_dir()

    def reject(self, entry: SpoolEntry) -> Path:
        """The hub refused this report for good: move it aside (``rejected/``) so it blocks nothing."""
        target_dir = self.directory / "rejected"
        target_dir.mkdir(exist_ok=True)
        target = target_dir / entry.path.name
        with contextlib.suppress(FileNotFoundError):
            os.replace(entry.path, target)
        self._entries = [e for e in self._entries if e.id != entry.id]
        self._fsync_dir()
        return target

    # -- internals -------------------------------------------------------------------------------
    def _trim(self) -> None:
        excess = len(self._entries) - self.max_reports
        if excess <= 0:
            return
        heartbeats = [e for e in self._entries if e.heartbeat]
        droppable = heartbeats[:-1]  # never the newest snapshot
        drop = {e.id for e in droppable[:excess]}
        if not drop:
            return
        for entry in self._entries:
            if entry.id in drop:
                entry.path.unlink(missing_ok=True)
        self._entries = [e for e in self._entries if e.id not in drop]
        self.dropped += len(drop)
        self._fsync_dir()
        log.warning("report spool full (%d reports): dropped the %d oldest heartbeat(s)", self.max_reports,
                    len(drop))

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _is_heartbeat(report: Mapping[str, Any]) -> bool:
    return not report.get("deployment_id")


Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Backoff:
    """Exponential backoff with full jitter: the n-th delay is ``random() * min(cap, base * 2**n)``.

    ``floor`` keeps a zero draw from turning into a busy loop. ``rand`` and ``sleep`` are
    injectable so that tests can check the schedule without waiting.
    """

    base: float = 0.5
    cap: float = 60.0
    floor: float = 0.1
    rand: Callable[[], float] = random.random
    sleep: Sleep = asyncio.sleep
    attempt: int = field(default=0, init=False)

    def ceiling(self, attempt: int) -> float:
        return min(self.cap, self.base * float(2 ** min(attempt, 62)))

    def next_delay(self) -> float:
        delay = max(self.floor, self.rand() * self.ceiling(self.attempt))
        self.attempt += 1
        return min(delay, self.cap)

    async def wait(self) -> float:
        delay = self.next_delay()
        await self.sleep(delay)
        return delay

    def reset(self) -> None:
        self.attempt = 0


__all__ = ["DEFAULT_MAX_REPORTS", "Backoff", "Spool", "SpoolEntry", "new_report_id"]
