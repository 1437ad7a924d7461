"""Hub deployments honour Greengrass' component update and configuration validation policies.

The hub's desired state carries ``componentUpdatePolicy NOTIFY_COMPONENTS`` (60 s) and
``configurationValidationPolicy`` (30 s), Greengrass' defaults of cloud deployments: a component
written with awsiotsdk that subscribes to both hears of the update before it happens, and its
rejection of a new configuration fails the device's deployment with ``CONFIGURATION_REJECTED``
while nothing changes on the device.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_module
from tests.sync.conftest import Agent, Hub, roost, roost_json, wait_for, write_component

pytestmark = pytest.mark.slow

WATCHER, PLAIN = "com.example.Watcher", "com.example.Plain"

WATCHER_PY = textwrap.dedent("""
    import queue
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import ConfigurationValidityReport

    ipc = GreengrassCoreIPCClientV2()
    events = queue.Queue()
    ipc.subscribe_to_component_updates(on_stream_event=lambda e: events.put(("update", e)))
    ipc.subscribe_to_validate_configuration_updates(on_stream_event=lambda e: events.put(("validate", e)))
    print("subscribed", flush=True)
    while True:
        kind, event = events.get()
        if kind == "update" and event.pre_update_event is not None:
            dep = event.pre_update_event.deployment_id
            print(f"pre {dep}", flush=True)
            ipc.defer_component_update(deployment_id=dep, recheck_after_ms=0)
        elif kind == "update" and event.post_update_event is not None:
            print(f"post {event.post_update_event.deployment_id}", flush=True)
        elif kind == "validate":
            ev = event.validate_configuration_update_event
            threshold = ev.configuration.get("threshold")
            ok = isinstance(threshold, (int, float)) and 0 <= threshold <= 1
            print(f"validate {ev.deployment_id} {threshold} {ok}", flush=True)
            ipc.send_configuration_validity_report(configuration_validity_report=ConfigurationValidityReport(
                status="ACCEPTED" if ok else "REJECTED", deployment_id=ev.deployment_id,
                message=None if ok else f"threshold {threshold} is out of [0, 1]"))
