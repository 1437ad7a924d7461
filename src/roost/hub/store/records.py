"""The results of store operations: plain frozen dataclasses, also the REST response schemas."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from roost.hub.contract import DeviceHealth, DeviceStatus, FailurePolicy, PrincipalKind


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    id: int
    name: str


@dataclass(frozen=True)
class EnrollTokenInfo:
    token: str
    expires_at: datetime
    group: str | None = None


@dataclass(frozen=True)
class Enrolment:
    device: str
    credential: str


@dataclass(frozen=True)
class ReportedComponent:
    version: str | None = None
    state: str | None = None


@dataclass(frozen=True)
class DeviceDeploymentInfo:
    deployment_id: str
    status: str
    reason_code: str | None
    message: str | None
    released_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    labels: dict[str, Any]
    groups: list[str]
    created_at: datetime
    last_seen_at: datetime | None
    revoked: bool
    components: dict[str, ReportedComponent]
    status: DeviceStatus
    health: DeviceHealth
    applied_revision: int | None
    desired_revision: int
    deployments: list[DeviceDeploymentInfo] | None = None


@dataclass(frozen=True)
class GroupInfo:
    name: str
    devices: list[str]


@dataclass(frozen=True)
class ArtifactInfo:
    file: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ComponentInfo:
    name: str
    version: str
    artifacts: list[ArtifactInfo]
    created_at: datetime | None = None
    recipe: dict[str, Any] | None = None


@dataclass(frozen=True)
class DeploymentDevice:
    device: str
    status: str
    reason_code: str | None
    message: str | None
    released_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class DeploymentInfo:
    id: str
    target: str
    components: dict[str, str]
    configuration: dict[str, Any]
    failure_policy: str
    max_per_minute: int | None
    abort_failure_percent: int | None
    abort_min_devices: int
    timeout_minutes: int
    created_at: datetime
    status: str
    status_reason: str | None
    revision: int
    counts: dict[str, int]
    devices: list[DeploymentDevice] | None = None
    #: Dependency versions the hub resolved for ``components`` (not listed there).
    dependencies: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeploymentRequest:
    target: str
    components: dict[str, str]
    configuration: dict[str, Any] = field(default_factory=dict)
    failure_policy: str = FailurePolicy.ROLLBACK
    max_per_minute: int | None = None
    abort_failure_percent: int | None = None
    abort_min_devices: int = 1
    timeout_minutes: int = 60


@dataclass(frozen=True)
class ArtifactLocation:
    path: str
    sha256: str
    size: int
    file_name: str
    #: The file itself when it is small (at most INLINE_ARTIFACT_BYTES), read with the access check.
    content: bytes | None = None
