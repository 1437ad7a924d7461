"""Secrets: the hub is the secret store (Roost has no cloud), as AWS Secrets Manager is for Greengrass.

An administrator puts a value under a name (``PUT /v1/secrets/{name}``): it becomes a new version
with a fresh version id, staged ``AWSCURRENT``; the version that was current becomes ``AWSPREVIOUS``
and the one before that is deleted (two versions per name are kept). Values are sealed in the
database with the hub's key (:mod:`roost.sealed`; ``HUB_ROOT/secrets.key`` unless the hub is told
another path), never returned by the admin API and never logged.

A device receives the values of the secrets named by ``cloudSecrets`` in the configuration that
its deployments in effect give ``aws.greengrass.SecretManager`` (the union over the device's own
deployment and its groups'): each secret's ``AWSCURRENT`` version, plus the versions staged with
one of the entry's ``labels``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from roost.hub import desired
from roost.hub.contract.secrets import (
    CURRENT,
    MAX_VALUE_BYTES,
    PREVIOUS,
    DeviceSecret,
    DeviceSecrets,
    DeviceSecretVersion,
    Secret,
    SecretPut,
    SecretVersion,
    name_problem,
    resolve_secret_id,
)
from roost.hub.errors import (
    AuthenticationError,
    HubInvalidInputError,
    HubNotFoundError,
    HubServerError,
    InvalidNameError,
    UnprocessableError,
)
from roost.hub.models import SecretVersionRow
from roost.hub.store.base import StoreBase
from roost.sealed import SealError, load_or_create_key, seal, unseal

logger = logging.getLogger(__name__)

#: The AWS-provided component whose configuration names the secrets a device receives.
SECRET_MANAGER = "aws.greengrass.SecretManager"
#: The largest number of cloudSecrets entries of one deployment.
MAX_CLOUD_SECRETS = 1000


@dataclass(frozen=True)
class CloudSecret:
    """One ``cloudSecrets`` entry: a secret name (or ARN) and the extra stages to deliver."""

    name: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Row:
    """A version row read out of its transaction."""

    version_id: str
    stages: tuple[str, ...]
    binary: bool
    sealed: bytes
    created_at: datetime


@dataclass
class SecretManagerConfig:
    secrets: list[CloudSecret] = field(default_factory=list)
    refresh_minutes: float | None = None


def _merge_part(update: Any) -> Mapping[str, Any]:
    if not isinstance(update, Mapping):
        return {}
    merge = update.get("MERGE", {})
    if isinstance(merge, str):  # Greengrass' deployment API carries MERGE as a JSON document
        try:
            merge = json.loads(merge)
        except ValueError:
            return {}
    return merge if isinstance(merge, Mapping) else {}


def parse_secret_manager_config(update: Any) -> SecretManagerConfig:
    """``cloudSecrets`` and ``periodicRefreshIntervalMin`` of a configuration update of
    ``aws.greengrass.SecretManager`` (``{"MERGE": {...}, "RESET": [...]}``), checked.

    Raises :class:`UnprocessableError` (``INVALID_CONFIGURATION``) naming the field that is wrong.
    """
    where = f"configuration.{SECRET_MANAGER}.MERGE"
    merge = update.get("MERGE") if isinstance(update, Mapping) else None
    if isinstance(merge, str):
        try:
            json.loads(merge)
        except ValueError as err:
            raise UnprocessableError(f"{where} is a string that is not a JSON document",
                                     code="INVALID_CONFIGURATION") from err
    part = _merge_part(update)
    out = SecretManagerConfig()
    entries = part.get("cloudSecrets", [])
    if not isinstance(entries, list):
        raise UnprocessableError(f"{where}.cloudSecrets must be a list of {{\"arn\": NAME}} objects",
                                 code="INVALID_CONFIGURATION")
    if len(entries) > MAX_CLOUD_SECRETS:
        raise UnprocessableError(f"{where}.cloudSecrets has {len(entries)} entries (at most {MAX_CLOUD_SECRETS})",
                                 code="INVALID_CONFIGURATION")
    for i, entry in enumerate(entries):
        arn = entry.get("arn") if isinstance(entry, Mapping) else None
        if not isinstance(arn, str):
            raise UnprocessableError(f"{where}.cloudSecrets[{i}] must be an object with an \"arn\" (a secret ARN or "
                                     "the name of a secret on this hub)", code="INVALID_CONFIGURATION")
        problem = name_problem(arn)
        if problem is not None:
            raise UnprocessableError(f"{where}.cloudSecrets[{i}].arn: {problem}", code="INVALID_CONFIGURATION")
        labels = entry.get("labels", [])
        if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
            raise UnprocessableError(f"{where}.cloudSecrets[{i}].labels must be a list of version stages "
                                     "(AWSCURRENT, AWSPREVIOUS)", code="INVALID_CONFIGURATION")
        out.secrets.append(CloudSecret(arn, tuple(labels)))
    interval = part.get("periodicRefreshIntervalMin")
    if interval is not None:
        if isinstance(interval, str):
            try:
                interval = float(interval)
            except ValueError:
                interval = None
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
            raise UnprocessableError(f"{where}.periodicRefreshIntervalMin must be a number of minutes (0 or more)",
                                     code="INVALID_CONFIGURATION")
        out.refresh_minutes = float(interval) or None
    return out


def check_secret_name(name: str) -> str:
    problem = name_problem(name)
    if problem is not None:
        raise InvalidNameError(problem, code="INVALID_SECRET_NAME")
    return name


def _value(body: SecretPut) -> tuple[bytes, bool]:
    """The value's bytes and whether it is binary; the value itself is never in an error message."""
    if (body.secret_string is None) == (body.secret_binary is None):
        raise HubInvalidInputError("give exactly one of secret_string and secret_binary", code="INVALID_SECRET_VALUE")
    if body.secret_string is not None:
        raw, binary = body.secret_string.encode(), False
    else:
        try:
            raw, binary = base64.b64decode(body.secret_binary or "", validate=True), True
        except (binascii.Error, ValueError) as err:
            raise HubInvalidInputError("secret_binary is not valid base64", code="INVALID_SECRET_VALUE") from err
    if not raw:
        raise HubInvalidInputError("a secret value must not be empty", code="INVALID_SECRET_VALUE")
    if len(raw) > MAX_VALUE_BYTES:
        raise HubInvalidInputError(f"a secret value is at most {MAX_VALUE_BYTES} bytes (this one has {len(raw)})",
                                   code="INVALID_SECRET_VALUE")
    return raw, binary


