"""The on-disk spool of IoT Core publishes made while the broker is away (``ROOT/iotcore-spool.db``).

Why not :mod:`roost.agent.spool`: that spool holds the hub's JSON reports, one fsynced file each,
and its bound drops only superseded heartbeats. MQTT publishes are many, small and binary, and
their bound is by count *and* bytes with a QoS-aware policy, so they live in one SQLite table
(WAL, ``synchronous=NORMAL``: a row costs tens of microseconds, and a power cut loses at most the
last few rows, never the order) under the same root.

The bound, as the Greengrass nucleus' spooler applies it (``mqtt.spooler.maxSizeInBytes``) plus a
count (``maxMessages``):

* A new message that fits is appended. Messages leave in ``seq`` order.
* When it does not fit, the oldest **QoS 0** messages are dropped to make room (counted in
  ``dropped``); QoS 0 promised nothing.
* When it still does not fit (the spool is all QoS 1), the **newest is refused** (counted in
  ``refused``): the publisher gets ``IOT_CORE_SPOOL_FULL`` and knows its message was not taken,
  while what was accepted earlier is never lost.
* A single message larger than the whole byte bound is refused the same way.

The counters are kept in the same database, so they survive restarts (``roost agent status``
does not read them; ``sqlite3 ROOT/iotcore-spool.db 'select * from counters'`` does, and the
agent logs every drop and refusal, rate-limited).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from roost.agent.errors import AgentError
from roost.agent.logfile import RateLimitedLog

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGES: Final = 10_000
#: The nucleus' default spool size (``mqtt.spooler.maxSizeInBytes``): 2.5 MiB.
DEFAULT_MAX_BYTES: Final = 2_621_440
#: Per-row overhead counted against the byte bound besides payload and topic.
ROW_OVERHEAD: Final = 64


@dataclass
class OutMessage:
    """One publish to the broker, with its MQTT 5 properties (JSON-able values only)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    #: MQTT 5 PUBLISH properties as the IPC request spells them: userProperties, correlationData
    #: (base64), responseTopic, messageExpiryIntervalSeconds, payloadFormat ("0"/"1"), contentType.
    props: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.topic.encode()) + ROW_OVERHEAD


@dataclass(frozen=True)
class SpooledMessage:
    seq: int
    message: OutMessage


