"""ORM tables (SQLAlchemy 2). The migrations in :mod:`roost.hub.migrations` create them.

Times are stored as naive UTC and read back as aware UTC (:class:`UTCDateTime`), the same on
SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime stored without a zone."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Meta(Base):
    """Counters; the row ``revision`` is bumped on every change of any device's desired state."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="admin")
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class EnrollToken(Base):
    __tablename__ = "enroll_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    group_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    expires_at: Mapped[datetime] = mapped_column(nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"), nullable=True)


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    credential_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    labels: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    last_seen_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    #: ``{component: {"version": ..., "state": ...}}`` as last reported.
    reported: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    applied_revision: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: The revision at which this device's desired state last changed (0: never).
    desired_revision: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class Group(Base):
    __tablename__ = "groups"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(nullable=False)


class GroupMember(Base):
    __tablename__ = "group_members"
    group_name: Mapped[str] = mapped_column(ForeignKey("groups.name", ondelete="CASCADE"), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    __table_args__ = (Index("ix_group_members_device", "device_id"),)


class Component(Base):
    __tablename__ = "components"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The recipe in Greengrass JSON form, with the hub-computed ``Digest`` of every artifact.
    recipe: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    created_at: Mapped[datetime] = mapped_column(nullable=False)


class ArtifactFile(Base):
    __tablename__ = "artifacts"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    file_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Deployment(Base):
    __tablename__ = "deployments"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    #: The global revision at which the deployment was created: orders deployments.
    seq: Mapped[int] = mapped_column(Integer, unique=True, nullable=False)
    target_type: Mapped[str] = mapped_column(String(16), nullable=False)
    target_name: Mapped[str] = mapped_column(String(128), nullable=False)
    components: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    #: Versions the hub chose for the components' dependencies (ComponentDependencies), resolved at
    #: creation against the registry: ``{name: version}``, roots not included.
    dependencies: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    configuration: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    failure_policy: Mapped[str] = mapped_column(String(16), nullable=False, default="ROLLBACK")
    max_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    abort_failure_percent: Mapped[int | None] = mapped_column(Integer, nullable=True)
    abort_min_devices: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    timeout_minutes: Mapped[int] = mapped_column(Integer, nullable=False, default=60)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="ACTIVE")
    #: Greengrass' componentUpdatePolicy {action, timeout} and configurationValidationPolicy {timeout}.
    update_policy_action: Mapped[str] = mapped_column(String(32), nullable=False, default="NOTIFY_COMPONENTS")
    update_timeout_seconds: Mapped[int] = mapped_column(Integer, nullable=False, default=60)
    validation_timeout_seconds: Mapped[int] = mapped_column(Integer, nullable=False, default=30)
    status_reason: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: The validation gate's checks (:class:`roost.hub.contract.GateCheck`), overrides with their reason.
    gate: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    __table_args__ = (Index("ix_deployments_target", "target_type", "target_name", "seq"),)


class DeviceDeployment(Base):
    __tablename__ = "device_deployments"
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="QUEUED")
    reason_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    released_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime] = mapped_column(nullable=False)
    __table_args__ = (
        Index("ix_device_deployments_device", "device_id"),
        Index("ix_device_deployments_status", "deployment_id", "status"),
    )


class DeviceReport(Base):
    """Reports already applied, for exactly-once delivery of spooled reports."""

    __tablename__ = "device_reports"
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    report_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(nullable=False)


class SecretVersionRow(Base):
    """One version of a secret; the value sealed with the hub's key (:mod:`roost.sealed`, AES-GCM, the
    associated data being the name and the version id). At most two versions per name are kept:
    the one staged AWSCURRENT and the one staged AWSPREVIOUS."""

    __tablename__ = "secret_versions"
    name: Mapped[str] = mapped_column(String(2048), primary_key=True)
    version_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    #: ``["AWSCURRENT"]`` or ``["AWSPREVIOUS"]``.
    stages: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    binary: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    sealed: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(nullable=False)


class ClusterNode(Base):
    """A device as a cluster node: what its agent reported (capacity, tier, the address of its replicas)."""

    __tablename__ = "cluster_nodes"
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    tier: Mapped[str] = mapped_column(String(16), nullable=False)
    address: Mapped[str] = mapped_column(String(253), nullable=False)
    port_min: Mapped[int] = mapped_column(Integer, nullable=False)
    port_max: Mapped[int] = mapped_column(Integer, nullable=False)
    memory_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    cpu_millis: Mapped[int] = mapped_column(BigInteger, nullable=False)
    accelerators: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    measured: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    reported_at: Mapped[datetime] = mapped_column(nullable=False)


class ClusterServiceType(Base):
    __tablename__ = "cluster_service_types"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    #: The service type in its camelCase wire form (:class:`roost.cluster.service_types.ServiceType`).
    spec: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    updated_at: Mapped[datetime] = mapped_column(nullable=False)