def _aad(name: str, version_id: str) -> bytes:
    return f"roost-secret\x00{name}\x00{version_id}".encode()


def _info(name: str, rows: list[SecretVersionRow]) -> Secret:
    rows = sorted(rows, key=lambda r: CURRENT not in r.stages)  # AWSCURRENT first
    return Secret(name=name, versions=[SecretVersion(version_id=r.version_id, stages=list(r.stages),
                                                     created_at=r.created_at, binary=r.binary) for r in rows])


class SecretStore(StoreBase):
    """Secrets: put, list, delete (admin), and what one device receives."""

    #: The hub's key file (set by :func:`roost.hub.app.open_store`); created on first use.
    secret_key_path: Path | None = None
    _secret_key: bytes | None = None

    def _key(self) -> bytes:
        if self._secret_key is None:
            if self.secret_key_path is None:
                raise HubServerError("this hub has no secrets key file configured", code="SECRET_KEY_MISSING")
            try:
                self._secret_key = load_or_create_key(self.secret_key_path)
            except SealError as err:
                raise HubServerError(err.message, code=err.code) from err
        return self._secret_key

    def ensure_secret_key(self) -> Path | None:
        """Create the key file now (``roost hub init``); its path."""
        self._key()
        return self.secret_key_path

    def _lock_name(self, s: Session, name: str) -> None:
        """Serialise writers of one name (SQLite's write transactions already are)."""
        if self.db.is_postgresql:
            key = int.from_bytes(hashlib.sha256(b"roost-secret:" + name.encode()).digest()[:8], "big", signed=True)
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def put_secret(self, name: str, body: SecretPut) -> Secret:
        """A new version of ``name`` (created if new), staged AWSCURRENT."""
        check_secret_name(name)
        raw, binary = _value(body)
        key = self._key()
        now = self.clock()
        version_id = str(uuid.uuid4())
        sealed = seal(key, raw, _aad(name, version_id))

        def run(s: Session) -> Secret:
            self._lock_name(s, name)
            kept: list[SecretVersionRow] = []
            for row in s.scalars(select(SecretVersionRow).where(SecretVersionRow.name == name)):
                if CURRENT in row.stages:
                    row.stages = [PREVIOUS]
                    kept.append(row)
                else:
                    s.delete(row)
            new = SecretVersionRow(name=name, version_id=version_id, stages=[CURRENT], binary=binary,
                                   sealed=sealed, created_at=now)
            s.add(new)
            s.flush()
            return _info(name, [*kept, new])
        info = self._write(run)
        logger.info("secret %s: new version %s (AWSCURRENT)", name, version_id)
        return info

    def list_secrets(self) -> list[Secret]:
        def run(s: Session) -> list[Secret]:
            by_name: dict[str, list[SecretVersionRow]] = {}
            for row in s.scalars(select(SecretVersionRow).order_by(SecretVersionRow.name)):
                by_name.setdefault(row.name, []).append(row)
            return [_info(n, rows) for n, rows in sorted(by_name.items())]
        return self._read(run)

    def delete_secret(self, name: str) -> Secret:
        """Delete every version of ``name``; devices drop it at their next refresh."""
        check_secret_name(name)

        def run(s: Session) -> Secret:
            self._lock_name(s, name)
            rows = list(s.scalars(select(SecretVersionRow).where(SecretVersionRow.name == name)))
            if not rows:
                raise HubNotFoundError(f"secret {name} does not exist", code="SECRET_NOT_FOUND")
            info = _info(name, rows)
            s.execute(delete(SecretVersionRow).where(SecretVersionRow.name == name))
            return info
        info = self._write(run)
        logger.info("secret %s deleted", name)
        return info

    def device_secrets(self, device_id: int) -> DeviceSecrets:
        """The secrets the device's deployments in effect name, with their values (see the module doc)."""
        key = self._key()

        def run(s: Session) -> tuple[SecretManagerConfig, dict[str, list[_Row]]]:
            refs = desired.device_refs(s, [device_id])
            if device_id not in refs:
                raise AuthenticationError("this device was revoked; enrol it again", code="DEVICE_REVOKED")
            config = SecretManagerConfig()
            for update in desired.effective_configurations(s, refs[device_id], SECRET_MANAGER):
                part = parse_secret_manager_config(update)
                config.secrets.extend(part.secrets)
                if part.refresh_minutes is not None:
                    config.refresh_minutes = part.refresh_minutes
            rows: dict[str, list[_Row]] = {}
            if config.secrets:
                names = list(s.scalars(select(SecretVersionRow.name).distinct()))
                wanted = {resolve_secret_id(c.name, names) for c in config.secrets} - {None}
                for row in s.scalars(select(SecretVersionRow).where(SecretVersionRow.name.in_(sorted(
                        n for n in wanted if n is not None)))):
                    rows.setdefault(row.name, []).append(_Row(row.version_id, tuple(row.stages), row.binary,
                                                              row.sealed, row.created_at))
            return config, rows
        config, rows = self._read(run)
        out = DeviceSecrets(refresh_minutes=config.refresh_minutes)
        stages: dict[str, set[str]] = {}
        order: list[str] = []
        for entry in config.secrets:
            stored = resolve_secret_id(entry.name, rows)
            if stored is None:
                if entry.name not in out.missing:
                    out.missing.append(entry.name)
                continue
            if stored not in stages:
                order.append(stored)
            stages.setdefault(stored, {CURRENT}).update(entry.labels)
        for name in order:
            versions = []
            for row in sorted(rows[name], key=lambda r: CURRENT not in r.stages):  # AWSCURRENT first
                if not stages[name] & set(row.stages):
                    continue
                try:
                    raw = unseal(key, row.sealed, _aad(name, row.version_id), f"secret {name} version {row.version_id}")
                except SealError as err:
                    raise HubServerError(err.message, code=err.code) from err
                versions.append(DeviceSecretVersion(
                    version_id=row.version_id, stages=list(row.stages), created_at=row.created_at, binary=row.binary,
                    secret_binary=base64.b64encode(raw).decode() if row.binary else None,
                    secret_string=None if row.binary else raw.decode()))
            out.secrets.append(DeviceSecret(name=name, versions=versions))
        return out
