"""The cluster's errors: admission, service types, nodes and streaming sessions.

Each maps to an HTTP status through the generic kinds it also derives from (not found 404, conflict
409, invalid input 400); :class:`ClusterFullError` and :class:`ReplicaNotReadyError` are retryable
(the hub answers 503).
"""

from __future__ import annotations

from roost.errors import ConflictError, InvalidInputError, NotFoundError, Retryable, RoostError


class ClusterError(RoostError):
    """Base class of the cluster's errors."""

    code = "CLUSTER_ERROR"


class ServiceTypeNotFoundError(ClusterError, NotFoundError):
    """No service type of that name is applied."""

    code = "SERVICE_TYPE_NOT_FOUND"


class ServiceTypeInvalidError(ClusterError, InvalidInputError):
    """A service type definition is malformed (the message names the field)."""

    code = "SERVICE_TYPE_INVALID"


class UnschedulableError(ClusterError, InvalidInputError):
    """No node of any tier could ever run a replica of the service type (requests larger than every
    node's allocatable, or required affinity no node matches): retrying will not help."""

    code = "SERVICE_UNSCHEDULABLE"


class ClusterFullError(Retryable, ClusterError):
    """Neither the edge nor the centre has room for a replica now; retry later."""

    code = "CLUSTER_FULL"


class ReplicaNotReadyError(Retryable, ClusterError):
    """A replica was placed but did not become ready (its endpoint did not answer, or its component
    failed) within the admission's wait; the session was not created."""

    code = "REPLICA_NOT_READY"


class SessionNotFoundError(ClusterError, NotFoundError):
    """No live session of that id."""

    code = "SESSION_NOT_FOUND"


class SessionTokenError(ClusterError, InvalidInputError):
    """A session token is malformed, expired, or not signed by the hub the replica trusts."""

    code = "SESSION_TOKEN_INVALID"


class QuantityError(ClusterError, InvalidInputError):
    """A resource quantity (``16Gi``, ``500m``, ``memory=16Gi,cpu=8``) is malformed."""

    code = "QUANTITY_INVALID"


class NodeConflictError(ClusterError, ConflictError):
    """A node's state forbids the operation (it has replicas, it is revoked)."""

    code = "NODE_CONFLICT"
