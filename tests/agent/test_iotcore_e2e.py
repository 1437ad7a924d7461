"""PublishToIoTCore / SubscribeToIoTCore through a real agent and a real Mosquitto, from a component
written with awsiotsdk's GreengrassCoreIPCClientV2 (it runs unchanged)."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest

from tests.agent.helpers import Workspace
from tests.agent.iotcore_helpers import (
    PahoPeer,
    SdkComponent,
    TlsBroker,
    mqttproxy_policy,
    own_broker,
    spool_counters,
    spooled_count,
    wait_for,
)
from tests.conftest import Cli, running_agent

pytestmark = pytest.mark.slow

NAME = "com.test.IotCoreClient"




def _deploy(agent: Cli, comp: SdkComponent) -> None:
    out = agent.run("deployment", "create", *comp.deploy_args(), "--wait", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    comp.wait_ready()


def test_publish_qos0_and_qos1_reach_a_broker_subscriber(broker_agent: Cli, tmp_path: Path, prefix: str) -> None:
    peer = PahoPeer()
    try:
        peer.subscribe(f"{prefix}/#")
        comp = SdkComponent(broker_agent.root, tmp_path / "c", NAME, mqttproxy_policy([f"{prefix}/out/+"], []))
        _deploy(broker_agent, comp)
        assert comp.run("pub", f"{prefix}/out/a", "0", ["q0-1", "q0-2"]) == "done 1"
        assert comp.run("pub", f"{prefix}/out/b", "1", ["q1-1", "q1-2"]) == "done 2"
        wait_for(lambda: len(peer.payloads()) >= 4, "the four messages at the paho subscriber")
        assert peer.received == [(f"{prefix}/out/a", b"q0-1", 0), (f"{prefix}/out/a", b"q0-2", 0),
                                 (f"{prefix}/out/b", b"q1-1", 1), (f"{prefix}/out/b", b"q1-2", 1)]
    finally:
        peer.close()


def test_broker_messages_reach_a_subscribe_stream(broker_agent: Cli, tmp_path: Path, prefix: str) -> None:
    comp = SdkComponent(broker_agent.root, tmp_path / "c", NAME, mqttproxy_policy([], [f"{prefix}/in/#"]))
    _deploy(broker_agent, comp)
    assert comp.run("sub", f"{prefix}/in/+", "1") == "done 1"
    assert comp.run("sub", f"{prefix}/in/#", "0") == "done 2"  # overlapping filters: each stream gets its copy
    peer = PahoPeer()
    try:
        peer.publish(f"{prefix}/in/x", b"hello")
        peer.publish(f"{prefix}/in/x/deep", b"deeper")
        wait_for(lambda: len(comp.got()) >= 3, "three deliveries to the component's streams")
        got = comp.got()
        assert sorted(got) == sorted([f"{prefix}/in/x hello", f"{prefix}/in/x hello", f"{prefix}/in/x/deep deeper"])
    finally:
        peer.close()


def test_unauthorised_and_malformed_requests_are_refused(broker_agent: Cli, tmp_path: Path, prefix: str) -> None:
    comp = SdkComponent(broker_agent.root, tmp_path / "c", NAME,
                        mqttproxy_policy([f"{prefix}/out/+"], [f"{prefix}/in/+"]))
    _deploy(broker_agent, comp)
    denied = comp.run("pub", f"{prefix}/secret", "1", ["x"])
    assert denied.startswith("error 1 UnauthorizedError"), denied
    assert f"aws.greengrass.ipc.mqttproxy:aws.greengrass#PublishToIoTCore on resource {prefix}/secret" in denied
    # A policy filter a/+ does not cover the wider request a/#.
    assert comp.run("sub", f"{prefix}/in/#", "1").startswith("error 2 UnauthorizedError")
    bad = comp.run("sub", f"{prefix}/#/x", "1")
    assert bad.startswith("error 3 InvalidArgumentsError") and "'#' must be a whole level and the last one" in bad
    wild = comp.run("pub", f"{prefix}/out/+", "1", ["x"])
    assert wild.startswith("error 4 InvalidArgumentsError") and "must not contain the wildcards" in wild
    long_topic = comp.run("pub", f"{prefix}/out/" + "x" * 300, "1", ["x"])
    assert long_topic.startswith("error 5 InvalidArgumentsError") and "at most 256" in long_topic
    deep = comp.run("pub", f"{prefix}/out/a/b/c/d/e/f/g", "1", ["x"])
    assert deep.startswith("error 6 InvalidArgumentsError") and "at most 7" in deep
    qos = comp.run("pub", f"{prefix}/out/a", "2", ["x"])
    assert qos.startswith("error 7 InvalidArgumentsError") and "qos must be" in qos


def test_without_a_broker_the_operations_name_the_missing_setting(agent: Cli, tmp_path: Path) -> None:
    comp = SdkComponent(agent.root, tmp_path / "c", NAME, mqttproxy_policy(["#"], ["#"]))
    _deploy(agent, comp)
    for n, op in ((1, "pub"), (2, "sub")):
        line = comp.run(op, "a/b", "1", ["x"])
        assert line.startswith(f"error {n} ServiceError"), line
        assert "no MQTT broker for IoT Core" in line and "--mqtt-broker" in line and "mqtt.broker" in line, line


def test_a_bad_broker_uri_fails_the_start(cli: Cli) -> None:
    out = cli.run("agent", "start", "--detach", "--mqtt-broker", "http://127.0.0.1:1883")
    assert out.returncode == 3, out.stdout + out.stderr
    assert "MQTT_CONFIG_INVALID" in out.stdout + out.stderr and "mqtt:// or mqtts://" in out.stdout + out.stderr


def test_publishes_while_the_broker_is_away_are_spooled_bounded_and_sent_in_order(
        cli: Cli, tmp_path: Path, prefix: str) -> None:
    root = cli.root
    root.mkdir(parents=True, exist_ok=True)
    # A small spool: three messages. The agent retries its broker every second at most.
    (root / "agent.yaml").write_text("mqtt:\n  reconnectMaxDelaySeconds: 1\n  spooler:\n    maxMessages: 3\n")
    with own_broker(tmp_path / "broker") as broker, \
            running_agent(root, "iot-thing", "--mqtt-broker", broker.uri) as agent:
        peer = PahoPeer(broker.port, client_id="roost-test-spool-peer", persistent=True)
        try:
            peer.subscribe(f"{prefix}/#", qos=1)
            comp = SdkComponent(root, tmp_path / "c", NAME, mqttproxy_policy([f"{prefix}/#"], [f"{prefix}/cmd/+"]))
            _deploy(agent, comp)
            assert comp.run("pub", f"{prefix}/live", "1", ["before"]) == "done 1"
            wait_for(lambda: peer.payloads() == [b"before"], "the message sent while the broker is up")
            assert comp.run("sub", f"{prefix}/cmd/+", "1") == "done 2"

            broker.stop()
            wait_for(lambda: "connection to" in (root / "logs" / "agent.log").read_text(),
                     "the agent to notice the broker is gone")
            assert comp.run("pub", f"{prefix}/away", "0", ["a0", "b0"]) == "done 3"
            assert comp.run("pub", f"{prefix}/away", "1", ["c1"]) == "done 4"
            assert spooled_count(root) == 3
            # Full: each QoS 1 message makes room by dropping the oldest QoS 0 one ...
            assert comp.run("pub", f"{prefix}/away", "1", ["d1", "e1"]) == "done 5"
            # ... and with only QoS 1 left, the newest is refused: its publisher is told.
            refused = comp.run("pub", f"{prefix}/away", "1", ["f1"])
            assert refused.startswith("error 6 ServiceError") and "spool cannot take this message" in refused
            assert spooled_count(root) == 3
            counters = spool_counters(root)
            assert counters.get("dropped") == 2 and counters.get("refused") == 1, counters
            status = agent.json("agent", "status")["iotCore"]
            assert status == {"broker": broker.uri, "connected": False, "since": status["since"], "waiting": 3,
                              "spooled": 5, "sent": 0, "dropped": 2, "refused": 1}, status

            broker.start()
            wait_for(lambda: spooled_count(root) == 0, "the spool to drain once the broker is back")
            assert comp.run("pub", f"{prefix}/live", "1", ["after"]) == "done 7"
            wait_for(lambda: len(peer.payloads()) >= 5, "the spooled messages at the subscriber")
            assert peer.payloads() == [b"before", b"c1", b"d1", b"e1", b"after"]
            assert spool_counters(root).get("sent") == 3
            status = agent.json("agent", "status")["iotCore"]
            assert status["connected"] and status["waiting"] == 0 and status["sent"] == 3, status
            # The subscription made before the outage was established again on reconnect (its SUBSCRIBE
            # went out before the spooled messages, whose PUBACKs have all come back).
            peer.publish(f"{prefix}/cmd/go", b"resubscribed")
            wait_for(lambda: f"{prefix}/cmd/go resubscribed" in comp.got(), "the stream after the reconnection")
        finally:
            peer.close()


def test_tls_with_client_certificate_and_password(cli: Cli, tmp_path: Path, prefix: str) -> None:
    password = "pw-" + uuid.uuid4().hex
    broker = TlsBroker(tmp_path / "broker", "device-1", password)
    broker.start()
    try:
        pw_file = tmp_path / "mqtt.password"
        pw_file.write_text(password + "\n")
        pki = broker.pki
        tls = ["--mqtt-broker", broker.uri, "--mqtt-ca", str(pki["ca.pem"]), "--mqtt-cert", str(pki["client.pem"]),
               "--mqtt-key", str(pki["client.key"]), "--mqtt-username", "device-1"]
        peer = PahoPeer(broker.plain_port)
        try:
            peer.subscribe(f"{prefix}/#")
            with running_agent(cli.root, "iot-thing", *tls, "--mqtt-password-file", str(pw_file)) as agent:
                comp = SdkComponent(agent.root, tmp_path / "c", NAME, mqttproxy_policy([f"{prefix}/#"], []))
                _deploy(agent, comp)
                assert comp.run("pub", f"{prefix}/tls", "1", ["over-tls"]) == "done 1"
                wait_for(lambda: peer.payloads() == [b"over-tls"], "the message sent over mutual TLS")
                log = (agent.root / "logs" / "agent.log").read_text()
                assert f"connected to {broker.uri}" in log and password not in log
        finally:
            peer.close()
        # A wrong password: the broker refuses the agent, which says so (without the password) and spools.
        pw_file.write_text("wrong-" + password + "\n")
        with running_agent(cli.root, "iot-thing", *tls, "--mqtt-password-file", str(pw_file)) as agent:
            log_file = agent.root / "logs" / "agent.log"
            wait_for(lambda: "the broker refused the connection" in log_file.read_text(), "the refusal in the log")
            assert "wrong-" + password not in log_file.read_text()
    finally:
        broker.stop()


# The same through Roost's own client (roost.ipc, importable by every component).
ROOST_CLIENT = textwrap.dedent("""
    import sys, threading
    from roost.ipc.client import SyncIpcClient

    prefix = sys.argv[1]
    with SyncIpcClient() as ipc:
        ipc.subscribe_to_iot_core(prefix + "/in/+", lambda m: print("got", m.topic, m.payload.decode(), flush=True))
        print("subscribed", flush=True)
        ipc.publish_to_iot_core(prefix + "/out/r", "from-roost-client", qos=1)
        for request in ({"topicName": prefix + "/out/r", "qos": "1"},
                        {"topicName": prefix + "/out/r", "qos": "1", "payload": "not base64!"},
                        {"topicName": prefix + "/out/r", "qos": "1", "payload": "", "userProperties": [{"key": 1}]}):
            try:
                ipc.call("PublishToIoTCore", request)
            except Exception as err:
                print("refused", type(err).__name__, err.code, err, flush=True)
        print("published", flush=True)
        threading.Event().wait()