class MqttSpool:
    """The spool. Not thread-safe: used from the agent's event loop only."""

    def __init__(self, path: Path, *, max_messages: int = DEFAULT_MAX_MESSAGES,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("the spool bounds must be at least 1")
        self.path = path
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "topic TEXT NOT NULL, qos INTEGER NOT NULL, retain INTEGER NOT NULL, "
                         "payload BLOB NOT NULL, props TEXT NOT NULL, size INTEGER NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM messages").fetchone()
        self.count, self.bytes = int(row[0]), int(row[1])
        self.drops = RateLimitedLog(logger, "IoT Core messages", verb="dropped or refused")
        if self.count:
            logger.info("IoT Core spool %s holds %d message(s) (%d bytes) from before", path, self.count, self.bytes)

    # -- counters --------------------------------------------------------------------------------
    def counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def counters(self) -> dict[str, int]:
        return {str(n): int(v) for n, v in self._db.execute("SELECT name, value FROM counters")}

    def _count(self, name: str, n: int = 1) -> None:
        self._db.execute("INSERT INTO counters(name, value) VALUES (?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, n))

    def set_state(self, **values: str) -> None:
        """Record the connection's state (``broker``, ``connected``, ``since``) for ``roost agent status``."""
        self._db.executemany("INSERT INTO state(name, value) VALUES (?, ?) "
                             "ON CONFLICT(name) DO UPDATE SET value = excluded.value", list(values.items()))

    def note_dropped(self, reason: str, n: int = 1) -> None:
        """Count (and log, rate-limited) ``n`` messages dropped for ``reason`` outside the spool."""
        self._count("dropped", n)
        for _ in range(n):
            self.drops.note(reason)

    # -- queue -----------------------------------------------------------------------------------
    def add(self, message: OutMessage) -> int:
        """Append ``message``; make room by dropping the oldest QoS 0 ones; else refuse it."""
        size = message.size
        if size > self.max_bytes:
            self._refuse(f"message of {size} bytes is larger than the whole spool ({self.max_bytes} bytes)")
        if not self._fits(size):
            self._drop_qos0_for(size)
        if not self._fits(size):
            self._refuse(f"spool full ({self.count} messages, {self.bytes} of {self.max_bytes} bytes, "
                         f"at most {self.max_messages} messages), all QoS 1")
        cur = self._db.execute("INSERT INTO messages(topic, qos, retain, payload, props, size) VALUES (?,?,?,?,?,?)",
                               (message.topic, message.qos, int(message.retain), message.payload,
                                json.dumps(message.props, separators=(",", ":")), size))
        self.count += 1
        self.bytes += size
        self._count("spooled")
        return int(cur.lastrowid or 0)

    def _fits(self, size: int) -> bool:
        return self.count + 1 <= self.max_messages and self.bytes + size <= self.max_bytes

    def _drop_qos0_for(self, size: int) -> None:
        dropped = 0
        rows = self._db.execute("SELECT seq, size FROM messages WHERE qos = 0 ORDER BY seq").fetchall()
        victims: list[int] = []
        for seq, row_size in rows:
            if self._fits(size):
                break
            victims.append(int(seq))
            self.count -= 1
            self.bytes -= int(row_size)
            dropped += 1
        if victims:
            self._db.executemany("DELETE FROM messages WHERE seq = ?", [(s,) for s in victims])
            self._count("dropped", dropped)
            for _ in range(dropped):
                self.drops.note("spool full: oldest QoS 0 message dropped")

    def _refuse(self, why: str) -> None:
        self._count("refused")
        self.drops.note("spool full: newest message refused")
        raise AgentError(f"the broker is away and the IoT Core spool cannot take this message: {why}; "
                         "it was not sent", code="IOT_CORE_SPOOL_FULL")

    def after(self, seq: int, limit: int) -> list[SpooledMessage]:
        """Up to ``limit`` spooled messages with a ``seq`` above ``seq``, oldest first."""
        rows = self._db.execute("SELECT seq, topic, qos, retain, payload, props FROM messages WHERE seq > ? "
                                "ORDER BY seq LIMIT ?", (seq, limit)).fetchall()
        return [SpooledMessage(int(r[0]), OutMessage(str(r[1]), bytes(r[4]), int(r[2]), bool(r[3]),
                                                     json.loads(r[5]))) for r in rows]

    def remove(self, seq: int) -> None:
        """The broker has the message (PUBACK, or written out for QoS 0): delete it."""
        row = self._db.execute("DELETE FROM messages WHERE seq = ? RETURNING size", (seq,)).fetchone()
        if row is not None:
            self.count -= 1
            self.bytes -= int(row[0])
            self._count("sent")

    def __iter__(self) -> Iterator[SpooledMessage]:
        return iter(self.after(0, self.max_messages))

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()


def read_status(path: Path) -> dict[str, Any] | None:
    """What a spool file says (read-only, for ``roost agent status``): the broker, whether the agent
    was connected at its last change, the messages waiting and the counters; None without a spool."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        state = {str(n): str(v) for n, v in db.execute("SELECT name, value FROM state")}
        counters = {str(n): int(v) for n, v in db.execute("SELECT name, value FROM counters")}
        pending = int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return {"broker": state.get("broker"), "connected": state.get("connected") == "1",
            "since": state.get("since"), "waiting": pending,
            **{k: counters.get(k, 0) for k in ("spooled", "sent", "dropped", "refused")}}


__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_MESSAGES", "MqttSpool", "OutMessage", "SpooledMessage", "read_status"]
