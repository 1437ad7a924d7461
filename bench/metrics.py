"""Metrics (issue 12): the agent's /metrics with 100 components, and the hub's /metrics/fleet for 10,000 devices.

Each beside its peer in the same run: a bare ``prometheus_client`` registry exposing the same number
of series (``generate_latest``, in process and over prometheus_client's own HTTP server), so the ratio
says what Roost's own overhead is.

* **agent**: a real agent (``roost agent start --detach``, ``--metrics-address`` in ROOT/metrics.json)
  running 100 components (96 ``sleep``, 4 putting inference metrics over IPC every 0.2 s); sequential
  scrapes over HTTP (a new connection each, as Prometheus does against an endpoint that closes).
* **fleet**: a hub root whose database holds 10,000 simulated devices in 10 groups with a snapshot each
  (written directly into the tables, as 10,000 agents' ``PUT /v1/device/metrics`` would leave them, the
  pre-formatted numbers included);
  ``GET /metrics/fleet`` against a real ``roost hub serve`` (SQLite), and the store read and the
  rendering timed apart in process.

    .venv/bin/python bench/metrics.py --json bench/results-metrics.json
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, Agent, Workspace, bench_tmp, log, roost, run_header, write_results

TARGETS = {"agent_scrape_ms": 10.0, "fleet_10k_s": 1.0}

REPORTER = """
import asyncio, random
from roost.ipc.client import IpcClient

async def main():
    ipc = await IpcClient.connect()
    await ipc.update_state("RUNNING")
    while True:
        m = [{"name": "InferenceRequests", "unit": "COUNT", "value": 10}]
        m += [{"name": "InferenceLatency", "unit": "SECONDS", "value": random.uniform(0.001, 0.05)} for _ in range(10)]
        await ipc.call("aws.greengrass#PutComponentMetric", {"metrics": m})
        await asyncio.sleep(0.2)

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(values), "p50": round(statistics.median(values), 3),
            "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
            "p99": round(ordered[int(0.99 * (len(ordered) - 1))], 3), "min": round(ordered[0], 3)}


