"""The agent's metrics: one custom collector reading the agent's parts at scrape time.

State that the agent already keeps (component states, IPC traffic per connection, deployments in
``state.db``, the metrics components put) is read when Prometheus scrapes, not mirrored into
counters; only events that leave no trace are counted as they happen (:class:`ComponentEvents`:
starts and errors from the supervisor's state callback).

Metric names (see docs/metrics.md for the full table):

* ``roost_agent_info{thing,version}`` (1), ``roost_agent_start_time_seconds``;
* ``roost_component_state{component,state}`` (one series per component: its current state, value 1; the
  series of a state it left goes stale, so ``roost_component_state{state="BROKEN"} == 1`` is what is BROKEN now),
  ``roost_component_restarts_total{component}``, ``roost_component_errors_total{component}``;
* ``roost_ipc_connections``, ``roost_ipc_refused_connections_total``, ``roost_pubsub_subscriptions``,
  per component: ``roost_ipc_messages_received_total``, ``roost_ipc_received_bytes_total``,
  ``roost_ipc_sent_bytes_total``, ``roost_ipc_dropped_connections_total``, ``roost_ipc_refused_operations_total``;
* ``roost_agent_deployments_total{status}``, ``roost_agent_deployment_duration_seconds{status}`` (histogram);
* ``roost_component_metric{component,metric,unit}`` (latest value put), ``roost_component_metric_puts_total``
  and ``roost_component_metric_sum`` (same labels);
* the inference histograms (:mod:`roost.observe.inference`) and the host (:mod:`roost.observe.host`).
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Final, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from roost import __version__
from roost.agent.component_metrics import ComponentMetrics
from roost.agent.ipc import IpcServer
from roost.agent.paths import AgentPaths
from roost.agent.states import ComponentState
from roost.agent.store import Store
from roost.agent.supervisor import Supervisor
from roost.observe.exposition import render
from roost.observe.host import HostReader, HostSample
from roost.observe.inference import InferenceStats

logger = logging.getLogger(__name__)

#: Upper bounds of the deployment duration buckets (seconds).
DEPLOYMENT_BUCKETS: Final = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class MetricsAgent(Protocol):
    """What the metrics read of an agent (:class:`roost.agent.agent.Agent`; not imported: no cycle)."""

    paths: AgentPaths
    thing_name: str
    supervisor: Supervisor
    server: IpcServer
    store: Store
    component_metrics: ComponentMetrics


class ComponentEvents:
    """Starts and errors per component since the agent started (the supervisor's state callback)."""

    def __init__(self) -> None:
        self.starts: dict[str, int] = {}
        self.errors: dict[str, int] = {}

    def on_state(self, name: str, new: ComponentState) -> None:
        if new is ComponentState.STARTING:
            self.starts[name] = self.starts.get(name, 0) + 1
        elif new is ComponentState.ERRORED:
            self.errors[name] = self.errors.get(name, 0) + 1

    def restarts(self, name: str) -> int:
        return max(0, self.starts.get(name, 0) - 1)


class AgentCollector:
    """A prometheus_client collector over one agent (registered in its own registry)."""

    def __init__(self, agent: MetricsAgent, host: HostReader | None = None) -> None:
        self.agent = agent
        self.host = host or HostReader(agent.paths.root)
        self.events = ComponentEvents()
        self.inference = InferenceStats()
        self.started = time.time()
        agent.component_metrics.listeners.append(self._on_put)

    def _on_put(self, component: str, metrics: object) -> None:
        if metrics is None:
            self.inference.forget(component)
        elif isinstance(metrics, list):
            self.inference.put(component, metrics)

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        info = GaugeMetricFamily("roost_agent_info", "The agent (always 1)", labels=["thing", "version"])
        info.add_metric([agent.thing_name, __version__], 1.0)
        yield info
        yield GaugeMetricFamily("roost_agent_start_time_seconds", "When the agent started (Unix time)",
                                value=self.started)
        yield from self._components(agent.supervisor.states())
        yield from self._ipc()
        yield from self._deployments()
        yield from self._component_metrics()
        yield from self.inference.collect()
        yield from self.host.collect()

    def _components(self, states: Mapping[str, ComponentState]) -> Iterator[Metric]:
        state = GaugeMetricFamily("roost_component_state", "The component's current state (one series, value 1)",
                                  labels=["component", "state"])
        restarts = CounterMetricFamily("roost_component_restarts", "Times a component started again since the "
                                       "agent started", labels=["component"])
        errors = CounterMetricFamily("roost_component_errors", "Times a component went ERRORED since the agent "
                                     "started", labels=["component"])
        for name in sorted(states):
            state.add_metric([name, states[name].value], 1.0)
            restarts.add_metric([name], float(self.events.restarts(name)))
            errors.add_metric([name], float(self.events.errors.get(name, 0)))
        yield state
        yield restarts
        yield errors

    def _ipc(self) -> Iterator[Metric]:
        server = self.agent.server
        yield GaugeMetricFamily("roost_ipc_connections", "Open IPC connections", value=float(server.connection_count))
        yield CounterMetricFamily("roost_ipc_refused_connections", "IPC connections refused or dropped (all causes)",
                                  value=float(server.refused_connections.total))
        yield GaugeMetricFamily("roost_pubsub_subscriptions", "Local pub/sub subscriptions",
                                value=float(server.pubsub.subscription_count))
        traffic = server.traffic()
        families = [
            (CounterMetricFamily("roost_ipc_messages_received", "IPC messages received per component",
                                 labels=["component"]), "messages_in"),
            (CounterMetricFamily("roost_ipc_received_bytes", "IPC bytes received per component",
                                 labels=["component"]), "bytes_in"),
            (CounterMetricFamily("roost_ipc_sent_bytes", "IPC bytes sent per component", labels=["component"]),
             "bytes_out"),
            (CounterMetricFamily("roost_ipc_dropped_connections", "IPC connections dropped as slow consumers "
                                 "per component", labels=["component"]), "drops"),
            (CounterMetricFamily("roost_ipc_refused_operations", "IPC operations refused (unauthorised, over a "
                                 "limit, too large) per component", labels=["component"]), "refusals"),
        ]
        for name in sorted(traffic):
            t = traffic[name]
            for family, attr in families:
                family.add_metric([name], float(getattr(t, attr)))
        for family, _ in families:
            yield family

    def _deployments(self) -> Iterator[Metric]:
        rows = self.agent.store.deployment_durations()
        total = CounterMetricFamily("roost_agent_deployments", "Deployments on this device by status "
                                    "(the newest 10,000)", labels=["status"])
        hist = HistogramMetricFamily("roost_agent_deployment_duration_seconds", "Time from a deployment's "
                                     "arrival to its latest status", labels=["status"])
        by_status: dict[str, list[float]] = {}
        for status, seconds in rows:
            by_status.setdefault(status, []).append(seconds)
        bounds = [*(repr(b) for b in DEPLOYMENT_BUCKETS), "+Inf"]
        for status in sorted(by_status):
            values = by_status[status]
            total.add_metric([status], float(len(values)))
            counts = [0] * (len(DEPLOYMENT_BUCKETS) + 1)
            for v in values:
                counts[bisect.bisect_left(DEPLOYMENT_BUCKETS, v)] += 1
            running = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip(bounds, counts, strict=True):
                running += count
                buckets.append((bound, float(running)))
            hist.add_metric([status], buckets, sum(values))
        yield total
        yield hist

    def _component_metrics(self) -> Iterator[Metric]:
        labels = ["component", "metric", "unit"]
        latest = GaugeMetricFamily("roost_component_metric", "Latest value a component put (PutComponentMetric)",
                                   labels=labels)
        puts = CounterMetricFamily("roost_component_metric_puts", "Values a component put per metric", labels=labels)
        sums = CounterMetricFamily("roost_component_metric_sum", "Sum of the values a component put per metric",
                                   labels=labels)
        for component, metric, unit, value, count, total in sorted(self.agent.component_metrics.items()):
            key = [component, metric, unit]
            latest.add_metric(key, value)
            puts.add_metric(key, float(count))
            sums.add_metric(key, total)
        yield latest
        yield puts
        yield sums

    # -- the heartbeat snapshot (roost.observe.snapshot) ------------------------------------------
    def host_sample(self) -> HostSample:
        return self.host.sample()


class AgentMetrics:
    """The agent's registry: ``render()`` is the ``/metrics`` page."""

    def __init__(self, agent: MetricsAgent, host: HostReader | None = None) -> None:
        self.collector = AgentCollector(agent, host)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)

    def on_state(self, name: str, new: ComponentState) -> None:
        self.collector.events.on_state(name, new)

    def render(self) -> bytes:
        return render(self.registry.collect())


Render = Callable[[], bytes]

__all__ = ["DEPLOYMENT_BUCKETS", "AgentCollector", "AgentMetrics", "ComponentEvents", "MetricsAgent", "Render"]
