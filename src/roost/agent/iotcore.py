"""IoT Core over your own broker: the agent's MQTT connection, its subscriptions and its spool.

``PublishToIoTCore`` / ``SubscribeToIoTCore`` (:mod:`roost.agent.ipc.ops_iotcore`) and the MQTT
bridge's ``IotCore`` side go to the broker the agent is given (:mod:`roost.agent.mqtt_settings`):
one MQTT 5 connection per agent, client id = the thing name, as the nucleus holds one connection to
AWS IoT Core.

The client library is **paho-mqtt** (pinned, 2.2.0): the Eclipse Foundation's reference Python
client, maintained for 15 years, MQTT 3.1.1 and 5, TLS and credentials, thread-safe ``publish``
and ``subscribe``, and reconnection with exponential backoff built in. aiomqtt is only an asyncio
wrapper around paho that hides the reconnection loop the agent wants to keep; here paho runs its
network loop in its own thread (``loop_start``) and every callback hops to the agent's event loop
(``call_soon_threadsafe``), so subscriptions, the spool and the IPC server are only ever touched
from that one thread.

* **Subscriptions** are reference-counted per topic filter: the first local subscriber of a filter
  sends SUBSCRIBE (with an MQTT 5 subscription identifier, so an incoming message reaches exactly
  the filters it matched, once), the last one to leave sends UNSUBSCRIBE. After a reconnection
  (the session is clean) every filter is subscribed again.
* **Publishes** go straight to paho while the broker is connected and nothing is spooled;
  otherwise they are appended to the disk spool (:mod:`roost.agent.mqtt_spool`, bounded), and when
  the broker returns the spool is sent in order (a window of in-flight messages, each row deleted
  at its PUBACK, QoS 0 rows once written), before any newer publish. Delivery is at least once: a
  message in flight when the connection drops may reach the broker twice.
* **Reconnection**: paho retries with a delay doubling from 1 s to ``reconnectMaxDelaySeconds``.
* **Topics** are checked as the nucleus checks them for AWS IoT Core (:func:`validate_iot_topic`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from roost.agent.errors import AgentError
from roost.agent.logfile import RateLimitedLog
from roost.agent.mqtt_settings import MqttSettings, tls_context
from roost.agent.mqtt_spool import MqttSpool, OutMessage
from roost.agent.pubsub import topic_matches
from roost.errors import InvalidInputError

logger = logging.getLogger(__name__)

#: AWS IoT Core's limits, as the nucleus checks them (IotCoreTopicValidator).
MAX_TOPIC_BYTES: Final = 256
MAX_TOPIC_SLASHES: Final = 7
_RULES_PREFIX: Final = "$aws/rules/"
#: Messages handed to paho at once while the spool drains.
DRAIN_WINDOW: Final = 64
#: paho's in-memory queue (messages waiting for the socket or a PUBACK); beyond it, publishes spool.
PAHO_QUEUE: Final = 1000
#: How long a SUBSCRIBE waits for its SUBACK while the broker is connected.
SUBACK_TIMEOUT: Final = 10.0
#: How often the rate-limited drop/refusal logs write their summaries.
HOUSEKEEPING_INTERVAL: Final = 10.0
#: Incoming messages waiting for the agent's loop; beyond it (a flood the loop cannot keep up with)
#: they are dropped, counted and logged, instead of piling up in memory.
MAX_INCOMING_BACKLOG: Final = 10_000

Deliver = Callable[["InMessage"], None]


def _bad_topic(message: str) -> InvalidInputError:
    return InvalidInputError(message, code="IOT_CORE_TOPIC_INVALID")


def validate_iot_topic(topic: object, *, subscribe: bool) -> str:
    """``topic`` (a topic name to publish to, or a filter to subscribe to) if AWS IoT Core would take it.

    Empty topics, wildcards in a publish, ``#`` not alone as the last level, ``+`` not alone in its
    level, more than 7 ``/`` or more than 256 bytes (UTF-8; a ``$aws/rules/<rule>/`` basic-ingest
    prefix is not counted) are refused with ``IOT_CORE_TOPIC_INVALID``."""
    what = "topic filter" if subscribe else "topic"
    if topic is None:
        raise _bad_topic("topicName is required")
    if not isinstance(topic, str) or not topic:
        raise _bad_topic(f"topicName must be a non-empty string, got {topic!r}")
    levels = topic.split("/")
    if not subscribe and ("+" in topic or "#" in topic):
        raise _bad_topic(f"topic {topic!r}: publish topics must not contain the wildcards '#' or '+'")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise _bad_topic(f"{what} {topic!r}: '#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise _bad_topic(f"{what} {topic!r}: '+' must be a whole level")
    effective = topic
    if topic.startswith(_RULES_PREFIX):
        rest = topic[len(_RULES_PREFIX):].partition("/")
        if not rest[0] or not rest[2]:
            raise _bad_topic(f"topic {topic!r}: the basic-ingest topic after $aws/rules/<rule>/ is empty")
        effective = rest[2]
    if effective.count("/") > MAX_TOPIC_SLASHES:
        raise _bad_topic(f"{what} {topic!r} has {effective.count('/')} '/': AWS IoT Core allows at most "
                         f"{MAX_TOPIC_SLASHES}")
    size = len(effective.encode())
    if size > MAX_TOPIC_BYTES:
        raise _bad_topic(f"{what} {topic[:40]!r}... is {size} bytes of UTF-8: AWS IoT Core allows at most "
                         f"{MAX_TOPIC_BYTES}")
    return topic


def validate_qos(qos: object) -> int:
    """The IPC ``qos`` field (``"0"`` / ``"1"``, as awsiotsdk sends it) as an int."""
    if qos is None:
        raise InvalidInputError("qos is required (\"0\" AT_MOST_ONCE or \"1\" AT_LEAST_ONCE)",
                                code="IOT_CORE_QOS_INVALID")
    if qos in ("0", 0):
        return 0
    if qos in ("1", 1):
        return 1
    raise InvalidInputError(f"qos must be \"0\" (AT_MOST_ONCE) or \"1\" (AT_LEAST_ONCE), got {qos!r}",
                            code="IOT_CORE_QOS_INVALID")


@dataclass(frozen=True)
class InMessage:
    """A message from the broker, with its MQTT 5 properties in the IPC spelling."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    props: dict[str, Any] = field(default_factory=dict)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _properties_out(props: dict[str, Any]) -> Any:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    if not props:
        return None
    out = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if props.get("userProperties"):
        out.UserProperty = [(p["key"], p["value"]) for p in props["userProperties"]]
    if props.get("correlationData") is not None:
        out.CorrelationData = base64.b64decode(props["correlationData"])
    if props.get("responseTopic"):
        out.ResponseTopic = props["responseTopic"]
    if props.get("messageExpiryIntervalSeconds") is not None:
        out.MessageExpiryInterval = int(props["messageExpiryIntervalSeconds"])
    if props.get("payloadFormat") is not None:
        out.PayloadFormatIndicator = int(props["payloadFormat"])
    if props.get("contentType"):
        out.ContentType = props["contentType"]
    return out


