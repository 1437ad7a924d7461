"""The hub's wire records: every request body and every response body of ``/v1``, declared once.

The server uses them as ``response_model`` (and as request bodies); the client parses the hub's
answers with the same classes. Responses ignore fields they do not know (a newer hub may add some);
request bodies ignore unknown fields too. The store (:mod:`roost.hub.store`) returns these very
models (and takes :class:`DeploymentCreate`), so the REST layer serialises its results as they are.

=====================================  ======================================  ======================
Route                                  Request                                 Response
=====================================  ======================================  ======================
``POST /v1/enroll-tokens``             :class:`EnrollTokenCreate`              :class:`EnrollToken`
``POST /v1/enroll``                    :class:`EnrollRequest`                  :class:`Enrollment`
``GET /v1/devices[/{name}]``                                                   :class:`Device`
``PUT /v1/devices/{name}/labels``      :class:`LabelsUpdate`                   :class:`Device`
``POST /v1/groups/{name}/members``     :class:`MembersAdd`                     :class:`Group`
``POST|GET /v1/components...``         multipart (recipe + artifacts)          :class:`Component`
``POST|GET /v1/deployments...``        :class:`DeploymentCreate`               :class:`Deployment`
``GET /v1/device/desired``                                                     :class:`Desired`
``POST /v1/device/reports``            :class:`ReportsIn`                      :class:`ReportResult`
=====================================  ======================================  ======================
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from roost.hub.contract.learn import GateCheck, ModelValidation
from roost.hub.contract.vocabulary import (
    DeploymentStatus,
    DeviceDeploymentStatus,
    DeviceHealth,
    DeviceStatus,
    FailurePolicy,
)

INT32 = 2**31 - 1
Label = str | int | float | bool
#: Free text stored in the database: no NUL (PostgreSQL refuses it).
_TEXT = r"^[^\x00]*$"
_ID = r"^[^\x00-\x1f]+$"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- request bodies --------------------------------------------------------------------------------
class EnrollTokenCreate(_Wire):
    group: str | None = Field(None, max_length=128, description="Group the device joins when it enrols.")
    ttl_seconds: int = Field(3600, ge=1, le=365 * 86400)


class EnrollRequest(_Wire):
    token: str = Field(..., max_length=256, pattern=_TEXT)
    name: str = Field(..., max_length=128)
    labels: dict[str, Label] = Field(default_factory=dict, max_length=128)


class LabelsUpdate(_Wire):
    labels: dict[str, Label] = Field(default_factory=dict, max_length=128)


class MembersAdd(_Wire):
    devices: list[str] = Field(..., max_length=10000)


ConfigUpdate = dict[str, Any]


class ComponentUpdatePolicy(_Wire):
    """Greengrass' ``componentUpdatePolicy``: tell the components subscribed to component updates before
    the device applies a revision (they may defer it) or not; ``timeout_seconds`` for their answers."""

    action: Literal["NOTIFY_COMPONENTS", "SKIP_NOTIFY_COMPONENTS"] = "NOTIFY_COMPONENTS"
    timeout_seconds: int = Field(default=60, ge=1, le=86400)


class ConfigurationValidationPolicy(_Wire):
    """Greengrass' ``configurationValidationPolicy``: how long a component may take to validate its new
    configuration (SubscribeToValidateConfigurationUpdates)."""

    timeout_seconds: int = Field(default=30, ge=1, le=86400)


class DeploymentCreate(_Wire):
    target: str = Field(..., max_length=140, description="device:NAME or group:NAME")
    components: dict[str, str] = Field(default_factory=dict, max_length=1000,
                                       description="{name: version}; omitted components are removed")
    configuration: dict[str, ConfigUpdate] = Field(default_factory=dict,
                                                   description='{name: {"MERGE": {...}, "RESET": ["/ptr"]}}')
    failure_policy: FailurePolicy = FailurePolicy.ROLLBACK
    max_per_minute: int | None = Field(None, ge=1, le=INT32)
    abort_failure_percent: int | None = Field(None, ge=0, le=100)
    abort_min_devices: int = Field(1, ge=1, le=INT32)
    timeout_minutes: int = Field(60, ge=1, le=525600)
    create_group: bool = Field(False, description="For a group:NAME target: create the group if it does not "
                                                  "exist (else an unknown group is refused, GROUP_NOT_FOUND)")
    component_update_policy: ComponentUpdatePolicy = Field(
        default_factory=lambda: ComponentUpdatePolicy(),
        description="Tell the components subscribed to component updates first (they may defer), as Greengrass")
    configuration_validation_policy: ConfigurationValidationPolicy = Field(
        default_factory=lambda: ConfigurationValidationPolicy(),
        description="How long a component subscribed to configuration validation may take to answer")
    max_regression: float | None = Field(
        None, description="The validation gate: the largest relative loss of a model version's metric against the "
                          "baseline (a fraction; default 0.01 for versions that carry a validation report)")
    baseline: dict[str, str] = Field(default_factory=dict, max_length=1000, description=(
        "{name: version} to compare with (default: the version deployed on the target now)"))
    override_gate: bool = Field(False, description="Deploy although the gate failed (needs override_reason)")
    override_reason: str | None = Field(None, max_length=500, pattern=_TEXT)


class ReportIn(_Wire):
    id: str = Field(..., min_length=1, max_length=128, pattern=_ID)
    deployment_id: str | None = Field(None, max_length=64, pattern=_ID)
    revision: int | None = Field(None, ge=0, le=INT32)
    status: DeviceDeploymentStatus | None = None
    reason_code: str | None = Field(None, max_length=64, pattern=_TEXT)
    message: str | None = Field(None, max_length=2000, pattern=_TEXT)
    components: dict[str, dict[str, Any]] | None = Field(None, description="{name: {version, state}}")
    at: datetime | None = None


class ReportsIn(_Wire):
    reports: list[ReportIn] = Field(..., max_length=1000)


# -- responses -------------------------------------------------------------------------------------
class EnrollToken(_Wire):
    """A one-time enrolment token (shown once)."""

    token: str = Field(repr=False)
    expires_at: datetime
    group: str | None = None


class Enrollment(_Wire):
    """The answer to ``POST /v1/enroll``: the device's name and its credential (shown once)."""

    device: str
    credential: str = Field(repr=False)


