"""Applying device reports, set-based: the reports of many devices in a few statements.

A device sends reports (``POST /v1/device/reports``), each with a unique id: a heartbeat with its
component states and applied revision, or a status for its row of a deployment. Spooled reports
may arrive twice; each is applied exactly once (``device_reports`` holds the ids applied, and an
``INSERT ... ON CONFLICT DO NOTHING RETURNING`` says which ids are new). The reports of one device
apply in the order sent.

Lock order, the same in every transaction of the hub that writes these tables, so concurrent
batches (of one or several hub processes) do not deadlock: device_reports (sorted) →
device_deployments (sorted by deployment, device) → deployments → meta → devices (sorted by id).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from roost.hub import desired, rollout
from roost.hub.errors import AuthenticationError, HubError
from roost.hub.models import Device, DeviceDeployment, DeviceReport

#: Statuses a device may report for its row of a deployment.
REPORT_STATUSES = ("QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "ROLLED_BACK", "TIMED_OUT", "CANCELED")


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


@dataclass(frozen=True)
class ReportResult:
    accepted: list[str]
    duplicates: list[str]


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
           or_(*(DeviceDeployment.status == status for status in rollout.OPEN_STATUSES)),
           DeviceDeployment.released_at.is_not(None))
    .values(status=bindparam("b_status"), reason_code=bindparam("b_reason"), message=bindparam("b_message"),
            updated_at=bindparam("b_now"))
)


def record(session: Session, batch: Sequence[tuple[int, Sequence[Report]]], now: datetime,
           ) -> list[ReportResult | HubError]:
    """Apply each ``(device_id, reports)`` of ``batch``; per item a ``ReportResult`` or a HubError.

    Reports of a revoked (or deleted) device are refused with ``DEVICE_REVOKED``; duplicates (of
    an earlier transaction or earlier in this batch) are listed, not applied.
    """
    active = desired.device_refs(session, [device_id for device_id, _ in batch])
    keys: list[tuple[int, str]] = []
    listed: set[tuple[int, str]] = set()
    for device_id, items in batch:
        if device_id in active:
            for report in items:
                if (device_id, report.id) not in listed:
                    listed.add((device_id, report.id))
                    keys.append((device_id, report.id))
    new = _insert_new(session, sorted(keys), now)

    out: list[ReportResult | HubError] = []
    row_updates: list[dict[str, Any]] = []
    device_values: dict[int, dict[str, Any]] = {}
    touched: dict[str, set[str]] = {}
    for device_id, items in batch:
        if device_id not in active:
            out.append(AuthenticationError("this device was revoked; enrol it again", code="DEVICE_REVOKED"))
            continue
        accepted: list[str] = []
        duplicates: list[str] = []
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
                values["applied_revision"] = report.revision
            if (report.deployment_id and report.status in REPORT_STATUSES
                    and rollout.DEPLOYMENT_ID.fullmatch(report.deployment_id)):
                row_updates.append({"b_deployment": report.deployment_id, "b_device": device_id,
                                    "b_status": report.status, "b_reason": report.reason_code,
                                    "b_message": report.message, "b_now": now})
                touched.setdefault(report.deployment_id, set()).add(str(report.status))
        out.append(ReportResult(accepted=accepted, duplicates=duplicates))

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
                .values({c: bindparam(f"b_{c}", type_=Device.__table__.c[c].type) for c in columns}))
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
