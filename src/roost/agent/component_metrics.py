"""The metrics components put with IPC ``PutComponentMetric``, kept by the agent in memory.

Validation follows the nucleus: a request holds a non-empty ``metrics`` list; each metric a
``name`` of 1..32 bytes (UTF-8), a ``unit`` of the SDK's ``MetricUnitType`` (``BYTES``,
``BYTES_PER_SECOND``, ``COUNT``, ``COUNT_PER_SECOND``, ``MEGABYTES``, ``SECONDS``; matched as the
nucleus does, ignoring case and non-alphanumerics, so ``BytesPerSecond`` is ``BYTES_PER_SECOND``)
and a finite, non-negative number ``value``. A request is taken whole or not at all.

Per component and metric name the store keeps the unit, the latest value, the count and sum of
values, their minimum and maximum and the time of the latest: :meth:`ComponentMetrics.snapshot`
returns them (``roost component metrics``; a metrics endpoint exports the same). Bounded: at most
``max_components`` components and ``max_metrics`` names per component (``METRIC_LIMIT`` beyond).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from roost.errors import ConflictError, InvalidInputError

#: MetricUnitType of the IPC model (awsiot.greengrasscoreipc.model.MetricUnitType).
UNITS: Final = ("BYTES", "BYTES_PER_SECOND", "COUNT", "COUNT_PER_SECOND", "MEGABYTES", "SECONDS")
MAX_NAME_BYTES: Final = 32
DEFAULT_MAX_COMPONENTS: Final = 1024
DEFAULT_MAX_METRICS: Final = 256
_NON_ALNUM: Final = re.compile(r"[^A-Za-z0-9]")
_UNIT_KEYS: Final = {u.replace("_", ""): u for u in UNITS}


def _bad(message: str) -> InvalidInputError:
    return InvalidInputError(message, code="METRIC_INVALID")


def canonical_unit(value: Any) -> str:
    """The MetricUnitType a unit names, or METRIC_INVALID."""
    if not isinstance(value, str) or not value:
        raise _bad(f"metric unit must be one of {', '.join(UNITS)}, got {value!r}")
    unit = _UNIT_KEYS.get(_NON_ALNUM.sub("", value).upper())
    if unit is None:
        raise _bad(f"metric unit {value!r} is not one of {', '.join(UNITS)}")
    return unit


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    value: float


def parse_metrics(request: dict[str, Any]) -> list[Metric]:
    """The validated metrics of a PutComponentMetric request (all of them, or METRIC_INVALID)."""
    metrics = request.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        raise _bad("metrics must be a non-empty list of {name, unit, value} objects")
    out: list[Metric] = []
    for i, item in enumerate(metrics):
        if not isinstance(item, dict):
            raise _bad(f"metrics[{i}] must be an object with name, unit and value")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"metrics[{i}].name must be a non-empty string")
        size = len(name.encode("utf-8"))
        if size > MAX_NAME_BYTES:
            raise _bad(f"metrics[{i}].name {name!r} is {size} bytes long; the limit is {MAX_NAME_BYTES} bytes")
        unit = canonical_unit(item.get("unit"))
        value = item.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _bad(f"metrics[{i}].value must be a finite number, got {value!r}")
        if value < 0:
            raise _bad(f"metrics[{i}].value must not be negative, got {value!r}")
        out.append(Metric(name, unit, float(value)))
    return out


@dataclass
class _Stat:
    unit: str
    latest: float
    count: int
    total: float
    minimum: float
    maximum: float
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        return {"unit": self.unit, "value": self.latest, "count": self.count, "sum": self.total,
                "min": self.minimum, "max": self.maximum, "updatedAt": self.updated_at}


class ComponentMetrics:
    """Latest value, count, sum, min and max per (component, metric name); bounded."""

    def __init__(self, *, max_components: int = DEFAULT_MAX_COMPONENTS,
                 max_metrics: int = DEFAULT_MAX_METRICS) -> None:
        self.max_components = max_components
        self.max_metrics = max_metrics
        self._stats: dict[str, dict[str, _Stat]] = {}
        #: Called with (component, metrics) after each put, and (component, None) when one is forgotten
        #: (roost.observe.inference builds latency histograms from them).
        self.listeners: list[Callable[[str, list[Metric] | None], None]] = []

    def put(self, component: str, metrics: list[Metric], now: float | None = None) -> None:
        """Record ``metrics`` for ``component`` (all, or none when a bound would be passed)."""
        when = time.time() if now is None else now
        mine = self._stats.get(component)
        if mine is None and len(self._stats) >= self.max_components:
            raise ConflictError(f"the agent keeps metrics of at most {self.max_components} components",
                                code="METRIC_LIMIT")
        known = set(mine or ())
        new = {m.name for m in metrics} - known
        if len(known) + len(new) > self.max_metrics:
            raise ConflictError(f"{component} may keep at most {self.max_metrics} metric names; this request "
                                f"would make {len(known) + len(new)}", code="METRIC_LIMIT")
        if mine is None:
            mine = self._stats[component] = {}
        for m in metrics:
            stat = mine.get(m.name)
            if stat is None:
                mine[m.name] = _Stat(m.unit, m.value, 1, m.value, m.value, m.value, when)
                continue
            stat.unit = m.unit
            stat.latest = m.value
            stat.count += 1
            stat.total += m.value
            stat.minimum = min(stat.minimum, m.value)
            stat.maximum = max(stat.maximum, m.value)
            stat.updated_at = when
        for listener in self.listeners:
            listener(component, metrics)

    def forget(self, component: str) -> None:
        """Drop a component's metrics (it was removed from the device)."""
        self._stats.pop(component, None)
        for listener in self.listeners:
            listener(component, None)

    def items(self) -> list[tuple[str, str, str, float, int, float]]:
        """``(component, metric, unit, latest, count, sum)`` of every metric kept (for the metrics endpoint)."""
        return [(c, n, s.unit, s.latest, s.count, s.total) for c, mine in self._stats.items() for n, s in mine.items()]

    def snapshot(self, component: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """``{component: {metric: {unit, value, count, sum, min, max, updatedAt}}}`` (one component, or all)."""
        names = [component] if component is not None else sorted(self._stats)
        return {c: {n: s.to_json() for n, s in sorted(self._stats[c].items())} for c in names if c in self._stats}