def count_samples(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def timed_gets(url: str, n: int, headers: dict[str, str] | None = None) -> tuple[list[float], bytes]:
    """``n`` sequential GETs with one client (making an httpx client costs ~100 ms: not part of a scrape)."""
    times: list[float] = []
    body = b""
    with httpx.Client(headers=headers or {}, timeout=30) as client:
        for _ in range(n):
            t0 = time.perf_counter()
            r = client.get(url)
            times.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            body = r.content
    return times, body


def peer(series: int, n: int) -> dict[str, Any]:
    """A bare prometheus_client registry with ``series`` gauge series: generate_latest, and over HTTP."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest, start_http_server

    registry = CollectorRegistry()
    gauge = Gauge("peer_series", "a gauge", ["device", "name"], registry=registry)
    for i in range(series):
        gauge.labels(f"device-{i // 16:05d}", f"value_{i % 16}").set(random.random())
    in_process: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        page = generate_latest(registry)
        in_process.append((time.perf_counter() - t0) * 1000)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        http, _ = timed_gets(f"http://127.0.0.1:{port}/metrics", n)
    finally:
        server.shutdown()
        thread.join(5)
    return {"series": series, "bytes": len(page), "generate_latest_ms": stats(in_process), "http_ms": stats(http)}


# -- the agent -------------------------------------------------------------------------------------
def agent_bench(components: int, scrapes: int) -> dict[str, Any]:
    from roost.observe.settings import settings_from_options

    base = bench_tmp("roost-bench-metrics-")
    root = base / "root"
    root.mkdir()
    port = free_port()
    settings_from_options(root, f"127.0.0.1:{port}", None).save(root)
    script = base / "reporter.py"
    script.write_text(REPORTER)
    ws = Workspace(base / "ws", script)
    names = [f"com.bench.C{i:03d}" for i in range(components)]
    policy = {"accessControl": {"aws.greengrass.ipc.componentmetric": {"bench:m:1": {
        "operations": ["aws.greengrass#PutComponentMetric"], "resources": ["*"]}}}}
    for i, name in enumerate(names):
        if i < 4:
            ws.component(name, f"exec {sys.executable} -u {{artifacts:path}}/reporter.py", policy)
        else:
            ws.component(name, "exec sleep 3600", {}, script=False)
    agent = Agent(root)
    try:
        agent.start()
        merges = [a for n in names for a in ("--merge", f"{n}=1.0.0")]
        agent.deploy(ws, *merges, timeout=600)
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 60
        while 'roost_inference_requests_total{component="com.bench.C003"' not in httpx.get(url, timeout=10).text:
            if time.monotonic() > deadline:
                raise RuntimeError("no inference metrics from the reporters")
            time.sleep(0.5)
        timed_gets(url, 20)  # warm
        times, body = timed_gets(url, scrapes)
        text = body.decode()
        series = count_samples(text)
        rss = agent.rss_mb()
    finally:
        agent.stop()
    log(f"agent: {components} components, {series} series, {len(body)} bytes, p50 {statistics.median(times):.2f} ms")
    result = {"components": components, "series": series, "bytes": len(body), "scrape_ms": stats(times),
              "agent_rss_mb": round(rss, 1), "peer": peer(series, scrapes)}
    result["ratio_vs_peer_http_p50"] = round(result["scrape_ms"]["p50"] / result["peer"]["http_ms"]["p50"], 2)
    return result


# -- the fleet -------------------------------------------------------------------------------------
def snapshot_doc(i: int) -> dict[str, Any]:
    from roost.observe.snapshot import KNOWN_VALUES

    values = {k: round(random.random(), 4) for k in KNOWN_VALUES if k != "temperature_celsius"}
    return {"at": datetime.now(UTC).isoformat(), "endpoint": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:9464",
            "token": True, "values": values,
            "models": {"wine-quality": {"requests_total": float(i), "errors_total": 0.0,
                                        "latency_p50_seconds": 0.004, "latency_p95_seconds": 0.011}}}


def fleet_bench(devices: int, requests: int) -> dict[str, Any]:
    from sqlalchemy import insert

    from roost.hub.app import HubConfig, open_store
    from roost.hub.contract.metrics import MetricsSnapshot
    from roost.hub.models import Device, DeviceMetricsRow, Group, GroupMember
    from roost.observe.fleet import render_fleet, snapshot_lines

    base = bench_tmp("roost-bench-fleet-metrics-")
    hub_root = base / "hub"
    proc = roost("hub", "init", "--root", str(hub_root), "--json")
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout + proc.stderr)
    store = open_store(HubConfig(root=hub_root))
    now = datetime.now(UTC)
    log(f"fleet: writing {devices} devices with snapshots")
    with store.db.write() as s:
        s.execute(insert(Group), [{"name": f"group-{g}", "created_at": now} for g in range(10)])
        s.execute(insert(Device), [{"id": i + 1, "name": f"device-{i:05d}", "credential_hash": f"{i:064x}",
                                    "labels": {"machine": "xavier"}, "created_at": now, "last_seen_at": now,
                                    "reported": {}, "desired_revision": 0} for i in range(devices)])
        s.execute(insert(GroupMember), [{"group_name": f"group-{i % 10}", "device_id": i + 1}
                                        for i in range(devices)])
        docs = [snapshot_doc(i) for i in range(devices)]
        s.execute(insert(DeviceMetricsRow), [{"device_id": i + 1, "received_at": now, "endpoint": None, "snapshot": doc,
                                              "lines": snapshot_lines(MetricsSnapshot.model_validate(doc))}
                                             for i, doc in enumerate(docs)])
    token = store.create_metrics_token("bench")
    reads, renders = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        rows = store.fleet_rows()
        t1 = time.perf_counter()
        page = render_fleet(rows)
        t2 = time.perf_counter()
        reads.append((t1 - t0) * 1000)
        renders.append((t2 - t1) * 1000)
    store.db.dispose()
    series = count_samples(page.decode())
    port = free_port()
    log_file = base / "hub.log"
    with open(log_file, "wb") as fh:
        hub = subprocess.Popen([sys.executable, "-m", "roost", "hub", "serve", "--root", str(hub_root), "--port",
                                str(port), "--log-level", "warning"], stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or hub.poll() is not None:
                raise RuntimeError(log_file.read_text())
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {token}"}
        timed_gets(f"http://127.0.0.1:{port}/metrics/fleet", 2, headers)  # warm
        times, body = timed_gets(f"http://127.0.0.1:{port}/metrics/fleet", requests, headers)
    finally:
        hub.terminate()
        hub.wait(30)
    log(f"fleet: {devices} devices, {series} series, {len(body)} bytes, p50 {statistics.median(times):.0f} ms")
    result = {"devices": devices, "series": series, "bytes": len(body), "http_ms": stats(times),
              "store_read_ms": stats(reads), "render_ms": stats(renders), "peer": peer(series, 5),
              "database": "sqlite"}
    result["ratio_vs_peer_generate_latest_p50"] = round(
        result["http_ms"]["p50"] / result["peer"]["generate_latest_ms"]["p50"], 2)
    result["render_vs_peer_generate_latest_p50"] = round(
        result["render_ms"]["p50"] / result["peer"]["generate_latest_ms"]["p50"], 2)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--components", type=int, default=100)
    ap.add_argument("--scrapes", type=int, default=300)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--fleet-requests", type=int, default=10)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    results = run_header(TARGETS)
    results["agent"] = agent_bench(args.components, args.scrapes)
    results["fleet"] = fleet_bench(args.devices, args.fleet_requests)
    results["load_after"] = round(os.getloadavg()[0], 2)
    write_results(results, args.json)


if __name__ == "__main__":
    main()
