"""The hub's wire vocabulary: every status word, header name and route prefix, declared once.

The hub's server (routers, store, rollout rules, console) and its client (:mod:`roost.hub.client`,
the CLI, the agent's sync loop) import these; no module spells a status set of its own. The
values are :class:`~enum.StrEnum` members, so they compare equal to, serialise as and are stored
as the plain strings of the wire (``DeviceDeploymentStatus.QUEUED == "QUEUED"``).
"""

from __future__ import annotations

from enum import StrEnum

#: Every route of the REST API is under this prefix.
API_PREFIX = "/v1"
#: The header the hub sends with every artifact download: the file's SHA-256 (hex).
SHA256_HEADER = "X-Roost-Sha256"


class DeviceDeploymentStatus(StrEnum):
    """One device's row of one deployment (what a device reports for it)."""

    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"
    TIMED_OUT = "TIMED_OUT"
    CANCELED = "CANCELED"


# The sets are tuples in declaration order, so SQL ``IN (...)`` statements built from them are stable.
_D = DeviceDeploymentStatus
#: A device's row that may still change (the device has not finished it).
OPEN_STATUSES: tuple[DeviceDeploymentStatus, ...] = (_D.QUEUED, _D.IN_PROGRESS)
#: A row the device finished (CANCELED is not "finished": the device never ran it).
FINISHED_STATUSES: tuple[DeviceDeploymentStatus, ...] = (_D.SUCCEEDED, _D.FAILED, _D.ROLLED_BACK, _D.TIMED_OUT)
#: Finished rows that count as failures (the abort rule; the console's red segment).
FAILURE_STATUSES: tuple[DeviceDeploymentStatus, ...] = (_D.FAILED, _D.ROLLED_BACK, _D.TIMED_OUT)
#: A row that will not change any more.
DONE_STATUSES: tuple[DeviceDeploymentStatus, ...] = tuple(s for s in _D if s not in OPEN_STATUSES)


class DeploymentStatus(StrEnum):
    """A deployment as a whole."""

    ACTIVE = "ACTIVE"
    SUPERSEDED = "SUPERSEDED"
    CANCELED = "CANCELED"
    ABORTED = "ABORTED"
    COMPLETED = "COMPLETED"


#: A deployment status after which no device row changes.
ENDED_DEPLOYMENT_STATUSES: tuple[DeploymentStatus, ...] = tuple(s for s in DeploymentStatus
                                                                if s is not DeploymentStatus.ACTIVE)


class DeviceStatus(StrEnum):
    """Whether a device is reachable: seen within the online window, not seen, or cut off."""

    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    REVOKED = "REVOKED"


class DeviceHealth(StrEnum):
    """The worst of a device's reported component states."""

    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    UNKNOWN = "UNKNOWN"


class FailurePolicy(StrEnum):
    """What a device does when a deployment fails on it (Greengrass' ``failureHandlingPolicy``)."""

    ROLLBACK = "ROLLBACK"
    DO_NOTHING = "DO_NOTHING"


class TargetType(StrEnum):
    """The kind of a deployment target (``device:NAME`` or ``group:NAME``)."""

    DEVICE = "device"
    GROUP = "group"


class PrincipalKind(StrEnum):
    """Who is calling: an admin (API token), a device (device credential) or a scraper (metrics token:
    ``/metrics``, ``/metrics/fleet`` and ``/v1/prometheus/targets`` only)."""

    ADMIN = "admin"
    DEVICE = "device"
    METRICS = "metrics"


__all__ = [
    "API_PREFIX", "DONE_STATUSES", "ENDED_DEPLOYMENT_STATUSES", "FAILURE_STATUSES", "FINISHED_STATUSES",
    "OPEN_STATUSES", "SHA256_HEADER", "DeploymentStatus", "DeviceDeploymentStatus", "DeviceHealth", "DeviceStatus",
    "FailurePolicy", "PrincipalKind", "TargetType",
]