class ReportedComponent(_Wire):
    """A component as a device last reported it."""

    version: str | None = None
    state: str | None = None


class DeviceDeployment(_Wire):
    """A device's row of one deployment, as seen from the device (``GET /v1/devices/{name}``)."""

    deployment_id: str
    status: DeviceDeploymentStatus
    reason_code: str | None = None
    message: str | None = None
    released_at: datetime | None = None
    updated_at: datetime


class Device(_Wire):
    name: str
    labels: dict[str, Any] = Field(default_factory=dict)
    groups: list[str] = Field(default_factory=list)
    created_at: datetime
    last_seen_at: datetime | None = None
    revoked: bool = False
    components: dict[str, ReportedComponent] = Field(default_factory=dict)
    status: DeviceStatus
    health: DeviceHealth
    applied_revision: int | None = None
    desired_revision: int = 0
    #: Per-deployment rows, newest first (``GET /v1/devices/{name}`` only; ``None`` in lists).
    deployments: list[DeviceDeployment] | None = None


class Group(_Wire):
    name: str
    devices: list[str] = Field(default_factory=list)


class Artifact(_Wire):
    """An artifact file of a published component version: ``file`` is its path relative to the
    version's artifact folder (``hello.py``, ``lib/greet.py``), ``sha256`` hex."""

    file: str
    sha256: str
    size: int


class Component(_Wire):
    name: str
    version: str
    artifacts: list[Artifact] = Field(default_factory=list)
    created_at: datetime | None = None
    #: The stored recipe, with the hub-computed digests (``GET /v1/components/{name}/{version}`` only).
    recipe: dict[str, Any] | None = None
    #: The model version's validation report (``GET /v1/components/{name}/{version}`` only).
    validation: ModelValidation | None = None


