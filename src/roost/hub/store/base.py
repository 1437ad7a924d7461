"""The store's plumbing: transactions (retried on PostgreSQL conflicts), the clock, shared lookups."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from roost.hub import desired
from roost.hub.artifacts import ArtifactStore
from roost.hub.db import Database
from roost.hub.errors import HubError, HubNotFoundError
from roost.hub.models import Device
from roost.hub.names import check_name

logger = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _is_retryable(err: OperationalError) -> bool:
    code = getattr(err.orig, "sqlstate", None) or getattr(err.orig, "pgcode", None)
    return code in ("40001", "40P01")


class StoreBase:
    """What every part of the store shares: the database, the artifact store, the clock, transactions."""

    def __init__(self, db: Database, artifacts: ArtifactStore, *, clock: Clock = utcnow) -> None:
        self.db = db
        self.artifacts = artifacts
        self.clock = clock

    # -- plumbing --------------------------------------------------------------------------------

    def _write(self, fn: Callable[[Session], T], attempts: int = 5) -> T:
        for attempt in range(attempts):
            try:
                with self.db.write() as session:
                    return fn(session)
            except OperationalError as err:
                if not _is_retryable(err) or attempt == attempts - 1:
                    raise
                logger.info("transaction conflict (%s); retrying", type(err.orig).__name__)
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _read(self, fn: Callable[[Session], T]) -> T:
        with self.db.read() as session:
            return fn(session)

    def _device(self, session: Session, name: str, *, lock: bool = False) -> Device:
        query = select(Device).where(Device.name == check_name(name, "device name"))
        if lock:
            query = query.with_for_update()
        device = session.scalars(query).first()
        if device is None:
            raise HubNotFoundError(f"device {name} is not enrolled", code="DEVICE_NOT_FOUND")
        return device

    def revision(self) -> int:
        """The global desired-state revision (cheap; long-polls watch it)."""
        return self._read(desired.current_revision)


def _one(results: Sequence[T | HubError]) -> T:
    """The single result of a batched operation run for one request (raised if it is an error)."""
    (result,) = results
    if isinstance(result, HubError):
        raise result
    return result
