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


class KubernetesError(ClusterError):
    """Base class of the Kubernetes backend's errors: the API server answered with an error that no more
    specific class describes (the message names the call, the status and the API's own message)."""

    code = "KUBERNETES_API_ERROR"


class KubernetesConfigError(KubernetesError, InvalidInputError):
    """The backend's configuration is unusable: a kubeconfig that does not load, no in-cluster service
    account, a namespace or image that is not well-formed."""

    code = "KUBERNETES_CONFIG_INVALID"


class KubernetesForbiddenError(KubernetesError):
    """The API server refused the call (403: the service account's RBAC lacks a verb; 401 with code
    ``KUBERNETES_UNAUTHORIZED``: the credentials were refused). Retrying will not help; fix the RBAC
    (``deploy/kubernetes/rbac.yaml``) or the credentials."""

    code = "KUBERNETES_FORBIDDEN"


class KubernetesNotFoundError(KubernetesError, NotFoundError):
    """The API server has no such object (404): most often the backend's namespace does not exist."""

    code = "KUBERNETES_NOT_FOUND"


class KubernetesUnavailableError(Retryable, KubernetesError):
    """The API server cannot be reached (connection refused, timeout, TLS failure) or answered 429/5xx."""

    code = "KUBERNETES_UNAVAILABLE"


class KubernetesConflictError(Retryable, KubernetesError, ConflictError):
    """Another writer kept changing the Deployment while the backend scaled it (409 on every retry)."""

    code = "KUBERNETES_CONFLICT"


class ReplicaConfigError(ClusterError, InvalidInputError):
    """A replica's own settings are unusable (kind, window, public key, model folder); the message names
    the setting."""

    code = "REPLICA_CONFIG_INVALID"


class ReplicaFullError(Retryable, ClusterError):
    """The replica already serves as many sessions (or holds as many pending claims) as it may; retry
    later or ask the hub for another replica (HTTP 503 before the websocket upgrade)."""

    code = "REPLICA_FULL"


class SessionConflictError(ClusterError, ConflictError):
    """A session id already has a connection on this replica; one session, one connection (HTTP 409)."""

    code = "SESSION_ALREADY_CONNECTED"


class SessionLostError(Retryable, ClusterError):
    """The stream's socket dropped or the replica closed it mid-session (it stopped, went idle, the frame
    was too large): the session is over; ask the hub for a new one."""

    code = "SESSION_LOST"


class StreamMessageError(ClusterError, InvalidInputError):
    """One stream message is malformed (raised with ``WINDOW_INVALID``, ``IMAGE_INVALID`` or
    ``STREAM_FRAME_INVALID``); the replica answers it with an error reply and the session goes on."""

    code = "STREAM_MESSAGE_INVALID"

    def __init__(self, message: str, *, code: str | None = None, seq: int | None = None) -> None:
        super().__init__(message, code=code)
        #: The sequence number of the message, when its header could be read.
        self.seq = seq


class StreamProtocolError(ClusterError):
    """The peer broke the stream protocol (no hello, a reply of an unknown type, an upgrade refused
    without a JSON error body)."""

    code = "STREAM_PROTOCOL_ERROR"


class StreamDataError(ClusterError, InvalidInputError):
    """The client's data cannot be streamed: a CSV missing a column the model needs, a value that is not
    a number, an image folder without images."""

    code = "STREAM_DATA_INVALID"
