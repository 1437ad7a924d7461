"""The edge cluster's sessions: listing them, ending them, and what replicas report about them.

A part of :class:`~roost.hub.store.cluster.ClusterStore` (admission, which books sessions, is
there). A session's end frees one slot on its replica (:meth:`ClusterSessionStore._released`);
a replica left with no session is idle from then on, which the replica monitor scales down.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from roost.cluster.errors import SessionNotFoundError
from roost.cluster.placement import Tier
from roost.hub.contract.cluster import ClusterSession, SessionStatus
from roost.hub.models import ClusterReplica as ReplicaRow
from roost.hub.models import ClusterSessionRow
from roost.hub.store.base import StoreBase


class ClusterSessionStore(StoreBase):
    """Listing, ending and observing the cluster's sessions (see the module docstring)."""

    def list_sessions(self, *, active_only: bool = False, limit: int = 1000) -> list[ClusterSession]:
        def run(s: Session) -> list[ClusterSession]:
            query = select(ClusterSessionRow).order_by(ClusterSessionRow.created_at.desc()).limit(limit)
            if active_only:
                query = query.where(ClusterSessionRow.status == SessionStatus.ACTIVE)
            return [session_info(r) for r in s.scalars(query)]
        return self._read(run)

    def get_session(self, session_id: str) -> ClusterSession:
        def run(s: Session) -> ClusterSession:
            row = s.get(ClusterSessionRow, session_id)
            if row is None:
                raise SessionNotFoundError(f"no cluster session {session_id}")
            return session_info(row)
        return self._read(run)

    def end_session(self, session_id: str, reason: str) -> ClusterSession:
        """End a session (idempotent: an ended session keeps its first reason)."""
        now = self.clock()

        def run(s: Session) -> ClusterSession:
            row = s.get(ClusterSessionRow, session_id, with_for_update=True)
            if row is None:
                raise SessionNotFoundError(f"no cluster session {session_id}")
            if row.status == SessionStatus.ACTIVE:
                row.status = SessionStatus.ENDED
                row.end_reason = reason[:2000]
                row.ended_at = now
                self._released(s, row.replica_id, now)
            return session_info(row)
        return self._write(run)

    def observe_sessions(self, replica_id: str, connected: dict[str, datetime], ended: dict[str, str]) -> None:
        """What a replica's ``/status`` said: sessions connected (with their last activity) and ended (reason)."""
        now = self.clock()

        def run(s: Session) -> None:
            for sid, last in connected.items():
                s.execute(update(ClusterSessionRow).where(ClusterSessionRow.id == sid,
                                                          ClusterSessionRow.replica_id == replica_id,
                                                          ClusterSessionRow.status == SessionStatus.ACTIVE)
                          .values(connected=True, last_activity_at=last))
            for sid, reason in ended.items():
                done = s.execute(update(ClusterSessionRow).where(ClusterSessionRow.id == sid,
                                                                 ClusterSessionRow.replica_id == replica_id,
                                                                 ClusterSessionRow.status == SessionStatus.ACTIVE)
                                 .values(status=SessionStatus.ENDED, end_reason=reason[:2000], ended_at=now))
                if getattr(done, "rowcount", 0):
                    self._released(s, replica_id, now)
        self._write(run)

    def _released(self, s: Session, replica_id: str | None, now: datetime) -> None:
        """One session of the replica ended (its row went ACTIVE -> ENDED in this transaction): one slot
        frees; a replica left without sessions is idle from now."""
        if replica_id is None:
            return
        s.execute(update(ReplicaRow).where(ReplicaRow.id == replica_id, ReplicaRow.active_sessions > 0)
                  .values(active_sessions=ReplicaRow.active_sessions - 1))
        s.execute(update(ReplicaRow).where(ReplicaRow.id == replica_id, ReplicaRow.active_sessions == 0,
                                           ReplicaRow.idle_since.is_(None)).values(idle_since=now))



def tier_of(value: str) -> Tier:
    return "centre" if value == "centre" else "edge"


def session_info(row: ClusterSessionRow, *, warm: bool | None = None) -> ClusterSession:
    return ClusterSession(id=row.id, type=row.service_type, client_id=row.client_id, tier=tier_of(row.tier), token=None,
                          offloaded=row.tier == "centre", node=row.node, replica=row.replica_id or "",
                          endpoint=row.endpoint, port=row.port, status=SessionStatus(row.status),
                          end_reason=row.end_reason, created_at=row.created_at, ended_at=row.ended_at,
                          warm=warm, legacy=row.legacy)


__all__ = ["ClusterSessionStore", "session_info", "tier_of"]
