"""Rollout rules, applied lazily: nothing here runs in the background.

* **Release** (``max_per_minute``): a device row is *released* when the device may see the
  deployment in its desired state. Without a rate every row is released at creation; with one, at
  most ``max_per_minute`` rows are released in any 60-second window, the first at creation and the
  rest when their devices poll (:func:`release_pending`). An unreleased device keeps its previous
  desired state.
* **Timeouts**: a released row still QUEUED or IN_PROGRESS ``timeout_minutes`` after its release
  becomes TIMED_OUT (:func:`refresh_deployment`, called when a deployment is read, and when a report
  may abort or complete it: :func:`refresh_needed`).
* **Abort**: once at least ``abort_min_devices`` rows have finished, if more than
  ``abort_failure_percent`` of them failed (FAILED, ROLLED_BACK, TIMED_OUT), the deployment is
  ABORTED and every row still QUEUED is CANCELED (those devices keep their previous state).
* **Completion**: an ACTIVE deployment with no QUEUED or IN_PROGRESS row is COMPLETED.

All functions take a Session inside a write transaction and the current time; on PostgreSQL they
lock the deployment row (``SELECT ... FOR UPDATE``) before a read-modify-write.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from roost.hub.contract import FAILURE_STATUSES, FINISHED_STATUSES, OPEN_STATUSES, DeploymentStatus
from roost.hub.contract import DeviceDeploymentStatus as Row
from roost.hub.models import Deployment, DeviceDeployment

# The statuses are the contract's enums (roost.hub.contract); the short names read better in queries.
QUEUED, IN_PROGRESS, SUCCEEDED, FAILED = Row.QUEUED, Row.IN_PROGRESS, Row.SUCCEEDED, Row.FAILED
ROLLED_BACK, TIMED_OUT, CANCELED = Row.ROLLED_BACK, Row.TIMED_OUT, Row.CANCELED
DEVICE_STATUSES: tuple[Row, ...] = tuple(Row)

ACTIVE, SUPERSEDED = DeploymentStatus.ACTIVE, DeploymentStatus.SUPERSEDED
DEPLOYMENT_CANCELED = DeploymentStatus.CANCELED
ABORTED, COMPLETED = DeploymentStatus.ABORTED, DeploymentStatus.COMPLETED
DEPLOYMENT_STATUSES: tuple[DeploymentStatus, ...] = tuple(DeploymentStatus)

WINDOW = timedelta(seconds=60)

#: Deployment ids are UUIDs (anything else cannot name a deployment).
DEPLOYMENT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def lock_deployment(session: Session, deployment_id: str) -> Deployment | None:
    """The deployment row, locked for update (PostgreSQL; SQLite's write lock already serialises)."""
    return session.scalars(select(Deployment).where(Deployment.id == deployment_id).with_for_update()).first()


def released_recently(session: Session, deployment_id: str, now: datetime) -> int:
    return session.scalar(
        select(func.count()).select_from(DeviceDeployment).where(
            DeviceDeployment.deployment_id == deployment_id,
            DeviceDeployment.released_at.is_not(None),
            DeviceDeployment.released_at > now - WINDOW)) or 0


def release_quota(session: Session, deployment: Deployment, now: datetime) -> int | None:
    """How many more rows may be released now (``None``: no rate limit)."""
    if deployment.max_per_minute is None:
        return None
    return max(0, deployment.max_per_minute - released_recently(session, deployment.id, now))


def release_pending(session: Session, device_id: int, now: datetime) -> tuple[bool, bool]:
    """Release this device's waiting rows where the rate allows: ``(released_any, still_pending)``."""
    waiting = session.execute(
        select(DeviceDeployment.deployment_id).join(Deployment, Deployment.id == DeviceDeployment.deployment_id)
        .where(DeviceDeployment.device_id == device_id, DeviceDeployment.released_at.is_(None),
               DeviceDeployment.status == QUEUED, Deployment.status == ACTIVE)
        .order_by(Deployment.seq)).scalars().all()
    released = pending = False
    for deployment_id in waiting:
        deployment = lock_deployment(session, deployment_id)
        if deployment is None or deployment.status != ACTIVE:
            continue
        quota = release_quota(session, deployment, now)
        if quota is None or quota > 0:
            session.execute(update(DeviceDeployment).where(
                DeviceDeployment.deployment_id == deployment_id, DeviceDeployment.device_id == device_id,
                DeviceDeployment.released_at.is_(None), DeviceDeployment.status == QUEUED,
            ).values(released_at=now, updated_at=now))
            released = True
        else:
            pending = True
    return released, pending


def has_pending(session: Session, device_id: int) -> bool:
    """Whether the device has rows waiting for release (read-only)."""
    row = session.execute(
        select(DeviceDeployment.deployment_id).join(Deployment, Deployment.id == DeviceDeployment.deployment_id)
        .where(DeviceDeployment.device_id == device_id, DeviceDeployment.released_at.is_(None),
               DeviceDeployment.status == QUEUED, Deployment.status == ACTIVE).limit(1)).first()
    return row is not None


def counts(session: Session, deployment_id: str) -> dict[str, int]:
    rows = session.execute(
        select(DeviceDeployment.status, func.count()).where(DeviceDeployment.deployment_id == deployment_id)
        .group_by(DeviceDeployment.status)).all()
    out: dict[str, int] = {status.value: 0 for status in DEVICE_STATUSES}
    for status, n in rows:
        out[status] = int(n)
    return out


def apply_timeouts(session: Session, deployment: Deployment, now: datetime) -> int:
    cutoff = now - timedelta(minutes=deployment.timeout_minutes)
    result = session.execute(update(DeviceDeployment).where(
        DeviceDeployment.deployment_id == deployment.id, DeviceDeployment.status.in_(OPEN_STATUSES),
        DeviceDeployment.released_at.is_not(None), DeviceDeployment.released_at < cutoff,
    ).values(status=TIMED_OUT, reason_code="TIMEOUT", updated_at=now,
             message=f"no result within {deployment.timeout_minutes} minutes"))
    return int(getattr(result, "rowcount", 0) or 0)


def cancel_queued(session: Session, deployment: Deployment, now: datetime, reason: str, message: str) -> list[int]:
    """CANCEL every QUEUED row; released ones are un-released. Returns the devices whose state changes."""
    released = list(session.scalars(select(DeviceDeployment.device_id).where(
        DeviceDeployment.deployment_id == deployment.id, DeviceDeployment.status == QUEUED,
        DeviceDeployment.released_at.is_not(None))))
    session.execute(update(DeviceDeployment).where(
        DeviceDeployment.deployment_id == deployment.id, DeviceDeployment.status == QUEUED,
    ).values(status=CANCELED, reason_code=reason, message=message, released_at=None, updated_at=now))
    return released


def should_abort(deployment: Deployment, tally: dict[str, int]) -> bool:
    if deployment.abort_failure_percent is None:
        return False
    finished = sum(tally[s] for s in FINISHED_STATUSES)
    failed = sum(tally[s] for s in FAILURE_STATUSES)
    if finished == 0 or finished < deployment.abort_min_devices:
        return False
    return failed * 100 > deployment.abort_failure_percent * finished


def refresh_deployment(session: Session, deployment_id: str, now: datetime) -> list[int]:
    """Apply timeouts, the abort rule and completion. Returns devices whose desired state changed."""
    deployment = lock_deployment(session, deployment_id)
    if deployment is None:
        return []
    apply_timeouts(session, deployment, now)
    if deployment.status != ACTIVE:
        return []
    tally = counts(session, deployment.id)
    if should_abort(deployment, tally):
        failed = sum(tally[s] for s in FAILURE_STATUSES)
        finished = sum(tally[s] for s in FINISHED_STATUSES)
        reason = (f"{failed} of {finished} finished devices failed, more than "
                  f"{deployment.abort_failure_percent}%")
        deployment.status = ABORTED
        deployment.status_reason = reason
        return cancel_queued(session, deployment, now, "ABORTED", f"deployment aborted: {reason}")
    if tally[QUEUED] == 0 and tally[IN_PROGRESS] == 0:
        deployment.status = COMPLETED
    return []


def refresh_needed(session: Session, deployment_id: str, statuses: Iterable[str]) -> bool:
    """Whether a report that set rows of the deployment to ``statuses`` must refresh it now.

    Only when the abort rule may fire (a failure, and the deployment has the rule) or when the
    deployment may be complete (no open row left in this transaction's view). Otherwise the
    refresh (which locks the deployment row) is left to the next read: the rules are lazy, and
    locking the deployment on every report serialises a whole fleet's reports on one row.
    Concurrent last reports may each still see the other's row open; the deployment then reads
    COMPLETED at its next read (every read refreshes).
    """
    if set(statuses) & set(FAILURE_STATUSES) and session.scalar(
            select(Deployment.abort_failure_percent).where(Deployment.id == deployment_id)) is not None:
        return True
    still_open = session.execute(select(DeviceDeployment.device_id).where(
        DeviceDeployment.deployment_id == deployment_id,
        DeviceDeployment.status.in_(OPEN_STATUSES)).limit(1)).first()
    return still_open is None


def open_deployments(session: Session, deployment_ids: Iterable[str] | None = None) -> list[str]:
    """Deployments that still have open rows or are ACTIVE (the ones a refresh can change)."""
    query = select(DeviceDeployment.deployment_id).where(DeviceDeployment.status.in_(OPEN_STATUSES)).distinct()
    active = select(Deployment.id).where(Deployment.status == ACTIVE)
    ids = set(session.scalars(query)) | set(session.scalars(active))
    if deployment_ids is not None:
        ids &= set(deployment_ids)
    return sorted(ids)