class ClusterReplica(Base):
    """A replica of a service type on a node: one component (``component``, an alias of
    ``base_component`` at ``version`` for slot ``slot``) listening on ``port``."""

    __tablename__ = "cluster_replicas"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    service_type: Mapped[str] = mapped_column(String(63), nullable=False)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), nullable=False)
    tier: Mapped[str] = mapped_column(String(16), nullable=False)
    component: Mapped[str] = mapped_column(String(128), nullable=False)
    base_component: Mapped[str] = mapped_column(String(128), nullable=False)
    version: Mapped[str] = mapped_column(String(64), nullable=False)
    slot: Mapped[int] = mapped_column(Integer, nullable=False)
    port: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    capacity: Mapped[int] = mapped_column(Integer, nullable=False)
    #: Its ACTIVE sessions, kept in step with the session rows (what a free slot is found by).
    active_sessions: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    memory_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    cpu_millis: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    ready_at: Mapped[datetime | None] = mapped_column(nullable=True)
    idle_since: Mapped[datetime | None] = mapped_column(nullable=True)
    reason: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    __table_args__ = (Index("ix_cluster_replicas_device", "device_id", "status"),
                      Index("ix_cluster_replicas_type", "service_type", "status"))


class ClusterSessionRow(Base):
    __tablename__ = "cluster_sessions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    service_type: Mapped[str] = mapped_column(String(63), nullable=False)
    client_id: Mapped[str] = mapped_column(String(128), nullable=False)
    replica_id: Mapped[str | None] = mapped_column(ForeignKey("cluster_replicas.id", ondelete="SET NULL"),
                                                   nullable=True)
    node: Mapped[str] = mapped_column(String(128), nullable=False)
    tier: Mapped[str] = mapped_column(String(16), nullable=False)
    endpoint: Mapped[str] = mapped_column(String(400), nullable=False)
    port: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    legacy: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    connected: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    end_reason: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_activity_at: Mapped[datetime | None] = mapped_column(nullable=True)
    __table_args__ = (Index("ix_cluster_sessions_replica", "replica_id", "status"),
                      Index("ix_cluster_sessions_status", "status", "created_at"))


class DeviceMetricsRow(Base):
    """The latest metrics snapshot a device sent (:class:`roost.hub.contract.MetricsSnapshot` as JSON)."""

    __tablename__ = "device_metrics"
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(nullable=False)
    endpoint: Mapped[str | None] = mapped_column(String(261), nullable=True)
    snapshot: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    #: The snapshot's numbers pre-formatted for /metrics/fleet (roost.observe.fleet.snapshot_lines).
    lines: Mapped[str] = mapped_column(Text, nullable=False, default="")


class DeviceMetricSample(Base):
    """A device's history: at most one sample a minute, pruned after an hour (roost.hub.store.metrics)."""

    __tablename__ = "device_metric_samples"
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    minute: Mapped[datetime] = mapped_column(primary_key=True)
    values: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    models: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
class ProvisionRegistration(Base):
    """One run of registering (``add``), upgrading or uninstalling a device over SSH, with its steps."""

    __tablename__ = "provision_registrations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    device_name: Mapped[str] = mapped_column(String(128), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    target: Mapped[str] = mapped_column(String(300), nullable=False)
    become: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    steps: Mapped[list[Any]] = mapped_column(JSON, nullable=False)
    labels: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    host_key_fingerprint: Mapped[str | None] = mapped_column(String(128), nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str | None] = mapped_column(String(4000), nullable=True)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    updated_at: Mapped[datetime] = mapped_column(nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    __table_args__ = (Index("ix_provision_registrations_device", "device_name", "created_at"),)


class SshHostKey(Base):
    """The host key pinned for one ``host:port`` (trust on first use; re-pinned explicitly)."""

    __tablename__ = "ssh_host_keys"
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    port: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(16384), nullable=False)
    fingerprint: Mapped[str] = mapped_column(String(128), nullable=False)
    pinned_at: Mapped[datetime] = mapped_column(nullable=False)


class ComponentValidation(Base):
    """A model version's validation report (:class:`roost.hub.contract.learn.ModelValidation`)."""

    __tablename__ = "component_validations"
    __table_args__ = (ForeignKeyConstraint(["name", "version"], ["components.name", "components.version"],
                                           ondelete="CASCADE"),)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    report: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    updated_at: Mapped[datetime] = mapped_column(nullable=False)


class ModelBenchmark(Base):
    """The latest latency a device measured for a component version, under the device's class."""

    __tablename__ = "model_benchmarks"
    device_class: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    latency_us: Mapped[float] = mapped_column(Float, nullable=False)
    calls: Mapped[int] = mapped_column(Integer, nullable=False)
    engine: Mapped[str] = mapped_column(String(64), nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(nullable=False)


class LearnJobRow(Base):
    """A federated learning job (:class:`roost.hub.contract.federated.LearnJob`): its spec, state and rounds."""

    __tablename__ = "learn_jobs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[str] = mapped_column(String(134), nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(nullable=False)
    devices: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    result: Mapped[dict[str, Any]] = mapped_column(nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    updated_at: Mapped[datetime] = mapped_column(nullable=False)
