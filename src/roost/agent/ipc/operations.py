"""The per-operation handlers (parse, authorise, call the core or the broker, answer) and how a
handler's error is answered."""


from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from roost.agent import authz
from roost.agent.ipc import ops_direct, ops_iotcore, ops_lifecycle, ops_metrics, ops_secrets, ops_shadow
from roost.agent.ipc.types import ConnectionSide
from roost.agent.pubsub import RECEIVE_ALL_MESSAGES, validate_topic, validate_topic_filter
from roost.errors import ConflictError, InvalidInputError, NotFoundError, RoostError, UnauthorizedError
from roost.ipc import rpc
from roost.ipc.eventstream import encode_frame

logger = logging.getLogger(__name__)

LIFECYCLE_STATES: Final = ("RUNNING", "ERRORED")

_EMPTY_JSON: Final = b"{}"


def _error_shape(operation: str, err: BaseException) -> tuple[str, str, dict[str, Any] | None]:
    """Map an exception raised while handling ``operation`` to (error type, message, extra)."""
    # Every RoostError carries its stable code in ``context.code`` (awsiotsdk ignores the field;
    # Roost's CLI turns it back into the same error and exit code).
    code = {"context": {"code": err.code}} if isinstance(err, RoostError) else None
    if isinstance(err, UnauthorizedError):
        return rpc.ERR_UNAUTHORIZED, err.message, code
    if isinstance(err, InvalidInputError):
        return rpc.ERR_INVALID_ARGUMENTS, err.message, code
    if isinstance(err, NotFoundError):
        if operation in (rpc.OP_RESTART_COMPONENT, rpc.OP_STOP_COMPONENT):
            return rpc.ERR_COMPONENT_NOT_FOUND, err.message, code
        return rpc.ERR_RESOURCE_NOT_FOUND, err.message, code
    if isinstance(err, ConflictError):
        return rpc.ERR_CONFLICT, err.message, code
    if isinstance(err, RoostError):
        return rpc.ERR_SERVICE, err.message, {"context": {"code": err.code}}
    logger.error("IPC %s failed with an unexpected error", rpc.short_name(operation), exc_info=err)
    return rpc.ERR_SERVICE, f"internal error while handling {rpc.short_name(operation)}", None


def _string_field(request: dict[str, Any], field: str, *, required: bool = True) -> str | None:
    value = request.get(field)
    if value is None:
        if required:
            raise InvalidInputError(f"{field} is required")
        return None
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{field} must be a non-empty string, got {value!r}")
    return value


def _key_path(request: dict[str, Any]) -> list[str]:
    value = request.get("keyPath")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
        raise InvalidInputError(f"keyPath must be a list of strings, got {value!r}")
    return value


_Result = dict[str, Any] | Awaitable[dict[str, Any]] | None
Handler = Callable[[ConnectionSide, int, str, dict[str, Any]], _Result]


class _TopicStream:
    """Delivers pub/sub messages to one SubscribeToTopic stream."""

    __slots__ = ("conn", "header", "server")

    def __init__(self, conn: ConnectionSide, sid: int) -> None:
        self.conn = conn
        self.server = conn.server
        self.header = rpc.header_prefix(
            rpc.APPLICATION_MESSAGE, 0, rpc.SUBSCRIPTION_RESPONSE_MESSAGE
        ) + rpc.stream_id_header(sid)

    def deliver(self, topic: str, message: Any, publisher: str) -> None:
        conn = self.conn
        if conn.closing:
            return
        conn.write(encode_frame(self.header, self.server.event_payload(topic, message)))


# -- operation handlers ------------------------------------------------------------------------


