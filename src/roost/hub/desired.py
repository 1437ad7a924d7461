"""A device's desired state and the revision counter.

The desired state of a device is the union of the components of its *effective* deployments: for
the device itself and for each group it belongs to, the newest deployment to that target whose
row for this device is released (a device not yet released for the newest keeps the one before).
A component named by two effective deployments at different versions is a conflict: the newer
deployment's row for this device becomes FAILED with reason ``DESIRED_STATE_CONFLICT`` (the message
names both deployments) and that target falls back to its previous deployment, so the device keeps
a consistent state and the endpoint never fails.

The revision: one global counter (``meta.revision``) bumped once per transaction that changes any
desired state; each affected device's ``desired_revision`` is set to the new value, so a device
long-polls only for its own changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from roost.hub.errors import DesiredStateConflictError
from roost.hub.models import Component, Deployment, Device, DeviceDeployment, GroupMember, Meta
from roost.hub.rollout import FAILED, IN_PROGRESS, QUEUED

REVISION_KEY = "revision"
CONFLICT = "DESIRED_STATE_CONFLICT"


def current_revision(session: Session) -> int:
    return int(session.scalar(select(Meta.value).where(Meta.key == REVISION_KEY)) or 0)


def bump_revision(session: Session) -> int:
    """Increment the global revision (row-locked until commit) and return the new value."""
    value = session.execute(
        update(Meta).where(Meta.key == REVISION_KEY).values(value=Meta.value + 1).returning(Meta.value)
    ).scalar_one_or_none()
    if value is None:  # a database migrated without the seed row
        session.add(Meta(key=REVISION_KEY, value=1))
        session.flush()
        return 1
    return int(value)


def mark_changed(session: Session, device_ids: Iterable[int], revision: int | None = None) -> int | None:
    """Bump the revision (unless given) and stamp it on the devices. ``None`` if no device."""
    ids = sorted(set(device_ids))
    if not ids:
        return revision
    if revision is None:
        revision = bump_revision(session)
    for start in range(0, len(ids), 500):
        session.execute(update(Device).where(Device.id.in_(ids[start:start + 500])).values(desired_revision=revision))
    return revision


@dataclass(frozen=True)
class DesiredComponent:
    version: str
    recipe: dict[str, Any]
    configuration: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DesiredState:
    """What a device should run. ``failure_policy`` is that of the newest deployment in effect (the
    change the device is about to apply); ``timeout_minutes`` the longest of them."""

    revision: int
    deployments: list[str]
    components: dict[str, DesiredComponent]
    failure_policy: str = "ROLLBACK"
    timeout_minutes: int | None = None


def _targets(session: Session, device: Device) -> list[tuple[str, str]]:
    groups = session.scalars(select(GroupMember.group_name).where(GroupMember.device_id == device.id))
    return [("device", device.name), *(("group", g) for g in sorted(groups))]


def effective_deployments(session: Session, device: Device) -> list[tuple[Deployment, DeviceDeployment]]:
    """For each target of the device, its newest released, non-conflicting deployment; by seq."""
    targets = _targets(session, device)
    rows = session.execute(
        select(Deployment, DeviceDeployment)
        .join(DeviceDeployment, and_(DeviceDeployment.deployment_id == Deployment.id,
                                     DeviceDeployment.device_id == device.id))
        .where(or_(*(and_(Deployment.target_type == t, Deployment.target_name == n) for t, n in targets)),
               DeviceDeployment.released_at.is_not(None),
               or_(DeviceDeployment.reason_code.is_(None), DeviceDeployment.reason_code != CONFLICT))
        .order_by(Deployment.seq.desc())).all()
    chosen: dict[tuple[str, str], tuple[Deployment, DeviceDeployment]] = {}
    for deployment, row in rows:
        chosen.setdefault((deployment.target_type, deployment.target_name), (deployment, row))
    return sorted(chosen.values(), key=lambda pair: pair[0].seq)


def _union(pairs: list[tuple[Deployment, DeviceDeployment]]) -> dict[str, tuple[str, Deployment]]:
    wanted: dict[str, tuple[str, Deployment]] = {}
    for deployment, _row in pairs:
        for name, version in sorted(deployment.components.items()):
            if name in wanted and wanted[name][0] != version:
                first_version, first = wanted[name]
                raise DesiredStateConflictError(name, (first.id, first_version), (deployment.id, str(version)))
            wanted[name] = (str(version), deployment)
    return wanted


def compute(session: Session, device: Device, now: datetime, *, deliver: bool = True) -> DesiredState:
    """The device's desired state; records conflicts (and, when ``deliver``, QUEUED → IN_PROGRESS).

    Must run in a write transaction: a conflict is written onto the newer deployment's row.
    """
    while True:
        pairs = effective_deployments(session, device)
        try:
            wanted = _union(pairs)
            break
        except DesiredStateConflictError as err:
            session.execute(update(DeviceDeployment).where(
                DeviceDeployment.deployment_id == err.second_deployment,
                DeviceDeployment.device_id == device.id,
            ).values(status=FAILED, reason_code=CONFLICT, message=err.message, updated_at=now))
    recipes: dict[tuple[str, str], dict[str, Any]] = {}
    if wanted:
        keys = [(name, version) for name, (version, _) in wanted.items()]
        for comp in session.scalars(select(Component).where(
                or_(*(and_(Component.name == n, Component.version == v) for n, v in keys)))):
            recipes[(comp.name, comp.version)] = comp.recipe
    components = {
        name: DesiredComponent(version=version, recipe=recipes.get((name, version), {}),
                               configuration=dict(deployment.configuration.get(name) or {}))
        for name, (version, deployment) in sorted(wanted.items())
    }
    if deliver:
        for _deployment, row in pairs:
            if row.status == QUEUED:
                row.status = IN_PROGRESS
                row.updated_at = now
    newest = max((d for d, _ in pairs), key=lambda d: d.seq, default=None)
    timeouts = [d.timeout_minutes for d, _ in pairs if d.timeout_minutes]
    return DesiredState(revision=device.desired_revision, deployments=[d.id for d, _ in pairs],
                        components=components,
                        failure_policy=newest.failure_policy if newest is not None else "ROLLBACK",
                        timeout_minutes=max(timeouts) if timeouts else None)


def wanted_versions(session: Session, device: Device) -> dict[str, str]:
    """The component versions the device may download (read-only; conflicts leave out the newer)."""
    pairs = effective_deployments(session, device)
    wanted: dict[str, str] = {}
    for deployment, _row in pairs:
        for name, version in deployment.components.items():
            wanted.setdefault(name, str(version))
    return wanted
