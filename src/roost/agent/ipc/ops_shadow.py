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
import re
import time
from collections.abc import Callable
from typing import Any, Final

from roost.agent import shadows
from roost.agent.ipc.types import ConnectionSide, PublishSide
from roost.agent.pubsub import RECEIVE_MESSAGES_FROM_OTHERS
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
    refused: list[UnauthorizedError] = []
    for resource in resources:
        try:
            conn.authorize(SHADOW_SERVICE, operation, resource)
            return
        except UnauthorizedError as err:
            refused.append(err)
    raise refused[0]  # names the first (canonical) spelling


Publish = Callable[[list[tuple[str, dict[str, Any]]]], None]


def _publish(server: PublishSide, messages: list[tuple[str, dict[str, Any]]]) -> None:
    for topic, message in messages:
        try:
            server._publish(topic, encode(message), SHADOW_SERVICE, None)
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


def _run(service: LocalShadows, thing: str, shadow: str, op: str, payload: bytes) -> Outcome:
    if op == "get":
        return service.get(thing, shadow)
    if op == "update":
        return service.update(thing, shadow, payload)
    return service.delete(thing, shadow)


def _reject(publish: Publish, prefix: str, op: str, err: RoostError, payload: bytes) -> None:
    token = shadows.client_token_of(payload) if payload else None
    publish([(f"{prefix}/{op}/rejected", shadows.rejected(err, int(time.time()), token))])


def _shadow_op(conn: ConnectionSide, operation: str, request: dict[str, Any], op: str) -> dict[str, Any]:
    conn.require_principal()
    thing = shadows.validate_thing_name(request.get("thingName"))
    shadow = shadows.validate_shadow_name(request.get("shadowName"))
    prefix = shadows.topic_prefix(thing, shadow)
    payload = _payload(request) if op == "update" else b""
    server = conn.server

    def publish(messages: list[tuple[str, dict[str, Any]]]) -> None:
        _publish(server, messages)

    try:
        spellings = (prefix, prefix + "/") if shadow == shadows.CLASSIC else (prefix,)
        _authorize_any(conn, operation, spellings)
        outcome = _run(_service(conn), thing, shadow, op, payload)
    except RoostError as err:
        _reject(publish, prefix, op, err, payload)
        raise
    publish(outcome.publish)
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


# -- requests published on the local pub/sub topics ShadowManager listens on ---------------------

#: ``$aws/things/T/shadow[/name/S]/(update|get|delete)``: a shadow request made by publishing.
REQUEST_TOPIC: Final = re.compile(r"\$aws/things/([^/]+)/shadow(?:/name/([^/]+))?/(update|get|delete)")
#: What the agent subscribes to on components' behalf, as ShadowManager does.
REQUEST_FILTER: Final = "$aws/things/+/shadow/#"


def serve_pubsub_requests(server: PublishSide, service: LocalShadows) -> None:
    """Answer shadow requests components publish (``.../update`` with the document, ``.../get``,
    ``.../delete``) as ShadowManager does: the outcome goes to ``.../accepted`` / ``.../rejected``
    and the other response topics. The publisher needed an ``aws.greengrass.ipc.pubsub`` policy for
    the request topic; like ShadowManager, no shadow policy is checked on this path."""

    def publish(messages: list[tuple[str, dict[str, Any]]]) -> None:
        _publish(server, messages)

    def handle(thing: str, shadow: str, op: str, payload: bytes) -> None:
        prefix = shadows.topic_prefix(thing, shadow)
        try:
            outcome = _run(service, thing, shadow, op, payload)
        except RoostError as err:
            _reject(publish, prefix, op, err, payload)
            return
        except Exception:
            logger.exception("a shadow %s request published on %s failed", op, prefix)
            return
        publish(outcome.publish)

    def deliver(topic: str, message: Any, publisher: str) -> None:
        if publisher == SHADOW_SERVICE:
            return  # our own answers
        match = REQUEST_TOPIC.fullmatch(topic)
        if match is None:
            return
        thing, shadow, op = match.group(1), match.group(2) or "", match.group(3)
        try:
            shadows.validate_thing_name(thing)
            shadows.validate_shadow_name(shadow)
        except RoostError as err:
            logger.warning("ignored a shadow request published on %s by %s: %s", topic, publisher, err.message)
            return
        if isinstance(message, bytes | bytearray | memoryview):
            payload = bytes(message)
        else:
            payload = encode(message) if message is not None else b""
        # After the publish that carried it has been delivered to everyone (no publish inside a publish).
        server.loop.call_soon(handle, thing, shadow, op, payload)

    server.pubsub.subscribe(REQUEST_FILTER, SHADOW_SERVICE, deliver, RECEIVE_MESSAGES_FROM_OTHERS)
