"""The built-in MQTT bridge (``aws.greengrass.clientdevices.mqtt.Bridge``): Greengrass' topic mapping,
forwarding for real between local pub/sub, a local MQTT broker and IoT Core.

Its configuration comes in a deployment, in the Greengrass component's own format::

    roost deployment create --merge aws.greengrass.clientdevices.mqtt.Bridge=2.3.2 --update-config '{
      "aws.greengrass.clientdevices.mqtt.Bridge": {"MERGE": {
        "mqttTopicMapping": {
          "SensorsToCloud": {"topic": "sensors/#", "source": "Pubsub", "target": "IotCore"},
          "CommandsIn": {"topic": "commands/+", "source": "IotCore", "target": "Pubsub",
                         "targetTopicPrefix": "cloud/"}},
        "brokerUri": "mqtt://localhost:1883"}}}'

* ``mqttTopicMapping``: name → ``{topic, source, target, targetTopicPrefix?}``. ``topic`` is an MQTT
  filter on the source; a message is republished on the target under its own topic, prefixed by
  ``targetTopicPrefix``. ``source`` and ``target`` are one of:

  - ``Pubsub``: the agent's local publish/subscribe bus (what ``PublishToTopic`` /
    ``SubscribeToTopic`` use). The bridge publishes the payload as a binary message, as the
    Greengrass bridge does; a JSON message from pub/sub goes out as its JSON text.
  - ``IotCore``: the agent's broker, the one behind ``PublishToIoTCore`` (``--mqtt-broker``): same
    connection, same spool, QoS 1 (as on Greengrass).
  - ``LocalMqtt``: a local broker at ``brokerUri`` (Greengrass' key; on Roost it defaults to
    ``mqtt://localhost:1883``, a Mosquitto beside the agent, and may name the same broker as
    IoT Core), reached by a connection of the bridge's own (client id ``clientId``, default
    ``mqtt-bridge-<thing name>``), QoS 1, with its own spool (``ROOT/mqtt-bridge-spool.db``).

  Every combination of the three is valid, as on Greengrass; a mapping whose source and target
  are the same and which has no ``targetTopicPrefix`` is refused (it would only feed itself).
* **Loop avoidance**: the bridge never forwards a message it put on a broker itself. On pub/sub
  it subscribes as itself with ``RECEIVE_MESSAGES_FROM_OTHERS``; on MQTT it remembers (topic,
  payload digest, broker) of each message it publishes where one of its own subscriptions will
  see it come back, and drops that echo once (bounded memory: at most :data:`MAX_ECHOES` are
  remembered). So ``Pubsub → IotCore`` and ``IotCore → Pubsub`` on the same topic make one hop
  each way, not a storm; chains (``LocalMqtt → Pubsub → IotCore``) are configured as one direct
  mapping instead. A component that publishes the very payload the bridge just forwarded, on the
  same topic, at the same moment may see its copy taken for the echo.
* The configuration is checked when the deployment is prepared (``MQTT_BRIDGE_CONFIG_INVALID``
  fails it before anything changes), kept by the agent and applied when the deployment succeeds;
  it survives restarts. An empty ``mqttTopicMapping`` (``RESET: ["/mqttTopicMapping"]``) stops it.
  Other keys of the Greengrass bridge (``mqtt5RouteOptions``, ``mqtt`` timeouts, ...) are accepted
  and not used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from roost.agent.iotcore import InMessage, IotCore, MqttConnection, Subscription, validate_iot_topic
from roost.agent.logfile import RateLimitedLog
from roost.agent.mqtt_settings import BrokerAddress, MqttSettings
from roost.agent.mqtt_spool import OutMessage
from roost.agent.pubsub import (
    RECEIVE_MESSAGES_FROM_OTHERS,
    PubSub,
    SubscriptionHandle,
    topic_matches,
    validate_topic_filter,
)
from roost.errors import InvalidInputError, RoostError

logger = logging.getLogger(__name__)

BRIDGE: Final = "aws.greengrass.clientdevices.mqtt.Bridge"
PUBSUB, LOCAL_MQTT, IOT_CORE = "Pubsub", "LocalMqtt", "IotCore"
TOPIC_TYPES: Final = (PUBSUB, LOCAL_MQTT, IOT_CORE)
DEFAULT_LOCAL_BROKER: Final = "mqtt://localhost:1883"
#: Echoes of the bridge's own MQTT publishes remembered at once (oldest forgotten first).
MAX_ECHOES: Final = 4096
_ENTRY_KEYS: Final = {"topic", "source", "target", "targetTopicPrefix"}

#: ``publish(topic, payload, publisher)`` on the agent's pub/sub bus (the IPC server's fan-out).
PubsubPublish = Callable[[str, Any, str], int]


def _invalid(message: str) -> InvalidInputError:
    return InvalidInputError(f"{BRIDGE}: {message}", code="MQTT_BRIDGE_CONFIG_INVALID")


@dataclass(frozen=True)
class TopicMapping:
    name: str
    topic: str
    source: str
    target: str
    target_topic_prefix: str = ""


@dataclass(frozen=True)
class BridgeConfig:
    mappings: tuple[TopicMapping, ...]
    broker: BrokerAddress
    client_id: str | None

    def uses(self, kind: str) -> bool:
        return any(kind in (m.source, m.target) for m in self.mappings)


def parse_bridge_config(conf: Mapping[str, Any], *, iot_core_configured: bool) -> BridgeConfig:
    """Check the bridge's configuration (``MQTT_BRIDGE_CONFIG_INVALID`` names the key at fault)."""
    raw = conf.get("mqttTopicMapping") or {}
    if not isinstance(raw, Mapping):
        raise _invalid(f"mqttTopicMapping must be an object of name → {{topic, source, target}}, got {raw!r}")
    mappings = []
    for name, entry in sorted(raw.items()):
        where = f"mqttTopicMapping.{name}"
        if not isinstance(entry, Mapping):
            raise _invalid(f"{where} must be an object with topic, source and target, got {entry!r}")
        unknown = sorted(set(entry) - _ENTRY_KEYS)
        if unknown:
            raise _invalid(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_ENTRY_KEYS))})")
        for key in ("topic", "source", "target"):
            if key not in entry:
                raise _invalid(f"{where}.{key} is required")
        source, target = entry["source"], entry["target"]
        for key, value in (("source", source), ("target", target)):
            if value not in TOPIC_TYPES:
                raise _invalid(f"{where}.{key} must be one of {', '.join(TOPIC_TYPES)}, got {value!r}")
        prefix = entry.get("targetTopicPrefix") or ""
        if not isinstance(prefix, str) or "+" in prefix or "#" in prefix:
            raise _invalid(f"{where}.targetTopicPrefix must be a topic prefix without wildcards, got {prefix!r}")
        if source == target and not prefix:
            raise _invalid(f"{where}: source and target are both {source} without a targetTopicPrefix: "
                           "it would forward every message onto itself")
        try:
            topic = validate_topic_filter(entry["topic"])
            if source == IOT_CORE:
                validate_iot_topic(topic, subscribe=True)
        except RoostError as err:
            raise _invalid(f"{where}.topic: {err.message}") from err
        if IOT_CORE in (source, target) and not iot_core_configured:
            raise _invalid(f"{where} uses IotCore but this agent has no MQTT broker for IoT Core "
                           "(start it with --mqtt-broker or set mqtt.broker in ROOT/agent.yaml)")
        mappings.append(TopicMapping(str(name), topic, source, target, prefix))
    try:
        broker = BrokerAddress.parse(conf.get("brokerUri") or conf.get("brokerServerUri") or DEFAULT_LOCAL_BROKER,
                                     "brokerUri")
    except RoostError as err:
        raise _invalid(err.message) from err
    client_id = conf.get("clientId")
    if client_id is not None and (not isinstance(client_id, str) or not client_id):
        raise _invalid(f"clientId must be a non-empty string, got {client_id!r}")
    return BridgeConfig(tuple(mappings), broker, client_id)


