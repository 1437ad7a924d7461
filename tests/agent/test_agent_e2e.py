"""End to end: a real agent process, the real CLI, real component processes."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import psutil
import pytest

from roost.samples import ARTIFACTS, RECIPES
from tests.agent.helpers import Workspace, procs_with, wait_until
from tests.conftest import Cli

pytestmark = pytest.mark.slow

SLEEPER = 'python3 -c "import time; time.sleep(1000)" {marker}'


def components(cli: Cli) -> dict[str, dict]:
    return {c["componentName"]: c for c in cli.json("component", "list")}


def deploy(cli: Cli, ws: Workspace, *args: str, timeout: float = 60) -> dict:
    proc = cli.run("deployment", "create", *ws.deploy_args(), *args, "--wait", "--timeout", str(timeout), "--json")
    assert proc.stdout, proc.stderr
    out = json.loads(proc.stdout)
    out["_exit"] = proc.returncode
    return out


def test_samples_publish_and_subscribe_then_stop_leaves_nothing(agent: Cli) -> None:
    proc = agent.run("deployment", "create", "--recipe-dir", str(RECIPES), "--artifact-dir", str(ARTIFACTS),
                     "--merge", "com.roost.HelloPublisher=1.0.0", "--merge", "com.roost.HelloSubscriber=1.0.0",
                     "--update-config", '{"com.roost.HelloPublisher": {"MERGE": {"intervalSeconds": 0.2}}}',
                     "--wait", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["status"] == "SUCCEEDED"
    comps = components(agent)
    assert {c["state"] for c in comps.values()} == {"RUNNING"}
    assert comps["com.roost.HelloPublisher"]["version"] == "1.0.0"
    log = agent.root / "logs" / "com.roost.HelloSubscriber.log"
    wait_until(lambda: log.exists() and log.read_text().count("received on local/hello") >= 3, what="messages")
    logs = agent.run("logs", "com.roost.HelloSubscriber", "--lines", "3")
    assert logs.returncode == 0 and "received on local/hello" in logs.stdout
    pids = [p.pid for p in psutil.process_iter(["cmdline"])
            if any(str(agent.root) in part for part in (p.info["cmdline"] or [])) and "agent" not in p.info["cmdline"]]
    assert pids, "component processes should be running"
    assert agent.run("agent", "stop").returncode == 0
    wait_until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                               for p in pids), what="component processes to exit")
    assert agent.run("agent", "start", "--detach").returncode == 0  # for the fixture's stop


def test_failed_update_rolls_back_exactly(agent: Cli, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    marker = f"m-{uuid.uuid4().hex[:8]}"
    ws.component("com.test.App", "1.0.0", {"Run": SLEEPER.format(marker=marker + "-v1")}, config={"level": 1})
    ws.component("com.test.App", "2.0.0", {"Run": "exit 3"}, config={"level": 2})
    first = deploy(agent, ws, "--merge", "com.test.App=1.0.0",
                   "--update-config", '{"com.test.App": {"MERGE": {"level": 5}}}')
    assert first["status"] == "SUCCEEDED", first
    second = deploy(agent, ws, "--merge", "com.test.App=2.0.0")
    assert second["_exit"] == 1 and second["status"] == "FAILED"
    details = second["deploymentStatusDetails"]
    assert details["detailedDeploymentStatus"] == "FAILED_ROLLBACK_COMPLETE"
    assert "com.test.App" in " ".join(details["deploymentErrorStack"])
    app = agent.json("component", "details", "com.test.App")
    assert app["version"] == "1.0.0" and app["state"] == "RUNNING"
    assert app["configuration"]["level"] == 5
    wait_until(lambda: len(procs_with(marker + "-v1")) == 1, what="v1 running again")


def test_bad_inputs_fail_without_touching_running_components(agent: Cli, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    marker = f"m-{uuid.uuid4().hex[:8]}"
    ws.component("com.test.Stable", "1.0.0", {"Run": SLEEPER.format(marker=marker)})
    assert deploy(agent, ws, "--merge", "com.test.Stable=1.0.0")["status"] == "SUCCEEDED"
    stable_pid = procs_with(marker)[0].pid

    bad = Workspace(tmp_path / "digest")
    bad.component("com.test.Digest", "1.0.0", {"Run": "true"}, files={"a.py": "print(1)"},
                  digest={"a.py": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="})
    out = deploy(agent, bad, "--merge", "com.test.Digest=1.0.0")
    assert out["deploymentStatusDetails"]["detailedDeploymentStatus"] == "FAILED_NO_STATE_CHANGE"
    assert "a.py failed its SHA-256 check" in out["deploymentStatusDetails"]["deploymentErrorStack"][0]

    missing = Workspace(tmp_path / "missing")
    missing.component("com.test.Missing", "1.0.0", {"Run": "true"}, files={"b.py": ""})
    (missing.artifacts / "com.test.Missing" / "1.0.0" / "b.py").unlink()
    out = deploy(agent, missing, "--merge", "com.test.Missing=1.0.0")
    assert "artifact b.py" in out["deploymentStatusDetails"]["deploymentErrorStack"][0]

    malformed = Workspace(tmp_path / "malformed")
    (malformed.recipes / "broken.yaml").write_text(
        "RecipeFormatVersion: '2020-01-25'\nComponentName: com.test.Broken\nComponentVersion: 1.0.0\n"
        "Manifests:\n  - Lifecycle:\n      Run: [1, 2]\n")
    # Refused when submitted (exit 3, invalid input), with --wait or without: nothing is queued.
    before = len(agent.json("deployment", "list"))
    for wait in (("--wait",), ()):
        proc = agent.run("deployment", "create", *malformed.deploy_args(), "--merge", "com.test.Broken=1.0.0", *wait,
                         "--json")
        assert proc.returncode == 3, proc.stdout + proc.stderr
        error = json.loads(proc.stdout)["error"]
        assert error["code"] == "RECIPE_INVALID"
        assert "broken.yaml" in error["message"] and "Manifests[0].Lifecycle.Run" in error["message"]
    text = agent.run("deployment", "create", *malformed.deploy_args(), "--merge", "com.test.Broken=1.0.0")
    assert text.returncode == 3 and "RECIPE_INVALID" in text.stderr and "queued" not in text.stdout
    assert len(agent.json("deployment", "list")) == before

    nofile = Workspace(tmp_path / "nofile")
    nofile.component("com.test.NoScript", "1.0.0", {"Run": "python3 /nonexistent/script.py"})
    out = deploy(agent, nofile, "--merge", "com.test.NoScript=1.0.0")
    assert out["deploymentStatusDetails"]["detailedDeploymentStatus"] == "FAILED_ROLLBACK_COMPLETE"
    failure = out["deploymentStatusDetails"]["deploymentErrorStack"][0]
    assert "com.test.NoScript went ERRORED" in failure
    # Said once (the component errored more than once), with where its log is.
    assert failure.count("went ERRORED") == 1, failure
    log_path = agent.root / "logs" / "com.test.NoScript.log"
    assert f"log: {log_path}" in failure and "`roost logs com.test.NoScript`" in failure
    shown = agent.run("deployment", "status", out["deploymentId"][:8])
    assert shown.returncode == 0 and shown.stdout.count("went ERRORED") == 1
    assert "roost logs com.test.NoScript" in shown.stdout.replace("\n", " ")

    hang = Workspace(tmp_path / "hang")
    hang.component("com.test.Hang", "1.0.0", {"Install": {"Script": "sleep 600", "Timeout": 1}, "Run": "true"})
    out = deploy(agent, hang, "--merge", "com.test.Hang=1.0.0")
    assert out["status"] == "FAILED"
    stack = out["deploymentStatusDetails"]["deploymentErrorStack"]
    assert stack[0] == "com.test.Hang: install did not finish within 1 s"
    assert out["deploymentStatusDetails"]["deploymentFailureCause"] == "LIFECYCLE_TIMEOUT"

    docker = Workspace(tmp_path / "docker")
    docker.component("com.test.Docker", "1.0.0", {"Run": "true"})
    recipe_path = docker.recipes / "com.test.Docker-1.0.0.json"
    recipe = json.loads(recipe_path.read_text())
    recipe["Manifests"][0]["Artifacts"] = [{"URI": "docker:nginx:latest"}]
    recipe_path.write_text(json.dumps(recipe))
    out = deploy(agent, docker, "--merge", "com.test.Docker=1.0.0")
    # No engine answers here (the agent was given none): detected by pinging it, before any change.
    assert out["deploymentStatusDetails"]["deploymentFailureCause"] == "DOCKER_UNAVAILABLE"
    assert "no Docker-compatible engine answers at" in out["deploymentStatusDetails"]["deploymentErrorStack"][0]

    unknown = agent.run("deployment", "create", "--merge", "com.test.Nope=1.0.0", "--wait", "--json")
    assert unknown.returncode == 1 and "com.test.Nope" in unknown.stdout

    assert psutil.pid_exists(stable_pid), "the running component must not be touched by failed deployments"
    comps = components(agent)
    assert set(comps) == {"com.test.Stable"} and comps["com.test.Stable"]["state"] == "RUNNING"
    states = [d["status"] for d in agent.json("deployment", "list")]
    assert states[0] == "SUCCEEDED" and set(states[1:]) == {"FAILED"}


def test_cancel_in_progress_rolls_back_and_queue_is_serial(agent: Cli, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    ws.component("com.test.Slow", "1.0.0", {"Install": {"Script": "sleep 60", "Timeout": 120}, "Run": "true"})
    ws.component("com.test.After", "1.0.0", {"Run": "true"})
    first = agent.json("deployment", "create", *ws.deploy_args(), "--merge", "com.test.Slow=1.0.0")
    second = agent.json("deployment", "create", *ws.deploy_args(), "--merge", "com.test.After=1.0.0")
    wait_until(lambda: agent.json("deployment", "status", first["deploymentId"])["status"] == "IN_PROGRESS",
               what="first deployment to start")
    assert agent.json("deployment", "status", second["deploymentId"])["status"] == "QUEUED"
    canceled = agent.json("deployment", "cancel", first["deploymentId"])
    assert canceled["deploymentId"] == first["deploymentId"]
    end = wait_until(lambda: (d := agent.json("deployment", "status", first["deploymentId"]))["status"]
                     in ("CANCELED", "FAILED") and d, what="cancel")
    assert end["status"] == "CANCELED"
    done = wait_until(lambda: (d := agent.json("deployment", "status", second["deploymentId"]))["status"]
                      == "SUCCEEDED" and d, what="second deployment")
    assert done["status"] == "SUCCEEDED"
    assert set(components(agent)) == {"com.test.After"}
    again = agent.run("deployment", "cancel", first["deploymentId"], "--json")
    assert again.returncode == 7 and "DEPLOYMENT_ENDED" in again.stdout


def test_agent_sigkill_restart_brings_back_components_without_duplicates(agent: Cli, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    marker = f"m-{uuid.uuid4().hex[:8]}"
    ws.component("com.test.Keep", "1.0.0", {"Run": SLEEPER.format(marker=marker)}, config={"v": 1})
    assert deploy(agent, ws, "--merge", "com.test.Keep=1.0.0",
                  "--update-config", '{"com.test.Keep": {"MERGE": {"v": 7}}}')["status"] == "SUCCEEDED"
    old = procs_with(marker)
    assert len(old) == 1
    agent_pid = int((agent.root / "agent.pid").read_text())
    os.kill(agent_pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(agent_pid) or psutil.Process(agent_pid).status() == "zombie",
               what="agent to die")
    assert agent.run("agent", "start", "--detach").returncode == 0
    new = wait_until(lambda: procs_with(marker), what="component restarted")
    time.sleep(0.5)
    new = procs_with(marker)
    assert len(new) == 1 and new[0].pid != old[0].pid
    assert not psutil.pid_exists(old[0].pid) or old[0].status() == psutil.STATUS_ZOMBIE
    keep = agent.json("component", "details", "com.test.Keep")
    assert keep["configuration"]["v"] == 7 and keep["state"] == "RUNNING"


def test_remove_restart_stop_and_broken(agent: Cli, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    marker = f"m-{uuid.uuid4().hex[:8]}"
    counter = agent.root / "work" / "com.test.Flaky" / "runs"  # the component writes only in its work folder
    ws.component("com.test.Flaky", "1.0.0", {"Run": {"Script": "echo run >> {work:path}/runs; exit 1"}})
    ws.component("com.test.Svc", "1.0.0", {"Run": SLEEPER.format(marker=marker)})
    assert deploy(agent, ws, "--merge", "com.test.Svc=1.0.0")["status"] == "SUCCEEDED"
    out = deploy(agent, ws, "--merge", "com.test.Flaky=1.0.0", "--failure-policy", "DO_NOTHING")
    assert out["deploymentStatusDetails"]["detailedDeploymentStatus"] == "FAILED_ROLLBACK_NOT_REQUESTED"
    wait_until(lambda: components(agent)["com.test.Flaky"]["state"] == "BROKEN", timeout=30, what="BROKEN")
    runs = counter.read_text().count("run")
    assert runs == 3
    assert agent.run("component", "restart", "com.test.Flaky").returncode == 0
    wait_until(lambda: counter.read_text().count("run") > runs, what="restart to run again")
    assert agent.run("component", "stop", "com.test.Svc").returncode == 0
    assert components(agent)["com.test.Svc"]["state"] in ("INSTALLED", "FINISHED")
    wait_until(lambda: not procs_with(marker), what="Svc stopped")
    assert agent.run("component", "restart", "com.test.Svc").returncode == 0
    wait_until(lambda: len(procs_with(marker)) == 1, what="Svc restarted")
    out = deploy(agent, ws, "--remove", "com.test.Svc", "--remove", "com.test.Flaky")
    assert out["status"] == "SUCCEEDED", out
    assert components(agent) == {}
    wait_until(lambda: not procs_with(marker), what="Svc removed")
    missing = agent.run("component", "details", "com.test.Svc", "--json")
    assert missing.returncode == 4 and "com.test.Svc" in missing.stdout


def test_cli_without_agent_says_so(cli: Cli) -> None:
    proc = cli.run("component", "list")
    assert proc.returncode == 5 and "no agent is running" in proc.stderr
    bad = cli.run("deployment", "create", "--merge", "nonsense")
    assert bad.returncode == 3 and "NAME=VERSION" in bad.stderr
