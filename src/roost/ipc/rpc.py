"""Greengrass event-stream RPC: message types, flags, header names, shape names, builders.

Every builder returns a complete, framed message (``bytes``) ready for ``transport.write``.
Header sections that never change are encoded once and cached; only the ``:stream-id``
header (always last) is encoded per message.
"""

from __future__ import annotations

import json
import struct
from enum import IntEnum, IntFlag
from functools import lru_cache
from typing import Any, Final

from roost.ipc.eventstream import HeaderValue, encode_frame, encode_header, encode_headers


class MessageType(IntEnum):
    APPLICATION_MESSAGE = 0
    APPLICATION_ERROR = 1
    PING = 2
    PING_RESPONSE = 3
    CONNECT = 4
    CONNECT_ACK = 5
    PROTOCOL_ERROR = 6
    INTERNAL_ERROR = 7


class MessageFlag(IntFlag):
    NONE = 0
    CONNECTION_ACCEPTED = 1
    TERMINATE_STREAM = 2


# Plain ints for the hot path (IntEnum comparisons are slower).
APPLICATION_MESSAGE: Final = 0
APPLICATION_ERROR: Final = 1
PING: Final = 2
PING_RESPONSE: Final = 3
CONNECT: Final = 4
CONNECT_ACK: Final = 5
PROTOCOL_ERROR: Final = 6
INTERNAL_ERROR: Final = 7
FLAG_CONNECTION_ACCEPTED: Final = 1
FLAG_TERMINATE_STREAM: Final = 2

H_MESSAGE_TYPE: Final = ":message-type"
H_MESSAGE_FLAGS: Final = ":message-flags"
H_STREAM_ID: Final = ":stream-id"
H_VERSION: Final = ":version"
H_CONTENT_TYPE: Final = ":content-type"
H_OPERATION: Final = "operation"
H_SERVICE_MODEL_TYPE: Final = "service-model-type"
#: Roost extension (bool header on a PublishToTopic request): the sender does not wait for the
#: response, so the server may hold a successful response back and send it along with the next
#: frame it writes to that connection (or after :data:`DEFERRED_ACK_DELAY`). Errors are never
#: held back. Greengrass servers ignore unknown headers and answer at once, which is also correct.
H_DEFER_ACK: Final = "roost-defer-ack"
DEFERRED_ACK_DELAY: Final = 0.005

VERSION: Final = "0.1.0"
CONTENT_TYPE_JSON: Final = "application/json"
SERVICE_NAME: Final = "aws.greengrass#GreengrassCoreIPC"

# Operations (full names as they travel in the ``operation`` header).
PREFIX: Final = "aws.greengrass#"
OP_PUBLISH_TO_TOPIC: Final = "aws.greengrass#PublishToTopic"
OP_SUBSCRIBE_TO_TOPIC: Final = "aws.greengrass#SubscribeToTopic"
OP_GET_CONFIGURATION: Final = "aws.greengrass#GetConfiguration"
OP_UPDATE_CONFIGURATION: Final = "aws.greengrass#UpdateConfiguration"
OP_SUBSCRIBE_TO_CONFIGURATION_UPDATE: Final = "aws.greengrass#SubscribeToConfigurationUpdate"
OP_UPDATE_STATE: Final = "aws.greengrass#UpdateState"
OP_LIST_COMPONENTS: Final = "aws.greengrass#ListComponents"
OP_GET_COMPONENT_DETAILS: Final = "aws.greengrass#GetComponentDetails"
OP_RESTART_COMPONENT: Final = "aws.greengrass#RestartComponent"
OP_STOP_COMPONENT: Final = "aws.greengrass#StopComponent"
OP_CREATE_LOCAL_DEPLOYMENT: Final = "aws.greengrass#CreateLocalDeployment"
OP_GET_LOCAL_DEPLOYMENT_STATUS: Final = "aws.greengrass#GetLocalDeploymentStatus"
OP_LIST_LOCAL_DEPLOYMENTS: Final = "aws.greengrass#ListLocalDeployments"
# Local shadows (aws.greengrass.ShadowManager's operations) and component metrics.
OP_GET_THING_SHADOW: Final = "aws.greengrass#GetThingShadow"
OP_UPDATE_THING_SHADOW: Final = "aws.greengrass#UpdateThingShadow"
OP_DELETE_THING_SHADOW: Final = "aws.greengrass#DeleteThingShadow"
OP_LIST_NAMED_SHADOWS_FOR_THING: Final = "aws.greengrass#ListNamedShadowsForThing"
OP_PUT_COMPONENT_METRIC: Final = "aws.greengrass#PutComponentMetric"
# A Roost extension: the metrics components put, read by the CLI (``roost component metrics``).
OP_GET_COMPONENT_METRICS: Final = "aws.greengrass#GetComponentMetrics"
# Largest application payload the agent accepts (a 1 MiB message, base64-encoded in JSON, fits).
MAX_PAYLOAD_SIZE: Final = 1024 * 1024
# Largest frame the agent accepts: the payload limit plus base64 growth and headers.
MAX_FRAME_SIZE: Final = MAX_PAYLOAD_SIZE * 4 // 3 + 64 * 1024