""")


def _watcher(base: Path) -> tuple[Path, Path]:
    art = base / "watcher-art"
    art.mkdir(parents=True)
    (art / "w.py").write_text(WATCHER_PY)
    recipe = base / "watcher.yaml"
    recipe.write_text(
        'RecipeFormatVersion: "2020-01-25"\n'
        f"ComponentName: {WATCHER}\nComponentVersion: \"1.0.0\"\n"
        "ComponentConfiguration:\n  DefaultConfiguration:\n    threshold: 0.5\n"
        "Manifests:\n  - Platform:\n      os: linux\n"
        f"    Lifecycle:\n      Run: {sys.executable} -u {{artifacts:path}}/w.py\n"
        f"    Artifacts:\n      - URI: s3://bucket/{WATCHER}/1.0.0/w.py\n")
    return recipe, art


@pytest.fixture(scope="module")
def device(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    require_module("awsiot.greengrasscoreipc.clientv2")
    base = tmp_path_factory.mktemp("policy-agent")
    token = roost_json(*hub.cli("device", "enroll-token"))["token"]
    agent = Agent("edge-policy", base / "root")
    proc = roost("agent", "start", "--root", str(agent.root), "--detach", "--hub", hub.url, "--enroll-token", token,
                 "--thing-name", agent.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    agent.started = True
    try:
        yield agent
    finally:
        agent.stop()


def _deploy(hub: Hub, *args: str) -> dict[str, object]:
    proc = roost(*hub.cli("deployment", "create", "--target", "device:edge-policy", *args, "--wait",
                          "--wait-timeout", "90", "--json"), timeout=150)
    out: dict[str, object] = json.loads(proc.stdout) if proc.stdout.strip() else {"stderr": proc.stderr}
    return out


def _row(dep: dict[str, object]) -> dict[str, object]:
    devices = dep["devices"]
    assert isinstance(devices, list) and len(devices) == 1, dep
    row: dict[str, object] = devices[0]
    return row


def _log(agent: Agent) -> list[str]:
    path = agent.root / "logs" / f"{WATCHER}.log"
    return [ln.split("] ", 1)[-1] for ln in path.read_text().splitlines()] if path.exists() else []


def test_hub_deployment_notifies_subscribers_and_honours_a_rejection(hub: Hub, device: Agent,
                                                                     tmp_path: Path) -> None:
    for recipe, art in (_watcher(tmp_path), write_component(tmp_path, PLAIN, "1.0.0"),
                        write_component(tmp_path, PLAIN, "2.0.0")):
        roost_json(*hub.cli("component", "publish", "--recipe", str(recipe), "--artifacts", str(art)))
    first = _deploy(hub, "--component", f"{WATCHER}=1.0.0", "--component", f"{PLAIN}=1.0.0")
    assert _row(first)["status"] == "SUCCEEDED", first
    wait_for(lambda: "subscribed" in _log(device), what="the watcher to subscribe")

    # NOTIFY_COMPONENTS is the hub's default: the watcher hears of the update before and after it.
    second = _deploy(hub, "--component", f"{WATCHER}=1.0.0", "--component", f"{PLAIN}=2.0.0")
    assert _row(second)["status"] == "SUCCEEDED", second
    wait_for(lambda: any(line.startswith("post ") for line in _log(device)), what="postUpdateEvent")
    kinds = [line.split(" ")[0] for line in _log(device) if line.split(" ")[0] in ("pre", "post")]
    assert kinds == ["pre", "post"], _log(device)
    assert device.components()[PLAIN][0] == "2.0.0"

    # A configuration the watcher rejects fails the device's deployment; nothing changes there.
    third = _deploy(hub, "--component", f"{WATCHER}=1.0.0", "--component", f"{PLAIN}=1.0.0",
                    "--update-config", json.dumps({WATCHER: {"MERGE": {"threshold": 5}}}))
    row = _row(third)
    assert row["status"] == "FAILED" and row["reason_code"] == "CONFIGURATION_REJECTED", third
    assert f"{WATCHER} rejected its new configuration: threshold 5 is out of [0, 1]" in str(row["message"]), row
    assert any(line.startswith("validate ") and line.endswith(" 5 False") for line in _log(device)), _log(device)
    assert device.components()[PLAIN][0] == "2.0.0"  # the version change of the same revision did not happen
    details = roost_json("component", "details", WATCHER, "--root", str(device.root))
    assert details["configuration"]["threshold"] == 0.5


def test_a_hub_deployment_chooses_its_policies(hub: Hub, device: Agent) -> None:
    # SKIP_NOTIFY_COMPONENTS: the update happens without a word to the subscribers.
    pres = sum(1 for line in _log(device) if line.startswith("pre "))
    dep = _deploy(hub, "--component", f"{WATCHER}=1.0.0", "--component", f"{PLAIN}=1.0.0", "--update-policy", "skip",
                  "--validation-timeout", "45")
    assert _row(dep)["status"] == "SUCCEEDED", dep
    assert dep["component_update_policy"] == {"action": "SKIP_NOTIFY_COMPONENTS", "timeout_seconds": 60}, dep
    assert dep["configuration_validation_policy"] == {"timeout_seconds": 45}, dep
    assert device.components()[PLAIN][0] == "1.0.0"
    assert sum(1 for line in _log(device) if line.startswith("pre ")) == pres
    # Defaults (Greengrass' cloud ones) when a deployment says nothing, and the API refuses a bad action.
    with hub.api() as api:
        listed = api.get(f"/v1/deployments/{dep['id']}").json()
        assert listed["component_update_policy"]["action"] == "SKIP_NOTIFY_COMPONENTS"
        bad = api.post("/v1/deployments", json={"target": "device:edge-policy", "components": {PLAIN: "2.0.0"},
                                                "component_update_policy": {"action": "SOMETIMES"}})
        assert bad.status_code == 422, bad.text
        assert "component_update_policy" in bad.json()["error"]["message"], bad.text
        zero = api.post("/v1/deployments", json={"target": "device:edge-policy", "components": {PLAIN: "2.0.0"},
                                                     "configuration_validation_policy": {"timeout_seconds": 0}})
        assert zero.status_code == 422, zero.text
        # Nothing said: Greengrass' defaults of cloud deployments.
        default = api.post("/v1/deployments", json={"target": "device:edge-policy",
                                                    "components": {WATCHER: "1.0.0", PLAIN: "2.0.0"}}).json()
    assert default["component_update_policy"] == {"action": "NOTIFY_COMPONENTS", "timeout_seconds": 60}, default
    assert default["configuration_validation_policy"] == {"timeout_seconds": 30}, default
    wait_for(lambda: sum(1 for line in _log(device) if line.startswith("pre ")) == pres + 1, what="preUpdateEvent")
    wait_for(lambda: device.components()[PLAIN][0] == "2.0.0", what="the update")
