"""The lifecycle half of Greengrass IPC: component updates, configuration validation, pause/resume.

===============================================  ===========================================================
Operation                                         What is checked; what it does
===============================================  ===========================================================
``SubscribeToComponentUpdates``                   the caller's own stream (no policy, as on Greengrass); the
                                                  stream limits. Events: ``preUpdateEvent`` / ``postUpdateEvent``
``DeferComponentUpdate``                          the caller must be subscribed; ``deploymentId`` must name the
                                                  update waiting for its answer; ``recheckAfterMs`` >= 0
``SubscribeToValidateConfigurationUpdates``       the caller's own stream; the stream limits. Events:
                                                  ``validateConfigurationUpdateEvent``
``SendConfigurationValidityReport``               the caller's own report; ``status`` ACCEPTED or REJECTED;
                                                  ``deploymentId`` must name a validation waiting for it
``PauseComponent`` / ``ResumeComponent``          accessControl ``aws.greengrass.ipc.lifecycle``, resource =
                                                  ``componentName``; generic components only
===============================================  ===========================================================

The deployment side is :mod:`roost.agent.update_policy`; the freezing is :mod:`roost.agent.freezer`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, runtime_checkable

from roost.agent import authz
from roost.agent.freezer import ComponentPauses
from roost.agent.ipc.types import ConnectionSide
from roost.agent.update_policy import VALIDITY_STATUSES, LifecycleEvents
from roost.errors import InvalidInputError, RoostError
from roost.ipc import rpc
from roost.ipc.eventstream import encode_frame

#: The accessControl service of PauseComponent / ResumeComponent (the nucleus' lifecycle IPC service).
LIFECYCLE_SERVICE: Final = authz.LIFECYCLE_SERVICE


@runtime_checkable
class LifecycleCore(Protocol):
    """What these handlers need of the agent besides :class:`~roost.agent.ipc_core.IpcCore`."""

    lifecycle_events: LifecycleEvents
    pauses: ComponentPauses


def _core(conn: ConnectionSide) -> LifecycleCore:
    core = conn.core
    if not isinstance(core, LifecycleCore):
        raise RoostError("this agent core does not support lifecycle operations", code="SERVICE_ERROR")
    return core


def _required_string(request: dict[str, Any], field: str, where: str = "") -> str:
    value = request.get(field)
    if value is None:
        raise InvalidInputError(f"{where}{field} is required", code="INVALID_REQUEST")
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{where}{field} must be a non-empty string, got {value!r}", code="INVALID_REQUEST")
    return value


def _optional_string(request: dict[str, Any], field: str, where: str = "") -> str:
    value = request.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInputError(f"{where}{field} must be a string, got {value!r}", code="INVALID_REQUEST")
    if len(value) > 4096:
        raise InvalidInputError(f"{where}{field} is longer than 4096 characters", code="INVALID_REQUEST")
    return value


def _event_stream(conn: ConnectionSide, sid: int, model: str) -> Callable[[dict[str, Any]], None]:
    header = rpc.header_prefix(rpc.APPLICATION_MESSAGE, 0, model) + rpc.stream_id_header(sid)

    def send(event: dict[str, Any]) -> None:
        if not conn.closing:
            conn.write(encode_frame(header, rpc.dumps(event)))

    return send


def _subscribe_to_component_updates(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> None:
    principal = conn.require_principal()
    events = _core(conn).lifecycle_events
    conn.check_stream_capacity()
    unsubscribe = events.subscribe_updates(principal, _event_stream(conn, sid, rpc.COMPONENT_UPDATE_POLICY_EVENTS))
    conn.write(rpc.application_message(sid, rpc.response_model(operation), b"{}"))
    conn.add_stream(sid, unsubscribe)


def _defer_component_update(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    principal = conn.require_principal()
    deployment_id = _required_string(request, "deploymentId")
    message = _optional_string(request, "message")
    recheck = request.get("recheckAfterMs", 0)
    if recheck is None:
        recheck = 0
    if not isinstance(recheck, int) or isinstance(recheck, bool):
        raise InvalidInputError(f"recheckAfterMs must be an integer (milliseconds), got {recheck!r}",
                                code="INVALID_REQUEST")
    if recheck < 0:
        raise InvalidInputError(f"recheckAfterMs must not be negative, got {recheck}", code="INVALID_REQUEST")
    _core(conn).lifecycle_events.defer(principal, deployment_id, message, recheck)
    return {}


def _subscribe_to_validate_configuration_updates(conn: ConnectionSide, sid: int, operation: str,
                                                 request: dict[str, Any]) -> None:
    principal = conn.require_principal()
    events = _core(conn).lifecycle_events
    conn.check_stream_capacity()
    unsubscribe = events.subscribe_validation(
        principal, _event_stream(conn, sid, rpc.VALIDATE_CONFIGURATION_UPDATE_EVENTS))
    conn.write(rpc.application_message(sid, rpc.response_model(operation), b"{}"))
    conn.add_stream(sid, unsubscribe)


def _send_configuration_validity_report(conn: ConnectionSide, sid: int, operation: str,
                                        request: dict[str, Any]) -> dict[str, Any]:
    principal = conn.require_principal()
    report = request.get("configurationValidityReport")
    if not isinstance(report, dict):
        raise InvalidInputError("configurationValidityReport must be an object with status and deploymentId",
                                code="INVALID_REQUEST")
    where = "configurationValidityReport."
    status = report.get("status")
    if status not in VALIDITY_STATUSES:
        raise InvalidInputError(f"{where}status must be one of {', '.join(VALIDITY_STATUSES)}, got {status!r}",
                                code="INVALID_REQUEST")
    deployment_id = _required_string(report, "deploymentId", where)
    message = _optional_string(report, "message", where)
    _core(conn).lifecycle_events.report_validity(principal, deployment_id, status, message)
    return {}


async def _pause_component(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    conn.require_principal()
    name = _required_string(request, "componentName")
    conn.authorize(LIFECYCLE_SERVICE, operation, name)
    await _core(conn).pauses.pause(name)
    return {}


def _resume_component(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    conn.require_principal()
    name = _required_string(request, "componentName")
    conn.authorize(LIFECYCLE_SERVICE, operation, name)
    _core(conn).pauses.resume(name)
    return {}


_Result = dict[str, Any] | Awaitable[dict[str, Any]] | None

HANDLERS: Final[dict[str, Callable[[ConnectionSide, int, str, dict[str, Any]], _Result]]] = {
    rpc.OP_SUBSCRIBE_TO_COMPONENT_UPDATES: _subscribe_to_component_updates,
    rpc.OP_DEFER_COMPONENT_UPDATE: _defer_component_update,
    rpc.OP_SUBSCRIBE_TO_VALIDATE_CONFIGURATION_UPDATES: _subscribe_to_validate_configuration_updates,
    rpc.OP_SEND_CONFIGURATION_VALIDITY_REPORT: _send_configuration_validity_report,
    rpc.OP_PAUSE_COMPONENT: _pause_component,
    rpc.OP_RESUME_COMPONENT: _resume_component,
}
