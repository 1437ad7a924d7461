"""Authentication: admin API tokens, the console session key, bearer-token principals, enrolment."""

from __future__ import annotations

import logging
import secrets
import struct
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from roost.hub import contract, desired
from roost.hub.contract import PrincipalKind
from roost.hub.errors import AuthenticationError, GoneError, HubConflictError, UnprocessableError
from roost.hub.models import ApiToken, Device, EnrollToken, Meta
from roost.hub.names import check_name
from roost.hub.store.fleet import FleetStore
from roost.hub.store.records import Principal
from roost.hub.tokens import ADMIN_PREFIX, DEVICE_PREFIX, ENROLL_PREFIX, METRICS_PREFIX, hash_token, new_token

logger = logging.getLogger(__name__)

#: last_seen_at / last_used_at are written at most this often per device / token.
SEEN_THROTTLE = timedelta(seconds=10)

_KEY_PREFIX = "console.session_key."
_KEY_WORDS = 8


def _read_session_key(s: Session) -> bytes | None:
    rows = {str(k): int(v) for k, v in s.execute(select(Meta.key, Meta.value).where(Meta.key.startswith(_KEY_PREFIX)))}
    words = [rows.get(f"{_KEY_PREFIX}{i}") for i in range(_KEY_WORDS)]
    if any(w is None for w in words):
        return None
    return struct.pack(f">{_KEY_WORDS}i", *words)


