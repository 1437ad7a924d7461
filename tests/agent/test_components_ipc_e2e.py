"""Components talking to a real agent over its IPC socket: Roost's client and AWS's awsiotsdk."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from tests.agent.helpers import Workspace, wait_until
from tests.conftest import Cli, require_module

pytestmark = pytest.mark.slow
require_module("awsiot.greengrasscoreipc.clientv2")  # awsiotsdk: skipped through the gate if absent

COLLECTOR = textwrap.dedent("""
    import sys, threading
    from roost.ipc.client import SyncIpcClient

    with SyncIpcClient() as ipc:
        print("collector config", ipc.get_configuration(["topic"]), flush=True)
        ipc.subscribe(sys.argv[1], lambda m: print("got", m.topic, m.payload.decode(), flush=True))
        print("collector ready", flush=True)
        open("ready", "w").close()  # in its work folder: the sensor waits for it (pub/sub keeps nothing)
        threading.Event().wait()
""")

# Written for AWS IoT Greengrass with awsiotsdk; runs on Roost unchanged.
SENSOR = textwrap.dedent("""
    import json, sys, threading
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import JsonMessage, PublishMessage, UnauthorizedError

    topic = sys.argv[1]
    ipc = GreengrassCoreIPCClientV2()

    def publish_greeting():
        greeting = ipc.get_configuration(key_path=["greeting"]).value["greeting"]
        ipc.publish_to_topic(topic=topic, publish_message=PublishMessage(
            json_message=JsonMessage(message={"greeting": greeting})))
        print("sensor published", greeting, flush=True)

    def on_update(event):
        print("sensor config update", event.configuration_update_event.key_path, flush=True)
        threading.Thread(target=publish_greeting).start()

    ipc.subscribe_to_configuration_update(key_path=[], on_stream_event=on_update)
    ipc.update_state(state="RUNNING")
    publish_greeting()
    try:
        ipc.publish_to_topic(topic="not/allowed", publish_message=PublishMessage(
            json_message=JsonMessage(message={})))
    except UnauthorizedError as err:
        print("sensor denied:", err.message, flush=True)
    threading.Event().wait()
""")


def _pubsub_acl(component: str, op: str, topic: str) -> dict:
    return {"aws.greengrass.ipc.pubsub": {f"{component}:1": {"operations": [f"aws.greengrass#{op}"],
                                                             "resources": [topic]}}}


def test_roost_and_awsiotsdk_components_through_the_agent(agent: Cli, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    ws.component("com.test.Collector", "1.0.0",
                 {"Run": "python3 -u {artifacts:path}/collector.py {configuration:/topic}"},
                 files={"collector.py": COLLECTOR}, digest={"collector.py": "auto"},
                 config={"topic": "sensors/+/reading",
                         "accessControl": _pubsub_acl("com.test.Collector", "SubscribeToTopic", "sensors/#")})
    ws.component("com.test.Sensor", "1.0.0",
                 # awsiotsdk is installed in the test environment, not in the component's own: name that interpreter
                 {"Run": "for i in $(seq 600); do [ -e {com.test.Collector:work:path}/ready ] && break; "
                         f"sleep 0.05; done; exec {sys.executable} -u {{artifacts:path}}/sensor.py "
                         "sensors/{iot:thingName}/reading"},
                 files={"sensor.py": SENSOR},
                 config={"greeting": "hello",
                         "accessControl": _pubsub_acl("com.test.Sensor", "PublishToTopic", "sensors/*/reading")},
                 dependencies={"com.test.Collector": {"VersionRequirement": "^1.0.0"}})
    out = agent.run("deployment", "create", *ws.deploy_args(), "--merge", "com.test.Sensor=1.0.0", "--wait",
                    "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    comps = {c["componentName"]: c for c in agent.json("component", "list")}
    assert comps["com.test.Collector"]["isRoot"] is False and comps["com.test.Sensor"]["state"] == "RUNNING"

    collector_log = agent.root / "logs" / "com.test.Collector.log"
    sensor_log = agent.root / "logs" / "com.test.Sensor.log"
    wait_until(lambda: 'got sensors/test-device/reading {"greeting":"hello"}' in collector_log.read_text(),
               what="collector to receive the awsiotsdk message")
    # A leaf comes back wrapped in its key, as Greengrass' GetConfiguration does.
    assert "collector config {'topic': 'sensors/+/reading'}" in collector_log.read_text()
    assert collector_log.read_text().count('{"greeting":"hello"}') == 1
    wait_until(lambda: "sensor denied:" in sensor_log.read_text(), what="unauthorised publish refused")
    assert "not/allowed" in sensor_log.read_text()

    # A configuration change that the scripts do not interpolate: no restart, an update event.
    out = agent.run("deployment", "create", "--update-config",
                    json.dumps({"com.test.Sensor": {"MERGE": {"greeting": "hola"}}}), "--wait", "--json")
    assert out.returncode == 0, out.stdout
    wait_until(lambda: '{"greeting":"hola"}' in collector_log.read_text(), what="update event and republish")
    assert sensor_log.read_text().count("sensor published hello") == 1

    # Components stop in reverse dependency order: the sensor before the collector it depends on.
    assert agent.run("agent", "stop").returncode == 0
    lines = (agent.root / "logs" / "agent.log").read_text().splitlines()
    stops = [ln for ln in lines if "-> STOPPING" in ln]
    assert "com.test.Sensor" in stops[-2] and "com.test.Collector" in stops[-1]
    assert agent.run("agent", "start", "--detach").returncode == 0


# A component allowed only to publish to one topic tries to grant itself everything through IPC.
ESCALATOR = textwrap.dedent("""
    import sys, time
    from roost.ipc.client import SyncIpcClient
    from roost.ipc.errors import UnauthorizedIpcError

    ALL = {"x:1": {"operations": ["*"], "resources": ["*"]}}
    GRANT = {"aws.greengrass.Cli": ALL, "aws.greengrass.ipc.config": ALL, "aws.greengrass.ipc.pubsub": ALL}
    with SyncIpcClient() as ipc:
        for key_path, value in (([], {"accessControl": GRANT, "note": "smuggled"}), (["accessControl"], GRANT),
                                (["accessControl", "aws.greengrass.Cli"], ALL)):
            try:
                ipc.update_configuration(key_path, value)
                print("ESCALATION ACCEPTED", key_path, flush=True)
            except UnauthorizedIpcError as err:
                print("escalation refused", err.payload["context"]["code"], flush=True)
        for op, request in (("ListComponents", {}), ("StopComponent", {"componentName": "com.test.Victim"}),
                            ("CreateLocalDeployment", {"rootComponentsToRemove": ["com.test.Victim"]})):
            try:
                ipc.call(op, request)
                print("PRIVILEGED ACCEPTED", op, flush=True)
            except UnauthorizedIpcError:
                print("privileged refused", op, flush=True)
        # Reading another component's configuration is open, as on Greengrass (strict mode refuses it:
        # tests/agent/test_config_reads_e2e.py); writing it is not possible at all.
        print("read other", ipc.get_configuration(["secret"], component_name="com.test.Victim"), flush=True)
        ipc.update_configuration(["note"], "written")  # its own, non-policy configuration: allowed
        print("escalator ready", flush=True)
        n = 0
        while True:
            ipc.publish(sys.argv[1], {"n": n})
            n += 1
            time.sleep(0.2)
