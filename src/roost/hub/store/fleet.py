"""The fleet: devices and groups."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from roost.hub import contract, desired, rollout
from roost.hub.contract import (
    OPEN_STATUSES,
    DeploymentStatus,
    DeviceDeploymentStatus,
    DeviceHealth,
    DeviceStatus,
    ReportedComponent,
    TargetType,
)
from roost.hub.errors import HubNotFoundError
from roost.hub.models import Deployment, Device, DeviceDeployment, Group, GroupMember
from roost.hub.names import check_name
from roost.hub.store.base import StoreBase

logger = logging.getLogger(__name__)

#: Devices seen within this window are ONLINE.
ONLINE_WINDOW = timedelta(seconds=120)

UNHEALTHY_STATES = ("ERRORED", "BROKEN")


class FleetStore(StoreBase):
    """Devices (listing, revocation, labels) and groups (membership; a joining member gets the group's deployment)."""

    # -- devices -----------------------------------------------------------------------------------

    def _device_info(self, s: Session, device: Device, groups: list[str], now: datetime,
                     deployments: list[contract.DeviceDeployment] | None = None) -> contract.Device:
        reported = {
            name: ReportedComponent(version=(v or {}).get("version") if isinstance(v, dict) else None,
                                    state=(v or {}).get("state") if isinstance(v, dict) else None)
            for name, v in sorted((device.reported or {}).items())
        }
        if device.revoked_at is not None:
            status = DeviceStatus.REVOKED
        elif device.last_seen_at is not None and now - device.last_seen_at <= ONLINE_WINDOW:
            status = DeviceStatus.ONLINE
        else:
            status = DeviceStatus.OFFLINE
        if not reported:
            health = DeviceHealth.UNKNOWN
        elif any(c.state in UNHEALTHY_STATES for c in reported.values()):
            health = DeviceHealth.UNHEALTHY
        else:
            health = DeviceHealth.HEALTHY
        return contract.Device(name=device.name, labels=dict(device.labels or {}), groups=groups,
                          created_at=device.created_at, last_seen_at=device.last_seen_at,
                          revoked=device.revoked_at is not None, components=reported, status=status,
                          health=health, applied_revision=device.applied_revision,
                          desired_revision=device.desired_revision, deployments=deployments)

    def _groups_of(self, s: Session, device_ids: Sequence[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {i: [] for i in device_ids}
        if not device_ids:
            return out
        rows = s.execute(select(GroupMember.device_id, GroupMember.group_name)
                         .order_by(GroupMember.group_name))
        for device_id, group in rows:
            if device_id in out:
                out[device_id].append(group)
        return out

    def list_devices(self) -> list[contract.Device]:
        now = self.clock()

        def run(s: Session) -> list[contract.Device]:
            devices = list(s.scalars(select(Device).order_by(Device.name)))
            groups = self._groups_of(s, [d.id for d in devices])
            return [self._device_info(s, d, groups[d.id], now) for d in devices]
        return self._read(run)

    def get_device(self, name: str) -> contract.Device:
        now = self.clock()

        def run(s: Session) -> contract.Device:
            device = self._device(s, name)
            for deployment_id in rollout.open_deployments(s, self._deployment_ids_of(s, device.id)):
                desired.mark_changed(s, rollout.refresh_deployment(s, deployment_id, now))
            rows = s.execute(select(DeviceDeployment, Deployment.seq)
                             .join(Deployment, Deployment.id == DeviceDeployment.deployment_id)
                             .where(DeviceDeployment.device_id == device.id)
                             .order_by(Deployment.seq.desc())).all()
            deployments = [contract.DeviceDeployment(deployment_id=r.deployment_id,
                                                     status=DeviceDeploymentStatus(r.status),
                                                     reason_code=r.reason_code, message=r.message,
                                                     released_at=r.released_at, updated_at=r.updated_at)
                           for r, _seq in rows]
            return self._device_info(s, device, self._groups_of(s, [device.id])[device.id], now, deployments)
        return self._write(run)

    def _deployment_ids_of(self, s: Session, device_id: int) -> list[str]:
        return list(s.scalars(select(DeviceDeployment.deployment_id).where(DeviceDeployment.device_id == device_id)))

    def revoke_device(self, name: str) -> contract.Device:
        """Cut a device off: its credential stops working at once; its open rows are CANCELED."""
        now = self.clock()

        def run(s: Session) -> contract.Device:
            device = self._device(s, name, lock=True)
            if device.revoked_at is None:
                device.revoked_at = now
                s.execute(update(DeviceDeployment).where(
                    DeviceDeployment.device_id == device.id, DeviceDeployment.status.in_(OPEN_STATUSES),
                ).values(status=DeviceDeploymentStatus.CANCELED, reason_code="DEVICE_REVOKED",
                         message="the device was revoked", updated_at=now))
            return self._device_info(s, device, self._groups_of(s, [device.id])[device.id], now)
        info = self._write(run)
        logger.info("device %s revoked", name)
        return info

    def set_labels(self, name: str, labels: dict[str, Any]) -> contract.Device:
        now = self.clock()

        def run(s: Session) -> contract.Device:
            device = self._device(s, name, lock=True)
            device.labels = dict(labels)
            return self._device_info(s, device, self._groups_of(s, [device.id])[device.id], now)
        return self._write(run)

    # -- groups ------------------------------------------------------------------------------------

    def _ensure_group(self, s: Session, name: str) -> None:
        if s.get(Group, name) is None:
            try:
                with s.begin_nested():
                    s.add(Group(name=name, created_at=self.clock()))
            except IntegrityError:
                pass  # created concurrently

    def _join_group(self, s: Session, group: str, device: Device, now: datetime) -> bool:
        """Add a member; it receives the group's current deployment (rate limits apply)."""
        self._ensure_group(s, group)
        if s.get(GroupMember, (group, device.id)) is not None:
            return False
        s.add(GroupMember(group_name=group, device_id=device.id))
        s.flush()
        current = s.scalars(select(Deployment).where(
            Deployment.target_type == TargetType.GROUP, Deployment.target_name == group,
            Deployment.status.in_((DeploymentStatus.ACTIVE, DeploymentStatus.COMPLETED)))
            .order_by(Deployment.seq.desc()).limit(1).with_for_update()).first()
        if current is not None and device.revoked_at is None:
            quota = rollout.release_quota(s, current, now)
            released = now if quota is None or quota > 0 else None
            existing = s.get(DeviceDeployment, (current.id, device.id))
            if existing is None:
                s.add(DeviceDeployment(deployment_id=current.id, device_id=device.id,
                                       status=DeviceDeploymentStatus.QUEUED, released_at=released, updated_at=now))
                current.status = DeploymentStatus.ACTIVE
                if released is not None:
                    # Only then does the device's desired state change (and the revision move, waking
                    # long polls): joining a group without a deployment, or before the rollout
                    # releases the device, changes nothing the device would receive.
                    desired.mark_changed(s, [device.id])
        return True

    def _group_info(self, s: Session, name: str) -> contract.Group:
        members = s.scalars(select(Device.name).join(GroupMember, GroupMember.device_id == Device.id)
                            .where(GroupMember.group_name == name).order_by(Device.name))
        return contract.Group(name=name, devices=list(members))

    def add_group_members(self, group: str, devices: list[str]) -> contract.Group:
        check_name(group, "group name")
        now = self.clock()

        def run(s: Session) -> contract.Group:
            self._ensure_group(s, group)
            for name in devices:
                self._join_group(s, group, self._device(s, name), now)
            return self._group_info(s, group)
        return self._write(run)

    def remove_group_member(self, group: str, device_name: str) -> contract.Group:
        check_name(group, "group name")
        now = self.clock()

        def run(s: Session) -> contract.Group:
            if s.get(Group, group) is None:
                raise HubNotFoundError(f"group {group} does not exist", code="GROUP_NOT_FOUND")
            device = self._device(s, device_name)
            member = s.get(GroupMember, (group, device.id))
            if member is None:
                raise HubNotFoundError(f"device {device_name} is not a member of group {group}",
                                       code="MEMBER_NOT_FOUND")
            s.delete(member)
            group_deployments = select(Deployment.id).where(Deployment.target_type == TargetType.GROUP,
                                                            Deployment.target_name == group)
            s.execute(update(DeviceDeployment).where(
                DeviceDeployment.device_id == device.id, DeviceDeployment.status.in_(OPEN_STATUSES),
                DeviceDeployment.deployment_id.in_(group_deployments),
            ).values(status=DeviceDeploymentStatus.CANCELED, reason_code="REMOVED_FROM_GROUP",
                     message=f"the device left group {group}", updated_at=now))
            desired.mark_changed(s, [device.id])
            return self._group_info(s, group)
        return self._write(run)

    def list_groups(self) -> list[contract.Group]:
        def run(s: Session) -> list[contract.Group]:
            members: dict[str, list[str]] = {g: [] for g in s.scalars(select(Group.name).order_by(Group.name))}
            rows = s.execute(select(GroupMember.group_name, Device.name)
                             .join(Device, Device.id == GroupMember.device_id).order_by(Device.name))
            for group, device in rows:
                members.setdefault(group, []).append(device)
            return [contract.Group(name=g, devices=d) for g, d in members.items()]
        return self._read(run)
