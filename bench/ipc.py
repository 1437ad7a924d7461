"""Local IPC benchmark: request/reply between two components through a real Roost agent.

Measures, in one run:

* request/reply round trip (median, p99) and pipelined throughput (64 requests in flight)
  between two components deployed on a real agent, with Roost's asyncio client on both sides
  and with awsiotsdk's ``GreengrassCoreIPCClientV2`` on both sides;
* the peers of ``../shared/peers/peers_messaging.py`` (Mosquitto + paho, NATS, ZeroMQ, raw
  asyncio and blocking Unix sockets), run as a subprocess in the same run;
* the agent's idle RSS (no components) and its RSS with the bench components deployed;
* the time ``roost agent start --detach`` takes, and the time from launching it to the first
  component RUNNING (one trivial component installed; median of a few restarts).

Everything runs on Unix sockets / 127.0.0.1 in a private temp dir; every wait is bounded and
the agents (and their components) are stopped in ``finally`` even on failure or SIGTERM.

Usage::

    .venv/bin/python bench/ipc.py [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from common import HERE, SHARED, Agent, Workspace, bench_tmp, log, pubsub_acl

PEERS = SHARED / "peers" / "peers_messaging.py"
PEER_TRANSPORTS = "mqtt-thr,nats,zmq,uds-async,uds-sync"
COMPONENT_SCRIPT = HERE / "ipc_component.py"
PEER_LABELS = {
    "mqtt-thr": "Mosquitto + paho (loop thread)",
    "nats": "NATS + nats-py",
    "zmq": "ZeroMQ REQ/REP, ipc://",
    "uds-async": "asyncio Unix socket, length-prefixed",
    "uds-sync": "blocking Unix socket (the Python floor)",
}
VARIANT_LABELS = {
    "roost": "Roost client (asyncio loop) ↔ agent ↔ Roost client",
    "roost-uvloop": "Roost client (uvloop) ↔ agent ↔ Roost client",
    "roost-direct": "Roost client (asyncio loop) ↔ direct channel ↔ Roost client",
    "roost-direct-uvloop": "Roost client (uvloop) ↔ direct channel ↔ Roost client",
    "aws": "awsiotsdk V2 ↔ agent ↔ awsiotsdk V2",
}
TARGET_RSS_MB = 60.0
#: issue 10: the Roost client's round trip at most 0.6x Mosquitto + paho's, pipelined at least 2x
TARGET_RTT_RATIO = 0.6
TARGET_PIPE_RATIO = 2.0
TARGET_START_S = 1.5


def add_pair(ws: Workspace, variant: str, result_file: Path, n: int, warmup: int, pipe_n: int,
             inflight: int, max_s: float, client_loop: str) -> tuple[str, str]:
    """The responder and requester components of one variant (``roost``, ``roost-uvloop`` or ``aws``)."""
    topic = f"bench/{variant}/req"
    base = variant.split("-")[0]
    extra = ["roost/reply/*"] if base == "roost" else [topic + "/reply"]
    cap = "".join(part.capitalize() for part in variant.split("-"))
    names = (f"bench.{cap}Responder", f"bench.{cap}Requester")
    for name, role in zip(names, ("responder", "requester"), strict=True):
        config = {"topic": topic, "resultFile": str(result_file), "n": n, "warmup": warmup, "pipeN": pipe_n,
                  "inflight": inflight, "maxSeconds": max_s, "accessControl": pubsub_acl(name, [topic, *extra])}
        # The bench's own interpreter: uvloop and awsiotsdk are installed there, not in the component's venv.
        run = (f"{sys.executable} -u {{artifacts:path}}/{COMPONENT_SCRIPT.name} {base}-{role} {{configuration:/topic}} "
               "{configuration:/resultFile} {configuration:/n} {configuration:/warmup} {configuration:/pipeN} "
               f"{{configuration:/inflight}} {{configuration:/maxSeconds}} {client_loop}")
        ws.component(name, run, config)
    return names


# -- measurements ------------------------------------------------------------------------------


def cpu_snapshot(agent: Agent) -> dict[int, tuple[str, float]]:
    """CPU seconds of the agent and of each of its descendants, by pid."""
    out: dict[int, tuple[str, float]] = {}
    root = agent.process()
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            cmd = p.cmdline()
            label = "agent" if p.pid == root.pid else next((a for a in cmd if a.endswith(("requester", "responder"))),
                                                            "other")
            out[p.pid] = (label, t.user + t.system)
    return out


def cpu_delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pid, (label, t) in after.items():
        t0 = before.get(pid, (label, 0.0))[1]
        out[label] = out.get(label, 0.0) + t - t0
    return out


def run_variant(agent: Agent, ws: Workspace, tmp: Path, variant: str, a: argparse.Namespace) -> dict[str, Any]:
    results_dir = tmp / "results"
    results_dir.mkdir(exist_ok=True)
    os.chmod(results_dir, 0o1777)  # the requester component (another user) writes its result here
    result_file = results_dir / f"result-{variant}.json"
    max_s = a.variant_timeout + 30
    client_loop = ("uvloop" if variant.endswith("uvloop") else "default") + ("+direct" if "direct" in variant else "")
    names = add_pair(ws, variant, result_file, a.n, a.warmup, a.pipe_n, a.inflight, max_s, client_loop)
    before = cpu_snapshot(agent)
    rss_peak = agent.rss_mb()
    t0 = time.monotonic()
    agent.deploy(ws, *(x for name in names for x in ("--merge", f"{name}=1.0.0")))
    deadline = t0 + a.variant_timeout
    while not result_file.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{variant}: no result within {a.variant_timeout} s "
                               f"(see {agent.root}/logs/{names[1]}.log)")
        rss_peak = max(rss_peak, agent.rss_mb())
        time.sleep(0.1)
    elapsed = time.monotonic() - t0
    cpu = cpu_delta(before, cpu_snapshot(agent))
    result: dict[str, Any] = json.loads(result_file.read_text())
    if "error" in result:
        raise RuntimeError(f"{variant} requester failed: {result['error']}")
    total_requests = a.warmup + a.n + result["pipe_requests"]
    result["rss_peak_mb"] = rss_peak
    result["rss_after_mb"] = agent.rss_mb()
    result["elapsed_s"] = elapsed
    result["cpu_s"] = cpu
    result["agent_cpu_us_per_request"] = cpu.get("agent", 0.0) / total_requests * 1e6
    agent.deploy(ws, *(x for name in names for x in ("--remove", name)))
    return result


async def _wait_running(root: Path, name: str, timeout: float) -> float:
    """Poll ListComponents (as the CLI principal) until ``name`` is RUNNING; return the time it was seen."""
    from roost.ipc.client import IpcClient

    token = (root / "cli.token").read_text().strip()
    deadline = time.monotonic() + timeout
    async with await IpcClient.connect(str(root / "ipc.socket"), token, timeout=timeout) as ipc:
        while time.monotonic() < deadline:
            doc = await ipc.call("ListComponents", {}, timeout=timeout)
            states = {c["componentName"]: c.get("state") for c in doc.get("components", [])}
            if states.get(name) == "RUNNING":
                return time.perf_counter()
            await asyncio.sleep(0.005)
    raise TimeoutError(f"{name} not RUNNING within {timeout} s")


def measure_start(tmp: Path, runs: int) -> dict[str, Any]:
    root = tmp / "root-start"
    ws = Workspace(tmp / "ws-start", COMPONENT_SCRIPT)
    name = "bench.Sleeper"
    ws.component(name, 'python3 -c "import time; time.sleep(3600)" bench-sleeper', {}, script=False)
    agent = Agent(root)
    detach_s: list[float] = []
    to_running_s: list[float] = []
    try:
        agent.start()
        agent.deploy(ws, "--merge", f"{name}=1.0.0")
        agent.stop()
        for _ in range(runs):
            t0 = time.perf_counter()
            detach_s.append(agent.start())
            t_run = asyncio.run(_wait_running(root, name, 30))
            to_running_s.append(t_run - t0)
            agent.stop()
    finally:
        agent.stop()
    return {"runs": runs, "start_detach_s": detach_s, "start_to_running_s": to_running_s,
            "start_detach_median_s": statistics.median(detach_s),
            "start_to_running_median_s": statistics.median(to_running_s)}


def run_peers(tmp: Path, a: argparse.Namespace) -> dict[str, Any]:
    if not PEERS.exists():
        return {"error": f"{PEERS} not found"}
    out = tmp / "peers.json"
    cmd = [sys.executable, str(PEERS), "--only", a.peers, "--repeat", "1", "--n", str(a.n),
           "--warmup", str(a.warmup), "--pipe-n", str(a.pipe_n), "--inflight", str(a.inflight),
           "--phase-s", "60", "--json", str(out)]
    log("running " + " ".join(cmd[1:]))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if not out.exists():
        return {"error": f"peers_messaging exited {proc.returncode}: {proc.stderr[-2000:]}"}
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


# -- report --------------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> list[str]:
    peers = results.get("peers", {}).get("summary", {})
    mqtt = peers.get("mqtt-thr", {}).get("median")
    rows: list[tuple[str, float | None, float | None, float | None]] = []
    for key, label in VARIANT_LABELS.items():
        r = results["variants"].get(key)
        if r is None:
            continue  # not selected
        if "error" not in r:
            rows.append((label, r["median_us"], r["p99_us"], r["pipe_rps"]))
        else:
            rows.append((label + " (failed)", None, None, None))
    for key, label in PEER_LABELS.items():
        m = peers.get(key, {}).get("median")
        if m:
            rows.append((label, m["median_us"], m["p99_us"], m["pipe_rps"]))

    def f(x: float | None, fmt: str = "{:,.0f}") -> str:
        return "n/a" if x is None else fmt.format(x)

    lines = ["| transport | median RTT µs | p99 µs | RTT vs Mosquitto | pipelined req/s (64 in flight) "
             "| pipelined vs Mosquitto |", "|---|---:|---:|---:|---:|---:|"]
    for label, med, p99, rps in rows:
        rtt_ratio = f"{med / mqtt['median_us']:.2f}x" if mqtt and med else "n/a"
        thr_ratio = f"{rps / mqtt['pipe_rps']:.2f}x" if mqtt and rps else "n/a"
        lines.append(f"| {label} | {f(med)} | {f(p99)} | {rtt_ratio} | {f(rps)} | {thr_ratio} |")
    return lines


def targets(results: dict[str, Any]) -> list[str]:
    out = []
    mqtt = results.get("peers", {}).get("summary", {}).get("mqtt-thr", {}).get("median")
    for key in ("roost", "roost-uvloop", "roost-direct", "roost-direct-uvloop"):
        r = results["variants"].get(key)
        if not (mqtt and r and "error" not in r):
            continue
        rtt = r["median_us"] / mqtt["median_us"]
        out.append(f"- {key}: round trip ≤ {TARGET_RTT_RATIO}x Mosquitto + paho: {r['median_us']:.0f} vs "
                   f"{mqtt['median_us']:.0f} µs ({rtt:.2f}x) → {'MET' if rtt <= TARGET_RTT_RATIO else 'NOT MET'}")
        ratio = r["pipe_rps"] / mqtt["pipe_rps"]
        verdict = "MET" if ratio >= TARGET_PIPE_RATIO else "NOT MET"
        out.append(f"- {key}: pipelined ≥ {TARGET_PIPE_RATIO}x Mosquitto + paho: {r['pipe_rps']:,.0f} vs "
                   f"{mqtt['pipe_rps']:,.0f} req/s ({ratio:.2f}x) → {verdict}")
    idle = results.get("agent", {}).get("idle_rss_mb")
    if idle is not None:
        verdict = "MET" if idle <= TARGET_RSS_MB else "NOT MET"
        out.append(f"- idle RSS ≤ {TARGET_RSS_MB:.0f} MB: {idle:.1f} MB → {verdict}")
    st = results.get("start", {}).get("start_to_running_median_s")
    if st is not None:
        verdict = "MET" if st <= TARGET_START_S else "NOT MET"
        out.append(f"- start → RUNNING ≤ {TARGET_START_S} s: {st:.2f} s → {verdict}")
    return out


def report(results: dict[str, Any]) -> str:
    lines = [f"# bench/ipc.py  {results['date']}  python {results['python']}  cpus={results['cpus']}  "
             f"n={results['n']} pipe_n={results['pipe_n']}  agent loop: {results['agent_loop']}", ""]
    lines += table(results)
    lines.append("")
    ag = results.get("agent", {})
    st = results.get("start", {})
    lines.append("| agent | value |")
    lines.append("|---|---:|")
    if "idle_rss_mb" in ag:
        lines.append(f"| idle RSS, no components | {ag['idle_rss_mb']:.1f} MB |")
    for key in VARIANT_LABELS:
        r = results["variants"].get(key)
        if r and "error" not in r:
            lines.append(f"| {key}: agent RSS with the two bench components (peak during run / after) "
                         f"| {r['rss_peak_mb']:.1f} / {r['rss_after_mb']:.1f} MB |")
            lines.append(f"| {key}: agent CPU per request/reply (2 publishes, 2 deliveries) "
                         f"| {r['agent_cpu_us_per_request']:.0f} µs |")
            if "requester_cpu_us_seq" in r:
                lines.append(f"| {key}: requester CPU per request, sequential / pipelined "
                             f"| {r['requester_cpu_us_seq']:.0f} / {r['requester_cpu_us_pipe']:.0f} µs |")
    if "start_detach_median_s" in st:
        lines.append(f"| `agent start --detach` (median of {st['runs']}) | {st['start_detach_median_s']:.2f} s |")
        lines.append(f"| `agent start` launched → first component RUNNING (median of {st['runs']}) "
                     f"| {st['start_to_running_median_s']:.2f} s |")
    lines.append("")
    lines += targets(results)
    for k, v in results.get("errors", {}).items():
        lines.append(f"- ERROR {k}: {v}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run (fewer requests, fewer restarts)")
    ap.add_argument("--json", default="", help="write all results here")
    ap.add_argument("--n", type=int, default=None, help="sequential requests measured (default 5000, quick 1000)")
    ap.add_argument("--warmup", type=int, default=None, help="default 500, quick 200")
    ap.add_argument("--pipe-n", type=int, default=None, help="pipelined requests (default 20480, quick 4096)")
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--start-runs", type=int, default=None, help="agent restarts timed (default 5, quick 3)")
    ap.add_argument("--variants", default="roost,roost-uvloop,roost-direct,roost-direct-uvloop,aws",
                    help="comma list of roost,roost-uvloop,roost-direct,roost-direct-uvloop,aws")
    ap.add_argument("--peers", default=PEER_TRANSPORTS, help="peers_messaging.py transports ('' to skip)")
    ap.add_argument("--skip-start", action="store_true", help="skip the start→RUNNING measurement")
    ap.add_argument("--agent-loop", choices=["default", "uvloop"], default="default",
                    help="experiment: run the agent under uvloop (started via a bootstrap, not `--detach`)")
    ap.add_argument("--variant-timeout", type=float, default=180.0, help="seconds per agent variant")
    a = ap.parse_args()
    a.n = a.n or (1000 if a.quick else 5000)
    a.warmup = a.warmup or (200 if a.quick else 500)
    a.pipe_n = a.pipe_n or (4096 if a.quick else 20480)
    a.start_runs = a.start_runs or (3 if a.quick else 5)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    tmp = bench_tmp("roost-bench-")
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": sys.version.split()[0], "cpus": os.cpu_count(),
        "machine": os.uname().machine, "n": a.n, "warmup": a.warmup, "pipe_n": a.pipe_n, "inflight": a.inflight,
        "agent_loop": a.agent_loop, "variants": {}, "agent": {}, "errors": {},
    }
    agent = Agent(tmp / "root", a.agent_loop)
    try:
        results["agent"]["first_start_detach_s"] = agent.start()
        time.sleep(1.0)
        results["agent"]["idle_rss_mb"] = agent.rss_mb()
        log(f"agent idle RSS {results['agent']['idle_rss_mb']:.1f} MB")
        ws = Workspace(tmp / "ws", COMPONENT_SCRIPT)
        for variant in [v for v in a.variants.split(",") if v]:
            try:
                log(f"variant {variant} ...")
                r = run_variant(agent, ws, tmp, variant, a)
                results["variants"][variant] = r
                log(f"{variant}: median {r['median_us']:.0f} µs p99 {r['p99_us']:.0f} µs "
                    f"pipelined {r['pipe_rps']:,.0f} req/s; agent CPU {r['agent_cpu_us_per_request']:.0f} µs/req")
            except Exception as err:
                results["variants"][variant] = {"error": f"{type(err).__name__}: {err}"}
                results["errors"][variant] = f"{type(err).__name__}: {err}"
                log(f"{variant} FAILED: {err}")
        agent.stop()
        if not a.skip_start:
            try:
                results["start"] = measure_start(tmp, a.start_runs)
            except Exception as err:
                results["errors"]["start"] = f"{type(err).__name__}: {err}"
        if a.peers:
            results["peers"] = run_peers(tmp, a)
            if "error" in results["peers"]:
                results["errors"]["peers"] = results["peers"]["error"]
    finally:
        agent.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    text = report(results)
    print(text)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