""")

VICTIM = "import threading; print('victim up', flush=True); threading.Event().wait()"


def _component(agent: Cli, name: str) -> dict:
    comps = {c["componentName"]: c for c in agent.json("component", "list")}
    return comps[name]


def _receive_one(agent: Cli, topic: str) -> dict:
    """Subscribe as the privileged CLI principal and return the next message on ``topic``."""
    import asyncio

    from roost.ipc.client import IpcClient

    async def main() -> dict:
        token = (agent.root / "cli.token").read_text()
        async with await IpcClient.connect(str(agent.root / "ipc.socket"), token) as ipc:
            sub = await ipc.subscribe(topic)
            msg = await sub.get(15)
            return msg.json  # type: ignore[no-any-return]

    return asyncio.run(main())


def test_component_cannot_grant_itself_policy_through_ipc(agent: Cli, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    ws.component("com.test.Victim", "1.0.0", {"Run": "python3 -u {artifacts:path}/victim.py"},
                 files={"victim.py": VICTIM}, config={"secret": "s3cret"})
    acl = _pubsub_acl("com.test.Escalator", "PublishToTopic", "esc/alive")
    ws.component("com.test.Escalator", "1.0.0", {"Run": "python3 -u {artifacts:path}/esc.py esc/alive"},
                 files={"esc.py": ESCALATOR}, config={"note": "default", "accessControl": acl})
    out = agent.run("deployment", "create", *ws.deploy_args(), "--merge", "com.test.Victim=1.0.0",
                    "--merge", "com.test.Escalator=1.0.0", "--wait", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    log = agent.root / "logs" / "com.test.Escalator.log"

    def check(runs: int) -> None:
        wait_until(lambda: log.exists() and log.read_text().count("escalator ready") == runs, timeout=60,
                   what=f"escalator run {runs} to finish its attempts")
        text = log.read_text()
        assert "ACCEPTED" not in text, text
        assert text.count("escalation refused POLICY_CHANGE_REFUSED") == 3 * runs
        for op in ("ListComponents", "StopComponent", "CreateLocalDeployment"):
            assert text.count(f"privileged refused {op}") == runs
        assert text.count("read other {'secret': 's3cret'}") == runs
        esc = _component(agent, "com.test.Escalator")
        assert esc["configuration"]["accessControl"] == acl  # unchanged, not even partly
        assert esc["configuration"]["note"] == "written"  # the refused root update merged nothing
        assert _component(agent, "com.test.Victim")["state"] == "RUNNING"
        # What it is allowed to do still works.
        assert isinstance(_receive_one(agent, "esc/alive")["n"], int)

    check(1)
    # The refusal (and the unchanged policy) survive an agent restart.
    assert agent.run("agent", "stop").returncode == 0
    start = agent.run("agent", "start", "--detach")
    assert start.returncode == 0, start.stdout + start.stderr
    check(2)
