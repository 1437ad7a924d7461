"""Secrets on the wire: the admin routes' bodies, what a device receives, and secret names.

=====================================  ======================================  ======================
Route                                  Request                                 Response
=====================================  ======================================  ======================
``PUT /v1/secrets/{name}``             :class:`SecretPut`                      :class:`Secret`
``GET /v1/secrets``                                                            list of :class:`Secret`
``DELETE /v1/secrets/{name}``                                                  :class:`Secret`
``GET /v1/device/secrets``                                                     :class:`DeviceSecrets`
=====================================  ======================================  ======================

The admin routes never answer a value; only a device receives values, and only those of the secrets
its deployments name (``cloudSecrets`` of ``aws.greengrass.SecretManager``).

Names are those of AWS Secrets Manager: a plain name (``db-password``, ``prod/db``) or a secret ARN
(``arn:aws:secretsmanager:us-east-1:123456789012:secret:db-password-AbCdEf``). A component may ask
for an ARN-named secret by its ARN or by its short name (the part after ``secret:`` without the
six-character suffix AWS appends), as on Greengrass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

#: The stage of a secret's newest version, and of the one before it (as in AWS Secrets Manager).
CURRENT = "AWSCURRENT"
PREVIOUS = "AWSPREVIOUS"
#: The largest value (AWS Secrets Manager's limit: 64 KiB).
MAX_VALUE_BYTES = 65536
MAX_NAME = 512
MAX_ARN = 2048
#: Greengrass' pattern of a secret ARN (SecretManager.VALID_SECRET_ARN_PATTERN, in words: partition,
#: region, 12-digit account, ``secret:``, then the name with an optional ``-suffix``).
ARN_PATTERN = re.compile(r"arn:([^:]+):secretsmanager:[a-z0-9\-]+:[0-9]{12}:secret:([a-zA-Z0-9\\]+/)*"
                         r"[a-zA-Z0-9/_+=,.@\-]+(-[a-zA-Z0-9]+)?")
#: A plain secret name: AWS Secrets Manager's characters.
NAME_PATTERN = re.compile(r"[A-Za-z0-9/_+=.@\-]+")
_SUFFIX = re.compile(r"(.+)-[A-Za-z0-9]{6}")


def is_arn(name: str) -> bool:
    return len(name) <= MAX_ARN and ARN_PATTERN.fullmatch(name) is not None


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a secret name (``None`` when it is one)."""
    if not name:
        return "a secret name must not be empty"
    if name.startswith("arn:"):
        if is_arn(name):
            return None
        return ("a secret ARN must look like arn:aws:secretsmanager:REGION:ACCOUNT(12 digits):secret:NAME "
                f"(got {name[:100]!r})")
    if len(name) > MAX_NAME:
        return f"a secret name is at most {MAX_NAME} characters (got {len(name)})"
    if NAME_PATTERN.fullmatch(name) is None or ".." in name.split("/"):
        return (f"secret name {name[:100]!r} has characters AWS Secrets Manager does not allow: use letters, "
                "digits and /_+=.@- (or a secret ARN)")
    return None


def short_names(name: str) -> tuple[str, ...]:
    """The other names a component may ask for ``name`` by: an ARN's name with and without its suffix."""
    if not name.startswith("arn:"):
        return ()
    tail = name.split(":secret:", 1)[1] if ":secret:" in name else ""
    if not tail:
        return ()
    match = _SUFFIX.fullmatch(tail)
    return (match.group(1), tail) if match else (tail,)


def resolve_secret_id(secret_id: str, names: Iterable[str]) -> str | None:
    """The stored name ``secret_id`` denotes: itself, or the one ARN whose short name it is."""
    known = list(names)
    if secret_id in known:
        return secret_id
    matches = sorted(n for n in known if secret_id in short_names(n))
    return matches[0] if len(matches) == 1 else None


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SecretPut(_Wire):
    """A new value (one of the two): it becomes the AWSCURRENT version, the previous one AWSPREVIOUS."""

    secret_string: str | None = Field(None, repr=False, description="A text value (at most 64 KiB)")
    secret_binary: str | None = Field(None, repr=False, description="A binary value, base64 (at most 64 KiB)")


class SecretVersion(_Wire):
    version_id: str
    stages: list[str] = Field(default_factory=list)
    created_at: datetime
    binary: bool = False


class Secret(_Wire):
    """A secret as the admin API shows it: versions and stages, never a value."""

    name: str
    versions: list[SecretVersion] = Field(default_factory=list)


class DeviceSecretVersion(SecretVersion):
    """One version with its value (to a device only)."""

    secret_string: str | None = Field(None, repr=False)
    #: base64
    secret_binary: str | None = Field(None, repr=False)


class DeviceSecret(_Wire):
    name: str
    versions: list[DeviceSecretVersion] = Field(default_factory=list)


class DeviceSecrets(_Wire):
    """``GET /v1/device/secrets``: the secrets the device's deployments name, with their values.

    ``missing`` names configured secrets the hub does not have (the device keeps no stale copy of
    them); ``refresh_minutes`` is ``periodicRefreshIntervalMin`` of the configuration, if given.
    """

    secrets: list[DeviceSecret] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)
    refresh_minutes: float | None = None


__all__ = [
    "ARN_PATTERN", "CURRENT", "MAX_VALUE_BYTES", "PREVIOUS", "DeviceSecret", "DeviceSecretVersion",
    "DeviceSecrets", "Secret", "SecretPut", "SecretVersion", "is_arn", "name_problem", "resolve_secret_id",
    "short_names",
]
