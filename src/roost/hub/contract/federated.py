"""Federated learning jobs on the wire (``docs/learning.md``).

==============================  ====================  ===========================
Route (admin)                   Request               Response
==============================  ====================  ===========================
``POST /v1/learn/jobs``         :class:`LearnJobIn`   :class:`LearnJob` (201)
``GET /v1/learn/jobs``                                list of :class:`LearnJob`
``GET /v1/learn/jobs/{id}``                           :class:`LearnJob`
==============================  ====================  ===========================

A job's ``rounds`` grow while it runs: each round is stored as the ServerApp records it.

The spec's values are checked by :meth:`roost.learn.federated_job.JobSpec.check` at the hub, so each bad
value gets its own ``LEARN_*`` code rather than pydantic's generic one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

#: The sample wine-serving component a job's model becomes a version of unless ``component`` names another.
SERVING_COMPONENT: Final = "com.roost.WineQuality"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class LearnJobIn(_Wire):
    #: ``group:NAME``: the devices that train.
    target: str = Field(..., min_length=7, max_length=134, pattern=r"^group:[^\x00-\x1f/]+$")
    task: str = Field(..., min_length=1, max_length=64)
    strategy: str = Field("fedavg", min_length=1, max_length=64)
    rounds: int = Field(..., ge=-(2**31), le=2**31 - 1)
    #: Default: every device of the target.
    min_participants: int | None = Field(None, ge=-(2**31), le=2**31 - 1)
    #: Each device's training CSV on that device (per-device configuration of the SuperNode component);
    #: a device not named uses ``data_path``.
    data_paths: dict[str, str] = Field(default_factory=dict, max_length=32)
    data_path: str = Field("/var/lib/roost/learn/wine.csv", min_length=1, max_length=4096)
    #: The serving component the aggregated model becomes a new version of (the next patch version).
    component: str = Field(SERVING_COMPONENT, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f/]+$")


class LearnRejected(_Wire):
    """A device's update the ServerApp did not aggregate: its Flower node id and why."""

    node: int
    reason: str


class LearnRound(_Wire):
    """One round as it landed: usable updates, RMSE of the aggregate on the hub's held-out set, model
    bytes both ways, seconds, and the rejected updates with their reasons."""

    round: int
    participants: int
    metric: float | None = None
    bytes: int = 0
    seconds: float | None = None
    rejected: list[LearnRejected] = Field(default_factory=list)


class LearnJob(_Wire):
    job: str
    target: str
    task: str
    strategy: str
    rounds_planned: int
    min_participants: int
    devices: list[str] = Field(default_factory=list)
    status: str
    rounds: list[LearnRound] = Field(default_factory=list)
    final_metric: float | None = None
    centralised_metric: float | None = None
    reason: str | None = None
    #: The component the job publishes its model to.
    serving_component: str = SERVING_COMPONENT
    #: ``NAME=VERSION`` of the version published from the job's model (None until it is published).
    component: str | None = None
    created_at: datetime
    updated_at: datetime
