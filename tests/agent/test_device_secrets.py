"""The device's sealed secret store and its refresher (no agent process: the parts on their own)."""

from __future__ import annotations

import logging
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from roost.agent.errors import AgentError
from roost.agent.secrets import DeviceSecretStore, SecretRefresher, check_request
from roost.errors import NotFoundError
from roost.hub.client import HubUnreachableError
from roost.hub.contract.secrets import DeviceSecret, DeviceSecrets, DeviceSecretVersion
from roost.sealed import SealError, load_or_create_key, seal, unseal

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"
VALUE = "device-value-1a2b3c"
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _answer(value: str = VALUE, *, previous: str | None = None, refresh: float | None = None) -> DeviceSecrets:
    versions = [DeviceSecretVersion(version_id="v2", stages=["AWSCURRENT"], created_at=T0, secret_string=value)]
    if previous is not None:
        versions.append(DeviceSecretVersion(version_id="v1", stages=["AWSPREVIOUS"], created_at=T0,
                                            secret_string=previous))
    return DeviceSecrets(secrets=[
        DeviceSecret(name=ARN, versions=versions),
        DeviceSecret(name="blob", versions=[DeviceSecretVersion(version_id="b1", stages=["AWSCURRENT"], created_at=T0,
                                                                binary=True, secret_binary="AAE=")])],
        refresh_minutes=refresh)


def test_sealed_on_disk_and_read_back_after_restart(tmp_path: Path) -> None:
    store = DeviceSecretStore(tmp_path / "secrets")
    assert store.replace(_answer(previous="old")) is True
    assert store.replace(_answer(previous="old")) is False  # unchanged: not rewritten
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    for name in ("key", "secrets.sealed"):
        assert stat.S_IMODE((tmp_path / "secrets" / name).stat().st_mode) == 0o600
    assert VALUE.encode() not in (tmp_path / "secrets" / "secrets.sealed").read_bytes()
    again = DeviceSecretStore(tmp_path / "secrets")
    again.load()
    assert again.names() == [ARN, "blob"]
    assert again.resolve("db") == ARN and again.resolve(ARN) == ARN and again.resolve("x") is None
    assert again.value(ARN, None, None) == {"secretId": ARN, "versionId": "v2", "versionStage": ["AWSCURRENT"],
                                            "secretValue": {"secretString": VALUE}}
    assert again.value(ARN, "v1", None)["secretValue"] == {"secretString": "old"}
    assert again.value(ARN, None, "AWSPREVIOUS")["versionId"] == "v1"
    assert again.value("blob", None, None)["secretValue"] == {"secretBinary": "AAE="}
    for args, what in (((ARN, "v9", None), "version id v9"), ((ARN, None, "MINE"), "version stage MINE"),
                       (("other", None, None), "secret other is not on this device")):
        with pytest.raises(NotFoundError) as err:
            again.value(*args)
        assert err.value.code == "SECRET_NOT_FOUND" and what in err.value.message
    # A secret the hub no longer deploys is dropped.
    assert again.replace(DeviceSecrets()) is True and again.names() == []


def test_a_copy_that_does_not_open_serves_nothing_and_says_so(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    store = DeviceSecretStore(tmp_path / "secrets")
    store.replace(_answer())
    (tmp_path / "secrets" / "key").write_bytes(os.urandom(32))
    fresh = DeviceSecretStore(tmp_path / "secrets")
    with caplog.at_level(logging.ERROR):
        fresh.load()
    assert fresh.names() == []
    assert "cannot read the device's secrets" in caplog.text and "sealed with another key" in caplog.text
    assert VALUE not in caplog.text


def test_sealing_binds_the_blob_and_checks_the_key(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "k")
    assert load_or_create_key(tmp_path / "k") == key  # created once, then read
    blob = seal(key, b"v", b"here")
    assert unseal(key, blob, b"here", "x") == b"v"
    with pytest.raises(SealError, match="does not open"):
        unseal(key, blob, b"elsewhere", "x")
    with pytest.raises(SealError, match="not a sealed value"):
        unseal(key, b"junk", b"here", "x")
    (tmp_path / "short").write_bytes(b"123")
    with pytest.raises(SealError) as short:
        load_or_create_key(tmp_path / "short")
    assert short.value.code == "SECRET_KEY_INVALID"
    os.chmod(tmp_path / "k", 0o644)
    load_or_create_key(tmp_path / "k")
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_requests_are_checked_as_greengrass_checks_them() -> None:
    assert check_request("a", None, "AWSCURRENT") == ("a", None, "AWSCURRENT")
    for args, what in (((None, None, None), "secretId is required"), (("", None, None), "secretId is required"),
                       (("a", 3, None), "versionId must be a string"),
                       (("a", "v1", "AWSCURRENT"), "both set")):
        with pytest.raises(AgentError) as err:
            check_request(*args)
        assert err.value.code == "SECRET_REQUEST_INVALID" and what in err.value.message


async def test_refresher_keeps_the_copy_when_the_hub_is_away(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = DeviceSecretStore(tmp_path / "secrets")
    answers: list[DeviceSecrets | Exception] = [_answer(refresh=2), HubUnreachableError("no route"),
                                               HubUnreachableError("no route"), _answer("rotated")]

    async def fetch() -> DeviceSecrets:
        item = answers.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    refresher = SecretRefresher(store, fetch, default_interval=900)
    with caplog.at_level(logging.INFO):
        assert await refresher.refresh() is True
        assert refresher.interval == 120  # periodicRefreshIntervalMin
        assert await refresher.refresh() is False and await refresher.refresh() is False
        assert store.value(ARN, None, None)["secretValue"]["secretString"] == VALUE
        assert await refresher.refresh() is True
    assert store.value(ARN, None, None)["secretValue"]["secretString"] == "rotated"
    assert refresher.interval == 900
    assert caplog.text.count("cannot refresh the device's secrets") == 1  # the outage logged once
    assert "refreshed from the hub again" in caplog.text
    assert VALUE not in caplog.text and "rotated" not in caplog.text
