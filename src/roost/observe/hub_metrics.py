"""The hub's own metrics (``GET /metrics``): fleet gauges from the database and API latency.

Gauges are counted in the database at scrape time (:meth:`roost.hub.store.metrics.MetricsStore.hub_gauges`),
so any hub replica sharing the PostgreSQL answers the same. API latency is a histogram per process
(``roost_hub_api_request_duration_seconds{method,route,status}``), measured by :class:`LatencyMiddleware`
around every request; ``route`` is the route's template (``/v1/devices/{name}``), never the raw path
(unmatched paths count as ``(unmatched)``), so the label set stays bounded.

Metric names:

* ``roost_hub_info{version}``;
* ``roost_hub_devices{status}`` (ONLINE, OFFLINE, REVOKED), ``roost_hub_device_snapshots`` (devices that
  sent a metrics snapshot);
* ``roost_hub_deployments{state}`` (ACTIVE, SUPERSEDED, CANCELED, ABORTED, COMPLETED);
* ``roost_hub_rollout_devices{deployment,target,state,status}``: the devices of the newest 20 deployments in
  effect (state ACTIVE, COMPLETED or ABORTED) per status (QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, ...);
* ``roost_hub_cluster_nodes{tier}``, ``roost_hub_cluster_replicas{status}``, ``roost_hub_cluster_sessions{status}``;
* ``roost_learn_jobs{status}`` (PENDING, STARTING, RUNNING, SUCCEEDED, FAILED): federated learning jobs;
* per job, for the unfinished jobs and those ended within the last hour (newest 20, so ``job`` stays a
  bounded label): ``roost_learn_round{job,status}`` (the latest round recorded, 0 before the first),
  ``roost_learn_round_participants{job}`` and ``roost_learn_round_metric{job}`` (that round's usable updates
  and the RMSE of its aggregate on the hub's held-out set), ``roost_learn_bytes_total{job}`` (model bytes
  exchanged so far, both ways) and ``roost_learn_rejected_updates_total{job}``;
* ``roost_hub_api_request_duration_seconds{method,route,status}`` (histogram; status as ``2xx``..``5xx``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from roost import __version__
from roost.hub.contract.cluster import ReplicaStatus, SessionStatus
from roost.learn.federated_job import JobState
from roost.observe.exposition import render

if TYPE_CHECKING:
    from roost.hub.store import Store

API_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED: Final = "(unmatched)"
DEVICE_STATUSES: Final = ("ONLINE", "OFFLINE", "REVOKED")
DEPLOYMENT_STATES: Final = ("ACTIVE", "SUPERSEDED", "CANCELED", "ABORTED", "COMPLETED")


class HubCollector:
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        g = self.store.hub_gauges()
        info = GaugeMetricFamily("roost_hub_info", "The hub (always 1)", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info
        yield _by("roost_hub_devices", "Enrolled devices by status", "status", g.devices, DEVICE_STATUSES)
        yield GaugeMetricFamily("roost_hub_device_snapshots", "Devices that sent a metrics snapshot",
                                value=float(g.snapshots))
        yield _by("roost_hub_deployments", "Deployments by state", "state", g.deployments, DEPLOYMENT_STATES)
        rollout = GaugeMetricFamily("roost_hub_rollout_devices", "Devices of the newest deployments in effect by "
                                    "status", labels=["deployment", "target", "state", "status"])
        for (deployment, target, state, status), n in sorted(g.rollouts.items()):
            rollout.add_metric([deployment, target, state, status], float(n))
        yield rollout
        yield _by("roost_hub_cluster_nodes", "Cluster nodes by tier", "tier", g.nodes, ("edge", "centre"))
        yield _by("roost_hub_cluster_replicas", "Cluster replicas by status", "status", g.replicas,
                  tuple(ReplicaStatus))
        yield _by("roost_hub_cluster_sessions", "Cluster sessions by status", "status", g.sessions,
                  tuple(SessionStatus))
        yield from self._learn()

    def _learn(self) -> Iterator[Metric]:
        g = self.store.learn_gauges()
        yield _by("roost_learn_jobs", "Federated learning jobs by status", "status", g.jobs, tuple(JobState))
        rounds = GaugeMetricFamily("roost_learn_round", "The latest round recorded of a running or recent federated "
                                   "job (0 before its first)", labels=["job", "status"])
        participants = GaugeMetricFamily("roost_learn_round_participants", "Usable updates in that round",
                                         labels=["job"])
        metric = GaugeMetricFamily("roost_learn_round_metric", "RMSE of that round's aggregated model on the hub's "
                                   "held-out set", labels=["job"])
        sent = CounterMetricFamily("roost_learn_bytes", "Model bytes exchanged by the job so far (both ways)",
                                   labels=["job"])
        rejected = CounterMetricFamily("roost_learn_rejected_updates", "Updates the job rejected (with a reason)",
                                       labels=["job"])
        for j in g.series:
            rounds.add_metric([j.job, j.status], float(j.round))
            participants.add_metric([j.job], float(j.participants))
            if j.metric is not None:
                metric.add_metric([j.job], float(j.metric))
            sent.add_metric([j.job], float(j.bytes))
            rejected.add_metric([j.job], float(j.rejected))
        yield from (rounds, participants, metric, sent, rejected)


def _by(name: str, doc: str, label: str, counts: Mapping[str, int], always: tuple[str, ...]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key in sorted({*always, *counts}):
        family.add_metric([key], float(counts.get(key, 0)))
    return family


class HubMetrics:
    """The hub process' registry: database gauges (at scrape time) and the API latency histogram."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(HubCollector(store))
        self.latency = Histogram("roost_hub_api_request_duration_seconds", "Hub API request latency",
                                 ["method", "route", "status"], buckets=API_BUCKETS, registry=self.registry)

    def render(self) -> bytes:
        """The page (queries the database: call it in a worker thread)."""
        return render(self.registry.collect())


class LatencyMiddleware:
    """Times every HTTP request; labels it by method, route template and status class."""

    def __init__(self, app: ASGIApp, metrics: HubMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            method = scope["method"] if scope["method"] in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD") \
                else "OTHER"
            self.metrics.latency.labels(method, template, f"{status[0] // 100}xx").observe(
                time.perf_counter() - start)


__all__ = ["API_BUCKETS", "HubCollector", "HubMetrics", "LatencyMiddleware"]
