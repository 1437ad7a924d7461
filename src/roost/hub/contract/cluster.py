"""The edge cluster's wire records (``/v1/cluster/...``, ``PUT /v1/device/node``, ``/app-service``).

Declared once: the hub's routers answer with them, :class:`roost.hub.client.HubClient` and
``roost stream`` parse them, and the agent sends :class:`NodeReport`.

=======================================  ========================  ==========================
Route                                    Request                   Response
=======================================  ========================  ==========================
``PUT /v1/device/node`` (agent)          :class:`NodeReport`       :class:`ClusterNode`
``GET /v1/cluster/nodes``                                          list of :class:`ClusterNode`
``PUT|GET /v1/cluster/service-types``    service type (camelCase)  service type
``POST /v1/cluster/sessions``            :class:`SessionCreate`    :class:`ClusterSession`
``GET|DELETE /v1/cluster/sessions/{id}``                           :class:`ClusterSession`
``GET /v1/cluster/replicas``                                       list of :class:`ClusterReplica`
``GET|POST /app-service``                query parameters          :class:`AppServiceAnswer`
=======================================  ========================  ==========================
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from roost.hub.contract.models import Label

Tier = Literal["edge", "centre"]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SessionStatus(StrEnum):
    ACTIVE = "ACTIVE"
    ENDED = "ENDED"


class ReplicaStatus(StrEnum):
    """A replica's life: placed and starting, serving, being stopped, or failed (its component did not
    become ready, or died)."""

    STARTING = "STARTING"
    READY = "READY"
    STOPPING = "STOPPING"
    FAILED = "FAILED"


class NodeCapacity(_Wire):
    memory_bytes: int = Field(0, ge=0, le=2**62)
    cpu_millis: int = Field(0, ge=0, le=2**40)
    #: ``{"nvidia.com/gpu": 1, ...}``: devices found (or configured).
    accelerators: dict[str, int] = Field(default_factory=dict, max_length=32)


class NodeReport(_Wire):
    """What an agent says about itself as a cluster node (sent when its hub sync starts)."""

    labels: dict[str, Label] = Field(default_factory=dict, max_length=128)
    #: What placement counts against: the measured capacity, overridden by ``--capacity``.
    allocatable: NodeCapacity
    #: What the agent measured (shown next to an override).
    measured: NodeCapacity
    tier: Tier = "edge"
    #: The address clients reach this node's replicas at (``--advertise-address``, else detected).
    address: str = Field(..., min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\[\]-]+$")
    port_min: int = Field(31000, ge=1024, le=65535)
    port_max: int = Field(31999, ge=1024, le=65535)


class ClusterNode(_Wire):
    name: str
    tier: Tier
    labels: dict[str, Label] = Field(default_factory=dict)
    address: str
    online: bool
    allocatable: NodeCapacity
    measured: NodeCapacity
    #: The requests of the replicas placed there.
    requested: NodeCapacity
    replicas: int = 0
    sessions: int = 0
    reported_at: datetime | None = None


class SessionCreate(_Wire):
    type: str = Field(..., min_length=1, max_length=63)
    client_id: str = Field(..., min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")
    #: Admit into this tier only (the centre's own routes ask for ``centre``); default edge, then centre.
    tier: Tier | None = None
    #: How long to wait for a new replica to become ready.
    wait_seconds: float = Field(30.0, gt=0, le=300)


class ClusterSession(_Wire):
    id: str
    type: str
    client_id: str
    tier: Tier
    offloaded: bool
    node: str
    replica: str
    #: ``ws://ADDRESS:PORT/v1/stream``: where the client streams.
    endpoint: str
    port: int
    #: Presented to the replica (``Authorization: Bearer``); shown once, in the admission's answer.
    token: str | None = Field(None, repr=False)
    status: SessionStatus
    end_reason: str | None = None
    created_at: datetime
    ended_at: datetime | None = None
    #: Milliseconds from the request to a ready endpoint (admission only).
    ready_ms: float | None = None
    #: Whether the session got an existing replica (warm) or a new one (cold).
    warm: bool | None = None
    legacy: bool = False


class ClusterReplica(_Wire):
    id: str
    type: str
    node: str
    tier: Tier
    component: str
    version: str
    port: int
    status: ReplicaStatus
    sessions: int
    capacity: int
    created_at: datetime
    ready_at: datetime | None = None
    idle_since: datetime | None = None
    reason: str | None = None


class AppServiceAnswer(_Wire):
    """The original receive server's answer, as its client reads it."""

    service_port: str
    offloading: int


__all__ = ["AppServiceAnswer", "ClusterNode", "ClusterReplica", "ClusterSession", "NodeCapacity", "NodeReport",
           "ReplicaStatus", "SessionCreate", "SessionStatus", "Tier"]
