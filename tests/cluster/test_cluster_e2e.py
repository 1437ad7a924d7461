"""The edge cluster end to end: a real hub process, three real agents (an 8 Gi "xavier", a 4 Gi "tx2" and a
centre node), the sample service types, and `roost stream` as a real client: admission by capacity
(two replicas on the xavier, one on the tx2), offload to the centre when the edge is full, the
original client's route and protocol, a replica that dies mid-session, and parallel and joint
inference through the hub's admission."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.samples import SAMPLES
from tests.hub.conftest import free_port, hub_init
from tests.sync.conftest import AGENT_ENV, Agent, Hub, roost, roost_json, wait_for

WINE = SAMPLES / "data" / "wine_concat.csv"
NODES = {"xavier-1": ("xavier", "memory=8Gi,cpu=2", "32100-32119", False),
         "tx2-1": ("tx2", "memory=4Gi,cpu=2", "32120-32139", False),
         "centre-1": ("server", "memory=8Gi,cpu=2", "32140-32159", True)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    base = tmp_path_factory.mktemp("cluster")
    os.chmod(base, 0o711)  # component users must reach the agent roots inside it
    hub = Hub(base / "hub", free_port(), hub_init(base / "hub"), base)
    hub.start()
    agents: list[Agent] = []
    try:
        for name, (machine, capacity, ports, centre) in NODES.items():
            token = roost_json(*hub.cli("device", "enroll-token"))["token"]
            agent = Agent(name, base / name)
            args = ["agent", "start", "--root", str(agent.root), "--detach", "--hub", hub.url, "--enroll-token", token,
                    "--thing-name", name, "--label", f"machine={machine}", "--capacity", capacity,
                    "--advertise-address", "127.0.0.1", "--port-range", ports]
            proc = roost(*args, *(["--centre"] if centre else []))
            assert proc.returncode == 0, proc.stdout + proc.stderr
            agent.started = True
            agents.append(agent)
        applied = roost_json(*hub.cli("cluster", "service-type", "apply", "--samples"), timeout=300)
        assert [t["name"] for t in applied] == ["scalar", "image"]
        wait_for(lambda: len([n for n in roost_json(*hub.cli("cluster", "nodes")) if n["online"]]) == 3,
                 timeout=60, what="three nodes reported")
        yield hub
    finally:
        for agent in agents:
            agent.stop()
        hub.stop()


def _stream(hub: Hub, client: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "roost", "stream", "--hub", hub.url, "--token", hub.token,
                             "--type", "scalar", "--data", str(WINE), "--window", "40", "--client-id", client,
                             "--json", "--wait", "60", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **AGENT_ENV})


def _finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, dict[str, Any], str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, json.loads(out) if out.strip() else {}, err


def _exactly(items: list[dict[str, Any]], n: int) -> list[dict[str, Any]] | None:
    return items if len(items) == n else None


def _active(hub: Hub) -> list[dict[str, Any]]:
    sessions: list[dict[str, Any]] = roost_json(*hub.cli("cluster", "sessions"))
    return sessions


def test_nodes_report_their_configured_capacity_and_tier(cluster: Hub) -> None:
    nodes = {n["name"]: n for n in roost_json(*cluster.cli("cluster", "nodes"))}
    assert nodes["xavier-1"]["allocatable"]["memory_bytes"] == 8 * 2**30 and nodes["xavier-1"]["tier"] == "edge"
    assert nodes["tx2-1"]["labels"]["machine"] == "tx2"
    assert nodes["centre-1"]["tier"] == "centre"
    assert nodes["xavier-1"]["measured"]["memory_bytes"] > 0  # what the agent measured, beside the override


def test_clients_fill_the_edge_by_capacity_then_offload_to_the_centre(cluster: Hub, tmp_path: Path) -> None:
    edge = [_stream(cluster, f"car-{i}", "--duration", "14", "--interval", "0.1") for i in range(3)]
    try:
        try:
            active = wait_for(lambda: _exactly(_active(cluster), 3), timeout=90, what="three edge sessions")
        except AssertionError as err:
            raise AssertionError(f"{err}: sessions {roost_json(*cluster.cli('cluster', 'sessions', '--all'))}, "
                                 f"replicas {roost_json(*cluster.cli('cluster', 'replicas'))}") from err
        placed = sorted(s["node"] for s in active)
        assert placed == ["tx2-1", "xavier-1", "xavier-1"], active  # 2 x xavier + tx2, the original's capacity
        code, report, err = _finish(_stream(cluster, "car-offloaded", "--windows", "5", "--plot",
                                            str(tmp_path / "latency.png")))
        assert code == 0, (err, roost_json(*cluster.cli("cluster", "sessions", "--all")))
        assert report["offloaded"] is True and report["windows"] == 5 and report["errors"] == [], \
            roost_json(*cluster.cli("cluster", "sessions", "--all"))
        assert report["endpoint"].startswith("ws://127.0.0.1:321")
        assert (tmp_path / "latency.png").stat().st_size > 1000
    finally:
        results = [_finish(p) for p in edge]
    for code, report, err in results:
        assert code == 0, err
        assert report["offloaded"] is False and report["windows"] > 0 and report["errors"] == []
        assert report["e2e_ms"]["p50"] > 0 and report["server_ms"]["p50"] >= 0
        assert report["bytes_per_window"]["sent"] > 0 and report["bytes_per_window"]["received"] > 0
    ended = [s for s in roost_json(*cluster.cli("cluster", "sessions", "--all"))
             if s["client_id"].startswith("car-")]
    # The client ends its session when done; the monitor may see its socket close first (the replica
    # says "closed by the client", or the session is gone from its list: "disconnected").
    reasons = [(s["client_id"], s["status"], s["end_reason"]) for s in ended]
    assert len(ended) == 4 and all(status == "ENDED" and reason in ("ended by the client", "closed by the client",
                                                                    "disconnected")
                                   for _client, status, reason in reasons), reasons
    # the replicas stay for the next clients (warm slots) until their idle timeout
    replicas = roost_json(*cluster.cli("cluster", "replicas"))
    assert sum(1 for r in replicas if r["status"] == "READY" and r["tier"] == "edge") == 3
    code, warm, err = _finish(_stream(cluster, "car-warm", "--windows", "3"))
    assert code == 0 and warm["offloaded"] is False, err


def test_the_original_client_route_and_protocol(cluster: Hub) -> None:
    import websockets.sync.client

    answer = httpx.get(cluster.url + "/app-service", timeout=90,
                       params={"type": "scalar", "clientID": "80", "clienttime": "2026-12-02 03:00:00.000",
                               "token": cluster.token})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["offloading"] == 0 and body["service_port"].isdigit()
    rows = WINE.read_text().splitlines()
    header = rows[0].split(",")

    def frame(line: str) -> str:
        values = dict(zip(header, line.split(","), strict=True))
        record: dict[str, Any] = {k: (v if k == "color" else float(v)) for k, v in values.items()}
        return json.dumps({**record, "timestamp": "2026-12-02 03:00:00.000"})

    with websockets.sync.client.connect(f"ws://127.0.0.1:{body['service_port']}", open_timeout=10) as ws:
        for line in rows[1:41]:
            ws.send(frame(line))
        assert ws.recv(timeout=30) == "Model ready"
        for line in rows[41:81]:
            ws.send(frame(line))
        reply = ws.recv(timeout=30)
        assert isinstance(reply, str) and reply.startswith("[ Output result : [") and "Execution_Time" in reply
    # the hub sees the client gone and ends its session
    wait_for(lambda: all(s["client_id"] != "80" for s in _active(cluster)), timeout=30, what="legacy session ended")


def test_a_replica_that_dies_mid_session_is_reported_and_the_next_client_placed_anew(cluster: Hub) -> None:
    proc = _stream(cluster, "car-doomed", "--duration", "60", "--interval", "0.1")
    try:
        session = wait_for(lambda: next((s for s in _active(cluster) if s["client_id"] == "car-doomed"), None),
                           timeout=90, what="the session")
        (replica,) = [r for r in roost_json(*cluster.cli("cluster", "replicas")) if r["id"] == session["replica"]]
        pid = _listener_pid(replica["port"])
        os.kill(pid, signal.SIGKILL)
        code, report, _err = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 1 and report["errors"] and report["errors"][-1]["code"] == "SESSION_LOST"
    ended = wait_for(lambda: next((s for s in roost_json(*cluster.cli("cluster", "sessions", "--all"))
                                   if s["id"] == session["id"] and s["status"] == "ENDED"), None),
                     timeout=30, what="the session ended")
    # whoever saw it first: the client (which names SESSION_LOST), or the hub's monitor
    assert "SESSION_LOST" in ended["end_reason"] or ended["end_reason"].startswith(("replica lost", "disconnected"))
    code, again, err = _finish(_stream(cluster, "car-next", "--windows", "3"))
    assert code == 0 and again["errors"] == [], err


def test_parallel_and_joint_inference_through_the_hub(cluster: Hub, tmp_path: Path) -> None:
    """`roost cluster infer` over two admitted sessions, answers in order as the model's own; `roost joint`
    with its centre admitted in the centre tier (issue 13). Both end their sessions."""
    from roost.serve.backends import XGBoostBackend
    from roost.serve.wine import load_wine, train_wine

    model = train_wine(tmp_path / "wine-quality.json")  # the bytes the ClusterScalar sample serves
    out = tmp_path / "predictions.csv"
    proc = subprocess.run([sys.executable, "-m", "roost", "cluster", "infer", "--hub", cluster.url, "--token",
                           cluster.token, "--type", "scalar", "--replicas", "2", "--data", str(WINE), "--wait", "60",
                           "--out", str(out), "--json"], capture_output=True, text=True, timeout=180, check=False,
                          env={**os.environ, **AGENT_ENV})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    x, _ = load_wine()
    assert doc["rows"] == len(x) and len(doc["replicas"]) == 2 and doc["retried"] == []
    got = [float(v) for v in out.read_text().split()[1:]]
    assert got == pytest.approx(XGBoostBackend(model, nthread=1).predict(x).tolist(), abs=1e-5)
    proc = subprocess.run([sys.executable, "-m", "roost", "joint", "--hub", cluster.url, "--token", cluster.token,
                           "--centre-type", "scalar", "--edge-model", str(model), "--data", str(WINE), "--filter",
                           "random", "--threshold", "0.5", "--seed", "3", "--batch", "40", "--wait", "60", "--json"],
                          capture_output=True, text=True, timeout=180, check=False, env={**os.environ, **AGENT_ENV})
    assert proc.returncode == 0, proc.stderr
    joint = json.loads(proc.stdout)
    assert joint["answered_by"]["centre"] > 0 and joint["centre_errors"] == 0, joint
    sessions = roost_json(*cluster.cli("cluster", "sessions", "--all"))
    centre = [s for s in sessions if s["client_id"].startswith("joint-")]
    assert len(centre) == 1 and centre[0]["tier"] == "centre" and centre[0]["status"] == "ENDED", centre
    parallel = [s for s in sessions if s["client_id"].startswith("parallel-")]
    assert len(parallel) == 2 and all(s["status"] == "ENDED" for s in parallel), parallel


def _listener_pid(port: int) -> int:
    """The process listening on 127.0.0.1:port (from /proc/net/tcp and the processes' sockets)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(pid)
        except OSError:
            continue
    raise AssertionError(f"nothing listens on port {port}")