def _publish_to_topic(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    topic = validate_topic(request.get("topic"))
    publish_message = request.get("publishMessage")
    if not isinstance(publish_message, dict):
        raise InvalidInputError("publishMessage must be an object with jsonMessage or binaryMessage")
    conn.authorize(authz.PUBSUB_SERVICE, operation, topic)
    principal = conn.require_principal()
    json_message = publish_message.get("jsonMessage")
    if json_message is not None:
        if not isinstance(json_message, dict):
            raise InvalidInputError("publishMessage.jsonMessage must be an object")
        conn.server._publish(topic, json_message.get("message"), principal, None)
        return {}
    binary_message = publish_message.get("binaryMessage")
    if not isinstance(binary_message, dict):
        raise InvalidInputError("publishMessage must contain a jsonMessage or a binaryMessage object")
    b64 = binary_message.get("message", "")
    if not isinstance(b64, str):
        raise InvalidInputError("publishMessage.binaryMessage.message must be a base64 string")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidInputError("publishMessage.binaryMessage.message is not valid base64") from err
    conn.server._publish(topic, raw, principal, b64)
    return {}


def _subscribe_to_topic(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> None:
    topic = validate_topic_filter(request.get("topic"))
    mode = request.get("receiveMode")
    if mode is None:
        mode = RECEIVE_ALL_MESSAGES
    elif mode not in rpc.RECEIVE_MODES:
        raise InvalidInputError(f"receiveMode must be one of {', '.join(rpc.RECEIVE_MODES)}, got {mode!r}")
    conn.authorize(authz.PUBSUB_SERVICE, operation, topic)
    conn.check_stream_capacity()
    principal = conn.require_principal()
    conn.write(rpc.application_message(sid, rpc.response_model(operation), rpc.dumps({"topicName": topic})))
    pubsub = conn.server.pubsub
    handle = pubsub.subscribe(topic, principal, _TopicStream(conn, sid).deliver, mode)
    conn.add_stream(sid, lambda: pubsub.unsubscribe(handle))
    return None


async def _get_configuration(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    principal = conn.require_principal()
    component = _string_field(request, "componentName", required=False) or principal
    key_path = _key_path(request)
    if component != principal and conn.server.strict_config_reads:
        conn.authorize(authz.CONFIG_SERVICE, operation, authz.config_resource(component, key_path))
    value = await conn.core.get_configuration(principal, component, key_path)
    if key_path and not isinstance(value, dict):
        value = {key_path[-1]: value}  # Greengrass wraps a leaf as {lastKey: value}
    return {"componentName": component, "value": value}


async def _update_configuration(
    conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]
) -> dict[str, Any]:
    principal = conn.require_principal()
    key_path = _key_path(request)
    if "valueToMerge" not in request:
        raise InvalidInputError("valueToMerge is required")
    # Policy changes only through a deployment: the whole update is refused, nothing changes.
    authz.check_configuration_update(principal, key_path, request["valueToMerge"])
    raw_ts = request.get("timestamp")
    if raw_ts is None:
        timestamp = time.time()
    elif isinstance(raw_ts, int | float) and not isinstance(raw_ts, bool):
        timestamp = float(raw_ts) / 1000.0 if raw_ts > 1e11 else float(raw_ts)
    else:
        raise InvalidInputError(f"timestamp must be a number (seconds since the epoch), got {raw_ts!r}")
    await conn.core.update_configuration(principal, key_path, request["valueToMerge"], timestamp)
    return {}


def _subscribe_to_configuration_update(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> None:
    principal = conn.require_principal()
    component = _string_field(request, "componentName", required=False) or principal
    key_path = _key_path(request)
    if component != principal and conn.server.strict_config_reads:
        conn.authorize(authz.CONFIG_SERVICE, operation, authz.config_resource(component, key_path))
    conn.check_stream_capacity()
    loop = conn.server.loop

    def changed(changed_component: str, changed_path: list[str]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the agent is shutting down
            loop.call_soon_threadsafe(conn.send_config_event, sid, changed_component, list(changed_path))

    unsubscribe = conn.core.subscribe_configuration(principal, component, key_path, changed)
    conn.write(rpc.application_message(sid, rpc.response_model(operation), _EMPTY_JSON))
    conn.add_stream(sid, unsubscribe)
    return None


async def _update_state(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    principal = conn.require_principal()
    state = request.get("state")
    if state not in LIFECYCLE_STATES:
        raise InvalidInputError(f"state must be one of {', '.join(LIFECYCLE_STATES)}, got {state!r}")
    await conn.core.update_state(principal, state)
    return {}


_CLI_RESOURCE_FIELD: Final = {
    rpc.OP_GET_COMPONENT_DETAILS: "componentName",
    rpc.OP_RESTART_COMPONENT: "componentName",
    rpc.OP_STOP_COMPONENT: "componentName",
    rpc.OP_GET_LOCAL_DEPLOYMENT_STATUS: "deploymentId",
    rpc.OP_CANCEL_LOCAL_DEPLOYMENT: "deploymentId",
}


async def _cli_operation(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    principal = conn.require_principal()
    field = _CLI_RESOURCE_FIELD.get(operation)
    resource = _string_field(request, field) if field is not None else None
    conn.authorize(authz.CLI_SERVICE, operation, resource)
    result = await conn.core.cli_operation(principal, rpc.short_name(operation), request)
    if not isinstance(result, dict):
        raise TypeError(f"cli_operation({rpc.short_name(operation)}) returned {type(result).__name__}")
    return result


_HANDLERS: Final[dict[str, Handler]] = {
    rpc.OP_PUBLISH_TO_TOPIC: _publish_to_topic,
    rpc.OP_SUBSCRIBE_TO_TOPIC: _subscribe_to_topic,
    rpc.OP_GET_CONFIGURATION: _get_configuration,
    rpc.OP_UPDATE_CONFIGURATION: _update_configuration,
    rpc.OP_SUBSCRIBE_TO_CONFIGURATION_UPDATE: _subscribe_to_configuration_update,
    rpc.OP_UPDATE_STATE: _update_state,
    **{op: _cli_operation for op in rpc.CLI_OPERATIONS},
    **ops_direct.HANDLERS,
    **ops_secrets.HANDLERS,
    **ops_iotcore.HANDLERS,
    **ops_shadow.HANDLERS,
    **ops_metrics.HANDLERS,
    **ops_lifecycle.HANDLERS,
}


def registered_operations() -> list[str]:
    """Every operation the server answers (full names), for docs/ipc.md's table and its test."""
    return sorted(_HANDLERS)
