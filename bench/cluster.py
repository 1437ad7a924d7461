"""The edge cluster, measured (issue 11): admission at scale, request -> ready endpoint (warm and cold),
the window round trip and bytes per window of Roost's protocol beside the original 40-frame JSON
format, and the switch to the centre when the edge is full.

Live part: a real `roost hub serve` and two real agents on this machine, an edge node labelled
``machine=xavier`` with ``--capacity memory=4Gi`` (room for one replica of the shipped ``scalar``
type, 3417969Ki) and a centre node. Clients are Roost's stream client (:mod:`roost.cluster.stream_client`),
speaking Roost's binary and JSON windows and the original protocol (40 JSON frames per window, one text
reply) to the same replica; bytes are counted on the client's socket (TCP payload, websocket framing
included). With ``../shared/seed-data`` present, the original's own rows (15 CAN-bus features +
``Class``, the edge-cluster client's CSV) are streamed too, to a driver-class XGBoost classifier trained
here on that excerpt (a stand-in for the original's model, which is not in the seed data).

Scale part: ``bench/cluster_admission.py`` (100 simulated nodes, 1,000 live sessions).

    .venv/bin/python bench/cluster.py --json bench/results-cluster.json

The original waited a fixed 5 s (scalar) or 16 s (image) after the edge answered, and 4 s or 16 s
after asking the centre (its client's ``time.sleep``), on top of its own polling of the Deployment's
available replicas every second: those are its request -> ready times by construction.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from common import REPO, SHARED, bench_tmp, log, roost, run_header, write_results
from roost import eventloop

WINE = REPO / "src" / "roost" / "samples" / "data" / "wine_concat.csv"
DRIVING = SHARED / "seed-data" / "k8s-rcv-ml_full_data_test_head.csv"
ORIGINAL_WAIT_S = {"scalar": 5.0, "image": 16.0, "centre scalar": 4.0, "centre image": 16.0}
TARGETS = {"warm_ready_ms": 50.0, "cold_ready_s": 3.0, "window_rtt_p50_ms": 2.0, "bytes_ratio": 1 / 3}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(values), "mean": round(statistics.fmean(values), 3), "p50": round(ordered[len(ordered) // 2], 3),
            "p99": round(ordered[min(len(ordered) - 1, int(0.99 * (len(ordered) - 1) + 0.5))], 3),
            "min": round(ordered[0], 3), "max": round(ordered[-1], 3)}


def must(proc: subprocess.CompletedProcess[str], what: str) -> str:
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stdout} {proc.stderr}")
    return proc.stdout


class Cluster:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.roots: list[Path] = []
        self.hub: subprocess.Popen[bytes] | None = None
        self.token = ""
        #: One keep-alive connection, as a client making several requests would hold.
        self.http = httpx.Client(timeout=120)

    def start(self) -> None:
        hub_root = self.base / "hub"
        self.token = json.loads(must(roost("hub", "init", "--root", str(hub_root), "--json"), "hub init"))["token"]
        log_file = open(self.base / "hub.log", "wb")  # noqa: SIM115 - closed with the process
        self.hub = subprocess.Popen([sys.executable, "-m", "roost", "hub", "serve", "--root", str(hub_root),
                                     "--port", str(self.port), "--log-level", "warning"],
                                    stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        nodes = (("edge-xavier", "xavier", "memory=4Gi,cpu=2", "32200-32219", False),
                 ("centre", "server", "memory=16Gi,cpu=2", "32220-32239", True))
        for name, label, capacity, ports, centre in nodes:
            token = json.loads(must(roost("device", "enroll-token", "--hub", self.url, "--token", self.token, "--json"),
                                    "enroll-token"))["token"]
            root = self.base / name
            args = ["agent", "start", "--root", str(root), "--detach", "--hub", self.url, "--enroll-token", token,
                    "--thing-name", name, "--label", f"machine={label}", "--capacity", capacity,
                    "--advertise-address", "127.0.0.1", "--port-range", ports] + (["--centre"] if centre else [])
            must(roost(*args), f"agent {name}")
            self.roots.append(root)
        must(roost("cluster", "service-type", "apply", "--samples", "--hub", self.url, "--token", self.token, "--json",
                   timeout=300), "service-type apply --samples")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len([n for n in self.api("GET", "/v1/cluster/nodes") if n["online"]]) < 2:
            time.sleep(0.2)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.http.request(method, self.url + path, headers={"Authorization": f"Bearer {self.token}"},
                                   **kwargs)
        if answer.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text}")
        return answer.json() if answer.content else None

    def admit(self, type_name: str, client: str) -> tuple[dict[str, Any], float]:
        start = time.perf_counter()
        session = self.api("POST", "/v1/cluster/sessions", json={"type": type_name, "client_id": client,
                                                                 "wait_seconds": 120})
        return session, (time.perf_counter() - start) * 1000

    def end(self, session: dict[str, Any]) -> None:
        self.api("DELETE", f"/v1/cluster/sessions/{session['id']}")

    def wait_no_replicas(self, type_name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not [r for r in self.api("GET", "/v1/cluster/replicas")
                    if r["type"] == type_name and r["status"] in ("STARTING", "READY", "STOPPING")]:
                return
            time.sleep(0.2)
        raise RuntimeError(f"replicas of {type_name} did not scale down")

    def stop(self) -> None:
        self.http.close()
        for root in self.roots:
            roost("agent", "stop", "--root", str(root), timeout=120)
        if self.hub is not None:
            self.hub.terminate()
            try:
                self.hub.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.hub.kill()


def publish_driver_type(cluster: Cluster, work: Path) -> bool:
    """A driver-class classifier on the original's CAN-bus rows, as service type ``driver`` (False without
    the seed data)."""
    if not DRIVING.is_file():
        log(f"{DRIVING} is absent: the original's own rows are not streamed")
        return False
    import numpy as np
    import pandas as pd
    import xgboost as xgb

    frame = pd.read_csv(DRIVING)
    features = [c for c in frame.columns if c != "Class"]
    labels = (frame["Class"].to_numpy() > 6).astype(np.float32)  # the excerpt's two drivers (classes 4 and 8)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1},
                        xgb.DMatrix(frame[features].to_numpy(np.float32), label=labels, feature_names=features),
                        num_boost_round=50)
    folder = work / "driver" / "bench.DriverScalar" / "1.0.0"
    folder.mkdir(parents=True)
    booster.save_model(folder / "model.json")
    recipe = (REPO / "src" / "roost" / "samples" / "recipes" / "com.roost.ClusterScalar-1.0.0.yaml").read_text()
    recipe = recipe.replace("com.roost.ClusterScalar", "bench.DriverScalar").replace("wine-quality.json", "model.json")
    (work / "driver" / "recipe.yaml").write_text(recipe)
    must(roost("component", "publish", "--hub", cluster.url, "--token", cluster.token, "--recipe",
               str(work / "driver" / "recipe.yaml"), "--artifacts", str(work / "driver"), "--json"), "publish driver")
    cluster.api("PUT", "/v1/cluster/service-types/driver", json={
        "name": "driver", "component": "bench.DriverScalar", "version": "1.0.0", "kind": "tabular", "window": 40,
        "resources": {"requests": {"memory": "256Mi"}}, "sessionsPerReplica": 1, "idleTimeoutSeconds": 600})
    return True


async def measure_stream(endpoint: str, token: str | None, fmt: str, data: Path, windows: int) -> dict[str, Any]:
    from roost.cluster.stream_client import StreamOptions, stream

    options = StreamOptions(endpoint=endpoint, session_token=token, format=fmt, data=data, window=40,  # type: ignore[arg-type]
                            max_windows=windows, duration=600)
    report = await stream(options)
    if report.lost is not None or report.error_count:
        raise RuntimeError(f"{fmt} stream failed: {report.errors}")
    summary = report.summary()
    return {"windows": summary["windows"], "e2e_ms": summary["e2e_ms"], "server_ms": summary["server_ms"],
            "bytes_per_window": summary["bytes_per_window"],
            "total_bytes_per_window": summary["bytes_per_window"]["sent"] + summary["bytes_per_window"]["received"]}


def protocols(cluster: Cluster, type_name: str, data: Path, windows: int) -> dict[str, Any]:
    """Binary, JSON and the original's 40 frames, one session each, all on the type's one edge replica."""
    out: dict[str, Any] = {}
    for fmt in ("binary", "json"):
        session, _ = cluster.admit(type_name, f"bench-{fmt}")
        try:
            out[fmt] = eventloop.run(measure_stream(session["endpoint"], session["token"], fmt, data, windows))
        finally:
            cluster.end(session)
    answer = httpx.get(cluster.url + "/app-service", timeout=120,
                       params={"type": type_name, "clientID": "bench-legacy", "clienttime": "-",
                               "token": cluster.token})
    body = answer.json()
    if answer.status_code != 200 or body.get("offloading") != 0:
        raise RuntimeError(f"/app-service: {answer.status_code} {answer.text}")
    out["original_40_frames"] = eventloop.run(measure_stream(f"ws://127.0.0.1:{body['service_port']}/v1/stream", None,
                                                           "legacy", data, windows))
    # The original client never ends its session: the hub's monitor ends it once the socket is gone.
    legacy_session = next((s for s in cluster.api("GET", "/v1/cluster/sessions", params={"active": "true"})
                           if s["client_id"] == "bench-legacy"), None)
    if legacy_session is not None:
        cluster.end(legacy_session)
    original = out["original_40_frames"]
    for fmt in ("binary", "json"):
        ratio = out[fmt]["total_bytes_per_window"] / original["total_bytes_per_window"]
        out[fmt]["bytes_vs_original"] = round(ratio, 4)
        out[fmt]["rtt_p50_vs_original"] = round(out[fmt]["e2e_ms"]["p50"] / original["e2e_ms"]["p50"], 4)
    return out


def live(args: argparse.Namespace) -> dict[str, Any]:
    base = bench_tmp("roost-bench-cluster-")
    cluster = Cluster(base)
    results: dict[str, Any] = {}
    try:
        cluster.start()
        cluster.api("PUT", "/v1/cluster/service-types/scalar", json={
            **cluster.api("GET", "/v1/cluster/service-types/scalar"), "idleTimeoutSeconds": 2})
        log("cold: a new replica process per admission")
        cold_ready, cold_wall = [], []
        for i in range(args.cold):
            session, wall = cluster.admit("scalar", f"cold-{i}")
            assert not session["warm"] and not session["offloaded"], session
            cold_ready.append(session["ready_ms"])
            cold_wall.append(wall)
            cluster.end(session)
            cluster.wait_no_replicas("scalar")
        results["cold_ready_ms"] = stats(cold_ready)
        results["cold_client_ms"] = stats(cold_wall)
        cluster.api("PUT", "/v1/cluster/service-types/scalar", json={
            **cluster.api("GET", "/v1/cluster/service-types/scalar"), "idleTimeoutSeconds": 600})
        log("warm: a free slot on a ready replica")
        first, _ = cluster.admit("scalar", "warm-0")
        cluster.end(first)
        warm_ready, warm_wall = [], []
        for i in range(args.warm):
            session, wall = cluster.admit("scalar", f"warm-{i + 1}")
            assert session["warm"], session
            warm_ready.append(session["ready_ms"])
            warm_wall.append(wall)
            cluster.end(session)
        results["warm_ready_ms"] = stats(warm_ready)
        results["warm_client_ms"] = stats(warm_wall)
        log("windows: Roost's binary and JSON windows vs the original 40-frame format (wine rows)")
        results["windows_wine"] = protocols(cluster, "scalar", WINE, args.windows)
        with tempfile.TemporaryDirectory(prefix="roost-bench-driver-") as tmp:
            if publish_driver_type(cluster, Path(tmp)):
                log("windows: the original's CAN-bus rows, driver-class classifier")
                results["windows_driving"] = protocols(cluster, "driver", DRIVING, args.windows)
        log("switch to the centre: the edge holds one scalar replica, a second client is offloaded")
        holder, _ = cluster.admit("scalar", "edge-holder")
        switch_cold, switch_warm = [], []
        for i in range(args.switch):
            session, _ = cluster.admit("scalar", f"offloaded-{i}")
            assert session["offloaded"], session
            (switch_warm if session["warm"] else switch_cold).append(session["ready_ms"])
            cluster.end(session)
        cluster.end(holder)
        results["switch_to_centre_cold_ms"] = stats(switch_cold) if switch_cold else None
        results["switch_to_centre_warm_ms"] = stats(switch_warm) if switch_warm else None
    finally:
        cluster.stop()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cold", type=int, default=5)
    ap.add_argument("--warm", type=int, default=30)
    ap.add_argument("--windows", type=int, default=300)
    ap.add_argument("--switch", type=int, default=6)
    ap.add_argument("--admission-calls", type=int, default=300)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    results = run_header(TARGETS) | {"original_fixed_wait_s": ORIGINAL_WAIT_S}
    log("admission at scale (first, on the quiet machine)")
    scale = subprocess.run([sys.executable, str(Path(__file__).parent / "cluster_admission.py"), "--calls",
                            str(args.admission_calls)], capture_output=True, text=True, check=True, timeout=1800)
    results["admission"] = json.loads(scale.stdout)
    results["live"] = live(args)
    write_results(results, args.json)


if __name__ == "__main__":
    main()
