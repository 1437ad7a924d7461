"""The parts of IoT Core that need no agent: topic rules, QoS, settings, the spool's bound and order,
the bridge's configuration, and mqttproxy authorisation."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.agent import authz
from roost.agent.iotcore import validate_iot_topic, validate_qos
from roost.agent.mqtt_bridge import parse_bridge_config
from roost.agent.mqtt_settings import PASSWORD_ENV, BrokerAddress, load_mqtt_settings
from roost.agent.mqtt_spool import MqttSpool, OutMessage
from roost.errors import InvalidInputError, RoostError
from tests.agent.iotcore_helpers import make_pki


@pytest.mark.parametrize(("topic", "subscribe"), [
    ("a/b", False), ("a/+/c", True), ("a/#", True), ("#", True), ("$aws/rules/r/" + "/".join("x" * 8), False),
    ("a/" + "x" * 254, False),
])
def test_topics_aws_iot_core_accepts(topic: str, subscribe: bool) -> None:
    assert validate_iot_topic(topic, subscribe=subscribe) == topic


@pytest.mark.parametrize(("topic", "subscribe", "message"), [
    (None, False, "topicName is required"),
    ("", True, "must be a non-empty string"),
    ("a/+", False, "must not contain the wildcards"),
    ("a/#/b", True, "'#' must be a whole level and the last one"),
    ("a/b#", True, "'#' must be a whole level"),
    ("a/x+/b", True, "'+' must be a whole level"),
    ("a/b/c/d/e/f/g/h/i", False, "has 8 '/': AWS IoT Core allows at most 7"),
    ("a/" + "é" * 128, False, "is 258 bytes of UTF-8: AWS IoT Core allows at most 256"),
    ("$aws/rules/r/", False, "the basic-ingest topic after $aws/rules/<rule>/ is empty"),
])
def test_topics_aws_iot_core_refuses(topic: object, subscribe: bool, message: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_iot_topic(topic, subscribe=subscribe)
    assert info.value.code == "IOT_CORE_TOPIC_INVALID" and message in info.value.message


def test_qos() -> None:
    assert (validate_qos("0"), validate_qos("1")) == (0, 1)
    for bad, message in ((None, "qos is required"), ("2", "got '2'"), ("AT_LEAST_ONCE", "got 'AT_LEAST_ONCE'")):
        with pytest.raises(InvalidInputError, match=message) as info:
            validate_qos(bad)
        assert info.value.code == "IOT_CORE_QOS_INVALID"


# -- settings --------------------------------------------------------------------------------------

def test_broker_uris() -> None:
    assert BrokerAddress.parse("mqtt://127.0.0.1:1883") == BrokerAddress("mqtt://127.0.0.1:1883", "127.0.0.1", 1883,
                                                                        False)
    assert BrokerAddress.parse("mqtts://broker.example").port == 8883
    assert BrokerAddress.parse("ssl://localhost:8883").tls and not BrokerAddress.parse("tcp://h").tls
    for bad, message in (("http://h:1883", "scheme must be mqtt:// or mqtts://"), ("mqtt://", "names no host"),
                         ("mqtt://h:1883/x", "no path"), ("mqtt://u:p@h", "credentials"),
                         ("mqtt://h:99999", "malformed"), ("", "must be a URI")):
        with pytest.raises(InvalidInputError, match=message) as info:
            BrokerAddress.parse(bad)
        assert info.value.code == "MQTT_CONFIG_INVALID"


def test_settings_from_the_file_and_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    assert load_mqtt_settings(tmp_path, "thing") is None  # no broker anywhere: IoT Core is not configured
    ca = make_pki(tmp_path / "pki")["ca.pem"]  # the TLS files are loaded when the settings are read
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    (tmp_path / "agent.yaml").write_text(
        f"other: kept\nmqtt:\n  broker: mqtts://b.example\n  ca: {ca}\n  username: dev\n  passwordFile: {secret}\n"
        "  spooler:\n    maxMessages: 5\n    keepQos0WhenOffline: false\n")
    s = load_mqtt_settings(tmp_path, "thing")
    assert s is not None
    assert (s.broker.host, s.broker.port, s.broker.tls, s.ca, s.client_id) == ("b.example", 8883, True, ca, "thing")
    assert (s.username, s.password, s.spool_max_messages, s.keep_qos0_when_offline) == ("dev", "s3cret", 5, False)
    assert "s3cret" not in repr(s) and "s3cret" not in s.describe()
    # The command line wins over the file.
    over = load_mqtt_settings(tmp_path, "thing", {"broker": "mqtts://other:9000"})
    assert over is not None and (over.broker.host, over.broker.port, over.ca) == ("other", 9000, ca)


@pytest.mark.parametrize(("doc", "message"), [
    ("mqtt:\n  brokr: mqtt://h\n", r"unknown mqtt setting\(s\) brokr"),
    ("mqtt:\n  username: u\n", "no broker"),
    ("mqtt:\n  broker: mqtt://h\n  ca: /nonexistent/ca.pem\n", "is not a readable file"),
    ("mqtt:\n  broker: mqtt://h\n  spooler:\n    maxMessages: 0\n", "spooler.maxMessages must be an integer"),
    ("mqtt:\n  broker: mqtt://h\n  keepAliveSeconds: yes\n", "keepAliveSeconds must be an integer"),
    ("- a list\n", "must hold a mapping"),
    ("mqtt: [\n", "cannot be read as YAML"),
])
def test_bad_settings_name_the_key(tmp_path: Path, doc: str, message: str) -> None:
    (tmp_path / "agent.yaml").write_text(doc)
    with pytest.raises(InvalidInputError, match=message) as info:
        load_mqtt_settings(tmp_path, "thing")
    assert info.value.code == "MQTT_CONFIG_INVALID"


def test_tls_files_need_mqtts_and_a_password_needs_a_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pem = tmp_path / "c.pem"
    pem.write_text("x")
    with pytest.raises(InvalidInputError, match="is not mqtts://"):
        load_mqtt_settings(tmp_path, "t", {"broker": "mqtt://h", "ca": str(pem)})
    with pytest.raises(InvalidInputError, match=r"cert and mqtt\.key go together"):
        load_mqtt_settings(tmp_path, "t", {"broker": "mqtts://h", "cert": str(pem)})
    monkeypatch.setenv(PASSWORD_ENV, "pw")
    with pytest.raises(InvalidInputError, match=r"without mqtt\.username"):
        load_mqtt_settings(tmp_path, "t", {"broker": "mqtt://h"})
    s = load_mqtt_settings(tmp_path, "t", {"broker": "mqtt://h", "username": "u"})
    assert s is not None and s.password == "pw"


# -- the spool ------------------------------------------------------------------------------------

def _msg(payload: str, qos: int) -> OutMessage:
    return OutMessage("t/x", payload.encode(), qos)


def test_spool_keeps_order_and_survives_a_reopen(tmp_path: Path) -> None:
    spool = MqttSpool(tmp_path / "s.db", max_messages=10)
    seqs = [spool.add(_msg(p, 1)) for p in ("a", "b", "c")]
    spool.remove(seqs[0])
    spool.close()
    again = MqttSpool(tmp_path / "s.db", max_messages=10)
    assert [m.message.payload for m in again] == [b"b", b"c"] and again.count == 2
    assert again.counters() == {"spooled": 3, "sent": 1}
    assert [m.message.payload for m in again.after(seqs[1], 5)] == [b"c"]


def test_spool_full_drops_oldest_qos0_then_refuses_the_newest(tmp_path: Path) -> None:
    spool = MqttSpool(tmp_path / "s.db", max_messages=3)
    for payload, qos in (("a0", 0), ("b0", 0), ("c1", 1), ("d1", 1), ("e1", 1)):
        spool.add(_msg(payload, qos))
    assert [m.message.payload for m in spool] == [b"c1", b"d1", b"e1"]
    with pytest.raises(RoostError) as info:
        spool.add(_msg("f1", 1))
    assert info.value.code == "IOT_CORE_SPOOL_FULL"
    assert [m.message.payload for m in spool] == [b"c1", b"d1", b"e1"]
    assert spool.counters()["dropped"] == 2 and spool.counters()["refused"] == 1


def test_spool_byte_bound(tmp_path: Path) -> None:
    one = _msg("x" * 100, 1).size
    spool = MqttSpool(tmp_path / "s.db", max_bytes=2 * one)
    spool.add(_msg("x" * 100, 1))
    spool.add(_msg("y" * 100, 1))
    with pytest.raises(RoostError, match="spool full"):
        spool.add(_msg("z" * 100, 1))
    with pytest.raises(RoostError, match="larger than the whole spool"):
        spool.add(_msg("w" * 1000, 0))
    assert spool.bytes == 2 * one and spool.counter("refused") == 2


# -- the bridge's configuration and mqttproxy policies ---------------------------------------------

def test_bridge_configuration() -> None:
    config = parse_bridge_config({"mqttTopicMapping": {
        "B": {"topic": "x/+", "source": "IotCore", "target": "Pubsub", "targetTopicPrefix": "cloud/"},
        "A": {"topic": "s/#", "source": "LocalMqtt", "target": "LocalMqtt", "targetTopicPrefix": "copy/"}},
        "mqtt5RouteOptions": {}, "brokerUri": "mqtt://10.0.0.2:1884"}, iot_core_configured=True)
    assert [m.name for m in config.mappings] == ["A", "B"] and config.mappings[1].target_topic_prefix == "cloud/"
    assert (config.broker.host, config.broker.port) == ("10.0.0.2", 1884)
    assert parse_bridge_config({}, iot_core_configured=False).broker.uri == "mqtt://localhost:1883"
    with pytest.raises(InvalidInputError, match="brokerUri") as info:
        parse_bridge_config({"brokerUri": "ftp://h"}, iot_core_configured=True)
    assert info.value.code == "MQTT_BRIDGE_CONFIG_INVALID"
    with pytest.raises(InvalidInputError, match=r"mqttTopicMapping.M.topic: .*at most 7"):
        parse_bridge_config({"mqttTopicMapping": {"M": {"topic": "/".join("abcdefghi"), "source": "IotCore",
                                                        "target": "Pubsub"}}}, iot_core_configured=True)


def test_mqttproxy_policies_match_mqtt_style() -> None:
    acl = {authz.MQTTPROXY_SERVICE: {"p": {"operations": ["aws.greengrass#SubscribeToIoTCore"],
                                           "resources": ["sensors/+/temp", "cmd/#"]}}}
    op = "aws.greengrass#SubscribeToIoTCore"
    assert authz.authorize(acl, authz.MQTTPROXY_SERVICE, op, "sensors/a/temp")
    assert authz.authorize(acl, authz.MQTTPROXY_SERVICE, op, "sensors/+/temp")
    assert authz.authorize(acl, authz.MQTTPROXY_SERVICE, op, "cmd/x/#")
    assert not authz.authorize(acl, authz.MQTTPROXY_SERVICE, op, "sensors/#")
    assert not authz.authorize(acl, authz.MQTTPROXY_SERVICE, "aws.greengrass#PublishToIoTCore", "cmd/x")
    assert not authz.authorize(acl, authz.PUBSUB_SERVICE, op, "cmd/x")


def test_tls_files_that_do_not_load_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-cert.pem"
    bad.write_text("not a certificate")
    with pytest.raises(InvalidInputError, match="the MQTT TLS files cannot be used") as info:
        load_mqtt_settings(tmp_path, "t", {"broker": "mqtts://h", "ca": str(bad)})
    assert info.value.code == "MQTT_CONFIG_INVALID" and str(bad) in info.value.message


def test_publishing_while_not_connected(tmp_path: Path) -> None:
    """Before the connection is up, publishes spool; QoS 0 ones are refused with keepQos0WhenOffline: false;
    a payload over maxMessageSizeInBytes is refused whatever the connection."""
    from dataclasses import replace

    from roost.agent.iotcore import MqttConnection

    base = load_mqtt_settings(tmp_path, "t", {"broker": "mqtt://127.0.0.1:1"})
    assert base is not None
    conn = MqttConnection(replace(base, keep_qos0_when_offline=False, max_message_size=10), tmp_path / "s.db")
    try:
        conn.publish(OutMessage("a/b", b"q1", 1))
        assert conn.spool.count == 1
        with pytest.raises(RoostError) as info:
            conn.publish(OutMessage("a/b", b"q0", 0))
        assert info.value.code == "IOT_CORE_OFFLINE" and conn.spool.counter("dropped") == 1
        with pytest.raises(InvalidInputError) as too_large:
            conn.publish(OutMessage("a/b", b"x" * 11, 1))
        assert too_large.value.code == "IOT_CORE_MESSAGE_TOO_LARGE" and "limit is 10 bytes" in too_large.value.message
        assert conn.spool.count == 1
    finally:
        conn.spool.close()