OP_PUBLISH_TO_IOT_CORE: Final = "aws.greengrass#PublishToIoTCore"
OP_SUBSCRIBE_TO_IOT_CORE: Final = "aws.greengrass#SubscribeToIoTCore"
IOT_CORE_MESSAGE: Final = "aws.greengrass#IoTCoreMessage"

# A Roost extension (Greengrass has no way to cancel a local deployment).
OP_CANCEL_LOCAL_DEPLOYMENT: Final = "aws.greengrass#CancelLocalDeployment"
OP_GET_SECRET_VALUE: Final = "aws.greengrass#GetSecretValue"

# Roost extensions: direct request/reply channels between two Roost clients (roost.agent.ipc.direct).
ROOST_PREFIX: Final = "roost#"
OP_OFFER_DIRECT_CHANNEL: Final = "roost#OfferDirectChannel"
OP_OPEN_DIRECT_CHANNEL: Final = "roost#OpenDirectChannel"
DIRECT_CHANNEL_EVENT: Final = "roost#DirectChannelEvent"

CLI_OPERATIONS: Final = (
    OP_LIST_COMPONENTS,
    OP_GET_COMPONENT_DETAILS,
    OP_RESTART_COMPONENT,
    OP_STOP_COMPONENT,
    OP_CREATE_LOCAL_DEPLOYMENT,
    OP_GET_LOCAL_DEPLOYMENT_STATUS,
    OP_LIST_LOCAL_DEPLOYMENTS,
    OP_CANCEL_LOCAL_DEPLOYMENT,
)

# Stream event shapes.
SUBSCRIPTION_RESPONSE_MESSAGE: Final = "aws.greengrass#SubscriptionResponseMessage"
CONFIGURATION_UPDATE_EVENTS: Final = "aws.greengrass#ConfigurationUpdateEvents"

# Lifecycle operations: component updates, configuration validation, pause/resume.
OP_SUBSCRIBE_TO_COMPONENT_UPDATES: Final = "aws.greengrass#SubscribeToComponentUpdates"
OP_DEFER_COMPONENT_UPDATE: Final = "aws.greengrass#DeferComponentUpdate"
OP_SUBSCRIBE_TO_VALIDATE_CONFIGURATION_UPDATES: Final = "aws.greengrass#SubscribeToValidateConfigurationUpdates"
OP_SEND_CONFIGURATION_VALIDITY_REPORT: Final = "aws.greengrass#SendConfigurationValidityReport"
OP_PAUSE_COMPONENT: Final = "aws.greengrass#PauseComponent"
OP_RESUME_COMPONENT: Final = "aws.greengrass#ResumeComponent"
COMPONENT_UPDATE_POLICY_EVENTS: Final = "aws.greengrass#ComponentUpdatePolicyEvents"
VALIDATE_CONFIGURATION_UPDATE_EVENTS: Final = "aws.greengrass#ValidateConfigurationUpdateEvents"

# Error shapes.
ERR_UNAUTHORIZED: Final = "aws.greengrass#UnauthorizedError"
ERR_RESOURCE_NOT_FOUND: Final = "aws.greengrass#ResourceNotFoundError"
ERR_COMPONENT_NOT_FOUND: Final = "aws.greengrass#ComponentNotFoundError"
ERR_INVALID_ARGUMENTS: Final = "aws.greengrass#InvalidArgumentsError"
ERR_CONFLICT: Final = "aws.greengrass#ConflictError"
ERR_SERVICE: Final = "aws.greengrass#ServiceError"

RECEIVE_ALL_MESSAGES: Final = "RECEIVE_ALL_MESSAGES"
RECEIVE_MESSAGES_FROM_OTHERS: Final = "RECEIVE_MESSAGES_FROM_OTHERS"
RECEIVE_MODES: Final = (RECEIVE_ALL_MESSAGES, RECEIVE_MESSAGES_FROM_OTHERS)


def short_name(operation: str) -> str:
    """``aws.greengrass#PublishToTopic`` → ``PublishToTopic``."""
    if operation.startswith(PREFIX):
        return operation[len(PREFIX) :]
    return operation[len(ROOST_PREFIX) :] if operation.startswith(ROOST_PREFIX) else operation


