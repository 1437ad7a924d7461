"""Model validation, deployment gates, benchmarks and recommendation on the wire.

=============================================  ==========================  ============================
Route                                          Request                     Response
=============================================  ==========================  ============================
``PUT /v1/components/{name}/{version}/validation``  :class:`ModelValidation`  :class:`ModelValidation`
``GET /v1/components/{name}/{version}/validation``                          :class:`ModelValidation`
``POST /v1/device/benchmarks`` (device)        :class:`BenchmarkIn`        list of :class:`BenchmarkRecord`
``GET /v1/models/benchmarks``                                              list of :class:`BenchmarkRecord`
``GET /v1/models/recommend?device=...``        query parameters            :class:`Recommendation`
=============================================  ==========================  ============================

Numbers are checked by the store (finite, not negative, consistent), so that each problem gets its
own code rather than pydantic's generic ``VALIDATION_ERROR``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Metric = Literal["rmse", "accuracy"]
_SHA256 = r"^[0-9a-f]{64}$"
_NAME = r"^[^\x00-\x1f/]+$"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class VariantGate(_Wire):
    """The variant's own gate, from ``roost model optimize`` (against its original, on the same rows)."""

    metric_before: float
    metric_after: float
    regression: float
    max_regression: float
    passed: bool


class BaselineComparison(_Wire):
    """This version against the component's version before it (a federated job's report: the version that was
    the highest in the registry, validated on the same held-out file). Informational: the deployment gate
    compares with the target's deployed version or the operator's ``baseline``."""

    version: str = Field(..., min_length=1, max_length=64, pattern=_NAME)
    value: float
    #: Relative loss of this version's metric against ``value`` (negative: better).
    regression: float


class ModelValidation(_Wire):
    """A model version's validation report, as the hub stores it with the component version."""

    metric: Metric
    #: The metric of this version on the held-out data (RMSE: lower is better; accuracy: higher).
    value: float
    rows: int = Field(..., ge=1, le=2**31 - 1)
    #: The held-out file's name and sha256: versions compare only on the same data.
    data: str = Field(..., min_length=1, max_length=255, pattern=_NAME)
    data_sha256: str = Field(..., pattern=_SHA256)
    size_bytes: int = Field(..., ge=0, le=2**62)
    #: µs per row at batch 1, per device class (:func:`roost.learn.device_class.device_class`).
    latency_us: dict[str, float] = Field(default_factory=dict, max_length=64)
    variant: VariantGate | None = None
    baseline: BaselineComparison | None = None
    measured_at: datetime | None = None


class GateCheck(_Wire):
    """What the hub decided about one component version of a deployment."""

    component: str
    version: str
    metric: Metric
    value: float
    #: ``target``: the version deployed on the target now; ``operator``: named with ``baseline``;
    #: ``none``: nothing to compare with (only the variant's own gate applies).
    baseline_source: Literal["target", "operator", "none"]
    baseline_version: str | None = None
    baseline_value: float | None = None
    regression: float | None = None
    max_regression: float
    passed: bool
    overridden: bool = False
    reason: str | None = None


class Measurement(_Wire):
    component: str = Field(..., min_length=1, max_length=128)
    version: str = Field(..., min_length=1, max_length=64)
    latency_us: float
    calls: int
    engine: str = Field("", max_length=64)


class BenchmarkIn(_Wire):
    """What the benchmark component measured on its device (the hub knows the device's class)."""

    measurements: list[Measurement] = Field(..., min_length=1, max_length=64)


class BenchmarkRecord(_Wire):
    device_class: str
    device: str
    component: str
    version: str
    latency_us: float
    calls: int
    engine: str
    recorded_at: datetime


class Candidate(_Wire):
    component: str
    version: str
    metric: Metric | None = None
    value: float | None = None
    #: Median over the class' devices that measured it (``None``: not measured on this class).
    latency_us: float | None = None
    devices: int = 0
    meets: bool = False
    chosen: bool = False
    why: str


class Recommendation(_Wire):
    device: str
    device_class: str
    max_latency_ms: float | None = None
    min_metric: float | None = None
    chosen: str
    candidates: list[Candidate]
