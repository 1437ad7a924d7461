"""The edge cluster's records: nodes, service types, replicas and sessions, and admission itself.

Admission is one write transaction (:meth:`ClusterStore.admit`): with every node row locked first
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's single writer serialises it anyway), it either
books a free session slot on an existing replica (warm), or places a new replica on the best node
(:mod:`roost.cluster.placement`) and, in the same transaction, makes the node's *replicas
deployment*: a hub deployment to the target ``replicas:NODE`` that lists every live replica on
that node. Two admissions can therefore never book the same capacity twice, and the deployment a
device receives always matches the replica rows.

A replica is a component. Several replicas of one service type can run on one node, and an agent
runs one instance of a component name, so each replica runs an *alias* of the service's component:
``<component>.r<slot>`` at the same version, registered once per slot with the same recipe
(``ComponentName`` changed) and hard links to the same artifact files (digest-checked by the
device like any other).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from roost.cluster import placement
from roost.cluster.addresses import url_host
from roost.cluster.errors import (
    ClusterFullError,
    NodeConflictError,
    ServiceTypeNotFoundError,
    UnschedulableError,
)
from roost.cluster.placement import NodeView, Tier
from roost.cluster.service_types import SERVICE_TYPE_NAME, ServiceType, parse_service_type
from roost.hub.contract import FAILURE_STATUSES, ComponentUpdatePolicy, DeploymentCreate, FailurePolicy
from roost.hub.contract.cluster import (
    ClusterNode,
    ClusterReplica,
    ClusterSession,
    NodeCapacity,
    NodeReport,
    ReplicaStatus,
    SessionStatus,
)
from roost.hub.errors import UnprocessableError
from roost.hub.models import (
    ArtifactFile,
    ClusterServiceType,
    ClusterSessionRow,
    Component,
    Deployment,
    Device,
    DeviceDeployment,
)
from roost.hub.models import ClusterNode as NodeRow
from roost.hub.models import (
    ClusterReplica as ReplicaRow,
)
from roost.hub.store.cluster_sessions import ClusterSessionStore, session_info, tier_of
from roost.hub.store.deployments import REPLICAS_TARGET, DeploymentStore
from roost.hub.store.fleet import ONLINE_WINDOW
from roost.recipe import sort_versions

logger = logging.getLogger(__name__)

#: Replica states that hold capacity on their node (and are in its replicas deployment).
LIVE = (ReplicaStatus.STARTING, ReplicaStatus.READY)
#: Ended sessions kept for listing; older ones are pruned by the monitor.
ENDED_KEPT = 10_000


@dataclass(frozen=True)
class Admitted:
    """What one admission booked."""

    session: ClusterSession
    replica: str
    address: str
    port: int
    #: A slot on an existing replica (True) or a new replica (False).
    warm: bool
    replica_status: ReplicaStatus


@dataclass(frozen=True)
class ReplicaProbe:
    """What the monitor needs to look after one replica."""

    id: str
    service_type: str
    node: str
    address: str
    port: int
    status: ReplicaStatus
    component: str
    created_at: datetime
    idle_since: datetime | None
    #: The component's state as its node last reported it (None: not reported yet).
    reported_state: str | None
    #: Active sessions: id -> (connected, created_at).
    sessions: dict[str, tuple[bool, datetime]]


class _Slot(NamedTuple):
    """A replica a session is booked on (what a booking needs of it)."""

    id: str
    port: int
    tier: str
    status: str
    node: str
    address: str


def alias_name(component: str, slot: int) -> str:
    """The component name a replica in ``slot`` runs (``com.roost.ClusterScalar.r2``)."""
    return f"{component}.r{slot}"


class ClusterStore(ClusterSessionStore, DeploymentStore):
    """Nodes, service types, admission, replicas and sessions (see the module docstring)."""

    #: The hub's session-token signing key (:class:`roost.cluster.tokens.TokenSigner`); the app sets it.
    cluster_key_path: Path | None = None

    @property
    def _parsed_types(self) -> dict[str, tuple[dict[str, Any], ServiceType]]:
        """Service types parsed from their stored form, by name, with that form (a changed row is parsed
        again)."""
        cache: dict[str, tuple[dict[str, Any], ServiceType]] | None = self.__dict__.get("_service_type_cache")
        if cache is None:
            cache = self.__dict__["_service_type_cache"] = {}
        return cache

    # -- nodes -------------------------------------------------------------------------------------

    def report_node(self, device_id: int, report: NodeReport) -> ClusterNode:
        """Record what an agent says about itself as a node; its labels are merged into the device's."""
        if report.port_min > report.port_max:
            raise UnprocessableError(f"port range {report.port_min}-{report.port_max} is empty",
                                     code="INVALID_ARGUMENT")
        now = self.clock()

        def run(s: Session) -> ClusterNode:
            device = s.get(Device, device_id)
            if device is None:
                raise NodeConflictError(f"device {device_id} is not enrolled")
            device.labels = {**(device.labels or {}), **report.labels}
            row = s.get(NodeRow, device_id, with_for_update=True)
            if row is None:
                row = NodeRow(device_id=device_id)
                s.add(row)
            row.tier = report.tier
            row.address = report.address
            row.port_min, row.port_max = report.port_min, report.port_max
            row.memory_bytes = report.allocatable.memory_bytes
            row.cpu_millis = report.allocatable.cpu_millis
            row.accelerators = dict(report.allocatable.accelerators)
            row.measured = report.measured.model_dump()
            row.reported_at = now
            s.flush()
            return self._nodes(s, now, [device_id])[0]
        node = self._write(run)
        logger.info("node %s: %s tier, memory %d, cpu %dm, labels %s", node.name, node.tier,
                    node.allocatable.memory_bytes, node.allocatable.cpu_millis, node.labels)
        return node

    def list_nodes(self) -> list[ClusterNode]:
        now = self.clock()
        return self._read(lambda s: self._nodes(s, now, None))

    def _nodes(self, s: Session, now: datetime, device_ids: Sequence[int] | None) -> list[ClusterNode]:
        query = select(NodeRow, Device).join(Device, Device.id == NodeRow.device_id).order_by(Device.name)
        if device_ids is not None:
            query = query.where(NodeRow.device_id.in_(list(device_ids)))
        rows = s.execute(query).all()
        used = self._requested(s)
        sessions = dict(s.execute(select(ReplicaRow.device_id, func.sum(ReplicaRow.active_sessions))
                                  .where(ReplicaRow.status.in_(LIVE)).group_by(ReplicaRow.device_id)).all())
        out = []
        for node, device in rows:
            memory, cpu, count = used.get(node.device_id, (0, 0, 0))
            out.append(ClusterNode(
                name=device.name, tier=tier_of(node.tier), labels=dict(device.labels or {}), address=node.address,
                online=_online(device, now),
                allocatable=NodeCapacity(memory_bytes=node.memory_bytes, cpu_millis=node.cpu_millis,
                                         accelerators=dict(node.accelerators or {})),
                measured=NodeCapacity.model_validate(node.measured or {}),
                requested=NodeCapacity(memory_bytes=memory, cpu_millis=cpu), replicas=count,
                sessions=int(sessions.get(node.device_id) or 0), reported_at=node.reported_at))
        return out

    def _requested(self, s: Session) -> dict[int, tuple[int, int, int]]:
        """Per node: the memory and CPU requests of its live replicas, and their count."""
        rows = s.execute(select(ReplicaRow.device_id, func.sum(ReplicaRow.memory_bytes),
                                func.sum(ReplicaRow.cpu_millis), func.count(ReplicaRow.id))
                         .where(ReplicaRow.status.in_(LIVE)).group_by(ReplicaRow.device_id)).all()
        return {int(d): (int(m or 0), int(c or 0), int(n)) for d, m, c, n in rows}

    # -- service types -----------------------------------------------------------------------------

    def apply_service_type(self, spec: ServiceType) -> ServiceType:
        """Create or replace a service type. Its component must be published (``UNKNOWN_COMPONENT``)."""
        now = self.clock()

        def run(s: Session) -> ServiceType:
            self._component_version(s, spec)
            row = s.get(ClusterServiceType, spec.name, with_for_update=True)
            if row is None:
                s.add(ClusterServiceType(name=spec.name, spec=spec.to_wire(), updated_at=now))
            else:
                row.spec = spec.to_wire()
                row.updated_at = now
            return spec
        out = self._write(run)
        logger.info("service type %s applied (%s)", spec.name, spec.component)
        return out

    def list_service_types(self) -> list[ServiceType]:
        def run(s: Session) -> list[ServiceType]:
            return [parse_service_type(r.spec, f"stored service type {r.name}")
                    for r in s.scalars(select(ClusterServiceType).order_by(ClusterServiceType.name))]
        return self._read(run)

    def get_service_type(self, name: str) -> ServiceType:
        return self._read(lambda s: self._service_type(s, name))

    def delete_service_type(self, name: str) -> None:
        """Remove a service type; refused while it has live replicas (``NODE_CONFLICT``)."""
        def run(s: Session) -> None:
            self._service_type(s, name)
            live = s.scalar(select(func.count(ReplicaRow.id)).where(ReplicaRow.service_type == name,
                                                                     ReplicaRow.status.in_(LIVE)))
            if live:
                raise NodeConflictError(f"service type {name} has {live} live replica(s); end its sessions first")
            s.execute(delete(ClusterServiceType).where(ClusterServiceType.name == name))
        self._write(run)

    def _service_type(self, s: Session, name: str) -> ServiceType:
        # A name no service type can have (a DNS label) is not looked up: PostgreSQL refuses NUL in text.
        row = s.execute(select(ClusterServiceType.spec).where(ClusterServiceType.name == name)).first() \
            if SERVICE_TYPE_NAME.fullmatch(name) else None
        if row is None:
            known = list(s.scalars(select(ClusterServiceType.name).order_by(ClusterServiceType.name).limit(20)))
            raise ServiceTypeNotFoundError(f"no service type {name!r} (known: {', '.join(known) or 'none'}; "
                                           "`roost cluster service-type apply`)")
        cached = self._parsed_types.get(name)
        if cached is not None and cached[0] == row.spec:
            return cached[1]
        spec = parse_service_type(row.spec, f"stored service type {name}")
        if len(self._parsed_types) > 1000:
            self._parsed_types.clear()
        self._parsed_types[name] = (dict(row.spec), spec)
        return spec

    def _component_version(self, s: Session, spec: ServiceType) -> str:
        versions = list(s.scalars(select(Component.version).where(Component.name == spec.component)))
        if spec.version is not None:
            if spec.version not in versions:
                raise UnprocessableError(f"service type {spec.name}: version {spec.version} of component "
                                         f"{spec.component} is not published", code="UNKNOWN_COMPONENT")
            return spec.version
        if not versions:
            raise UnprocessableError(f"service type {spec.name}: component {spec.component} is not published",
                                     code="UNKNOWN_COMPONENT")
        return sort_versions(versions)[-1]

    # -- admission ---------------------------------------------------------------------------------

    def admit(self, type_name: str, client_id: str, tier: Tier | None, public_key: str, *,
              legacy: bool = False) -> Admitted:
        """Book a session: a free slot on a replica of the type, else a new replica on the best node;
        the edge first, then the centre (unless ``tier`` names one). See the module docstring."""
        now = self.clock()
        session_id = str(uuid.uuid4())

        def run(s: Session) -> Admitted:
            self._take_turn(s)
            spec = self._service_type(s, type_name)
            tiers: tuple[Tier, ...] = (tier,) if tier is not None else placement.TIERS
            views: list[NodeView] = []
            for candidate_tier in tiers:
                warm = self._free_slot(s, spec, candidate_tier)
                if warm is not None:
                    return self._book(s, spec, warm, session_id, client_id, legacy, now, warm=True)
                views = self._views(s, candidate_tier, now)
                live = s.scalar(select(func.count(ReplicaRow.id)).where(
                    ReplicaRow.service_type == spec.name, ReplicaRow.tier == candidate_tier,
                    ReplicaRow.status.in_(LIVE))) or 0
                if live >= spec.max_replicas:
                    continue
                for node in placement.candidates(spec, views, candidate_tier):
                    replica = self._place(s, spec, node, candidate_tier, public_key, now)
                    if replica is not None:
                        return self._book(s, spec, replica, session_id, client_id, legacy, now, warm=False)
            every = [v for t in placement.TIERS for v in self._views(s, t, now)]
            reason = placement.explain_unschedulable(spec, every)
            if reason is not None:
                raise UnschedulableError(f"service type {spec.name} cannot run anywhere: {reason}")
            raise ClusterFullError(f"no node of the {' or '.join(tiers)} tier has room for a replica of "
                                   f"{spec.name} now (or its maxReplicas {spec.max_replicas} is reached); retry later")
        admitted = self._write(run)
        logger.info("session %s (%s, client %s): %s replica %s on %s", admitted.session.id, type_name, client_id,
                    "warm" if admitted.warm else "new", admitted.replica, admitted.session.node)
        return admitted

    def keep_minimum(self, type_name: str, public_key: str) -> str | None:
        """Place one replica of the type at the edge (no session) if fewer than its ``minReplicas`` live
        there, so the next client finds a warm slot; the new replica's id, else None (enough, or no room)."""
        now = self.clock()

        def run(s: Session) -> str | None:
            self._take_turn(s)
            spec = self._service_type(s, type_name)
            live = s.scalar(select(func.count(ReplicaRow.id)).where(
                ReplicaRow.service_type == spec.name, ReplicaRow.tier == "edge", ReplicaRow.status.in_(LIVE))) or 0
            if live >= spec.min_replicas:
                return None
            for node in placement.candidates(spec, self._views(s, "edge", now), "edge"):
                replica = self._place(s, spec, node, "edge", public_key, now)
                if replica is not None:
                    return replica.id
            return None
        placed = self._write(run)
        if placed is not None:
            logger.info("replica %s of %s placed to keep minReplicas", placed, type_name)
        return placed

    def _take_turn(self, s: Session) -> None:
        """Admissions take turns: on PostgreSQL every node row is locked before anything is read, so what
        follows sees every earlier admission's bookings (SQLite's one writer, BEGIN IMMEDIATE, already
        serialises write transactions)."""
        if not self.db.is_sqlite:
            s.execute(select(NodeRow.device_id).order_by(NodeRow.device_id).with_for_update()).all()

    def _free_slot(self, s: Session, spec: ServiceType, tier: Tier) -> _Slot | None:
        """The replica of ``spec`` in ``tier`` with a free slot: ready before starting, fullest first."""
        row = s.execute(
            select(ReplicaRow.id, ReplicaRow.port, ReplicaRow.tier, ReplicaRow.status, Device.name, NodeRow.address)
            .join(Device, Device.id == ReplicaRow.device_id).join(NodeRow, NodeRow.device_id == ReplicaRow.device_id)
            .where(ReplicaRow.service_type == spec.name, ReplicaRow.tier == tier, ReplicaRow.status.in_(LIVE),
                   ReplicaRow.active_sessions < ReplicaRow.capacity)
            .order_by((ReplicaRow.status == ReplicaStatus.READY).desc(), ReplicaRow.active_sessions.desc(),
                      ReplicaRow.created_at, ReplicaRow.id).limit(1)).first()
        return _Slot(*row) if row is not None else None

    def _views(self, s: Session, tier: Tier, now: datetime) -> list[NodeView]:
        rows = s.execute(select(NodeRow.device_id, Device.name, Device.labels, Device.last_seen_at,
                                NodeRow.memory_bytes, NodeRow.cpu_millis, NodeRow.accelerators)
                         .join(Device, Device.id == NodeRow.device_id)
                         .where(NodeRow.tier == tier, Device.revoked_at.is_(None)).order_by(NodeRow.device_id)).all()
        used = self._requested(s)
        out = []
        for device_id, name, labels, last_seen, memory_total, cpu_total, accel in rows:
            memory, cpu, _count = used.get(device_id, (0, 0, 0))
            out.append(NodeView(name=name, tier=tier, labels=dict(labels or {}), memory_bytes=memory_total,
                                cpu_millis=cpu_total, requested_memory=memory, requested_cpu=cpu,
                                online=last_seen is not None and now - last_seen <= ONLINE_WINDOW,
                                accelerators=dict(accel or {})))
        return out

    def _place(self, s: Session, spec: ServiceType, view: NodeView, tier: Tier, public_key: str,
               now: datetime) -> _Slot | None:
        """A new replica of ``spec`` on ``view``'s node (None when the node has no free port)."""
        device = self._device(s, view.name)
        node = s.get(NodeRow, device.id)
        assert node is not None
        live = list(s.scalars(select(ReplicaRow).where(ReplicaRow.device_id == device.id,
                                                        ReplicaRow.status.in_(LIVE))))
        ports = {r.port for r in live}
        port = next((p for p in range(node.port_min, node.port_max + 1) if p not in ports), None)
        if port is None:
            return None
        version = self._component_version(s, spec)
        slots = {r.slot for r in live if r.base_component == spec.component}
        slot = next(i for i in range(1, len(slots) + 2) if i not in slots)
        component = self._ensure_alias(s, spec.component, version, slot)
        replica = ReplicaRow(id=str(uuid.uuid4()), service_type=spec.name, device_id=device.id, tier=tier,
                             component=component, base_component=spec.component, version=version, slot=slot,
                             port=port, status=ReplicaStatus.STARTING, capacity=spec.sessions_per_replica,
                             memory_bytes=spec.memory_request, cpu_millis=spec.cpu_request, created_at=now,
                             idle_since=now)
        s.add(replica)
        s.flush()
        self._deploy_node(s, device, node, public_key, now)
        return _Slot(replica.id, port, tier, ReplicaStatus.STARTING, device.name, node.address)

    def _ensure_alias(self, s: Session, component: str, version: str, slot: int) -> str:
        """Register ``<component>.r<slot>`` at ``version`` (same recipe and artifact files) once."""
        name = alias_name(component, slot)
        if s.get(Component, (name, version)) is not None:
            return name
        base = s.get(Component, (component, version))
        if base is None:
            raise UnprocessableError(f"version {version} of component {component} is not published",
                                     code="UNKNOWN_COMPONENT")
        recipe = dict(base.recipe)
        for key in list(recipe):
            if key.lower() == "componentname":
                recipe[key] = name
        files = list(s.scalars(select(ArtifactFile).where(ArtifactFile.name == component,
                                                          ArtifactFile.version == version)))
        self.artifacts.link_version(component, version, name)
        s.add(Component(name=name, version=version, recipe=recipe, created_at=self.clock()))
        for f in files:
            s.add(ArtifactFile(name=name, version=version, file_name=f.file_name, sha256=f.sha256, size=f.size))
        s.flush()
        return name

    def _deploy_node(self, s: Session, device: Device, node: NodeRow, public_key: str, now: datetime) -> None:
        """A new ``replicas:NODE`` deployment listing every live replica on the node."""
        live = list(s.scalars(select(ReplicaRow).where(ReplicaRow.device_id == device.id,
                                                        ReplicaRow.status.in_(LIVE)).order_by(ReplicaRow.slot)))
        types = {r.service_type: self._service_type(s, r.service_type) for r in live}
        configuration: dict[str, Any] = {}
        for r in live:
            spec = types[r.service_type]
            configuration[r.component] = {"MERGE": {
                "port": r.port, "host": node.address, "replicaId": r.id, "publicKey": public_key,
                "sessionsPerReplica": r.capacity, "window": spec.window,
                "idleTimeoutSeconds": spec.idle_timeout_seconds}}
        req = DeploymentCreate.model_validate({
            "target": f"{REPLICAS_TARGET}:{device.name}", "components": {r.component: r.version for r in live},
            "configuration": configuration, "failure_policy": FailurePolicy.ROLLBACK, "timeout_minutes": 10,
            "component_update_policy": ComponentUpdatePolicy(action="SKIP_NOTIFY_COMPONENTS")})
        self._create_deployment(s, req, REPLICAS_TARGET, device.name, str(uuid.uuid4()), now, info=False)

    def _book(self, s: Session, spec: ServiceType, replica: _Slot, session_id: str, client_id: str,
              legacy: bool, now: datetime, *, warm: bool) -> Admitted:
        node_name, address = replica.node, replica.address
        endpoint = f"ws://{url_host(address)}:{replica.port}/v1/stream"
        row = ClusterSessionRow(id=session_id, service_type=spec.name, client_id=client_id, replica_id=replica.id,
                                node=node_name, tier=replica.tier, endpoint=endpoint, port=replica.port,
                                status=SessionStatus.ACTIVE, legacy=legacy, connected=False, created_at=now)
        s.execute(insert(ClusterSessionRow).values(
            id=row.id, service_type=row.service_type, client_id=row.client_id, replica_id=row.replica_id,
            node=row.node, tier=row.tier, endpoint=row.endpoint, port=row.port, status=row.status, legacy=row.legacy,
            connected=False, created_at=now))
        # In SQL, not from the loaded row: an ending session may decrement it meanwhile (not under the lock).
        s.execute(update(ReplicaRow).where(ReplicaRow.id == replica.id)
                  .values(active_sessions=ReplicaRow.active_sessions + 1, idle_since=None))
        return Admitted(session=session_info(row, warm=warm), replica=replica.id, address=address,
                        port=replica.port, warm=warm, replica_status=ReplicaStatus(replica.status))

    # -- replicas ----------------------------------------------------------------------------------

    def list_replicas(self) -> list[ClusterReplica]:
        def run(s: Session) -> list[ClusterReplica]:
            rows = s.execute(select(ReplicaRow, Device.name).join(Device, Device.id == ReplicaRow.device_id)
                             .order_by(ReplicaRow.service_type, Device.name, ReplicaRow.slot)).all()
            return [ClusterReplica(id=r.id, type=r.service_type, node=name, tier=tier_of(r.tier), component=r.component,
                                   version=r.version, port=r.port, status=ReplicaStatus(r.status),
                                   sessions=r.active_sessions, capacity=r.capacity, created_at=r.created_at,
                                   ready_at=r.ready_at, idle_since=r.idle_since, reason=r.reason)
                    for r, name in rows]
        return self._read(run)

    def probes(self) -> list[ReplicaProbe]:
        """Every replica that is not gone, with what the monitor needs."""
        def run(s: Session) -> list[ReplicaProbe]:
            rows = s.execute(select(ReplicaRow, Device, NodeRow.address)
                             .join(Device, Device.id == ReplicaRow.device_id)
                             .join(NodeRow, NodeRow.device_id == ReplicaRow.device_id)
                             .where(ReplicaRow.status.in_(LIVE))).all()
            sessions: dict[str, dict[str, tuple[bool, datetime]]] = {}
            for sid, rid, connected, created in s.execute(
                    select(ClusterSessionRow.id, ClusterSessionRow.replica_id, ClusterSessionRow.connected,
                           ClusterSessionRow.created_at).where(ClusterSessionRow.status == SessionStatus.ACTIVE)):
                if rid is not None:
                    sessions.setdefault(str(rid), {})[str(sid)] = (bool(connected), created)
            out = []
            for r, device, address in rows:
                state = (device.reported or {}).get(r.component)
                out.append(ReplicaProbe(id=r.id, service_type=r.service_type, node=device.name, address=str(address),
                                        port=r.port, status=ReplicaStatus(r.status), component=r.component,
                                        created_at=r.created_at, idle_since=r.idle_since,
                                        reported_state=state.get("state") if isinstance(state, dict) else None,
                                        sessions=sessions.get(r.id, {})))
            return out
        return self._read(run)

    def replica_health(self, replica_id: str) -> tuple[ReplicaStatus | None, str | None, str | None]:
        """A replica's status (None: gone), its component's reported state, and why the newest
        deployment of its node's replicas failed (None unless it did)."""
        def run(s: Session) -> tuple[ReplicaStatus | None, str | None, str | None]:
            replica = s.get(ReplicaRow, replica_id)
            if replica is None:
                return None, None, None
            device = s.get(Device, replica.device_id)
            reported = (device.reported or {}).get(replica.component) if device is not None else None
            state = reported.get("state") if isinstance(reported, dict) else None
            failure = None
            if device is not None:
                row = s.execute(select(DeviceDeployment.status, DeviceDeployment.reason_code, DeviceDeployment.message)
                                .join(Deployment, Deployment.id == DeviceDeployment.deployment_id)
                                .where(Deployment.target_type == REPLICAS_TARGET, Deployment.target_name == device.name,
                                       DeviceDeployment.device_id == device.id)
                                .order_by(Deployment.seq.desc()).limit(1)).first()
                if row is not None and row[0] in FAILURE_STATUSES:
                    failure = f"the node's replicas deployment {row[0]} ({row[1]}): {row[2] or 'no message'}"
            return ReplicaStatus(replica.status), state, failure
        return self._read(run)

    def replica_ready(self, replica_id: str) -> None:
        now = self.clock()

        def run(s: Session) -> None:
            s.execute(update(ReplicaRow).where(ReplicaRow.id == replica_id, ReplicaRow.status == ReplicaStatus.STARTING)
                      .values(status=ReplicaStatus.READY, ready_at=now))
        self._write(run)

    def stop_replica(self, replica_id: str, status: ReplicaStatus, reason: str, public_key: str) -> list[str]:
        """Take a replica out of its node's deployment: FAILED (it died or never became ready) or
        STOPPING (idle, scaled down). Its active sessions end with ``reason``; their ids are returned."""
        now = self.clock()

        def run(s: Session) -> list[str]:
            replica = s.get(ReplicaRow, replica_id, with_for_update=True)
            if replica is None or replica.status not in LIVE:
                return []
            replica.status = status
            replica.reason = reason[:2000]
            replica.active_sessions = 0
            ended = list(s.scalars(select(ClusterSessionRow.id).where(
                ClusterSessionRow.replica_id == replica_id, ClusterSessionRow.status == SessionStatus.ACTIVE)))
            s.execute(update(ClusterSessionRow).where(ClusterSessionRow.id.in_(ended))
                      .values(status=SessionStatus.ENDED, end_reason=reason[:2000], ended_at=now))
            device = s.get(Device, replica.device_id)
            node = s.get(NodeRow, replica.device_id)
            s.flush()
            if device is not None and node is not None:
                self._deploy_node(s, device, node, public_key, now)
            return ended
        ended = self._write(run)
        logger.info("replica %s %s: %s", replica_id, status.value.lower(), reason)
        return ended

    def forget_stopped_replicas(self) -> int:
        """Delete stopped and failed replicas whose node no longer reports their component (it is gone)."""
        def run(s: Session) -> int:
            rows = s.execute(select(ReplicaRow.id, ReplicaRow.component, Device.reported)
                             .join(Device, Device.id == ReplicaRow.device_id)
                             .where(ReplicaRow.status.not_in(LIVE))).all()
            gone = [rid for rid, component, reported in rows if component not in (reported or {})]
            if gone:
                s.execute(delete(ReplicaRow).where(ReplicaRow.id.in_(gone)))
            return len(gone)
        return self._write(run)

    def forget_replicas(self, older_than: timedelta) -> int:
        """Delete stopped and failed replicas older than ``older_than``, and ended sessions beyond the kept number."""
        cutoff = self.clock() - older_than

        def run(s: Session) -> int:
            gone = s.execute(delete(ReplicaRow).where(ReplicaRow.status.not_in(LIVE), ReplicaRow.created_at < cutoff))
            keep = select(ClusterSessionRow.id).where(ClusterSessionRow.status == SessionStatus.ENDED) \
                .order_by(ClusterSessionRow.ended_at.desc()).limit(ENDED_KEPT)
            s.execute(delete(ClusterSessionRow).where(ClusterSessionRow.status == SessionStatus.ENDED,
                                                      ClusterSessionRow.id.not_in(keep)))
            return int(getattr(gone, "rowcount", 0) or 0)
        return self._write(run)

    # -- sessions the hub does not place ---------------------------------------------------------

    def record_session(self, type_name: str, client_id: str, tier: Tier, node: str, endpoint: str, port: int,
                       legacy: bool) -> ClusterSession:
        """A session on a replica the hub does not place itself (the Kubernetes backend's)."""
        now = self.clock()

        def run(s: Session) -> ClusterSession:
            self._service_type(s, type_name)
            row = ClusterSessionRow(id=str(uuid.uuid4()), service_type=type_name, client_id=client_id, replica_id=None,
                                    node=node[:128], tier=tier, endpoint=endpoint[:400], port=port,
                                    status=SessionStatus.ACTIVE, legacy=legacy, connected=False, created_at=now)
            s.add(row)
            s.flush()
            return session_info(row, warm=False)
        return self._write(run)


def _online(device: Device, now: datetime) -> bool:
    return device.revoked_at is None and device.last_seen_at is not None and now - device.last_seen_at <= ONLINE_WINDOW


__all__ = ["ENDED_KEPT", "LIVE", "Admitted", "ClusterStore", "ReplicaProbe", "alias_name"]
