"""Admission decision latency at scale (issue 11): 100 simulated nodes and 1,000 live sessions.

The nodes are node records in a real hub store (what agents report; no agent processes), on the
SQLite file the hub uses by default and on the machine's PostgreSQL when it answers. With 1,000
sessions booked (100 replicas of a type serving 10 sessions each), each timed call is one whole
admission transaction, :meth:`roost.hub.store.ClusterStore.admit`:

- **warm**: a session ends (not timed), the next admission books the freed slot;
- **cold**: a type with one session per replica: every admission places a new replica on the best of
  the 100 nodes and writes that node's replicas deployment;
- **placement only**: :func:`roost.cluster.placement.choose` over the 100 nodes (no database).

    .venv/bin/python bench/cluster_admission.py --json bench/results-cluster-admission.json

The original receive server has no admission of its own to set beside this: it lists Kubernetes nodes
and patches a Deployment per request (several API round trips), so the target is absolute (p99 <= 5 ms).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from common import log
from roost.cluster import placement
from roost.cluster.placement import NodeView
from roost.cluster.service_types import parse_service_type
from roost.hub.app import HubConfig, open_store
from roost.hub.contract.cluster import NodeCapacity, NodeReport
from roost.hub.store import Store

GI = 2**30
T = TypeVar("T")
KEY = "bench-public-key"
TARGET_P99_MS = 5.0
RECIPE = ('RecipeFormatVersion: "2020-01-25"\nComponentName: {name}\nComponentVersion: 1.0.0\n'
          "Manifests:\n  - Platform: {{os: linux}}\n    Lifecycle:\n      Run: sleep 1\n")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "mean_ms": round(statistics.fmean(values), 3),
            "p50_ms": round(percentile(values, 0.5), 3), "p99_ms": round(percentile(values, 0.99), 3),
            "max_ms": round(max(values), 3)}


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """How long ``fn()`` took (ms) and what it returned."""
    start = time.perf_counter()
    out = fn()
    return (time.perf_counter() - start) * 1000, out


def publish(store: Store, name: str) -> None:
    staging = store.artifacts.staging()
    try:
        store.publish_component(RECIPE.format(name=name).encode(), staging, [])
    finally:
        staging.cleanup()


def populate(store: Store, nodes: int) -> None:
    from sqlalchemy import select

    from roost.hub.models import Device

    for i in range(nodes):
        machine = "xavier" if i % 3 else "tx2"
        name = f"node-{i:03d}"
        store.enroll(store.create_enroll_token(None, 3600).token, name, {})
        with store.db.read() as s:
            device_id = int(s.scalar(select(Device.id).where(Device.name == name)))
        capacity = NodeCapacity(memory_bytes=32 * GI, cpu_millis=8000)
        store.report_node(device_id, NodeReport(labels={"machine": machine}, allocatable=capacity, measured=capacity,
                                                address=f"10.0.{i // 250}.{i % 250 + 1}"))


def run(store: Store, nodes: int, sessions: int, calls: int) -> dict[str, Any]:
    populate(store, nodes)
    for name in ("bench.Shared", "bench.Single"):
        publish(store, name)
    shared = parse_service_type({"name": "shared", "component": "bench.Shared", "sessionsPerReplica": 10,
                                 "maxReplicas": 1000, "resources": {"requests": {"memory": "256Mi", "cpu": "50m"}}})
    single = parse_service_type({"name": "single", "component": "bench.Single", "sessionsPerReplica": 1,
                                 "maxReplicas": 1000, "resources": {"requests": {"memory": "128Mi", "cpu": "10m"}}})
    store.apply_service_type(shared)
    store.apply_service_type(single)
    booked = [store.admit("shared", f"client-{i}", None, KEY) for i in range(sessions)]
    replicas = len({a.replica for a in booked})
    log(f"  {nodes} nodes, {len(booked)} live sessions on {replicas} replicas")
    warm: list[float] = []
    for i in range(calls):
        store.end_session(booked[i % len(booked)].session.id, "bench")
        ms, admitted = timed(lambda i=i: store.admit("shared", f"warm-{i}", None, KEY))
        assert admitted.warm
        warm.append(ms)
        booked[i % len(booked)] = admitted
    cold: list[float] = []
    for i in range(calls):
        ms, admitted = timed(lambda i=i: store.admit("single", f"cold-{i}", None, KEY))
        assert not admitted.warm
        cold.append(ms)
    views = [NodeView(name=f"n{i}", tier="edge", labels={"machine": "xavier"}, memory_bytes=32 * GI, cpu_millis=8000,
                      requested_memory=(i % 7) * GI) for i in range(nodes)]
    decide = [timed(lambda: placement.choose(single, views, "edge"))[0] for _ in range(calls)]
    return {"nodes": nodes, "live_sessions": len(booked), "replicas": replicas, "warm": summary(warm),
            "cold": summary(cold), "placement_only": summary(decide)}


def pg_url() -> str | None:
    import os

    url = os.environ.get("ROOST_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg

        name = f"roost_bench_{int(time.time())}"
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return url.rsplit("/", 1)[0] + "/" + name
    except Exception as err:
        log(f"PostgreSQL not measured: {err}")
        return None


def drop_pg(url: str) -> None:
    import psycopg

    admin = url.rsplit("/", 1)[0] + "/test"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    results: dict[str, Any] = {"target_p99_ms": TARGET_P99_MS}
    with tempfile.TemporaryDirectory(prefix="roost-bench-admission-") as tmp:
        log("SQLite")
        store = open_store(HubConfig(root=Path(tmp) / "hub"))
        results["sqlite"] = run(store, args.nodes, args.sessions, args.calls)
        store.db.dispose()
        url = pg_url()
        if url is not None:
            log("PostgreSQL")
            store = open_store(HubConfig(root=Path(tmp) / "hub-pg", db_url=url))
            try:
                results["postgresql"] = run(store, args.nodes, args.sessions, args.calls)
            finally:
                store.db.dispose()
                drop_pg(url)
    for db in ("sqlite", "postgresql"):
        if db in results:
            r = results[db]
            log(f"{db:10s} warm p50 {r['warm']['p50_ms']:.2f} ms p99 {r['warm']['p99_ms']:.2f} ms | cold p50 "
                f"{r['cold']['p50_ms']:.2f} ms p99 {r['cold']['p99_ms']:.2f} ms | placement only p99 "
                f"{r['placement_only']['p99_ms'] * 1000:.0f} us")
    text = json.dumps(results, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
