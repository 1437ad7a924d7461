"""Metrics of the agent and the hub, in the Prometheus text format, and what Prometheus needs to find them.

* :mod:`.host` — the device itself (CPU, memory, disk, network, temperature, clock), where readable;
* :mod:`.inference` — inference latency histograms and request counts per model, fed by the
  metrics components put (``PutComponentMetric``; ``roost serve`` puts its own);
* :mod:`.agent_metrics` — the agent's collector: component states and restarts, IPC traffic per
  component, deployment outcomes, read from the agent's parts at scrape time;
* :mod:`.endpoint` — the agent's small asyncio HTTP server for ``/metrics`` (bounded, optional token);
* :mod:`.settings` — the agent's metrics settings, kept in ``ROOT/metrics.json``;
* :mod:`.snapshot` — the compact snapshot agents send the hub (NAT'd devices cannot be scraped);
* :mod:`.fleet` — the fleet's latest snapshots as one Prometheus page (``/metrics/fleet``);
* :mod:`.discovery` — Prometheus HTTP service discovery of every device's endpoint;
* :mod:`.hub_metrics` — the hub's own gauges (from the database, at scrape time) and API latency.

Alert rules and Grafana dashboards live in ``deploy/prometheus`` and ``deploy/grafana``; see docs/metrics.md.
"""
