"""``PublishToIoTCore`` and ``SubscribeToIoTCore``: IPC to the agent's MQTT broker (:mod:`roost.agent.iotcore`).

As the nucleus' MQTT proxy does: the topic is checked (AWS IoT Core's rules), then authorised
against ``aws.greengrass.ipc.mqttproxy`` policies (MQTT wildcards in resources), then the payload
and QoS are read. The response to a publish comes once the message is handed to the broker
connection or spooled (it does not wait for a PUBACK); the response to a subscription comes at
the broker's SUBACK (at once while the broker is away: the filter is subscribed when it returns).
Messages reach the stream as ``aws.greengrass#IoTCoreMessage`` events, only after the response.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from roost.agent import authz
from roost.agent.iotcore import InMessage, IotCore, Subscription, not_configured, validate_iot_topic, validate_qos
from roost.agent.ipc.types import ConnectionSide
from roost.agent.mqtt_spool import OutMessage
from roost.errors import InvalidInputError, RoostError
from roost.ipc import rpc
from roost.ipc.eventstream import encode_frame

logger = logging.getLogger(__name__)

#: The handler signature of :mod:`roost.agent.ipc.operations` (not imported: it imports this module).
Handler = Callable[[ConnectionSide, int, str, dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]] | None]

OP_PUBLISH_TO_IOT_CORE: Final = rpc.OP_PUBLISH_TO_IOT_CORE
OP_SUBSCRIBE_TO_IOT_CORE: Final = rpc.OP_SUBSCRIBE_TO_IOT_CORE
IOT_CORE_MESSAGE: Final = rpc.IOT_CORE_MESSAGE


def _invalid(message: str) -> InvalidInputError:
    return InvalidInputError(message, code="INVALID_REQUEST")


def _iot_core(conn: ConnectionSide, operation: str) -> IotCore:
    conn.require_principal()
    iot = conn.server.iot_core
    if iot is None:
        raise not_configured(rpc.short_name(operation))
    return iot


def _payload(request: dict[str, Any]) -> bytes:
    payload = _b64(request, "payload")
    if payload is None:  # as the nucleus: "Payload is required"
        raise _invalid("payload is required (base64 in the JSON request; awsiotsdk encodes bytes for you)")
    return payload


def _b64(request: dict[str, Any], key: str) -> bytes | None:
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"{key} must be a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise _invalid(f"{key} is not valid base64") from err


def _properties(request: dict[str, Any]) -> dict[str, Any]:
    """The MQTT 5 fields of a PublishToIoTCoreRequest, checked, in their JSON spelling."""
    props: dict[str, Any] = {}
    users = request.get("userProperties")
    if users is not None:
        if not isinstance(users, list) or not all(
                isinstance(u, dict) and isinstance(u.get("key"), str) and isinstance(u.get("value"), str)
                for u in users):
            raise _invalid("userProperties must be a list of {key, value} strings")
        props["userProperties"] = [{"key": u["key"], "value": u["value"]} for u in users]
    expiry = request.get("messageExpiryIntervalSeconds")
    if expiry is not None:
        if isinstance(expiry, bool) or not isinstance(expiry, int) or not 0 <= expiry <= 0xFFFFFFFF:
            raise _invalid(f"messageExpiryIntervalSeconds must be an integer from 0 to 4294967295, got {expiry!r}")
        props["messageExpiryIntervalSeconds"] = expiry
    if _b64(request, "correlationData") is not None:
        props["correlationData"] = request["correlationData"]
    response_topic = request.get("responseTopic")
    if response_topic is not None:
        props["responseTopic"] = validate_iot_topic(response_topic, subscribe=False)
    fmt = request.get("payloadFormat")
    if fmt is not None:
        if fmt not in ("0", "1"):
            raise _invalid(f"payloadFormat must be \"0\" (BYTES) or \"1\" (UTF8), got {fmt!r}")
        props["payloadFormat"] = fmt
    content_type = request.get("contentType")
    if content_type is not None:
        if not isinstance(content_type, str):
            raise _invalid(f"contentType must be a string, got {content_type!r}")
        props["contentType"] = content_type
    return props


def _publish_to_iot_core(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    iot = _iot_core(conn, operation)
    topic = validate_iot_topic(request.get("topicName"), subscribe=False)
    conn.authorize(authz.MQTTPROXY_SERVICE, operation, topic)
    payload = _payload(request)
    qos = validate_qos(request.get("qos"))
    retain = request.get("retain", False)
    if not isinstance(retain, bool):
        raise _invalid(f"retain must be true or false, got {retain!r}")
    iot.publish(OutMessage(topic, payload, qos, retain, _properties(request)))
    return {}


class _IotCoreStream:
    """Delivers broker messages to one SubscribeToIoTCore stream, once its response is out."""

    __slots__ = ("conn", "header", "live")

    def __init__(self, conn: ConnectionSide, sid: int) -> None:
        self.conn = conn
        self.header = rpc.header_prefix(rpc.APPLICATION_MESSAGE, 0, IOT_CORE_MESSAGE) + rpc.stream_id_header(sid)
        self.live = False

    def deliver(self, message: InMessage) -> None:
        if not self.live or self.conn.closing:
            return
        doc: dict[str, Any] = {"topicName": message.topic, "payload": base64.b64encode(message.payload).decode(),
                               "retain": message.retain, **message.props}
        self.conn.write(encode_frame(self.header, rpc.dumps({"message": doc})))


async def _confirm(conn: ConnectionSide, sid: int, operation: str, stream: _IotCoreStream, sub: Subscription) -> None:
    try:
        await sub.ready
    except asyncio.CancelledError:
        sub.cancel()
        raise
    except RoostError as err:  # IOT_CORE_SUBSCRIBE_FAILED: the broker refused it, or no SUBACK came
        conn.write(rpc.application_error(sid, rpc.ERR_SERVICE, err.message, extra={"context": {"code": err.code}}))
        conn.end_stream(sid)
        return
    if not sub.active or conn.closing:
        return
    conn.write(rpc.application_message(sid, rpc.response_model(operation), b"{}"))
    stream.live = True


def _subscribe_to_iot_core(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> None:
    iot = _iot_core(conn, operation)
    topic = validate_iot_topic(request.get("topicName"), subscribe=True)
    conn.authorize(authz.MQTTPROXY_SERVICE, operation, topic)
    qos = validate_qos(request.get("qos"))
    conn.check_stream_capacity()
    stream = _IotCoreStream(conn, sid)
    sub = iot.subscribe(topic, qos, stream.deliver)
    conn.add_stream(sid, sub.cancel)
    task = conn.server.loop.create_task(_confirm(conn, sid, operation, stream, sub))
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)
    return None


#: Subscriptions waiting for their SUBACK (a strong reference until they are answered).
_PENDING: set[asyncio.Task[None]] = set()

HANDLERS: Final[dict[str, Handler]] = {
    OP_PUBLISH_TO_IOT_CORE: _publish_to_iot_core,
    OP_SUBSCRIBE_TO_IOT_CORE: _subscribe_to_iot_core,
}
