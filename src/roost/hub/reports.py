"""Applying device reports, set-based: the reports of many devices in a few statements.

A device sends reports (``POST /v1/device/reports``), each with a unique id: a heartbeat with its
component states and applied revision, or a status for its row of a deployment. Spooled reports
may arrive twice; each is applied exactly once (``device_reports`` holds the ids applied, and an
``INSERT ... ON CONFLICT DO NOTHING RETURNING`` says which ids are new). The reports of one device
apply in the order sent.

A device reports only on itself: on deployments made for it (a row in ``device_deployments``: the
deployment targets the device, or a group it was in when the deployment was made or that it joined
later) and with revisions the hub gave it (at most its ``desired_revision``); a request with any
other report is refused whole (``DEPLOYMENT_NOT_FOR_DEVICE``, ``REVISION_NOT_GIVEN``). Its
``applied_revision`` never moves backwards.

Lock order, the same in every transaction of the hub that writes these tables, so concurrent
batches (of one or several hub processes) do not deadlock: device_reports (sorted) →
device_deployments (sorted by deployment, device) → deployments → meta → devices (sorted by id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Integer, bindparam, case, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from roost.hub import desired, rollout
from roost.hub.contract import OPEN_STATUSES, DeviceDeploymentStatus
from roost.hub.contract import ReportResult as ReportResult
from roost.hub.errors import AuthenticationError, HubError, ReportForbiddenError, RevisionNotGivenError
from roost.hub.models import Device, DeviceDeployment, DeviceReport

#: Statuses a device may report for its row of a deployment.
REPORT_STATUSES: tuple[DeviceDeploymentStatus, ...] = tuple(DeviceDeploymentStatus)


@dataclass(frozen=True)
class Report:
    id: str
    revision: int | None = None
    status: str | None = None
    deployment_id: str | None = None
    reason_code: str | None = None
    message: str | None = None
    components: dict[str, Any] | None = None
    at: datetime | None = None


def _insert_new(session: Session, keys: list[tuple[int, str]], now: datetime) -> set[tuple[int, str]]:
    """Insert the report ids; return those that were not there yet.

    One cached statement run for all the rows (SQLAlchemy's "insertmanyvalues" batches it into
    multi-row INSERTs); ``RETURNING`` names the rows inserted, ``ON CONFLICT DO NOTHING`` skips the rest.
    """
    if not keys:
        return set()
    stmt = _INSERT_IGNORE[session.get_bind().dialect.name == "postgresql"]
    rows = session.connection().execute(stmt, [{"device_id": d, "report_id": r, "received_at": now} for d, r in keys])
    return {(int(d), str(r)) for d, r in rows}


_INSERT_IGNORE = {
    is_pg: (postgresql.insert if is_pg else sqlite.insert)(DeviceReport).on_conflict_do_nothing()
    .returning(DeviceReport.device_id, DeviceReport.report_id)
    for is_pg in (False, True)
}


_ROW_UPDATE = (
    update(DeviceDeployment)
    .where(DeviceDeployment.deployment_id == bindparam("b_deployment"),
           DeviceDeployment.device_id == bindparam("b_device"),
           # (not IN (...): an expanding parameter, which executemany cannot take)
           or_(*(DeviceDeployment.status == status for status in OPEN_STATUSES)),
           DeviceDeployment.released_at.is_not(None))
    .values(status=bindparam("b_status"), reason_code=bindparam("b_reason"), message=bindparam("b_message"),
            updated_at=bindparam("b_now"))
)


class _Revisions(NamedTuple):
    """A device's revisions as stored: the newest the hub has given it, the newest it applied."""

    desired: int
    applied: int | None


def _active_devices(session: Session, device_ids: Iterable[int]) -> dict[int, _Revisions]:
    """The devices among ``device_ids`` that exist and are not revoked, with their revisions."""
    ids = sorted(set(device_ids))
    out: dict[int, _Revisions] = {}
    for start in range(0, len(ids), desired.CHUNK):
        for device_id, desired_revision, applied in session.execute(
                select(Device.id, Device.desired_revision, Device.applied_revision)
                .where(Device.id.in_(ids[start:start + desired.CHUNK]), Device.revoked_at.is_(None))):
            out[int(device_id)] = _Revisions(int(desired_revision), None if applied is None else int(applied))
    return out