class DeploymentDevice(_Wire):
    """One device's row of a deployment, as seen from the deployment."""

    device: str
    status: DeviceDeploymentStatus
    reason_code: str | None = None
    message: str | None = None
    released_at: datetime | None = None
    updated_at: datetime


class Deployment(_Wire):
    id: str
    target: str
    components: dict[str, str] = Field(default_factory=dict)
    configuration: dict[str, Any] = Field(default_factory=dict)
    failure_policy: FailurePolicy = FailurePolicy.ROLLBACK
    max_per_minute: int | None = None
    abort_failure_percent: int | None = None
    abort_min_devices: int = 1
    timeout_minutes: int = 60
    created_at: datetime
    status: DeploymentStatus
    status_reason: str | None = None
    revision: int
    #: Rows per device status.
    counts: dict[str, int] = Field(default_factory=dict)
    #: Per-device rows (``GET /v1/deployments/{id}`` and the answers of create/cancel; ``None`` in lists).
    devices: list[DeploymentDevice] | None = None
    #: Dependency versions the hub resolved for ``components`` (not listed there).
    dependencies: dict[str, str] = Field(default_factory=dict)
    component_update_policy: ComponentUpdatePolicy = Field(default_factory=lambda: ComponentUpdatePolicy())
    configuration_validation_policy: ConfigurationValidationPolicy = Field(
        default_factory=lambda: ConfigurationValidationPolicy())
    #: The validation gate's decision for each model version of the deployment.
    gate: list[GateCheck] = Field(default_factory=list)


class DesiredComponent(_Wire):
    version: str
    recipe: dict[str, Any]
    configuration: dict[str, Any] = Field(default_factory=dict)
    #: False for a dependency the hub resolved (the agent installs it for the roots that need it).
    root: bool = True
    #: Every file of the version's artifact folder with its SHA-256 (the agent downloads them all).
    #: ``None`` from a hub that predates the list: the agent then fetches the recipe's artifacts only.
    artifacts: list[Artifact] | None = None


class Desired(_Wire):
    """What a device should run at ``revision`` (``GET /v1/device/desired``). ``failure_policy`` is that
    of the newest deployment in effect (the change the device is about to apply); ``timeout_minutes``
    the longest of them."""

    revision: int
    deployments: list[str] = Field(default_factory=list)
    components: dict[str, DesiredComponent] = Field(default_factory=dict)
    failure_policy: FailurePolicy = FailurePolicy.ROLLBACK
    timeout_minutes: int | None = None
    #: Those of the newest deployment in effect (Greengrass' defaults of cloud deployments unless it chose).
    component_update_policy: ComponentUpdatePolicy = Field(default_factory=lambda: ComponentUpdatePolicy())
    configuration_validation_policy: ConfigurationValidationPolicy = Field(
        default_factory=lambda: ConfigurationValidationPolicy())


class ReportResult(_Wire):
    """The answer to one ``POST /v1/device/reports``: report ids applied now, ids applied before (not
    again), and the ids among ``accepted`` whose revision was older than the device's recorded applied
    revision (their revision is not applied: it never moves backwards; the rest of those reports is)."""

    accepted: list[str]
    duplicates: list[str]
    revisions_ignored: list[str] = Field(default_factory=list)


class ErrorDetail(_Wire):
    code: str
    message: str


class ErrorBody(_Wire):
    """Every error answer: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


__all__ = [
    "INT32", "Artifact", "Component", "ComponentUpdatePolicy", "ConfigUpdate", "ConfigurationValidationPolicy",
    "Deployment", "DeploymentCreate", "DeploymentDevice", "Desired",
    "DesiredComponent", "Device", "DeviceDeployment", "EnrollRequest", "EnrollToken", "EnrollTokenCreate",
    "Enrollment", "ErrorBody", "ErrorDetail", "Group", "Label", "LabelsUpdate", "MembersAdd", "ReportIn",
    "ReportResult", "ReportedComponent", "ReportsIn",
]
