"""Console sessions: a signed cookie holding an admin API token's *id* (never the token).

The signing key lives in the database (:meth:`roost.hub.store.Store.console_session_key`), created
on first use. Every hub process on the same database therefore signs and verifies the same way,
and nothing lives in a process.

A session is ``{"t": token_id, "c": csrf}`` signed with :class:`itsdangerous.URLSafeTimedSerializer`
(expires after :data:`SESSION_MAX_AGE`). On every request the token id is checked again: a revoked
API token ends its console sessions at once. The sign-in form is protected by a separate signed
nonce cookie (double submit) on top of ``SameSite=Strict``.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "roost_console"
LOGIN_COOKIE = "roost_console_login"
COOKIE_PATH = "/console"
#: Seconds a console session stays valid after sign-in.
SESSION_MAX_AGE = 12 * 3600
#: Seconds a sign-in form stays usable.
LOGIN_MAX_AGE = 3600

_SESSION_SALT = "roost.console.session"
_LOGIN_SALT = "roost.console.login"


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in console user: the admin API token's id and name, and the session's CSRF token."""

    token_id: int
    token_name: str
    csrf: str


def _serializer(key: bytes, salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(key, salt=salt)


def new_session(key: bytes, token_id: int) -> str:
    """The cookie value of a fresh session (with a fresh CSRF token)."""
    value: str = _serializer(key, _SESSION_SALT).dumps({"t": token_id, "c": secrets.token_urlsafe(24)})
    return value


def read_session(key: bytes, cookie: str | None) -> tuple[int, str] | None:
    """``(token_id, csrf)`` from a cookie signed with ``key`` and not expired, else None."""
    if not cookie or len(cookie) > 4096:
        return None
    try:
        data = _serializer(key, _SESSION_SALT).loads(cookie, max_age=SESSION_MAX_AGE)
    except BadSignature:  # also SignatureExpired
        return None
    if not isinstance(data, dict):
        return None
    token_id, csrf = data.get("t"), data.get("c")
    if not isinstance(token_id, int) or isinstance(token_id, bool) or not isinstance(csrf, str):
        return None
    return token_id, csrf


def new_login_nonce(key: bytes) -> tuple[str, str]:
    """``(nonce, cookie value)`` for one sign-in form: the form echoes the nonce, the cookie signs it."""
    nonce = secrets.token_urlsafe(24)
    cookie: str = _serializer(key, _LOGIN_SALT).dumps(nonce)
    return nonce, cookie


def check_login_nonce(key: bytes, cookie: str | None, submitted: str) -> bool:
    if not cookie or not submitted or len(cookie) > 4096:
        return False
    try:
        nonce = _serializer(key, _LOGIN_SALT).loads(cookie, max_age=LOGIN_MAX_AGE)
    except BadSignature:
        return False
    return isinstance(nonce, str) and same(nonce, submitted)


def same(a: str, b: str) -> bool:
    """Constant-time string comparison."""
    return hmac.compare_digest(a.encode(), b.encode())
