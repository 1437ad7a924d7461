"""The built-in MQTT bridge (aws.greengrass.clientdevices.mqtt.Bridge) forwarding for real: a real
agent, the machine's Mosquitto, an awsiotsdk component on local pub/sub and a paho client on the
broker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.agent.iotcore_helpers import PahoPeer, SdkComponent, pubsub_policy, wait_for
from tests.conftest import Cli

pytestmark = pytest.mark.slow

BRIDGE = "aws.greengrass.clientdevices.mqtt.Bridge"
NAME = "com.test.BridgeUser"




def _bridge_update(mapping: dict[str, Any], **extra: Any) -> str:
    return json.dumps({BRIDGE: {"MERGE": {"mqttTopicMapping": mapping, **extra}}})


def test_bridge_forwards_pubsub_iotcore_and_localmqtt_without_loops(broker_agent: Cli, tmp_path: Path,
                                                                    prefix: str) -> None:
    peer = PahoPeer()
    try:
        peer.subscribe(f"{prefix}/#")
        comp = SdkComponent(broker_agent.root, tmp_path / "c", NAME,
                            pubsub_policy([f"{prefix}/#", f"cloud/{prefix}/#"]))
        mapping = {
            "ToCloud": {"topic": f"{prefix}/up/#", "source": "Pubsub", "target": "IotCore"},
            "FromCloud": {"topic": f"{prefix}/down/+", "source": "IotCore", "target": "Pubsub",
                          "targetTopicPrefix": "cloud/"},
            # The same topic both ways: one hop each, never a storm.
            "BothOut": {"topic": f"{prefix}/both/#", "source": "Pubsub", "target": "IotCore"},
            "BothIn": {"topic": f"{prefix}/both/#", "source": "IotCore", "target": "Pubsub"},
            # LocalMqtt is the broker at brokerUri: here the same Mosquitto, over the bridge's own connection.
            "FromDevices": {"topic": f"{prefix}/devices/#", "source": "LocalMqtt", "target": "Pubsub"},
        }
        out = broker_agent.run("deployment", "create", *comp.deploy_args(), "--merge", f"{BRIDGE}=2.3.2",
                               "--update-config", _bridge_update(mapping, brokerUri="mqtt://127.0.0.1:1883"),
                               "--wait", "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        notes = json.loads(out.stdout)["deploymentStatusDetails"].get("roostNotes", [])
        assert any(BRIDGE in n and "configuration applied" in n for n in notes), notes
        comp.wait_ready()
        assert comp.run("lsub", f"{prefix}/#") == "done 1"
        assert comp.run("lsub", f"cloud/{prefix}/#") == "done 2"

        # Pubsub -> IotCore
        assert comp.run("lpub", f"{prefix}/up/temp", payloads=["21.5"]) == "done 3"
        wait_for(lambda: (f"{prefix}/up/temp", b"21.5", 1) in peer.received, "Pubsub -> IotCore at the broker")
        # IotCore -> Pubsub, with the target prefix
        peer.publish(f"{prefix}/down/cmd", b"reboot")
        wait_for(lambda: f"cloud/{prefix}/down/cmd reboot" in comp.local(), "IotCore -> Pubsub at the component")
        # LocalMqtt -> Pubsub
        peer.publish(f"{prefix}/devices/d1", b"hello")
        wait_for(lambda: f"{prefix}/devices/d1 hello" in comp.local(), "LocalMqtt -> Pubsub at the component")

        # Loop avoidance: Pubsub -> IotCore -> (echo) is not bridged back to Pubsub.
        assert comp.run("lpub", f"{prefix}/both/x", payloads=["once"]) == "done 4"
        wait_for(lambda: (f"{prefix}/both/x", b"once", 1) in peer.received, "both/x at the broker")
        # The broker sends the agent its echo of both/x before this sentinel (one connection, in order),
        # and the agent handles both in that order: once the sentinel is through, an echo would be too.
        peer.publish(f"{prefix}/down/sentinel", b"s")
        wait_for(lambda: f"cloud/{prefix}/down/sentinel s" in comp.local(), "the sentinel at the component")
        assert comp.local().count(f"{prefix}/both/x once") == 1, comp.local()  # its own publish, not an echo
        assert [r for r in peer.received if r[0] == f"{prefix}/both/x"] == [(f"{prefix}/both/x", b"once", 1)]
        # A message from the broker on the shared topic makes one hop to Pubsub, and not back.
        peer.publish(f"{prefix}/both/y", b"from-cloud")
        peer.publish(f"{prefix}/down/sentinel2", b"s")
        wait_for(lambda: f"cloud/{prefix}/down/sentinel2 s" in comp.local(), "the second sentinel")
        assert comp.local().count(f"{prefix}/both/y from-cloud") == 1, comp.local()
        assert [r for r in peer.received if r[0] == f"{prefix}/both/y"] == [(f"{prefix}/both/y", b"from-cloud", 1)]

        # The mapping survives a restart of the agent.
        assert broker_agent.run("agent", "stop").returncode == 0
        start = broker_agent.run("agent", "start", "--detach", "--thing-name", "iot-thing",
                                 "--mqtt-broker", "mqtt://127.0.0.1:1883")
        assert start.returncode == 0, start.stdout + start.stderr
        log = (broker_agent.root / "logs" / "agent.log").read_text()  # start --detach returns once it is ready
        assert log.count("MQTT bridge: 5 topic mapping(s)") == 2, log
    finally:
        peer.close()


@pytest.mark.parametrize(("mapping", "message"), [
    ({"M": {"topic": "a/#", "source": "Pubsub"}}, "mqttTopicMapping.M.target is required"),
    ({"M": {"topic": "a/#", "source": "Pubsub", "target": "Cloud"}},
     "mqttTopicMapping.M.target must be one of Pubsub, LocalMqtt, IotCore, got 'Cloud'"),
    ({"M": {"topic": "a/#/b", "source": "Pubsub", "target": "IotCore"}}, "'#' must be a whole level"),
    ({"M": {"topic": "a/b", "source": "IotCore", "target": "IotCore"}}, "it would forward every message onto itself"),
    ({"M": {"topic": "a/b", "source": "Pubsub", "target": "IotCore", "qos": 1}}, "unknown key(s) qos"),
])
def test_bad_bridge_configuration_fails_the_deployment_before_any_change(broker_agent: Cli, mapping: Any,
                                                                         message: str) -> None:
    out = broker_agent.run("deployment", "create", "--merge", f"{BRIDGE}=2.3.2",
                           "--update-config", _bridge_update(mapping), "--wait", "--json")
    assert out.returncode != 0
    details = json.loads(out.stdout)["deploymentStatusDetails"]
    assert details["detailedDeploymentStatus"] == "FAILED_NO_STATE_CHANGE", details
    assert details["deploymentFailureCause"] == "MQTT_BRIDGE_CONFIG_INVALID", details
    assert message in details["deploymentErrorStack"][0], details


def test_a_mapping_to_iotcore_needs_a_broker(agent: Cli) -> None:
    out = agent.run("deployment", "create", "--merge", f"{BRIDGE}=2.3.2", "--update-config",
                    _bridge_update({"M": {"topic": "a/#", "source": "Pubsub", "target": "IotCore"}}), "--wait",
                    "--json")
    details = json.loads(out.stdout)["deploymentStatusDetails"]
    assert details["deploymentFailureCause"] == "MQTT_BRIDGE_CONFIG_INVALID", details
    assert "uses IotCore but this agent has no MQTT broker" in details["deploymentErrorStack"][0], details
