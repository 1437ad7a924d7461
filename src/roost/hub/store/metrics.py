"""Metrics in the hub's database: devices' snapshots and their last hour, and the hub's own gauges.

* :meth:`MetricsStore.record_snapshot` keeps a device's latest snapshot (``device_metrics``) and one sample
  a minute (the minute's latest snapshot) for :data:`HISTORY` (``device_metric_samples``; older ones are pruned in the
  same transaction, so the table holds at most 60 rows per device);
* :meth:`MetricsStore.device_metrics` reads them back (``GET /v1/devices/{name}/metrics``: the console's
  charts of a device's CPU, memory and inference latency over the last hour);
* :meth:`MetricsStore.fleet_rows` and :meth:`MetricsStore.scrape_targets` feed ``/metrics/fleet`` and
  Prometheus service discovery (:mod:`roost.observe.fleet`, :mod:`roost.observe.discovery`);
* :meth:`MetricsStore.hub_gauges` counts what the hub's ``/metrics`` shows, from the database at scrape
  time (several hub replicas may share one PostgreSQL: no process holds the truth).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from roost.hub.contract import DeploymentStatus
from roost.hub.contract.metrics import DeviceMetrics, MetricsPoint, MetricsSnapshot, ModelSample
from roost.hub.models import (
    ClusterNode,
    ClusterReplica,
    ClusterSessionRow,
    Deployment,
    Device,
    DeviceDeployment,
    DeviceMetricSample,
    DeviceMetricsRow,
    GroupMember,
)
from roost.hub.store.base import StoreBase
from roost.hub.store.fleet import ONLINE_WINDOW
from roost.observe.fleet import FleetRow, snapshot_lines

HISTORY: Final = timedelta(hours=1)
#: Deployments whose per-device progress the hub's /metrics shows: the newest ones still in effect
#: (ACTIVE, COMPLETED or ABORTED; not those superseded or canceled).
MAX_ROLLOUTS: Final = 20
ROLLOUT_STATES: Final = (DeploymentStatus.ACTIVE, DeploymentStatus.COMPLETED, DeploymentStatus.ABORTED)


@dataclass(frozen=True)
class TargetRow:
    device: str
    groups: tuple[str, ...]
    labels: dict[str, Any]
    endpoint: str
    token: bool


@dataclass
class HubGauges:
    devices: dict[str, int] = field(default_factory=dict)
    deployments: dict[str, int] = field(default_factory=dict)
    #: (deployment id, target "device:x" / "group:y", deployment state, device status) -> devices
    rollouts: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)
    snapshots: int = 0


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


class MetricsStore(StoreBase):
    """Devices' metrics snapshots and history; the hub's gauges."""

    def record_snapshot(self, device_id: int, snapshot: MetricsSnapshot) -> datetime:
        """Keep ``snapshot`` as the device's latest, and as this minute's sample if it has none yet."""
        now = self.clock()
        doc = snapshot.model_dump(mode="json", exclude_none=True)
        models = {name: m.model_dump(mode="json", exclude_none=True) for name, m in snapshot.models.items()}
        lines = snapshot_lines(snapshot)

        def run(s: Session) -> None:
            # The device row is the lock: one writer per device at a time, across hub processes.
            s.execute(select(Device.id).where(Device.id == device_id).with_for_update())
            row = s.get(DeviceMetricsRow, device_id)
            if row is None:
                s.add(DeviceMetricsRow(device_id=device_id, received_at=now, endpoint=snapshot.endpoint, snapshot=doc,
                                       lines=lines))
            else:
                row.received_at, row.endpoint, row.snapshot, row.lines = now, snapshot.endpoint, doc, lines
            minute = _minute(now)
            sample = s.get(DeviceMetricSample, (device_id, minute))
            if sample is None:
                s.add(DeviceMetricSample(device_id=device_id, minute=minute, values=dict(snapshot.values),
                                         models=models))
            else:  # the minute's sample is its latest snapshot
                sample.values, sample.models = dict(snapshot.values), models
            s.execute(delete(DeviceMetricSample).where(DeviceMetricSample.device_id == device_id,
                                                       DeviceMetricSample.minute <= now - HISTORY))
        self._write(run)
        return now

    def device_metrics(self, name: str) -> DeviceMetrics:
        """The device's latest snapshot and its samples of the last hour, oldest first."""
        now = self.clock()

        def run(s: Session) -> DeviceMetrics:
            device = self._device(s, name)
            row = s.get(DeviceMetricsRow, device.id)
            samples = s.execute(select(DeviceMetricSample.minute, DeviceMetricSample.values, DeviceMetricSample.models)
                                .where(DeviceMetricSample.device_id == device.id,
                                       DeviceMetricSample.minute > now - HISTORY)
                                .order_by(DeviceMetricSample.minute)).all()
            return DeviceMetrics(
                device=device.name, received_at=row.received_at if row is not None else None,
                latest=MetricsSnapshot.model_validate(row.snapshot) if row is not None else None,
                window_seconds=int(HISTORY.total_seconds()),
                samples=[MetricsPoint(at=m, values=dict(v or {}),
                                      models={k: ModelSample.model_validate(x) for k, x in dict(ms or {}).items()})
                         for m, v, ms in samples])
        return self._read(run)

    def _groups_by_device(self, s: Session) -> dict[int, tuple[str, ...]]:
        out: dict[int, list[str]] = {}
        for device_id, group in s.execute(select(GroupMember.device_id, GroupMember.group_name)
                                          .order_by(GroupMember.group_name)):
            out.setdefault(device_id, []).append(group)
        return {k: tuple(v) for k, v in out.items()}

    def fleet_rows(self) -> list[FleetRow]:
        """Every enrolled (not revoked) device's latest snapshot, by device name.

        Read through the connection (no ORM rows), the numbers as :func:`~roost.observe.fleet.snapshot_lines`
        formatted them (bench/README.md)."""
        def run(s: Session) -> list[FleetRow]:
            conn = s.connection()
            groups: dict[int, list[str]] = {}
            for device_id, group in conn.execute(select(GroupMember.device_id, GroupMember.group_name)
                                                 .order_by(GroupMember.group_name)):
                groups.setdefault(device_id, []).append(group)
            rows = conn.execute(select(Device.id, Device.name, DeviceMetricsRow.received_at, DeviceMetricsRow.lines)
                                .join(DeviceMetricsRow, DeviceMetricsRow.device_id == Device.id)
                                .where(Device.revoked_at.is_(None)).order_by(Device.name)).all()
            return [FleetRow(name, tuple(groups.get(i, ())), at, lines) for i, name, at, lines in rows]
        return self._read(run)

    def scrape_targets(self) -> list[TargetRow]:
        """The devices that reported a metrics endpoint, by device name."""
        def run(s: Session) -> list[TargetRow]:
            groups = self._groups_by_device(s)
            rows = s.execute(select(Device.id, Device.name, Device.labels, DeviceMetricsRow.endpoint,
                                    DeviceMetricsRow.snapshot)
                             .join(DeviceMetricsRow, DeviceMetricsRow.device_id == Device.id)
                             .where(Device.revoked_at.is_(None), DeviceMetricsRow.endpoint.is_not(None))
                             .order_by(Device.name)).all()
            return [TargetRow(name, groups.get(i, ()), dict(labels or {}), str(endpoint),
                              bool(dict(snap or {}).get("token", False)))
                    for i, name, labels, endpoint, snap in rows]
        return self._read(run)

    def hub_gauges(self) -> HubGauges:
        now = self.clock()

        def run(s: Session) -> HubGauges:
            out = HubGauges()
            revoked = s.scalar(select(func.count()).select_from(Device).where(Device.revoked_at.is_not(None))) or 0
            online = s.scalar(select(func.count()).select_from(Device).where(
                Device.revoked_at.is_(None), Device.last_seen_at >= now - ONLINE_WINDOW)) or 0
            total = s.scalar(select(func.count()).select_from(Device)) or 0
            out.devices = {"ONLINE": int(online), "OFFLINE": int(total - online - revoked), "REVOKED": int(revoked)}
            out.deployments = {str(st): int(n) for st, n in s.execute(
                select(Deployment.status, func.count()).group_by(Deployment.status))}
            newest = select(Deployment.id).where(Deployment.status.in_(ROLLOUT_STATES)) \
                .order_by(Deployment.seq.desc()).limit(MAX_ROLLOUTS).subquery()
            for dep_id, target_type, target_name, state, status, n in s.execute(
                    select(DeviceDeployment.deployment_id, Deployment.target_type, Deployment.target_name,
                           Deployment.status, DeviceDeployment.status, func.count())
                    .join(Deployment, Deployment.id == DeviceDeployment.deployment_id)
                    .where(DeviceDeployment.deployment_id.in_(select(newest.c.id)))
                    .group_by(DeviceDeployment.deployment_id, Deployment.target_type, Deployment.target_name,
                              Deployment.status, DeviceDeployment.status)):
                target = f"{str(target_type).lower()}:{target_name}"
                out.rollouts[(str(dep_id), target, str(state), str(status))] = int(n)
            out.nodes = {str(t): int(n) for t, n in s.execute(
                select(ClusterNode.tier, func.count()).group_by(ClusterNode.tier))}
            out.replicas = {str(st): int(n) for st, n in s.execute(
                select(ClusterReplica.status, func.count()).group_by(ClusterReplica.status))}
            out.sessions = {str(st): int(n) for st, n in s.execute(
                select(ClusterSessionRow.status, func.count()).group_by(ClusterSessionRow.status))}
            out.snapshots = int(s.scalar(select(func.count()).select_from(DeviceMetricsRow)) or 0)
            return out
        return self._read(run)


__all__ = ["HISTORY", "MAX_ROLLOUTS", "ROLLOUT_STATES", "FleetRow", "HubGauges", "MetricsStore", "TargetRow"]
