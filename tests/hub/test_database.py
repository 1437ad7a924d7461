"""The hub's Database on PostgreSQL: autocommit reads, and pooled connections the server dropped."""

from __future__ import annotations

import psycopg
from sqlalchemy import text

from roost.hub import migrate
from roost.hub.db import Database


def _terminate_others(url: str) -> int:
    """Kill every other session on the test database (what a server restart does to a pool)."""
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        row = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()
        return int(row[0]) if row else 0


def test_a_pooled_connection_dropped_while_idle_is_replaced(pg_url: str) -> None:
    db = Database(pg_url, pool_size=1)
    db.PING_AFTER_IDLE = 0.0  # type: ignore[misc]  # ping at every checkout for this test
    try:
        migrate.upgrade(db)
        with db.read() as s:
            assert s.execute(text("SELECT 1")).scalar() == 1
        assert _terminate_others(pg_url) >= 1
        with db.read() as s:  # the ping finds the dead connection; the pool opens another
            assert s.execute(text("SELECT 2")).scalar() == 2
        with db.write() as s:
            assert s.execute(text("SELECT 3")).scalar() == 3
    finally:
        db.dispose()


def test_reads_run_without_a_transaction_and_writes_within_one(pg_url: str) -> None:
    db = Database(pg_url)
    try:
        with db.read() as s:
            # autocommit: no transaction is open, so txid_current_if_assigned() is NULL and
            # each statement is its own transaction
            assert s.execute(text("SELECT txid_current_if_assigned()")).scalar() is None
            assert s.connection().connection.dbapi_connection.autocommit is True  # type: ignore[union-attr]
        with db.write() as s:
            first = s.execute(text("SELECT txid_current()")).scalar()
            assert s.execute(text("SELECT txid_current()")).scalar() == first
    finally:
        db.dispose()
