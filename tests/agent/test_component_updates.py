"""Component updates as on Greengrass, through a real agent and components written with awsiotsdk.

A deployment with ``componentUpdatePolicy NOTIFY_COMPONENTS`` (``--update-policy notify``) sends
``preUpdateEvent`` to every component subscribed with ``SubscribeToComponentUpdates`` (not only the
ones it changes), waits for their ``DeferComponentUpdate`` answers, re-notifies after
``recheckAfterMs``, proceeds when nobody answers in time, and sends ``postUpdateEvent`` at the end.
``SKIP_NOTIFY_COMPONENTS`` (the default of local deployments, as greengrass-cli's) sends nothing.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.helpers import Workspace, wait_until
from tests.conftest import Cli, require_module, running_agent

pytestmark = pytest.mark.slow

SUB, SUB2, TARGET = "com.test.UpdateWatcher", "com.test.OtherWatcher", "com.test.Updated"

# A component written for Greengrass: answers preUpdateEvents as its configuration's "mode" says
# (defer once, answer at once, or stay silent); says whether the target's Install marker exists yet.
WATCHER = textwrap.dedent("""
    import os, queue, sys
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

    marker = sys.argv[1]
    ipc = GreengrassCoreIPCClientV2()
    events = queue.Queue()
    ipc.subscribe_to_component_updates(on_stream_event=events.put)
    print("subscribed", flush=True)
    rounds = {}
    while True:
        event = events.get()  # answered here, not in the stream callback (awsiotsdk's threads)
        if event.pre_update_event is not None:
            dep = event.pre_update_event.deployment_id
            n = rounds[dep] = rounds.get(dep, 0) + 1
            mode = ipc.get_configuration(key_path=["mode"]).value["mode"]
            print(f"pre {dep} round {n} restarting={event.pre_update_event.is_ggc_restarting} "
                  f"marker={os.path.exists(marker)}", flush=True)
            if mode == "silent":
                continue
            recheck = 1500 if mode == "defer" and n == 1 else 0
            ipc.defer_component_update(deployment_id=dep, message="busy: finishing a batch" if recheck else "ok",
                                       recheck_after_ms=recheck)
            print(f"answered {dep} {recheck}", flush=True)
        elif event.post_update_event is not None:
            print(f"post {event.post_update_event.deployment_id} marker={os.path.exists(marker)}", flush=True)
""")

# Bad input, each call on its own: what the agent answers (error class and code).
PROBE = textwrap.dedent("""
    import sys
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

    ipc = GreengrassCoreIPCClientV2()

    def attempt(what, call):
        try:
            call()
            print(what, "ok", flush=True)
        except Exception as err:
            print(what, type(err).__name__, getattr(err, "message", err), flush=True)

    attempt("unsubscribed", lambda: ipc.defer_component_update(deployment_id="d-1", recheck_after_ms=0))
    ipc.subscribe_to_component_updates(on_stream_event=lambda e: None)
    attempt("no-id", lambda: ipc.defer_component_update(recheck_after_ms=0))
    attempt("negative", lambda: ipc.defer_component_update(deployment_id="d-1", recheck_after_ms=-5))
    attempt("unknown", lambda: ipc.defer_component_update(deployment_id="no-such-deployment", recheck_after_ms=0))
    print("probe done", flush=True)
    import threading; threading.Event().wait()
