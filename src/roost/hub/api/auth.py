"""Bearer-token authentication for ``/v1``, before any body is read.

A pure ASGI middleware, so that *every* ``/v1`` request without valid credentials gets 401 (and a
principal on the wrong kind of endpoint 403) whatever its body or parameters look like:

* ``POST /v1/enroll`` — no credentials (the body carries the one-time enrolment token);
* ``GET /v1/dist/...`` — no credentials (the Roost wheel and wheelhouse served to devices being
  provisioned: Roost's own public code, see :mod:`roost.provision.dist`);
* ``/v1/device/...`` — device credentials only;
* ``/v1/artifacts/...`` — admin tokens and device credentials (the store checks the device may
  read that component);
* ``/metrics``, ``/metrics/fleet``, ``/v1/prometheus/targets`` — admin tokens or metrics tokens
  (``roost hub metrics-token``; Prometheus sends it as its bearer token);
* every other ``/v1`` path — admin tokens only.

The principal is left in ``scope["state"]["principal"]`` for :func:`admin` / :func:`device`.

Device credentials are looked up in the database once per process and then remembered (hash →
principal; a credential never changes owner). That is safe for revocation because every device
operation of the store checks, in its own transaction, that the device is not revoked (and answers
``DEVICE_REVOKED`` at once); the cache only saves the lookup. Admin tokens are looked up every time.
"""

from __future__ import annotations

import logging
from typing import Literal

import anyio.to_thread
from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from roost.hub.api.errors import error_response, roost_error_response
from roost.hub.errors import AuthenticationError, ForbiddenError
from roost.hub.presence import Presence
from roost.hub.store import Principal, Store
from roost.hub.tokens import DEVICE_PREFIX, hash_token

logger = logging.getLogger(__name__)

Need = Literal["none", "admin", "device", "any", "metrics"]

#: Paths a metrics token may read (besides admin tokens).
METRICS_PATHS = ("/metrics", "/metrics/fleet", "/v1/prometheus/targets")


#: The original edge cluster's routes (not under /v1): admin tokens, also as a ``token`` query parameter.
COMPAT_PATHS = ("/app-service", "/driver-class-predict/", "/driver-image-recognition/")


def is_compat(path: str) -> bool:
    return path.rstrip("/") == COMPAT_PATHS[0] or path.startswith(COMPAT_PATHS[1:])


def requirement(method: str, path: str) -> Need:
    if is_compat(path):
        return "admin"
    if path in METRICS_PATHS:
        return "metrics"
    if not (path == "/v1" or path.startswith("/v1/")):
        return "none"
    if path.rstrip("/") == "/v1/enroll" and method == "POST":
        return "none"
    if path.startswith("/v1/dist/") and method in ("GET", "HEAD"):
        return "none"  # the hub's own Roost wheel(s) for devices it provisions: public code (roost.provision.dist)
    if path.startswith("/v1/device/") or path == "/v1/device":
        return "device"
    if path.startswith("/v1/artifacts/"):
        return "any"
    return "admin"


def bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def query_token(query_string: bytes) -> str | None:
    """The ``token`` query parameter (the original cluster client's routes only)."""
    from urllib.parse import parse_qs

    values = parse_qs(query_string.decode("latin-1")).get("token")
    return values[0].strip() if values and values[0].strip() else None


class CredentialCache:
    """Device credential hash → principal, bounded (the oldest entries go first)."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._entries: dict[str, Principal] = {}

    def get(self, token: str) -> Principal | None:
        return self._entries.get(hash_token(token)) if token.startswith(DEVICE_PREFIX) else None

    def put(self, token: str, principal: Principal) -> None:
        if principal.kind != "device":
            return
        if len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]
        self._entries[hash_token(token)] = principal


class AuthMiddleware:
    def __init__(self, app: ASGIApp, store: Store, presence: Presence | None = None,
                 cache: CredentialCache | None = None) -> None:
        self.app = app
        self.store = store
        self.presence = presence
        self.cache = cache if cache is not None else CredentialCache()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        need = requirement(scope["method"], scope["path"])
        if need == "none":
            await self.app(scope, receive, send)
            return
        token = bearer(scope["headers"])
        if token is None and is_compat(scope["path"]):
            token = query_token(scope.get("query_string", b""))
        if token is None:
            what = "an admin or metrics token" if need == "metrics" else "<token>"
            await error_response(401, "UNAUTHORIZED", f"send an 'Authorization: Bearer {what}' header")(
                scope, receive, send)
            return
        principal = self.cache.get(token)
        if principal is not None:
            if self.presence is not None:
                self.presence.seen(principal.id)
        else:
            try:
                principal = await anyio.to_thread.run_sync(self.store.authenticate, token)
            except AuthenticationError as err:
                await roost_error_response(err)(scope, receive, send)
                return
            self.cache.put(token, principal)
        if need == "metrics":
            if principal.kind not in ("admin", "metrics"):
                await roost_error_response(ForbiddenError("this endpoint needs an admin API token or a metrics token"))(
                    scope, receive, send)
                return
        elif need != "any" and principal.kind != need:
            what = "device credentials" if need == "device" else "an admin API token"
            await roost_error_response(ForbiddenError(f"this endpoint needs {what}"))(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def principal(request: Request) -> Principal:
    value = getattr(request.state, "principal", None)
    if not isinstance(value, Principal):  # the middleware guards every /v1 route; defence in depth
        raise AuthenticationError("not authenticated")
    return value


def admin(request: Request) -> Principal:
    p = principal(request)
    if p.kind != "admin":
        raise ForbiddenError("this endpoint needs an admin API token")
    return p


def device(request: Request) -> Principal:
    p = principal(request)
    if p.kind != "device":
        raise ForbiddenError("this endpoint needs device credentials")
    return p
