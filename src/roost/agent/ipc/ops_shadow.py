"""The shadow IPC operations (``GetThingShadow``, ``UpdateThingShadow``, ``DeleteThingShadow``,
``ListNamedShadowsForThing``), as Greengrass' ``aws.greengrass.ShadowManager`` serves them locally.

Each is authorised with ``accessControl`` service ``aws.greengrass.ShadowManager``: resource
``$aws/things/T/shadow`` (classic; ``$aws/things/T/shadow/`` as the Greengrass documentation
writes it is accepted too) or ``$aws/things/T/shadow/name/S``; ``ListNamedShadowsForThing`` on
the thing name ``T`` (as ShadowManager checks it) or ``$aws/things/T``. Outcomes are published
on the local pub/sub topics ``<prefix>/<op>/accepted|rejected`` (and ``/update/delta``,
``/update/documents``) as ``aws.greengrass.ShadowManager``. The work itself is
:class:`roost.agent.shadow_store.LocalShadows`, which the agent (the IPC core) carries as
``shadows``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from typing import Any, Final

from roost.agent import shadows
from roost.agent.ipc.types import ConnectionSide
from roost.agent.shadow_store import LocalShadows, Outcome, encode
from roost.errors import InvalidInputError, RoostError, UnauthorizedError
from roost.ipc.rpc import (
    OP_DELETE_THING_SHADOW,
    OP_GET_THING_SHADOW,
    OP_LIST_NAMED_SHADOWS_FOR_THING,
    OP_UPDATE_THING_SHADOW,
)

logger = logging.getLogger(__name__)

SHADOW_SERVICE: Final = shadows.SHADOW_MANAGER


def _service(conn: ConnectionSide) -> LocalShadows:
    found = getattr(conn.core, "shadows", None)
    if not isinstance(found, LocalShadows):
        raise RoostError("local shadows are not available on this agent", code="SHADOWS_UNAVAILABLE")
    return found


def _authorize_any(conn: ConnectionSide, operation: str, resources: tuple[str, ...]) -> None:
    """Allowed when a policy covers any of ``resources`` (spellings of one resource)."""
    first: UnauthorizedError | None = None
    for resource in resources:
        try:
            conn.authorize(SHADOW_SERVICE, operation, resource)
            return
        except UnauthorizedError as err:
            first = first or err
    assert first is not None
    raise first


def _publish(conn: ConnectionSide, messages: list[tuple[str, dict[str, Any]]]) -> None:
    for topic, message in messages:
        try:
            conn.server._publish(topic, encode(message), SHADOW_SERVICE, None)
        except Exception:  # a subscriber's trouble never fails the operation
            logger.exception("publishing the shadow message on %s failed", topic)


def _payload(request: dict[str, Any]) -> bytes:
    value = request.get("payload")
    if value is None:
        return b""
    if not isinstance(value, str):
        raise InvalidInputError("payload must be base64 text (the shadow document's bytes)",
                                code="SHADOW_INVALID_DOCUMENT")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidInputError("payload is not valid base64", code="SHADOW_INVALID_DOCUMENT") from err


def _shadow_op(conn: ConnectionSide, operation: str, request: dict[str, Any], op: str) -> dict[str, Any]:
    conn.require_principal()
    thing = shadows.validate_thing_name(request.get("thingName"))
    shadow = shadows.validate_shadow_name(request.get("shadowName"))
    prefix = shadows.topic_prefix(thing, shadow)
    payload = _payload(request) if op == "update" else b""
    try:
        spellings = (prefix, prefix + "/") if shadow == shadows.CLASSIC else (prefix,)
        _authorize_any(conn, operation, spellings)
        service = _service(conn)
        outcome: Outcome
        if op == "get":
            outcome = service.get(thing, shadow)
        elif op == "update":
            outcome = service.update(thing, shadow, payload)
        else:
            outcome = service.delete(thing, shadow)
    except RoostError as err:
        token = shadows.client_token_of(payload) if payload else None
        _publish(conn, [(f"{prefix}/{op}/rejected", shadows.rejected(err, int(time.time()), token))])
        raise
    _publish(conn, outcome.publish)
    body = b"" if outcome.response is None else encode(outcome.response)
    return {"payload": base64.b64encode(body).decode("ascii")}


def _get_thing_shadow(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    return _shadow_op(conn, operation, request, "get")


def _update_thing_shadow(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    return _shadow_op(conn, operation, request, "update")


def _delete_thing_shadow(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    return _shadow_op(conn, operation, request, "delete")


def _list_named_shadows(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    principal = conn.require_principal()
    thing = shadows.validate_thing_name(request.get("thingName"))
    _authorize_any(conn, operation, (thing, f"$aws/things/{thing}"))
    return _service(conn).list_named(principal, thing, request.get("pageSize"), request.get("nextToken"))


HANDLERS: Final = {
    OP_GET_THING_SHADOW: _get_thing_shadow,
    OP_UPDATE_THING_SHADOW: _update_thing_shadow,
    OP_DELETE_THING_SHADOW: _delete_thing_shadow,
    OP_LIST_NAMED_SHADOWS_FOR_THING: _list_named_shadows,
}
