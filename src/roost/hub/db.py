"""Engine and sessions from a database URL.

SQLite (the default, ``sqlite:///HUB_ROOT/hub.db``) runs in WAL mode with foreign keys on and a
busy timeout; write transactions start with ``BEGIN IMMEDIATE`` so that two hub processes never
deadlock upgrading a read lock. PostgreSQL (``postgresql+psycopg://...``) uses READ COMMITTED plus
explicit row locks (``SELECT ... FOR UPDATE``) where the store reads, then writes.

Round trips are what a request costs here (each is ~150 µs of client CPU on a small machine), so
on PostgreSQL reads run in autocommit mode (under READ COMMITTED every statement takes its own
snapshot anyway, so a BEGIN ... ROLLBACK around reads adds two round trips and no consistency),
and a pooled connection is pinged only when it sat idle for ``PING_AFTER_IDLE`` seconds (the
server may have dropped it) rather than at every checkout.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

logger = logging.getLogger(__name__)

_WRITE = "roost_write"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def default_url(root: Path) -> str:
    """The hub's default database: ``ROOT/hub.db``."""
    return sqlite_url(root / "hub.db")


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use the psycopg 3 driver for them."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class Database:
    """An engine plus two session factories: ``read()`` and ``write()`` transactions."""

    #: Connections kept open (PostgreSQL). Overflow connections are closed when returned, so a pool
    #: smaller than the request concurrency reconnects on almost every transaction under load: the
    #: app limits its worker threads (which run every transaction) to this number (see app.py).
    POOL_SIZE = 20
    #: A pooled PostgreSQL connection idle this long is pinged before use.
    PING_AFTER_IDLE = 10.0

    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self.url = normalise_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        self.pool_size = pool_size
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            database = parsed.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            # sqlite3's own transaction handling is off: we emit BEGIN ourselves (below).
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30,
                                      "isolation_level": None}
            kwargs["poolclass"] = NullPool if database in (None, "", ":memory:") else None
            if kwargs["poolclass"] is None:
                del kwargs["poolclass"]
        else:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size // 2
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            self._install_sqlite_hooks()
        else:
            self._install_idle_ping()
        reads = self.engine if self.is_sqlite else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read = sessionmaker(bind=reads, expire_on_commit=False)
        self._write = sessionmaker(bind=self.engine.execution_options(**{_WRITE: True}), expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"

    def _install_sqlite_hooks(self) -> None:
        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn: Any) -> None:
            immediate = conn.get_execution_options().get(_WRITE, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    def _install_idle_ping(self) -> None:
        """SQLAlchemy's "pessimistic disconnect handling", for idle connections only."""

        @event.listens_for(self.engine, "checkin")
        def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
            record.info["idle_since"] = time.monotonic()

        @event.listens_for(self.engine, "checkout")
        def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
            since = record.info.get("idle_since")
            if since is None or time.monotonic() - since < self.PING_AFTER_IDLE:
                return
            try:
                cursor = dbapi_conn.cursor()
                try:
                    cursor.execute("SELECT 1")
                finally:
                    cursor.close()
                dbapi_conn.rollback()
            except Exception as err:
                # The pool discards this connection and checks out (or opens) another.
                raise DisconnectionError(f"pooled connection is gone: {err}") from err

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction (rolled back at the end)."""
        with self._read() as session:
            try:
                yield session
            finally:
                session.rollback()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: committed when the block ends normally, rolled back otherwise."""
        with self._write() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