""")


def test_roost_client_publishes_and_subscribes(broker_agent: Cli, tmp_path: Path, prefix: str) -> None:
    peer = PahoPeer()
    try:
        peer.subscribe(f"{prefix}/out/#")
        ws = Workspace(tmp_path / "ws")
        ws.component("com.test.RoostIot", "1.0.0", {"Run": f"python3 -u {{artifacts:path}}/r.py {prefix}"},
                     files={"r.py": ROOST_CLIENT},
                     config={"accessControl": mqttproxy_policy([f"{prefix}/out/+"], [f"{prefix}/in/+"])})
        out = broker_agent.run("deployment", "create", *ws.deploy_args(), "--merge", "com.test.RoostIot=1.0.0",
                               "--wait", "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        log = broker_agent.root / "logs" / "com.test.RoostIot.log"
        wait_for(lambda: "published" in log.read_text(), "the Roost client's publish")
        wait_for(lambda: peer.payloads() == [b"from-roost-client"], "its message at the broker")
        refusals = [line.split("refused ", 1)[1] for line in log.read_text().splitlines() if "refused " in line]
        assert len(refusals) == 3, refusals
        assert refusals[0].startswith("InvalidArgumentsIpcError") and "payload is required" in refusals[0]
        assert "payload is not valid base64" in refusals[1]
        assert "userProperties must be a list of {key, value} strings" in refusals[2]
        peer.publish(f"{prefix}/in/x", b"to-roost-client")
        wait_for(lambda: f"got {prefix}/in/x to-roost-client" in log.read_text(), "the message on its stream")
    finally:
        peer.close()
