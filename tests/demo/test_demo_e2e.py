"""`roost demo` end to end: the whole system on this machine (a hub process, three agents, an SSH-registered
device when an sshd can be started here, the staged rollout, cluster admission and offload, a federated job
whose model passes its gate and rolls out, the endpoints), checked from its JSON summary; then that nothing it
started is left running. And a step whose precondition fails makes the demo exit non-zero naming that step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from roost.demo import sshd
from roost.demo.learn import flower_missing
from tests.conftest import require_service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _demo(base: Path, *args: str, timeout: float = 1100) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roost", "demo", "--root", str(base), "--linger", "0", "--json",
                           *args], capture_output=True, text=True, timeout=timeout, check=False)


def _left_running(base: Path) -> list[str]:
    left = []
    for p in psutil.process_iter(["pid", "cmdline", "username"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if str(base) in cmd or str(p.info["username"] or "").startswith("rdemo"):
                left.append(f"{p.info['pid']} {p.info['username']} {cmd[:200]}")
        except psutil.Error:
            continue
    return left


@pytest.mark.demo  # 4 to 9 minutes: `make test-demo` and CI (.ci/run) run it, `make test` leaves it out
def test_the_whole_demo_runs_every_step_and_stops_everything(tmp_path: Path) -> None:
    why = flower_missing()
    require_service("the Flower venv (make flower)", why is None, why or "")
    base = tmp_path / "demo"
    base.mkdir()
    os.chmod(base, 0o711)
    os.chmod(tmp_path, 0o711)
    proc = _demo(base, "--rounds", "2", "--windows", "10", "--fl-rounds", "2")
    try:
        doc = json.loads(proc.stdout)  # also on failure: the error and the steps that ran
    except ValueError:
        pytest.fail(f"no JSON summary (exit {proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-3000:]}")
    assert _left_running(base) == []  # stopped cleanly, whichever step failed
    steps = doc["steps"]

    fleet = steps["fleet"]
    devices = fleet["devices"]
    assert {n: (d["machine"], d["tier"], d["status"]) for n, d in devices.items()} == {
        "edge-xavier": ("xavier", "edge", "ONLINE"), "edge-tx2": ("tx2", "edge", "ONLINE"),
        "centre": ("server", "centre", "ONLINE")}
    no_ssh = sshd.unavailable()
    assert fleet["ssh"] is (no_ssh is None) and devices["edge-tx2"]["ssh"] is (no_ssh is None)
    assert ("registering edge-tx2 over SSH" in doc["skipped"]) is (no_ssh is not None)

    # staged: two devices released at once, the third held back, then all three COMPLETED
    assert len(steps["rollout"]["first_stage"]) == 2 and len(steps["rollout"]["held_back"]) == 1
    done = steps["rollout-complete"]
    assert done["status"] == "COMPLETED" and done["counts"]["SUCCEEDED"] == done["counts"]["total"] == 3
    for name in devices:
        wine = done["results"][name]["com.roost.WineConsumer"]
        labels = done["results"][name]["com.roost.ImageRequester"]
        assert len(wine) >= 2 and all(json.loads(ln.split("] result: ")[1])[0] > 0 for ln in wine)
        assert len(labels) >= 2 and all(ln.split("] result: ")[1].strip() for ln in labels)

    # admission by capacity: a Xavier (8 GiB) takes two scalar replicas, the TX2 (4 GiB) one; the 4th is offloaded
    cluster = steps["cluster"]
    admitted = cluster["admitted"]
    assert [a["offloaded"] for a in admitted] == [False, False, False, True]
    assert sorted(a["node"] for a in admitted[:3]) == ["edge-tx2", "edge-xavier", "edge-xavier"]
    assert admitted[3]["node"] == "centre"
    streams = cluster["streams"]
    assert streams["edge"]["offloaded"] is False and streams["centre"]["offloaded"] is True
    for s in streams.values():
        assert s["windows"] == 10 and s["e2e_ms"]["p50"] > 0 and s["bytes_per_window"]["sent"] > 0

    assert proc.returncode == 0 and "error" not in doc, doc.get("error")
    assert list(steps) == ["preflight", "fleet", "rollout", "cluster", "rollout-complete", "learn", "endpoints"]
    learn = steps["learn"]
    learners = 2 if fleet["ssh"] else 3  # the SSH-registered device has no Flower venv: it does not train
    assert learn["status"] == "SUCCEEDED" and [r["participants"] for r in learn["rounds"]] == [learners] * 2
    assert learn["component"] == f"com.roost.WineQuality={learn['version']}"
    assert learn["gate"] and all(g["passed"] for g in learn["gate"])
    assert learn["rolled_out"] is True and learn["before"] != learn["after"]

    codes = steps["endpoints"]["status_codes"]
    assert len(codes) == 3 + 3 + 1 and set(codes.values()) == {200}


def test_a_failing_step_exits_non_zero_naming_it(tmp_path: Path) -> None:
    """The learning step's precondition (the Flower venv) fails: the demo stops before starting anything."""
    base = tmp_path / "demo"
    base.mkdir()
    missing = tmp_path / "no-flower-here"
    proc = subprocess.run([sys.executable, "-m", "roost", "demo", "--root", str(base), "--linger", "0", "--json"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "ROOST_FLOWER_BIN": str(missing)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["error"]["code"] == "DEMO_FAILED" and doc["failed_step"] == "preflight"
    assert doc["error"]["message"].startswith("demo step 'preflight' failed: the learning step needs Flower: ")
    assert str(missing / "flower-superlink") in doc["error"]["message"]
    assert list(doc["steps"]) == ["preflight"] and not (base / "hub").exists()
    assert _left_running(base) == []