def _digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=12).digest()


class MqttBridge:
    """The running bridge: one subscription per (source, filter), forwarding to its mappings' targets."""

    def __init__(self, pubsub: PubSub, publish_local: PubsubPublish, iot_core: IotCore | None, thing_name: str,
                 root: Path) -> None:
        self.pubsub = pubsub
        self.publish_local = publish_local
        self.iot_core = iot_core
        self.thing_name = thing_name
        self.root = root
        self.config: BridgeConfig | None = None
        self.local: MqttConnection | None = None
        self._pubsub_subs: list[SubscriptionHandle] = []
        self._mqtt_subs: list[Subscription] = []
        self._echoes: OrderedDict[tuple[str, str, bytes], int] = OrderedDict()
        self.forwarded = 0
        self.failures = RateLimitedLog(logger, "bridged messages", verb="could not forward")

    # -- the built-in's configuration (roost.agent.deployer.ConfigurableBuiltin) -----------------
    def check(self, configuration: Mapping[str, Any]) -> None:
        parse_bridge_config(configuration, iot_core_configured=self.iot_core is not None)

    async def apply(self, configuration: Mapping[str, Any]) -> None:
        config = parse_bridge_config(configuration, iot_core_configured=self.iot_core is not None)
        await self.close()
        self.config = config
        if not config.mappings:
            return
        if config.uses(LOCAL_MQTT):
            settings = MqttSettings(broker=config.broker,
                                    client_id=config.client_id or f"mqtt-bridge-{self.thing_name}")
            self.local = MqttConnection(settings, self.root / "mqtt-bridge-spool.db", name="MQTT bridge (LocalMqtt)")
            await self.local.start()
        for conn in (self.local, self.iot_core.connection if self.iot_core is not None else None):
            if conn is not None and self.failures not in conn.logs:
                conn.logs.append(self.failures)  # its summaries are written with the connection's
        seen: set[tuple[str, str]] = set()
        for m in config.mappings:
            if (m.source, m.topic) in seen:
                continue
            seen.add((m.source, m.topic))
            self._subscribe(m.source, m.topic)
        logger.info("MQTT bridge: %d topic mapping(s): %s", len(config.mappings),
                    "; ".join(f"{m.name}: {m.source} {m.topic} -> {m.target}"
                              + (f" (prefix {m.target_topic_prefix})" if m.target_topic_prefix else "")
                              for m in config.mappings))

    async def close(self) -> None:
        for handle in self._pubsub_subs:
            self.pubsub.unsubscribe(handle)
        for sub in self._mqtt_subs:
            sub.cancel()
        self._pubsub_subs, self._mqtt_subs = [], []
        self._echoes.clear()
        local, self.local = self.local, None
        if local is not None:
            await local.close()
        self.config = None

    # -- routes ----------------------------------------------------------------------------------
    def _connection(self, kind: str) -> MqttConnection:
        if kind == IOT_CORE and self.iot_core is not None:
            return self.iot_core.connection
        if kind == LOCAL_MQTT and self.local is not None:
            return self.local
        raise RuntimeError(f"MQTT bridge: no connection for {kind}")

    def _subscribe(self, source: str, topic_filter: str) -> None:
        if source == PUBSUB:
            def from_pubsub(topic: str, message: Any, publisher: str) -> None:
                payload = bytes(message) if isinstance(message, bytes | bytearray | memoryview) else \
                    json.dumps(message, separators=(",", ":")).encode()
                self._forward(PUBSUB, topic_filter, topic, payload)

            self._pubsub_subs.append(self.pubsub.subscribe(topic_filter, BRIDGE, from_pubsub,
                                                           RECEIVE_MESSAGES_FROM_OTHERS))
            return
        conn = self._connection(source)

        def from_mqtt(message: InMessage) -> None:
            key = (conn.settings.broker.uri, message.topic, _digest(message.payload))
            left = self._echoes.get(key)
            if left:  # the bridge's own publish coming back: not forwarded again
                if left > 1:
                    self._echoes[key] = left - 1
                else:
                    del self._echoes[key]
                return
            self._forward(source, topic_filter, message.topic, message.payload)

        self._mqtt_subs.append(conn.subscribe(topic_filter, 1, from_mqtt))

    def _forward(self, source: str, topic_filter: str, topic: str, payload: bytes) -> None:
        config = self.config
        if config is None:
            return
        for m in config.mappings:
            if m.source != source or m.topic != topic_filter:
                continue
            target_topic = m.target_topic_prefix + topic
            try:
                if m.target == PUBSUB:
                    self.publish_local(target_topic, payload, BRIDGE)
                else:
                    conn = self._connection(m.target)
                    self._remember_echo(conn, target_topic, payload)
                    conn.publish(OutMessage(target_topic, payload, 1))
                self.forwarded += 1
            except RoostError as err:
                self.failures.note(f"{m.name}: {err.code}", f"{topic} -> {m.target} {target_topic}: {err.message}")

    def _remember_echo(self, conn: MqttConnection, topic: str, payload: bytes) -> None:
        """Count how many of the bridge's own MQTT subscriptions on that broker will see ``topic`` again."""
        config = self.config
        if config is None:
            return
        uri = conn.settings.broker.uri
        echoes = 0
        for kind in (IOT_CORE, LOCAL_MQTT):
            try:
                other = self._connection(kind)
            except RuntimeError:
                continue
            if other.settings.broker.uri != uri:
                continue
            filters = {m.topic for m in config.mappings if m.source == kind}
            echoes += sum(1 for f in filters if topic_matches(f, topic))
        if not echoes:
            return
        key = (uri, topic, _digest(payload))
        self._echoes[key] = self._echoes.get(key, 0) + echoes
        self._echoes.move_to_end(key)
        while len(self._echoes) > MAX_ECHOES:
            self._echoes.popitem(last=False)


__all__ = ["BRIDGE", "BridgeConfig", "MqttBridge", "TopicMapping", "parse_bridge_config"]