""")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, Workspace, Path]]:
    require_module("awsiot.greengrasscoreipc.clientv2")
    base = tmp_path_factory.mktemp("updates")
    shared = base / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # the components' user writes and reads the marker here
    marker = shared / "installed-v2"
    ws = Workspace(base / "ws")
    for name in (SUB, SUB2):
        ws.component(name, "1.0.0", {"Run": f"exec {sys.executable} -u {{artifacts:path}}/w.py {marker}"},
                     files={"w.py": WATCHER}, config={"mode": "answer"})
    ws.component(TARGET, "1.0.0", {"Run": "exec sleep 100000"})
    # Version 2's Install leaves the marker: present only once the deployment applies the update.
    ws.component(TARGET, "2.0.0", {"Install": f"touch {marker}", "Run": "exec sleep 100000"})
    ws.component(TARGET, "3.0.0", {"Run": "exec sleep 100000"})
    ws.component("com.test.Probe", "1.0.0", {"Run": f"exec {sys.executable} -u {{artifacts:path}}/p.py"},
                 files={"p.py": PROBE})
    with running_agent(base / "root") as agent:
        out = agent.run("deployment", "create", *ws.deploy_args(), "--merge", f"{SUB}=1.0.0", "--merge",
                        f"{SUB2}=1.0.0", "--merge", f"{TARGET}=1.0.0", "--wait", "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        for name in (SUB, SUB2):
            wait_until(lambda n=name: "subscribed" in _log(agent, n), what=f"{name} to subscribe")
        yield agent, ws, marker


def _log(agent: Cli, name: str) -> str:
    return agent.log(name)


def _deploy(agent: Cli, *args: str) -> tuple[int, dict[str, Any]]:
    return agent.deploy(*args)


def _set_mode(agent: Cli, name: str, mode: str) -> None:
    code, dep = _deploy(agent, "--update-config", json.dumps({name: {"MERGE": {"mode": mode}}}))
    assert code == 0 and dep["status"] == "SUCCEEDED", dep


def _lines(agent: Cli, name: str, deployment_id: str) -> list[str]:
    return [line.split("] ", 1)[-1] for line in _log(agent, name).splitlines() if deployment_id in line]


def test_notify_defer_recheck_then_update(env: tuple[Cli, Workspace, Path]) -> None:
    agent, ws, marker = env
    _set_mode(agent, SUB, "defer")
    code, dep = _deploy(agent, *ws.deploy_args(), "--merge", f"{TARGET}=2.0.0", "--update-policy", "notify",
                        "--update-timeout", "30")
    assert code == 0 and dep["status"] == "SUCCEEDED", dep
    dep_id = dep["deploymentId"]
    wait_until(lambda: any(line.startswith("post") for line in _lines(agent, SUB, dep_id)), what="postUpdateEvent")
    sub = [line for line in _lines(agent, SUB, dep_id) if not line.startswith("answered")]
    # Deferred once (1500 ms), asked again, then answered at once: the update waited for both rounds.
    assert [s.split(" marker=")[0] for s in sub] == [
        f"pre {dep_id} round 1 restarting=False", f"pre {dep_id} round 2 restarting=False", f"post {dep_id}"], sub
    assert [s.rsplit("marker=", 1)[1] for s in sub] == ["False", "False", "True"], sub
    # Every subscriber is notified, not only the components the deployment changes.
    wait_until(lambda: any(line.startswith("post") for line in _lines(agent, SUB2, dep_id)), what="post, other")
    assert any(line.startswith(f"pre {dep_id} round 1") for line in _lines(agent, SUB2, dep_id))
    notes = dep["deploymentStatusDetails"]["roostNotes"]
    assert f"{SUB} deferred the update for 1500 ms: busy: finishing a batch" in notes, notes
    assert marker.exists()
    _set_mode(agent, SUB, "answer")


def test_skip_notify_sends_nothing(env: tuple[Cli, Workspace, Path]) -> None:
    agent, ws, _ = env
    code, dep = _deploy(agent, *ws.deploy_args(), "--merge", f"{TARGET}=3.0.0", "--update-policy", "skip")
    assert code == 0 and dep["status"] == "SUCCEEDED", dep
    # The default of local deployments is SKIP_NOTIFY_COMPONENTS too (greengrass-cli's).
    code, default = _deploy(agent, *ws.deploy_args(), "--merge", f"{TARGET}=1.0.0")
    assert code == 0 and default["status"] == "SUCCEEDED", default
    for dep_id in (dep["deploymentId"], default["deploymentId"]):
        assert _lines(agent, SUB, dep_id) == [] and _lines(agent, SUB2, dep_id) == []
    # A notifying deployment after them is seen: the subscription was there all along.
    code, notified = _deploy(agent, "--update-config", json.dumps({TARGET: {"MERGE": {"x": 1}}}),
                             "--update-policy", "notify")
    assert code == 0, notified
    wait_until(lambda: any(line.startswith("post") for line in _lines(agent, SUB, notified["deploymentId"])),
               what="post of the notifying deployment")


def test_silent_subscriber_does_not_hold_the_update(env: tuple[Cli, Workspace, Path]) -> None:
    agent, ws, _ = env
    _set_mode(agent, SUB, "silent")
    _set_mode(agent, SUB2, "silent")
    code, dep = _deploy(agent, *ws.deploy_args(), "--merge", f"{TARGET}=3.0.0", "--update-policy", "notify",
                        "--update-timeout", "2")
    assert code == 0 and dep["status"] == "SUCCEEDED", dep
    dep_id = dep["deploymentId"]
    wait_until(lambda: any(line.startswith("post") for line in _lines(agent, SUB, dep_id)), what="post")
    assert [line.split(" marker=")[0] for line in _lines(agent, SUB, dep_id)] == [
        f"pre {dep_id} round 1 restarting=False", f"post {dep_id}"]
    versions = {c["componentName"]: c["version"] for c in agent.json("component", "list")}
    assert versions[TARGET] == "3.0.0"
    _set_mode(agent, SUB, "answer")
    _set_mode(agent, SUB2, "answer")


def test_deferring_past_the_deployment_timeout_changes_nothing(env: tuple[Cli, Workspace, Path]) -> None:
    agent, ws, _ = env
    _set_mode(agent, SUB, "defer")  # defers 1500 ms in round 1: longer than this deployment may take
    before = {c["componentName"]: c["version"] for c in agent.json("component", "list")}
    code, dep = _deploy(agent, *ws.deploy_args(), "--merge", f"{TARGET}=1.0.0", "--update-policy", "notify",
                        "--timeout", "1")
    assert code != 0 and dep["status"] == "FAILED", dep
    details = dep["deploymentStatusDetails"]
    assert details["detailedDeploymentStatus"] == "FAILED_NO_STATE_CHANGE", details
    assert "before any change" in details["deploymentErrorStack"][0], details
    assert {c["componentName"]: c["version"] for c in agent.json("component", "list")} == before
    # The subscribers hear that the update is off (postUpdateEvent), as the nucleus tells them.
    wait_until(lambda: any(line.startswith("post") for line in _lines(agent, SUB, dep["deploymentId"])),
               what="post after the failed deployment")
    _set_mode(agent, SUB, "answer")


def test_defer_bad_input(env: tuple[Cli, Workspace, Path]) -> None:
    agent, ws, _ = env
    code, dep = _deploy(agent, *ws.deploy_args(), "--merge", "com.test.Probe=1.0.0")
    assert code == 0, dep
    wait_until(lambda: "probe done" in _log(agent, "com.test.Probe"), what="the probe")
    log = _log(agent, "com.test.Probe")
    assert "unsubscribed InvalidArgumentsError com.test.Probe is not subscribed to component updates" in log, log
    assert "no-id InvalidArgumentsError deploymentId is required" in log, log
    assert "negative InvalidArgumentsError recheckAfterMs must not be negative, got -5" in log, log
    assert "unknown ServiceError no update of deployment no-such-deployment is waiting for com.test.Probe" in log, log


def test_cancel_while_subscribers_are_asked(env: tuple[Cli, Workspace, Path]) -> None:
    agent, ws, _ = env
    _set_mode(agent, SUB, "silent")
    before = {c["componentName"]: c["version"] for c in agent.json("component", "list")}
    target = "2.0.0" if before[TARGET] != "2.0.0" else "3.0.0"
    out = agent.run("deployment", "create", *ws.deploy_args(), "--merge", f"{TARGET}={target}",
                    "--update-policy", "notify", "--update-timeout", "600", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    dep_id = json.loads(out.stdout)["deploymentId"]
    wait_until(lambda: any(line.startswith("pre") for line in _lines(agent, SUB, dep_id)), what="preUpdateEvent")
    cancel = agent.run("deployment", "cancel", dep_id, "--json")
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    status = wait_until(lambda: (d := agent.json("deployment", "status", dep_id))["status"] == "CANCELED" and d,
                        what="the deployment to be canceled")
    assert "canceled before any change" in status["deploymentStatusDetails"]["deploymentErrorStack"][0], status
    assert {c["componentName"]: c["version"] for c in agent.json("component", "list")} == before
    wait_until(lambda: any(line.startswith("post") for line in _lines(agent, SUB, dep_id)), what="post after cancel")
    _set_mode(agent, SUB, "answer")


def test_bad_policies_are_refused(env: tuple[Cli, Workspace, Path]) -> None:
    from roost.cli import local
    from roost.errors import InvalidInputError

    agent, _, _ = env
    out = agent.run("deployment", "create", "--update-policy", "sometimes", "--json")
    assert out.returncode == 3 and "--update-policy must be notify or skip, got 'sometimes'" in out.stdout, out.stdout
    out = agent.run("deployment", "create", "--update-policy", "notify", "--update-timeout", "0")
    assert out.returncode != 0 and "--update-timeout" in out.stderr, out.stderr
    bad = [({"componentUpdatePolicy": {"action": "SOMETIMES"}}, "componentUpdatePolicy.action"),
           ({"componentUpdatePolicy": {"timeoutInSeconds": -1}}, "componentUpdatePolicy.timeoutInSeconds"),
           ({"configurationValidationPolicy": {"timeout": 5}}, "configurationValidationPolicy.timeout")]
    for request, where in bad:
        with pytest.raises(InvalidInputError, match=f"invalid deployment request: {where}") as err:
            local.call(str(agent.root), "CreateLocalDeployment", request)
        assert err.value.code == "INVALID_DEPLOYMENT"