def request_model(operation: str) -> str:
    return operation + "Request"


def response_model(operation: str) -> str:
    return operation + "Response"


_json_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(obj: Any) -> bytes:
    """Compact JSON as UTF-8 bytes."""
    return _json_encode(obj).encode("utf-8")


_I32 = struct.Struct(">i")
_STREAM_ID_HEAD: Final = encode_header(H_STREAM_ID, 1)[:-4]


def stream_id_header(stream_id: int) -> bytes:
    return _STREAM_ID_HEAD + _I32.pack(stream_id)


@lru_cache(maxsize=512)
def header_prefix(
    message_type: int,
    flags: int = 0,
    model_type: str | None = None,
    operation: str | None = None,
) -> bytes:
    """The encoded headers of a message, minus the trailing ``:stream-id`` header."""
    headers: dict[str, HeaderValue] = {H_MESSAGE_TYPE: int(message_type), H_MESSAGE_FLAGS: int(flags)}
    if operation is not None:
        headers[H_OPERATION] = operation
    if model_type is not None:
        headers[H_CONTENT_TYPE] = CONTENT_TYPE_JSON
        headers[H_SERVICE_MODEL_TYPE] = model_type
    return encode_headers(headers)


def build(
    message_type: int,
    stream_id: int,
    payload: bytes = b"",
    *,
    flags: int = 0,
    model_type: str | None = None,
    operation: str | None = None,
) -> bytes:
    """Any RPC message with the standard headers."""
    return encode_frame(
        header_prefix(message_type, flags, model_type, operation) + stream_id_header(stream_id), payload
    )


def application_message(
    stream_id: int,
    model_type: str,
    payload: bytes,
    *,
    operation: str | None = None,
    terminate: bool = False,
) -> bytes:
    """A request (with ``operation``), a response, or a stream event."""
    return encode_frame(
        header_prefix(APPLICATION_MESSAGE, FLAG_TERMINATE_STREAM if terminate else 0, model_type, operation)
        + _STREAM_ID_HEAD
        + _I32.pack(stream_id),
        payload,
    )


def error_payload(error_type: str, message: str, extra: dict[str, Any] | None = None) -> bytes:
    """The JSON document of an application error, as both awsiotsdk and the Java nucleus shape it."""
    doc: dict[str, Any] = {
        "_message": message,
        "_errorCode": short_name(error_type),
        "_service": SERVICE_NAME,
        "message": message,
    }
    if extra:
        doc.update(extra)
    return dumps(doc)


def application_error(
    stream_id: int,
    error_type: str,
    message: str,
    *,
    extra: dict[str, Any] | None = None,
    terminate: bool = True,
) -> bytes:
    """An APPLICATION_ERROR answer (terminates the stream by default)."""
    return build(
        APPLICATION_ERROR,
        stream_id,
        error_payload(error_type, message, extra),
        flags=FLAG_TERMINATE_STREAM if terminate else 0,
        model_type=error_type,
    )


def terminate_stream(stream_id: int) -> bytes:
    """An empty APPLICATION_MESSAGE carrying only the terminate flag."""
    return build(APPLICATION_MESSAGE, stream_id, flags=FLAG_TERMINATE_STREAM)


def connect_message(auth_token: str) -> bytes:
    """The client's first frame."""
    headers: dict[str, HeaderValue] = {
        H_MESSAGE_TYPE: CONNECT,
        H_MESSAGE_FLAGS: 0,
        H_STREAM_ID: 0,
        H_VERSION: VERSION,
    }
    return encode_frame(encode_headers(headers), dumps({"authToken": auth_token}))


def connect_ack(accepted: bool) -> bytes:
    return build(CONNECT_ACK, 0, flags=FLAG_CONNECTION_ACCEPTED if accepted else 0)


def ping(payload: bytes = b"") -> bytes:
    return build(PING, 0, payload)


def ping_response(payload: bytes = b"") -> bytes:
    return build(PING_RESPONSE, 0, payload)


def protocol_error(message: str, code: str | None = None) -> bytes:
    """A connection-level PROTOCOL_ERROR (the sender closes the connection after it).

    ``code`` (a Roost error code such as ``IPC_BUSY``) lets Roost's client raise the matching
    error; other clients only see the message."""
    doc: dict[str, Any] = {"message": message}
    if code is not None:
        doc["code"] = code
    return build(PROTOCOL_ERROR, 0, dumps(doc))


def internal_error(message: str) -> bytes:
    return build(INTERNAL_ERROR, 0, dumps({"message": message}))
