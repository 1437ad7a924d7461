"""The device's copy of the secrets the hub deploys to it, sealed at rest, served offline.

What a device receives: the secrets that ``cloudSecrets`` of ``aws.greengrass.SecretManager`` names
in its hub deployments (``GET /v1/device/secrets``, see :mod:`roost.hub.store.secrets`). The agent
keeps them in ``ROOT/secrets/secrets.sealed``, sealed (AES-256-GCM, :mod:`roost.sealed`) with the
device key ``ROOT/secrets/key``; the folder is 0700 and both files 0600, owned by the agent's user,
so components running as their own users (an agent run as root) cannot read them. The plaintext
lives only in the agent's memory, and a value is never logged.

When the copy is refreshed (:class:`SecretRefresher`): before every hub revision is applied (so a
component a deployment starts finds the secrets that deployment names), every
``periodicRefreshIntervalMin`` of the configuration (else every ``ROOST_SECRETS_REFRESH_SECONDS``,
default 900 s), and when a component asks ``GetSecretValue`` with ``refresh: true``. A refresh that
cannot reach the hub keeps the copy as it is: after a restart with the hub down the agent serves
what it last received. A secret the hub no longer deploys to the device is dropped at the next
successful refresh.

Local-only agents (no hub) have no secrets: the hub is Roost's secret store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from roost.agent.errors import AgentError
from roost.errors import NotFoundError, RoostError
from roost.hub.contract.secrets import CURRENT, DeviceSecret, DeviceSecrets, resolve_secret_id
from roost.sealed import SealError, load_or_create_key, seal, unseal

log = logging.getLogger(__name__)

SEALED_FILE = "secrets.sealed"
KEY_FILE = "key"
_AAD = b"roost-agent-secrets\x00v1"
DEFAULT_REFRESH_SECONDS = 900.0
#: The longest a ``refresh: true`` request waits for the hub before answering from the local copy.
REFRESH_ON_REQUEST_TIMEOUT = 10.0


class DeviceSecretStore:
    """The sealed local copy and its plaintext in memory (``ROOT/secrets``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._secrets: dict[str, DeviceSecret] = {}
        #: Set by the hub sync: fetch from the hub now (``GetSecretValue`` with ``refresh``).
        self.refresher: Callable[[], Awaitable[bool]] | None = None

    @property
    def path(self) -> Path:
        return self.folder / SEALED_FILE

    def _key(self) -> bytes:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        return load_or_create_key(self.folder / KEY_FILE)

    def load(self) -> None:
        """Read the sealed copy (none: no secrets). A copy that does not open is logged and ignored."""
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            self._secrets = {}
            return
        try:
            data = json.loads(unseal(self._key(), blob, _AAD, f"the device's secrets file {self.path}"))
            answer = DeviceSecrets.model_validate(data)
        except (SealError, ValueError) as err:
            message = err.message if isinstance(err, RoostError) else "its contents are not valid"
            log.error("cannot read the device's secrets (%s); none are served until the next refresh from the hub",
                      message)
            self._secrets = {}
            return
        self._secrets = {s.name: s for s in answer.secrets}
        log.info("%d secret(s) loaded from %s", len(self._secrets), self.path)

    def replace(self, answer: DeviceSecrets) -> bool:
        """Keep exactly the secrets of ``answer`` (sealed to disk first); whether anything changed."""
        new = {s.name: s for s in answer.secrets}
        if new == self._secrets:
            return False
        stored = DeviceSecrets(secrets=list(new.values()))
        blob = seal(self._key(), stored.model_dump_json().encode(), _AAD)
        tmp = self.path.with_name(f".{SEALED_FILE}.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._secrets = new
        return True

    def names(self) -> list[str]:
        return sorted(self._secrets)

    def resolve(self, secret_id: str) -> str | None:
        """The stored name ``secret_id`` denotes (itself, or an ARN by its short name), if any."""
        return resolve_secret_id(secret_id, self._secrets)

    def value(self, name: str, version_id: str | None, version_stage: str | None) -> dict[str, Any]:
        """The ``GetSecretValue`` response for stored secret ``name`` (camelCase, as on the wire)."""
        secret = self._secrets.get(name)
        if secret is None:
            raise NotFoundError(f"secret {name} is not on this device: deploy aws.greengrass.SecretManager with "
                                "it in cloudSecrets (docs/secrets.md)", code="SECRET_NOT_FOUND")
        if version_id is not None:
            found = [v for v in secret.versions if v.version_id == version_id]
            if not found:
                raise NotFoundError(f"version id {version_id} of secret {name} is not on this device",
                                    code="SECRET_NOT_FOUND")
        else:
            stage = version_stage or CURRENT
            found = [v for v in secret.versions if stage in v.stages]
            if not found:
                raise NotFoundError(f"version stage {stage} of secret {name} is not on this device (a stage other "
                                    "than AWSCURRENT needs to be in the cloudSecrets entry's labels)",
                                    code="SECRET_NOT_FOUND")
        version = found[0]
        if version.binary:
            value = {"secretBinary": version.secret_binary or ""}
        else:
            value = {"secretString": version.secret_string or ""}
        return {"secretId": name, "versionId": version.version_id, "versionStage": list(version.stages),
                "secretValue": value}


def check_request(secret_id: Any, version_id: Any, version_stage: Any) -> tuple[str, str | None, str | None]:
    """The fields of a ``GetSecretValue`` request, checked as Greengrass checks them.

    Greengrass answers a missing ``secretId``, or both ``versionId`` and ``versionStage``, with a
    ``ServiceError``; so does Roost (an :class:`AgentError`), with a message naming the field.
    """
    if not isinstance(secret_id, str) or not secret_id:
        raise AgentError("secretId is required: the secret's ARN or name", code="SECRET_REQUEST_INVALID")
    for field, value in (("versionId", version_id), ("versionStage", version_stage)):
        if value is not None and not isinstance(value, str):
            raise AgentError(f"{field} must be a string", code="SECRET_REQUEST_INVALID")
    if version_id and version_stage:
        raise AgentError("versionId and versionStage are both set: give at most one", code="SECRET_REQUEST_INVALID")
    return secret_id, version_id or None, version_stage or None


class SecretRefresher:
    """Fetches the device's secrets from the hub into a :class:`DeviceSecretStore`."""

    def __init__(self, store: DeviceSecretStore, fetch: Callable[[], Awaitable[DeviceSecrets]], *,
                 default_interval: float = DEFAULT_REFRESH_SECONDS) -> None:
        self.store = store
        self.fetch = fetch
        self.default_interval = default_interval
        self.interval = default_interval
        self._lock = asyncio.Lock()
        self._failing = False
        self._missing: list[str] = []
        self.last_success = 0.0

    async def refresh(self) -> bool:
        """One fetch; False (the local copy unchanged) when the hub cannot be asked."""
        async with self._lock:
            try:
                answer = await self.fetch()
            except RoostError as err:
                if not self._failing:
                    log.warning("cannot refresh the device's secrets from the hub (%s); serving the local copy "
                                "(%d secret(s))", err.message, len(self.store.names()))
                    self._failing = True
                return False
            if self._failing:
                log.info("device secrets refreshed from the hub again")
                self._failing = False
            changed = await asyncio.to_thread(self.store.replace, answer)
            self.interval = answer.refresh_minutes * 60 if answer.refresh_minutes else self.default_interval
            self.last_success = time.monotonic()
            if changed:
                log.info("device secrets updated: %s", ", ".join(self.store.names()) or "none")
            if answer.missing != self._missing:
                self._missing = list(answer.missing)
                if answer.missing:
                    log.warning("cloudSecrets names secret(s) the hub does not have: %s (`roost secret put`)",
                                ", ".join(answer.missing))
            return True

    async def run(self) -> None:
        """Refresh every ``interval`` seconds (the configuration's periodicRefreshIntervalMin, or the default)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception as err:  # keep refreshing; the error's text could quote a value: its type only
                log.error("device secrets refresh failed unexpectedly (%s)", type(err).__name__)