def _rows_existing(session: Session, pairs: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
    """The ``(deployment_id, device_id)`` among ``pairs`` that have a row in ``device_deployments``:
    the deployment was made for that device (to it, or to a group it was in), released or not."""
    keys = sorted({p for p in pairs if rollout.DEPLOYMENT_ID.fullmatch(p[0])})
    out: set[tuple[str, int]] = set()
    key = tuple_(DeviceDeployment.deployment_id, DeviceDeployment.device_id)
    for start in range(0, len(keys), desired.CHUNK):
        for deployment_id, device_id in session.execute(
                select(DeviceDeployment.deployment_id, DeviceDeployment.device_id)
                .where(key.in_(keys[start:start + desired.CHUNK]))):
            out.add((str(deployment_id), int(device_id)))
    return out


def _refusal(device_id: int, items: Sequence[Report], revisions: _Revisions,
             given: set[tuple[str, int]]) -> HubError | None:
    """Why the reports of one request may not be applied, or None (see :func:`record`)."""
    for report in items:
        if report.deployment_id is not None and (report.deployment_id, device_id) not in given:
            return ReportForbiddenError(
                f"report {report.id} names deployment {report.deployment_id}, which was not made for this "
                "device; a device reports only on its own deployments")
        if report.revision is not None and report.revision > revisions.desired:
            return RevisionNotGivenError(
                f"report {report.id} claims revision {report.revision}, which the hub never gave this device "
                f"(the newest it was given is {revisions.desired})")
    return None


def _applied_value(param: str) -> ColumnElement[Any]:
    """``applied_revision`` set to the bound value unless the stored one is newer: never backwards,
    even when another transaction (another hub process) moved it meanwhile."""
    value = bindparam(param, type_=Integer())
    return case((or_(Device.applied_revision.is_(None), Device.applied_revision < value), value),
                else_=Device.applied_revision)


def record(session: Session, batch: Sequence[tuple[int, Sequence[Report]]], now: datetime,
           ) -> list[ReportResult | HubError]:
    """Apply each ``(device_id, reports)`` of ``batch``; per item a ``ReportResult`` or a HubError.

    Each item (one request of one device) is applied whole or refused whole, on its own: the other
    items of the batch are unaffected.

    * a revoked (or deleted) device: ``DEVICE_REVOKED``;
    * a report naming a deployment without a row for this device (made for another device or group,
      or no deployment at all): ``DEPLOYMENT_NOT_FOR_DEVICE``;
    * a report claiming a revision newer than the device's ``desired_revision`` (every revision the
      hub serves a device is its ``desired_revision`` of that moment, and that only grows, so no
      honest device can): ``REVISION_NOT_GIVEN``.

    ``applied_revision`` never moves backwards: an older revision (an agent whose local state was
    reset reports 0) is not applied, the rest of its report is, and its id is listed in
    ``revisions_ignored``. Duplicates (of an earlier transaction or earlier in this batch) are
    listed, not applied.
    """
    active = _active_devices(session, [device_id for device_id, _ in batch])
    given = _rows_existing(session, [(r.deployment_id, device_id) for device_id, items in batch
                                     if device_id in active for r in items if r.deployment_id is not None])
    refused: dict[int, HubError] = {}
    keys: list[tuple[int, str]] = []
    listed: set[tuple[int, str]] = set()
    for index, (device_id, items) in enumerate(batch):
        if device_id not in active:
            refused[index] = AuthenticationError("this device was revoked; enrol it again", code="DEVICE_REVOKED")
            continue
        refusal = _refusal(device_id, items, active[device_id], given)
        if refusal is not None:
            refused[index] = refusal
            continue
        for report in items:
            if (device_id, report.id) not in listed:
                listed.add((device_id, report.id))
                keys.append((device_id, report.id))
    new = _insert_new(session, sorted(keys), now)

    out: list[ReportResult | HubError] = []
    row_updates: list[dict[str, Any]] = []
    device_values: dict[int, dict[str, Any]] = {}
    applied = {device_id: revisions.applied for device_id, revisions in active.items()}
    touched: dict[str, set[str]] = {}
    for index, (device_id, items) in enumerate(batch):
        if index in refused:
            out.append(refused[index])
            continue
        accepted: list[str] = []
        duplicates: list[str] = []
        ignored: list[str] = []
        values = device_values.setdefault(device_id, {"last_seen_at": now})
        for report in items:
            key = (device_id, report.id)
            if key not in new:
                duplicates.append(report.id)
                continue
            new.discard(key)  # a second copy later in the batch is a duplicate
            accepted.append(report.id)
            if report.components is not None:
                values["reported"] = {str(k): v for k, v in report.components.items()}
            if report.revision is not None:
                current = applied[device_id]
                if current is not None and report.revision < current:
                    ignored.append(report.id)
                else:
                    applied[device_id] = values["applied_revision"] = report.revision
            if report.deployment_id is not None and report.status in REPORT_STATUSES:
                row_updates.append({"b_deployment": report.deployment_id, "b_device": device_id,
                                    "b_status": report.status, "b_reason": report.reason_code,
                                    "b_message": report.message, "b_now": now})
                touched.setdefault(report.deployment_id, set()).add(str(report.status))
        out.append(ReportResult(accepted=accepted, duplicates=duplicates, revisions_ignored=ignored))

    if row_updates:
        # Stable sort: the lock order, and one device's reports on one row stay in the order sent.
        row_updates.sort(key=lambda u: (u["b_deployment"], u["b_device"]))
        session.connection().execute(_ROW_UPDATE, row_updates)
    for deployment_id in sorted(touched):
        if rollout.refresh_needed(session, deployment_id, touched[deployment_id]):
            desired.mark_changed(session, rollout.refresh_deployment(session, deployment_id, now))
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for device_id in sorted(device_values):
        values = device_values[device_id]
        by_columns.setdefault(tuple(sorted(values)), []).append(
            {"b_id": device_id, **{f"b_{k}": v for k, v in values.items()}})
    for columns, params in by_columns.items():
        stmt = (update(Device).where(Device.id == bindparam("b_id"))
                .values({c: _applied_value(f"b_{c}") if c == "applied_revision"
                         else bindparam(f"b_{c}", type_=Device.__table__.c[c].type) for c in columns}))
        session.connection().execute(stmt, params)
    return out


def touch(session: Session, seen: dict[int, datetime]) -> None:
    """Set ``last_seen_at`` of devices (never backwards: another hub process may have seen them later).

    Times are grouped by the second (``last_seen_at`` only decides ONLINE within two minutes), so a
    flush of thousands of devices is a few statements, not one per device.
    """
    by_second: dict[datetime, list[int]] = {}
    for device_id, when in seen.items():
        by_second.setdefault(when.replace(microsecond=0), []).append(device_id)
    for when, ids in sorted(by_second.items()):
        ids.sort()
        for start in range(0, len(ids), desired.CHUNK):
            session.execute(update(Device).where(
                Device.id.in_(ids[start:start + desired.CHUNK]),
                or_(Device.last_seen_at.is_(None), Device.last_seen_at < when)).values(last_seen_at=when))
