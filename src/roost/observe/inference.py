"""Inference latency histograms and request counts per model, from the metrics components put.

A component reports inference with ``PutComponentMetric`` (the Greengrass operation; any SDK):

* ``InferenceLatency`` or ``InferenceLatency.<model>``, unit ``SECONDS``: one value per request
  (several in one call), each observed into the histogram of ``(component, model)``;
* ``InferenceRequests[.<model>]``, unit ``COUNT``: requests served since the previous report (added);
* ``InferenceErrors[.<model>]``, unit ``COUNT``: requests refused or failed since the previous report.

``<model>`` defaults to the component's name. A component that sends latencies but never
``InferenceRequests`` has each latency counted as one request. ``roost serve`` reports this way
(:mod:`roost.serve.service`), with a bounded sample of latencies per report and exact counts.

Exported as ``roost_inference_latency_seconds{component,model}`` (histogram),
``roost_inference_requests_total{component,model}`` and ``roost_inference_errors_total{component,model}``.
Bounded: at most :data:`MAX_MODELS` ``(component, model)`` pairs (more are not recorded, logged once).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

logger = logging.getLogger(__name__)

#: Upper bounds of the latency buckets (seconds); +Inf is implied.
BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_MODELS: Final = 256
LATENCY, REQUESTS, ERRORS = "InferenceLatency", "InferenceRequests", "InferenceErrors"


class MetricLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def value(self) -> float: ...


@dataclass
class ModelStats:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    latency_sum: float = 0.0
    latency_count: int = 0
    requests: float = 0.0
    errors: float = 0.0
    counts_requests: bool = False

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1

    @property
    def request_total(self) -> float:
        return self.requests if self.counts_requests else float(self.latency_count)

    def quantile(self, q: float) -> float | None:
        """An estimate of the ``q`` quantile of the latencies (linear within a bucket), None without any."""
        if self.latency_count == 0:
            return None
        rank = q * self.latency_count
        seen = 0
        for i, count in enumerate(self.buckets):
            if count and seen + count >= rank:
                lower = BUCKETS[i - 1] if i > 0 else 0.0
                upper = BUCKETS[i] if i < len(BUCKETS) else BUCKETS[-1]
                return lower + (upper - lower) * ((rank - seen) / count)
            seen += count
        return BUCKETS[-1]


def split_name(name: str) -> tuple[str, str | None]:
    base, _, model = name.partition(".")
    return base, (model or None)


class InferenceStats:
    def __init__(self, max_models: int = MAX_MODELS) -> None:
        self.max_models = max_models
        self.models: dict[tuple[str, str], ModelStats] = {}
        self._full_logged = False

    def put(self, component: str, metrics: Iterable[MetricLike]) -> None:
        """Record the inference metrics among ``metrics`` (others are ignored)."""
        for m in metrics:
            base, model = split_name(m.name)
            if base not in (LATENCY, REQUESTS, ERRORS):
                continue
            stats = self._stats(component, model or component)
            if stats is None:
                continue
            if base == LATENCY:
                if m.unit == "SECONDS":
                    stats.observe(m.value)
            elif base == REQUESTS:
                stats.counts_requests = True
                stats.requests += m.value
            else:
                stats.errors += m.value

    def _stats(self, component: str, model: str) -> ModelStats | None:
        key = (component, model)
        stats = self.models.get(key)
        if stats is None:
            if len(self.models) >= self.max_models:
                if not self._full_logged:
                    logger.warning("inference metrics of more than %d models: %s/%s and later ones are not recorded",
                                   self.max_models, component, model)
                    self._full_logged = True
                return None
            stats = self.models[key] = ModelStats()
        return stats

    def forget(self, component: str) -> None:
        for key in [k for k in self.models if k[0] == component]:
            del self.models[key]

    def collect(self) -> Iterator[Metric]:
        labels = ["component", "model"]
        hist = HistogramMetricFamily("roost_inference_latency_seconds", "Inference latency per model",
                                     labels=labels)
        requests = CounterMetricFamily("roost_inference_requests", "Inference requests per model", labels=labels)
        errors = CounterMetricFamily("roost_inference_errors", "Inference requests refused or failed per model",
                                     labels=labels)
        bounds = [*(_fmt(b) for b in BUCKETS), "+Inf"]
        for (component, model), stats in sorted(self.models.items()):
            cumulative: list[tuple[str, float]] = []
            total = 0
            for bound, count in zip(bounds, stats.buckets, strict=True):
                total += count
                cumulative.append((bound, float(total)))
            hist.add_metric([component, model], cumulative, stats.latency_sum)
            requests.add_metric([component, model], stats.request_total)
            errors.add_metric([component, model], stats.errors)
        yield hist
        yield requests
        yield errors


def _fmt(bound: float) -> str:
    return repr(bound)


__all__ = ["BUCKETS", "ERRORS", "LATENCY", "MAX_MODELS", "REQUESTS", "InferenceStats", "ModelStats", "split_name"]
