"""Run the Alembic migrations (``upgrade head``), safely from several processes at once.

On PostgreSQL the upgrade runs under a session-level advisory lock, so hub replicas starting
together migrate one after the other (the later ones find nothing to do). On SQLite a file lock
beside the database does the same.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from roost.hub.db import Database

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: The advisory lock key: "roost" in ASCII.
ADVISORY_LOCK_KEY = 0x726F6F7374


def alembic_config(url: str, connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@contextmanager
def _sqlite_lock(db: Database) -> Iterator[None]:
    database = make_url(db.url).database
    if not database or database == ":memory:":
        yield
        return
    lock_path = Path(database + ".migrate.lock")
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def upgrade(db: Database) -> None:
    """Bring the database to the newest schema (idempotent)."""
    if db.is_postgresql:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
            conn.commit()
            try:
                command.upgrade(alembic_config(db.url, conn), "head")
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
                conn.commit()
    else:
        with _sqlite_lock(db), db.engine.connect() as conn:
            command.upgrade(alembic_config(db.url, conn), "head")
            conn.commit()
    logger.info("database schema is up to date")
