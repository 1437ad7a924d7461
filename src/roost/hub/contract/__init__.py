"""The hub's wire contract, shared by its server (:mod:`roost.hub.api`) and its client
(:mod:`roost.hub.client`): status enums and header names (:mod:`.vocabulary`). Nothing here imports
FastAPI, Starlette or httpx.
"""

from __future__ import annotations

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
    "API_PREFIX", "DONE_STATUSES", "ENDED_DEPLOYMENT_STATUSES", "FAILURE_STATUSES", "FINISHED_STATUSES",
    "OPEN_STATUSES", "SHA256_HEADER", "DeploymentStatus", "DeviceDeploymentStatus", "DeviceHealth", "DeviceStatus",
    "FailurePolicy", "PrincipalKind", "TargetType",
]