class AuthStore(FleetStore):
    """API tokens, the console's session key, authentication and device enrolment."""

    # -- tokens ------------------------------------------------------------------------------------

    def admin_token_name(self, token_id: int) -> str | None:
        """The name of the admin API token ``token_id`` while it is valid, else None (console sessions)."""
        def run(s: Session) -> str | None:
            row = s.execute(select(ApiToken.name).where(ApiToken.id == token_id, ApiToken.role == PrincipalKind.ADMIN,
                                                        ApiToken.revoked_at.is_(None))).first()
            return None if row is None else str(row[0])
        return self._read(run)

    def console_session_key(self) -> bytes:
        """The console's cookie-signing key: random, created once (race-safe across hub processes).

        ``meta.value`` is an integer column, so the 256-bit key is kept as eight 32-bit words.
        """
        key = self._read(_read_session_key)
        if key is not None:
            return key

        def create(s: Session) -> bytes:
            existing = _read_session_key(s)
            if existing is not None:
                return existing
            words = struct.unpack(f">{_KEY_WORDS}i", secrets.token_bytes(4 * _KEY_WORDS))
            s.add_all(Meta(key=f"{_KEY_PREFIX}{i}", value=w) for i, w in enumerate(words))
            s.flush()
            return struct.pack(f">{_KEY_WORDS}i", *words)
        try:
            return self._write(create)
        except IntegrityError:  # another hub process created it first
            key = self._read(_read_session_key)
            if key is None:
                raise
            return key

    def admin_token_names(self) -> list[str]:
        """The names of the admin API tokens that still work (not revoked), oldest first."""
        return self._read(lambda s: [str(n) for n in s.scalars(
            select(ApiToken.name).where(ApiToken.role == PrincipalKind.ADMIN, ApiToken.revoked_at.is_(None))
            .order_by(ApiToken.id))])

    def create_admin_token(self, name: str = "admin") -> str:
        token = new_token(ADMIN_PREFIX)

        def run(s: Session) -> None:
            s.add(ApiToken(name=name, token_hash=hash_token(token), role=PrincipalKind.ADMIN, created_at=self.clock()))
        self._write(run)
        logger.info("created admin API token %r", name)
        return token

    def create_metrics_token(self, name: str = "metrics") -> str:
        """A token that reads the metrics routes only (``/metrics``, ``/metrics/fleet``, service discovery)."""
        token = new_token(METRICS_PREFIX)

        def run(s: Session) -> None:
            s.add(ApiToken(name=name, token_hash=hash_token(token), role=PrincipalKind.METRICS,
                           created_at=self.clock()))
        self._write(run)
        logger.info("created metrics token %r", name)
        return token

    def authenticate(self, token: str) -> Principal:
        """The principal of a bearer token; :class:`AuthenticationError` when unknown or revoked."""
        digest = hash_token(token)
        now = self.clock()
        if token.startswith(DEVICE_PREFIX):
            def find_device(s: Session) -> tuple[int, str, datetime | None, datetime | None] | None:
                row = s.execute(select(Device.id, Device.name, Device.revoked_at, Device.last_seen_at)
                                .where(Device.credential_hash == digest)).first()
                return None if row is None else (row[0], row[1], row[2], row[3])
            found = self._read(find_device)
            if found is None:
                raise AuthenticationError("unknown device credential", code="INVALID_CREDENTIAL")
            device_id, name, revoked_at, last_seen = found
            if revoked_at is not None:
                raise AuthenticationError(f"device {name} was revoked; enrol it again", code="DEVICE_REVOKED")
            if last_seen is None or now - last_seen >= SEEN_THROTTLE:
                self._write(lambda s: s.execute(update(Device).where(Device.id == device_id)
                                                .values(last_seen_at=now)))
            return Principal(PrincipalKind.DEVICE, device_id, name)

        def find_token(s: Session) -> tuple[int, str, datetime | None, datetime | None, str] | None:
            row = s.execute(select(ApiToken.id, ApiToken.name, ApiToken.revoked_at, ApiToken.last_used_at,
                                   ApiToken.role).where(ApiToken.token_hash == digest)).first()
            return None if row is None else (row[0], row[1], row[2], row[3], row[4])
        found_token = self._read(find_token)
        if found_token is None:
            raise AuthenticationError("unknown API token", code="INVALID_TOKEN")
        token_id, token_name, revoked, last_used, role = found_token
        if revoked is not None:
            raise AuthenticationError("this API token was revoked", code="TOKEN_REVOKED")
        if last_used is None or now - last_used >= timedelta(seconds=60):
            self._write(lambda s: s.execute(update(ApiToken).where(ApiToken.id == token_id)
                                            .values(last_used_at=now)))
        kind = PrincipalKind.METRICS if role == PrincipalKind.METRICS else PrincipalKind.ADMIN
        return Principal(kind, token_id, token_name)

    # -- enrolment ---------------------------------------------------------------------------------

    def create_enroll_token(self, group: str | None = None, ttl_seconds: int = 3600) -> contract.EnrollToken:
        if group is not None:
            check_name(group, "group name")
        if ttl_seconds <= 0:
            raise UnprocessableError("ttl_seconds must be positive", code="INVALID_TTL")
        token = new_token(ENROLL_PREFIX)
        now = self.clock()
        expires = now + timedelta(seconds=ttl_seconds)

        def run(s: Session) -> None:
            if group is not None:
                self._ensure_group(s, group)
            s.add(EnrollToken(token_hash=hash_token(token), group_name=group, created_at=now, expires_at=expires))
        self._write(run)
        return contract.EnrollToken(token=token, expires_at=expires, group=group)

    def enroll(self, token: str, name: str, labels: dict[str, Any] | None = None) -> contract.Enrollment:
        """Redeem a one-time enrolment token for a new device credential (exactly once)."""
        check_name(name, "device name")
        credential = new_token(DEVICE_PREFIX)
        now = self.clock()

        def run(s: Session) -> None:
            row = s.scalars(select(EnrollToken).where(EnrollToken.token_hash == hash_token(token))
                            .with_for_update()).first()
            if row is None:
                raise AuthenticationError("unknown enrolment token", code="ENROLL_TOKEN_INVALID")
            if row.used_at is not None:
                raise GoneError("this enrolment token was already used", code="ENROLL_TOKEN_USED")
            if row.expires_at <= now:
                raise AuthenticationError("this enrolment token has expired; ask for a new one",
                                          code="ENROLL_TOKEN_EXPIRED")
            if s.scalar(select(Device.id).where(Device.name == name)) is not None:
                raise HubConflictError(f"a device named {name} is already enrolled", code="DEVICE_EXISTS")
            # The guarded UPDATE is what makes redemption once-only, whatever the isolation level.
            claimed = s.execute(update(EnrollToken).where(EnrollToken.id == row.id, EnrollToken.used_at.is_(None))
                                .values(used_at=now))
            if getattr(claimed, "rowcount", 0) != 1:
                raise GoneError("this enrolment token was already used", code="ENROLL_TOKEN_USED")
            # A new device starts at the current revision: its first poll (after=0) is answered at once
            # with its state, and nothing wakes the fleet's long polls (only a hub that has never
            # changed anything moves its counter, once). Joining a group with a released deployment
            # moves it as any change does.
            revision = desired.current_revision(s) or desired.bump_revision(s)
            device = Device(name=name, credential_hash=hash_token(credential), labels=dict(labels or {}),
                            created_at=now, last_seen_at=now, reported={}, desired_revision=revision)
            s.add(device)
            try:
                s.flush()
            except IntegrityError as err:
                raise HubConflictError(f"a device named {name} is already enrolled", code="DEVICE_EXISTS") from err
            s.execute(update(EnrollToken).where(EnrollToken.id == row.id).values(device_id=device.id))
            if row.group_name is not None:
                self._join_group(s, row.group_name, device, now)

        try:
            self._write(run)
        except IntegrityError as err:  # a concurrent enrolment took the name at commit
            raise HubConflictError(f"a device named {name} is already enrolled", code="DEVICE_EXISTS") from err
        logger.info("device %s enrolled", name)
        return contract.Enrollment(device=name, credential=credential)