def _properties_in(props: Any) -> dict[str, Any]:
    if props is None:
        return {}
    doc: dict[str, Any] = {}
    user = getattr(props, "UserProperty", None)
    if user:
        doc["userProperties"] = [{"key": k, "value": v} for k, v in user]
    corr = getattr(props, "CorrelationData", None)
    if corr is not None:
        doc["correlationData"] = base64.b64encode(corr).decode()
    for attr, key in (("ResponseTopic", "responseTopic"), ("MessageExpiryInterval", "messageExpiryIntervalSeconds"),
                      ("ContentType", "contentType")):
        value = getattr(props, attr, None)
        if value is not None:
            doc[key] = value
    fmt = getattr(props, "PayloadFormatIndicator", None)
    if fmt is not None:
        doc["payloadFormat"] = str(fmt)
    return doc


class Subscription:
    """One local subscriber of a filter; ``ready`` resolves at the SUBACK (or at once, see subscribe)."""

    def __init__(self, conn: MqttConnection, topic_filter: str, deliver: Deliver,
                 ready: asyncio.Future[None]) -> None:
        self.conn = conn
        self.topic_filter = topic_filter
        self.deliver = deliver
        self.ready = ready
        self.active = True

    def cancel(self) -> None:
        """End it (idempotent); the filter is unsubscribed when its last subscriber goes."""
        if self.active:
            self.active = False
            self.conn._remove(self)


