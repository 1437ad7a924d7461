"""Wire records of the hub's metrics routes, shared by the hub and its client.

=======================================  ==========================  ==============================
Route                                    Request                     Response
=======================================  ==========================  ==============================
``PUT /v1/device/metrics`` (device)      :class:`MetricsSnapshot`    :class:`SnapshotAccepted`
``GET /v1/devices/{name}/metrics``                                   :class:`DeviceMetrics`
``POST /v1/metrics-tokens`` (admin)      :class:`MetricsTokenCreate`  :class:`MetricsToken`
``GET /v1/prometheus/targets``                                       Prometheus HTTP SD JSON
``GET /metrics``, ``GET /metrics/fleet``                             Prometheus text
=======================================  ==========================  ==============================

A snapshot is compact on purpose (devices behind NAT send it instead of being scraped): a few
named values (``cpu_ratio``, ``memory_ratio``, ``components_broken``...; see
:data:`KNOWN_VALUES`) and per model its request counts and latency
quantiles. Bounded: :data:`MAX_VALUES` values, :data:`MAX_MODELS` models, :data:`MAX_SNAPSHOT_BYTES`
bytes of JSON (larger: 413 ``METRICS_SNAPSHOT_TOO_LARGE``; malformed: 422 ``METRICS_SNAPSHOT_INVALID``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_SNAPSHOT_BYTES: Final = 16 * 1024
MAX_VALUES: Final = 64
MAX_MODELS: Final = 16
#: Names of values and models: Prometheus-friendly, short.
VALUE_NAME: Final = r"^[a-z_][a-z0-9_]{0,63}$"
MODEL_NAME: Final = r"^[A-Za-z0-9_.:-]{1,64}$"

#: value name -> what it is (docs/metrics.md lists the same).
KNOWN_VALUES: Final[dict[str, str]] = {
    "cpu_ratio": "CPU busy share since the previous snapshot (0..1)",
    "memory_ratio": "memory in use (0..1)",
    "disk_ratio": "the agent root's file system in use (0..1)",
    "temperature_celsius": "the hottest temperature sensor, where readable",
    "components": "components deployed",
    "components_running": "components RUNNING (or FINISHED)",
    "components_errored": "components ERRORED",
    "components_broken": "components BROKEN",
    "component_restarts_total": "component restarts since the agent started",
    "ipc_messages_total": "IPC messages received since the agent started",
    "ipc_refused_total": "IPC operations refused since the agent started",
    "deployments_failed_total": "deployments that FAILED on the device (the newest 10,000)",
    "uptime_seconds": "seconds since the agent started",
}

ValueName = Annotated[str, StringConstraints(pattern=VALUE_NAME)]
ModelName = Annotated[str, StringConstraints(pattern=MODEL_NAME)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ModelSample(_Wire):
    requests_total: float = Field(0.0, ge=0, allow_inf_nan=False)
    errors_total: float = Field(0.0, ge=0, allow_inf_nan=False)
    latency_p50_seconds: float | None = Field(None, ge=0, allow_inf_nan=False)
    latency_p95_seconds: float | None = Field(None, ge=0, allow_inf_nan=False)


class MetricsSnapshot(_Wire):
    """What an agent sends with its heartbeat: the latest values of its metrics."""

    model_config = ConfigDict(extra="forbid")

    at: datetime | None = Field(None, description="When the agent took it")
    endpoint: str | None = Field(None, max_length=261, pattern=r"^[^\s/]+:[0-9]{1,5}$",
                                 description="HOST:PORT of the agent's /metrics (what Prometheus scrapes), if any")
    token: bool = Field(False, description="Whether that endpoint needs a bearer token")
    values: dict[ValueName, Finite] = Field(default_factory=dict, max_length=MAX_VALUES)
    models: dict[ModelName, ModelSample] = Field(default_factory=dict, max_length=MAX_MODELS)


class SnapshotAccepted(_Wire):
    received_at: datetime


class MetricsPoint(_Wire):
    """One sample of a device's history (at most one a minute is kept, for an hour)."""

    at: datetime
    values: dict[str, float]
    models: dict[str, ModelSample] = Field(default_factory=dict)


class DeviceMetrics(_Wire):
    """``GET /v1/devices/{name}/metrics``: the latest snapshot and the last hour, oldest first."""

    device: str
    received_at: datetime | None = None
    latest: MetricsSnapshot | None = None
    window_seconds: int
    samples: list[MetricsPoint] = Field(default_factory=list)


class MetricsTokenCreate(_Wire):
    name: str = Field("metrics", min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")


class MetricsToken(_Wire):
    """A token that reads ``/metrics``, ``/metrics/fleet`` and ``/v1/prometheus/targets`` only (shown once)."""

    name: str
    token: str = Field(repr=False)


__all__ = ["KNOWN_VALUES", "MAX_MODELS", "MAX_SNAPSHOT_BYTES", "MAX_VALUES", "MODEL_NAME", "VALUE_NAME",
           "DeviceMetrics", "MetricsPoint", "MetricsSnapshot", "MetricsToken", "MetricsTokenCreate", "ModelSample",
           "SnapshotAccepted"]
