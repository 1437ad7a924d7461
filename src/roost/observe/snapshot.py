"""The compact metrics snapshot agents send the hub (devices behind NAT cannot be scraped).

The agent's hub sync sends one (``PUT /v1/device/metrics``, :class:`~roost.hub.contract.MetricsSnapshot`)
with its heartbeat, at most every ``ROOST_METRICS_SNAPSHOT_SECONDS`` (60); the hub keeps the latest per
device and a sample a minute for an hour (:mod:`roost.hub.store.metrics`) and shows the fleet's latest
values on ``/metrics/fleet`` (:mod:`roost.observe.fleet`). It is sent apart from the spooled reports,
so a snapshot the hub refuses (413 ``METRICS_SNAPSHOT_TOO_LARGE``, 422 ``METRICS_SNAPSHOT_INVALID``) costs
nothing else: it is logged once and the next one is tried at the next interval.

:data:`KNOWN_VALUES` are the values an agent sends (a hub keeps any name matching
:data:`~roost.hub.contract.metrics.VALUE_NAME`, so newer agents may add some).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from roost.agent.paths import AgentPaths
from roost.agent.states import ComponentState
from roost.errors import RoostError
from roost.hub.contract.metrics import KNOWN_VALUES, MAX_MODELS, MAX_SNAPSHOT_BYTES, MetricsSnapshot, ModelSample
from roost.hub.errors import PayloadTooLargeError, UnprocessableError
from roost.observe.agent_metrics import AgentCollector, AgentMetrics
from roost.observe.endpoint import MetricsEndpoint


class SnapshotAgent(Protocol):
    """What a snapshot reads of an agent (:class:`roost.agent.agent.Agent`; not imported: no cycle)."""

    paths: AgentPaths
    metrics: AgentMetrics
    metrics_endpoint: MetricsEndpoint | None



def build_snapshot(collector: AgentCollector, endpoint: str | None, token: bool, now: float) -> MetricsSnapshot:
    """The agent's snapshot now (cheap: no page is rendered)."""
    agent = collector.agent
    states = agent.supervisor.states()
    host = collector.host_sample()
    values: dict[str, float] = {"cpu_ratio": host.cpu_ratio, "memory_ratio": host.memory_ratio}
    if host.disk_ratio is not None:
        values["disk_ratio"] = host.disk_ratio
    if host.temperature_celsius is not None:
        values["temperature_celsius"] = host.temperature_celsius
    counts = {s: 0 for s in ComponentState}
    for state in states.values():
        counts[state] += 1
    values["components"] = float(len(states))
    values["components_running"] = float(counts[ComponentState.RUNNING] + counts[ComponentState.FINISHED])
    values["components_errored"] = float(counts[ComponentState.ERRORED])
    values["components_broken"] = float(counts[ComponentState.BROKEN])
    values["component_restarts_total"] = float(sum(collector.events.restarts(n) for n in states))
    traffic = agent.server.traffic()
    values["ipc_messages_total"] = float(sum(t.messages_in for t in traffic.values()))
    values["ipc_refused_total"] = float(sum(t.refusals for t in traffic.values()))
    values["deployments_failed_total"] = float(sum(1 for s, _ in agent.store.deployment_durations() if s == "FAILED"))
    values["uptime_seconds"] = max(0.0, now - collector.started)
    models: dict[str, ModelSample] = {}
    for (component, model), stats in sorted(collector.inference.models.items(),
                                            key=lambda kv: -kv[1].request_total)[:MAX_MODELS]:
        name = model if model == component else f"{component}:{model}"
        models[name[:64]] = ModelSample(requests_total=stats.request_total, errors_total=stats.errors,
                                        latency_p50_seconds=stats.quantile(0.5),
                                        latency_p95_seconds=stats.quantile(0.95))
    return MetricsSnapshot(at=datetime.fromtimestamp(now, UTC), endpoint=endpoint, token=token, values=values,
                           models=models)


def reported_endpoint(host: str, port: int, root: Path, hub_url: str) -> str:
    """``HOST:PORT`` Prometheus should scrape: a wildcard bind is reported as the node's address
    (``--advertise-address``, else the local address of the route to the hub)."""
    if host in ("0.0.0.0", "::", ""):
        from roost.agent.node import NodeSettings, local_address_towards

        try:
            host = NodeSettings.load(root).address or local_address_towards(hub_url)
        except RoostError:
            host = local_address_towards(hub_url)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def snapshot_source(agent: SnapshotAgent, hub_url: str) -> Callable[[], MetricsSnapshot]:
    """What the hub sync calls for each snapshot."""
    collector = agent.metrics.collector

    def take() -> MetricsSnapshot:
        endpoint = agent.metrics_endpoint
        where = None
        if endpoint is not None:
            host, port = endpoint.bound
            where = reported_endpoint(host, port, agent.paths.root, hub_url)
        return build_snapshot(collector, where, endpoint is not None and endpoint.has_token, time.time())
    return take


def parse_snapshot(body: bytes) -> MetricsSnapshot:
    """The hub's side: a snapshot from a request body, or a specific error naming what is wrong."""
    if len(body) > MAX_SNAPSHOT_BYTES:
        raise PayloadTooLargeError(f"the metrics snapshot is {len(body)} bytes; the hub takes at most "
                                   f"{MAX_SNAPSHOT_BYTES}", code="METRICS_SNAPSHOT_TOO_LARGE")
    try:
        doc = json.loads(body)
    except ValueError as err:
        raise UnprocessableError(f"the metrics snapshot is not JSON: {err}", code="METRICS_SNAPSHOT_INVALID") from err
    try:
        return MetricsSnapshot.model_validate(doc)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "(body)"
        raise UnprocessableError(f"the metrics snapshot is malformed at {where}: {first.get('msg')}",
                                 code="METRICS_SNAPSHOT_INVALID") from err


__all__ = ["KNOWN_VALUES", "SnapshotAgent", "build_snapshot", "parse_snapshot", "reported_endpoint", "snapshot_source"]