@dataclass
class _Filter:
    sid: int
    qos: int
    subscribers: list[Subscription] = field(default_factory=list)
    acked: bool = False
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class MqttConnection:
    """One broker connection with its spool (see the module docstring). ``await start()``, ``await close()``."""

    def __init__(self, settings: MqttSettings, spool_path: Path, *, name: str = "IoT Core") -> None:
        self.settings = settings
        self.name = name
        self.spool = MqttSpool(spool_path, max_messages=settings.spool_max_messages,
                               max_bytes=settings.spool_max_bytes)
        self.connected = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._filters: dict[str, _Filter] = {}
        self._by_sid: dict[int, str] = {}
        self._next_sid = 1
        self._pending_sub: dict[int, str] = {}
        self._inflight: dict[int, int] = {}  # mid -> spool seq
        self._sent_upto = 0
        self._acked = asyncio.Event()
        self._drain: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.TimerHandle | None = None
        #: other rate-limited logs ticked with the spool's (the bridge's forwarding failures)
        self.logs: list[RateLimitedLog] = [self.spool.drops]
        self._closing = False
        self._last_failure: str | None = None
        self._backlog_lock = threading.Lock()
        self._backlog = 0
        #: incoming messages dropped because the loop was MAX_INCOMING_BACKLOG behind
        self.dropped_incoming = 0

    # -- start / stop ----------------------------------------------------------------------------
    async def start(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._loop = asyncio.get_running_loop()
        s = self.settings
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=s.client_id, protocol=mqtt.MQTTv5)
        if s.broker.tls:
            client.tls_set_context(tls_context(s))
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        client.reconnect_delay_set(1, s.reconnect_max_delay)
        client.max_inflight_messages_set(DRAIN_WINDOW)
        client.max_queued_messages_set(PAHO_QUEUE)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        self._client = client
        self.spool.set_state(broker=s.broker.uri, connected="0", since=_now())
        client.connect_async(s.broker.host, s.broker.port, keepalive=s.keep_alive, clean_start=True)
        client.loop_start()
        self._housekeeping = self._loop.call_later(HOUSEKEEPING_INTERVAL, self._housekeep)
        logger.info("%s: connecting to %s as client %s", self.name, s.describe(), s.client_id)

    def _housekeep(self) -> None:
        for log in self.logs:
            log.tick()
        if not self._closing and self._loop is not None:
            self._housekeeping = self._loop.call_later(HOUSEKEEPING_INTERVAL, self._housekeep)

    async def close(self) -> None:
        self._closing = True
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            await asyncio.get_running_loop().run_in_executor(None, client.loop_stop)
        self.connected = False
        for f in self._filters.values():
            for waiter in f.waiters:
                if not waiter.done():
                    waiter.cancel()
        self.spool.set_state(connected="0", since=_now())  # the agent stopped
        self.spool.close()

    # -- paho callbacks (paho's thread): hop to the agent's loop ---------------------------------
    def _hop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the agent is stopping
                loop.call_soon_threadsafe(fn, *args)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._hop(self._failed, f"the broker refused the connection: {reason}")
        else:
            self._hop(self._connected)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._hop(self._failed, "cannot reach the broker")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._hop(self._disconnected, str(reason))

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._backlog_lock:
            if self._backlog >= MAX_INCOMING_BACKLOG:
                self.dropped_incoming += 1
                dropped = self.dropped_incoming
            else:
                self._backlog += 1
                dropped = 0
        if dropped:
            if dropped % 1000 == 1:
                logger.warning("%s: the agent is %d messages behind the broker: dropped %d incoming message(s) "
                               "so far", self.name, MAX_INCOMING_BACKLOG, dropped)
            return
        props = getattr(msg, "properties", None)
        ids = getattr(props, "SubscriptionIdentifier", None) if props is not None else None
        message = InMessage(msg.topic, bytes(msg.payload), int(msg.qos), bool(msg.retain), _properties_in(props))
        self._hop(self._dispatch, message, list(ids) if ids else None)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        failures = [str(r) for r in reasons if r.is_failure]
        self._hop(self._subacked, mid, failures)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._hop(self._published, mid)

    # -- on the agent's loop ---------------------------------------------------------------------
    def _failed(self, why: str) -> None:
        if why != self._last_failure:
            logger.warning("%s: %s (%s); retrying with backoff, publishes are spooled meanwhile", self.name, why,
                           self.settings.broker.uri)
            self._last_failure = why

    def _connected(self) -> None:
        if self._closing or self._client is None:
            return
        self.connected = True
        self._last_failure = None
        self.spool.set_state(broker=self.settings.broker.uri, connected="1", since=_now())
        logger.info("%s: connected to %s (%d filter(s) to subscribe, %d message(s) spooled)", self.name,
                    self.settings.broker.uri, len(self._filters), self.spool.count)
        for topic_filter, f in self._filters.items():
            f.acked = False
            self._send_subscribe(topic_filter, f)
        self._kick()

    def _disconnected(self, reason: str) -> None:
        was = self.connected
        self.connected = False
        if not self._closing:
            self.spool.set_state(broker=self.settings.broker.uri, connected="0", since=_now())
        self._inflight.clear()
        self._sent_upto = 0
        self._acked.set()  # a drain waiting for acknowledgements ends; the next connection drains again
        self._pending_sub.clear()
        for f in self._filters.values():
            f.acked = False
            for waiter in f.waiters:  # established on reconnect, as for a subscription made while offline
                if not waiter.done():
                    waiter.set_result(None)
            f.waiters.clear()
        if was and not self._closing:
            logger.warning("%s: connection to %s lost (%s); reconnecting, publishes are spooled meanwhile",
                           self.name, self.settings.broker.uri, reason)

    def _dispatch(self, message: InMessage, ids: list[int] | None) -> None:
        with self._backlog_lock:
            self._backlog -= 1
        if ids:
            filters = [self._filters[t] for t in (self._by_sid.get(i) for i in ids) if t in self._filters]
        else:  # a broker without subscription identifiers: match locally
            filters = [f for t, f in self._filters.items() if topic_matches(t, message.topic)]
        for f in filters:
            for sub in list(f.subscribers):
                if not sub.active:
                    continue
                try:
                    sub.deliver(message)
                except Exception:
                    logger.exception("%s: delivering a message on %s failed", self.name, message.topic)

    def _subacked(self, mid: int, failures: list[str]) -> None:
        topic_filter = self._pending_sub.pop(mid, None)
        f = self._filters.get(topic_filter) if topic_filter is not None else None
        if f is None or topic_filter is None:
            return
        waiters, f.waiters = f.waiters, []
        if failures:
            logger.warning("%s: the broker refused the subscription to %s: %s", self.name, topic_filter,
                           ", ".join(failures))
            err = AgentError(f"the broker refused the subscription to {topic_filter}: {', '.join(failures)}",
                             code="IOT_CORE_SUBSCRIBE_FAILED")
            for sub in list(f.subscribers):
                sub.active = False
            self._filters.pop(topic_filter, None)
            self._by_sid.pop(f.sid, None)
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(err)
            return
        f.acked = True
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _published(self, mid: int) -> None:
        if self._closing:
            return
        seq = self._inflight.pop(mid, None)
        if seq is not None:
            self.spool.remove(seq)
        self._acked.set()  # room in paho's window (a spooled message or a direct one)

    # -- subscriptions ---------------------------------------------------------------------------
    def subscribe(self, topic_filter: str, qos: int, deliver: Deliver) -> Subscription:
        """Add a local subscriber. While the broker is connected ``ready`` resolves at the SUBACK
        (or fails with ``IOT_CORE_SUBSCRIBE_FAILED``); while it is away, at once: the filter is
        subscribed when the broker returns."""
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        f = self._filters.get(topic_filter)
        send = False
        if f is None:
            sid = self._next_sid
            self._next_sid += 1
            f = self._filters[topic_filter] = _Filter(sid, qos)
            self._by_sid[sid] = topic_filter
            send = True
        elif qos > f.qos:
            f.qos = qos
            send = True
        sub = Subscription(self, topic_filter, deliver, ready)
        f.subscribers.append(sub)
        if self.connected and (send or not f.acked):
            if send:
                f.acked = False
                self._send_subscribe(topic_filter, f)
            f.waiters.append(ready)
            loop.call_later(SUBACK_TIMEOUT, self._suback_timeout, ready, topic_filter)
        else:
            ready.set_result(None)
        return sub

    def _suback_timeout(self, ready: asyncio.Future[None], topic_filter: str) -> None:
        if not ready.done():
            ready.set_exception(AgentError(f"no SUBACK for {topic_filter} within {SUBACK_TIMEOUT:g} s",
                                           code="IOT_CORE_SUBSCRIBE_FAILED"))

    def _send_subscribe(self, topic_filter: str, f: _Filter) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        from paho.mqtt.subscribeoptions import SubscribeOptions

        props = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
        props.SubscriptionIdentifier = f.sid
        rc, mid = self._client.subscribe(topic_filter, options=SubscribeOptions(qos=f.qos), properties=props)
        if mid is not None and rc == 0:
            self._pending_sub[mid] = topic_filter

    def _remove(self, sub: Subscription) -> None:
        f = self._filters.get(sub.topic_filter)
        if f is None:
            return
        if sub in f.subscribers:
            f.subscribers.remove(sub)
        if not f.subscribers:
            del self._filters[sub.topic_filter]
            self._by_sid.pop(f.sid, None)
            if self.connected and self._client is not None:
                self._client.unsubscribe(sub.topic_filter)

    @property
    def subscription_count(self) -> int:
        return sum(len(f.subscribers) for f in self._filters.values())

    # -- publishing ------------------------------------------------------------------------------
    def publish(self, message: OutMessage) -> None:
        """Send ``message`` now, or spool it (raises ``IOT_CORE_SPOOL_FULL`` when the spool refuses it)."""
        limit = self.settings.max_message_size
        if len(message.payload) > limit:
            raise InvalidInputError(f"the payload is {len(message.payload)} bytes: the limit is {limit} bytes "
                                    "(mqtt.maxMessageSizeInBytes)", code="IOT_CORE_MESSAGE_TOO_LARGE")
        if self.connected and not self.spool.count and self._send(message):
            return
        if message.qos == 0 and not self.settings.keep_qos0_when_offline:
            self.spool.note_dropped("broker away: QoS 0 message not kept (keepQos0WhenOffline: false)")
            raise AgentError(f"the broker {self.settings.broker.uri} is away and QoS 0 messages are not kept "
                             "while offline (mqtt.spooler.keepQos0WhenOffline: false)", code="IOT_CORE_OFFLINE")
        self.spool.add(message)
        self._kick()

    def _send(self, message: OutMessage) -> bool:
        import paho.mqtt.client as mqtt

        client = self._client
        if client is None:
            return False
        info = client.publish(message.topic, message.payload, message.qos, message.retain,
                              _properties_out(message.props))
        # QoS 1 without a connection stays in paho's queue and is sent on reconnect: accepted.
        return bool(info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and message.qos > 0))

    def _kick(self) -> None:
        if self.connected and self.spool.count and (self._drain is None or self._drain.done()):
            self._drain = asyncio.get_running_loop().create_task(self._drain_spool())

    async def _drain_spool(self) -> None:
        import paho.mqtt.client as mqtt

        total = self.spool.count
        while self.connected and self.spool.count and self._client is not None:
            room = DRAIN_WINDOW - len(self._inflight)
            batch = self.spool.after(self._sent_upto, room) if room > 0 else []
            self._acked.clear()
            full = not batch  # everything spooled is in flight: wait for an acknowledgement
            for item in batch:
                m = item.message
                info = self._client.publish(m.topic, m.payload, m.qos, m.retain, _properties_out(m.props))
                if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                    full = True  # paho's queue is full of direct publishes: wait for an acknowledgement
                    break
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    return  # the connection went: the rest waits for the next one
                self._inflight[info.mid] = item.seq
                self._sent_upto = item.seq
            if full:
                await self._acked.wait()  # set by every acknowledgement, and by a disconnection
        if self.connected and not self.spool.count and total:
            logger.info("%s: spool drained (%d message(s) sent in order)", self.name, total)


class IotCore:
    """The agent's IoT Core: its broker connection (spool at ``ROOT/iotcore-spool.db``)."""

    def __init__(self, settings: MqttSettings, root: Path) -> None:
        self.settings = settings
        self.connection = MqttConnection(settings, root / "iotcore-spool.db", name="IoT Core")

    async def start(self) -> None:
        await self.connection.start()

    async def close(self) -> None:
        await self.connection.close()

    def publish(self, message: OutMessage) -> None:
        self.connection.publish(message)

    def subscribe(self, topic_filter: str, qos: int, deliver: Deliver) -> Subscription:
        return self.connection.subscribe(topic_filter, qos, deliver)


def not_configured(operation: str) -> AgentError:
    return AgentError(f"{operation}: this agent has no MQTT broker for IoT Core; start it with "
                      "--mqtt-broker mqtt://HOST:PORT or set mqtt.broker in ROOT/agent.yaml",
                      code="IOT_CORE_NOT_CONFIGURED")


__all__ = ["InMessage", "IotCore", "MqttConnection", "Subscription", "not_configured", "validate_iot_topic",
           "validate_qos"]
