"""The hub's wire contract, shared by its server (:mod:`roost.hub.api`) and its client
(:mod:`roost.hub.client`); nothing is declared twice:

* :mod:`.vocabulary` — status enums (``StrEnum``), status sets, header names, the route prefix;
* :mod:`.models` — every request and response body (pydantic), the server's ``response_model``\\ s
  and what the client parses;
* :mod:`.errors` — the one table between the hub's error classes (:mod:`roost.hub.errors`) and
  HTTP statuses, read by the server to answer and by the client to raise.

Nothing here imports FastAPI, Starlette or httpx.
"""

from __future__ import annotations

from roost.hub.contract.errors import (
    CODE_BY_STATUS,
    GENERIC_STATUS,
    INTERNAL_ERROR,
    STATUS_BY_CLASS,
    class_for,
    error_for,
    status_for,
)
from roost.hub.contract.models import (
    INT32,
    Artifact,
    Component,
    ComponentUpdatePolicy,
    ConfigUpdate,
    ConfigurationValidationPolicy,
    Deployment,
    DeploymentCreate,
    DeploymentDevice,
    Desired,
    DesiredComponent,
    Device,
    DeviceDeployment,
    Enrollment,
    EnrollRequest,
    EnrollToken,
    EnrollTokenCreate,
    ErrorBody,
    ErrorDetail,
    Group,
    Label,
    LabelsUpdate,
    MembersAdd,
    ReportedComponent,
    ReportIn,
    ReportResult,
    ReportsIn,
)
from roost.hub.contract.vocabulary import (
    API_PREFIX,
    DONE_STATUSES,
    ENDED_DEPLOYMENT_STATUSES,
    FAILURE_STATUSES,
    FINISHED_STATUSES,
    OPEN_STATUSES,
    SHA256_HEADER,
    DeploymentStatus,
    DeviceDeploymentStatus,
    DeviceHealth,
    DeviceStatus,
    FailurePolicy,
    PrincipalKind,
    TargetType,
)

__all__ = [
    "API_PREFIX", "CODE_BY_STATUS", "DONE_STATUSES", "ENDED_DEPLOYMENT_STATUSES", "FAILURE_STATUSES",
    "FINISHED_STATUSES", "GENERIC_STATUS", "INT32", "INTERNAL_ERROR", "OPEN_STATUSES", "SHA256_HEADER",
    "STATUS_BY_CLASS", "Artifact", "Component", "ComponentUpdatePolicy", "ConfigUpdate",
    "ConfigurationValidationPolicy", "Deployment", "DeploymentCreate", "DeploymentDevice",
    "DeploymentStatus", "Desired", "DesiredComponent", "Device", "DeviceDeployment", "DeviceDeploymentStatus",
    "DeviceHealth", "DeviceStatus", "EnrollRequest", "EnrollToken", "EnrollTokenCreate", "Enrollment", "ErrorBody",
    "ErrorDetail", "FailurePolicy", "Group", "Label", "LabelsUpdate", "MembersAdd", "PrincipalKind", "ReportIn",
    "ReportResult", "ReportedComponent", "ReportsIn", "TargetType", "class_for", "error_for", "status_for",
]

from roost.hub.contract.learn import (
    BaselineComparison,
    BenchmarkIn,
    BenchmarkRecord,
    Candidate,
    GateCheck,
    Measurement,
    ModelValidation,
    Recommendation,
    VariantGate,
)
from roost.hub.contract.metrics import (
    DeviceMetrics,
    MetricsPoint,
    MetricsSnapshot,
    MetricsToken,
    MetricsTokenCreate,
    ModelSample,
    SnapshotAccepted,
)

__all__ += ["DeviceMetrics", "MetricsPoint", "MetricsSnapshot", "MetricsToken", "MetricsTokenCreate", "ModelSample",
            "SnapshotAccepted"]
__all__ += ["BaselineComparison", "BenchmarkIn", "BenchmarkRecord", "Candidate", "GateCheck", "Measurement",
            "ModelValidation", "Recommendation", "VariantGate"]
from roost.hub.contract.federated import LearnJob, LearnJobIn, LearnRejected, LearnRound  # noqa: E402

__all__ += ["LearnJob", "LearnJobIn", "LearnRejected", "LearnRound"]
