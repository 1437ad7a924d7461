"""Session tokens: the hub signs them (Ed25519), replicas verify them with the hub's public key.

A token is ``<base64url(payload JSON)>.<base64url(signature)>``; the payload is
``{"aud": AUDIENCE, "sid": session id, "rid": replica id, "exp": unix seconds}``. A replica knows only
the hub's *public* key (given in its configuration), so nothing on a device can mint a token: not
the replica, not another component reading its configuration.

Audiences:

- ``session`` — a client opening the websocket of its session on the replica it was admitted to;
- ``status`` — the hub reading a replica's sessions (``GET /status``);
- ``claim`` — the hub telling a replica that a client of the original protocol (no token) will
  connect for a session (``POST /claims``).

The signing key lives in a file the hub creates on first use (mode 0600; hub replicas sharing one
database share the file, like the secrets key). ``cryptography`` is imported lazily.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from roost.cluster.errors import SessionTokenError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

Audience = Literal["session", "status", "claim"]
AUDIENCES: tuple[Audience, ...] = ("session", "status", "claim")
#: Longest token accepted (a token is ~200 characters).
MAX_TOKEN_CHARS = 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says."""

    audience: Audience
    session: str
    replica: str
    expires: float


class TokenSigner:
    """The hub's side: signs tokens with its private key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def from_file(cls, path: Path) -> TokenSigner:
        """The key in ``path`` (raw 32-byte Ed25519 seed), created with mode 0600 when absent."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            seed = path.read_bytes()
        except FileNotFoundError:
            seed = os.urandom(32)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, seed)
            finally:
                os.close(fd)
        if len(seed) != 32:
            raise SessionTokenError(f"the cluster signing key {path} is not a 32-byte Ed25519 seed "
                                    f"({len(seed)} bytes); remove it to have a new one made")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def public_key(self) -> str:
        """The public key, base64url of its 32 raw bytes (what replicas are configured with)."""
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return _b64(self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, audience: Audience, session: str, replica: str, ttl: float, now: float | None = None) -> str:
        payload = {"aud": audience, "sid": session, "rid": replica,
                   "exp": int((time.time() if now is None else now) + ttl)}
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{_b64(self._key.sign(body.encode('ascii')))}"


class TokenVerifier:
    """A replica's side: verifies tokens with the hub's public key."""

    def __init__(self, public_key: str) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            raw = _unb64(public_key)
            self._key: Ed25519PublicKey = Ed25519PublicKey.from_public_bytes(raw)
        except (ValueError, binascii.Error) as err:
            raise SessionTokenError(f"the hub public key {public_key[:16]!r}... is not base64url of 32 raw "
                                    "Ed25519 bytes") from err

    def verify(self, token: str, audience: Audience, replica: str, now: float | None = None) -> TokenClaims:
        """The claims of ``token`` if it is signed by the hub, for ``audience`` and ``replica``, unexpired."""
        from cryptography.exceptions import InvalidSignature

        if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise SessionTokenError("the session token is missing or malformed (expected PAYLOAD.SIGNATURE)")
        body, _, signature = token.partition(".")
        try:
            self._key.verify(_unb64(signature), body.encode("ascii"))
            payload: Any = json.loads(_unb64(body))
        except (InvalidSignature, ValueError, binascii.Error, UnicodeError) as err:
            raise SessionTokenError("the session token is not signed by the hub this replica trusts") from err
        if not isinstance(payload, dict) or payload.get("aud") not in AUDIENCES \
                or not isinstance(payload.get("sid"), str) or not isinstance(payload.get("rid"), str) \
                or not isinstance(payload.get("exp"), int):
            raise SessionTokenError("the session token's payload lacks aud, sid, rid or exp")
        if payload["aud"] != audience:
            raise SessionTokenError(f"the token is for {payload['aud']!r}, not {audience!r}")
        if payload["rid"] != replica:
            raise SessionTokenError(f"the token is for replica {payload['rid']}, not this replica ({replica})")
        if payload["exp"] < (time.time() if now is None else now):
            raise SessionTokenError("the session token has expired; ask the hub for a new session")
        return TokenClaims(payload["aud"], payload["sid"], payload["rid"], float(payload["exp"]))


__all__ = ["AUDIENCES", "MAX_TOKEN_CHARS", "Audience", "TokenClaims", "TokenSigner", "TokenVerifier"]
