"""Secrets on the hub: the store (SQLite and PostgreSQL), sealing at rest, what a device receives, the REST API."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from roost.hub.contract import DeploymentCreate
from roost.hub.contract.secrets import SecretPut, resolve_secret_id, short_names
from roost.hub.errors import (
    AuthenticationError,
    HubInvalidInputError,
    HubNotFoundError,
    HubServerError,
    InvalidNameError,
    UnprocessableError,
)
from roost.hub.models import SecretVersionRow
from roost.hub.store import Store
from tests.hub.conftest import FakeClock, HubServer, enroll_device, publish_to_store
from tests.hub.test_store import enrol

SM = "aws.greengrass.SecretManager"
ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-password-AbCdEf"
VALUE = "s3cr3t-value-7f1e2d"


def _sm(*entries: dict[str, object], refresh: float | None = None) -> dict[str, object]:
    merge: dict[str, object] = {"cloudSecrets": list(entries)}
    if refresh is not None:
        merge["periodicRefreshIntervalMin"] = refresh
    return {"MERGE": merge}


def _deploy(store: Store, target: str, config: dict[str, object], **components: str) -> None:
    store.create_deployment(DeploymentCreate(target=target, components={SM: "2.2.0", **components},
                                             configuration={SM: config}))


def test_put_rotates_stages_and_keeps_two_versions(store: Store, clock: FakeClock) -> None:
    first = store.put_secret("db/password", SecretPut(secret_string="one"))
    assert [v.stages for v in first.versions] == [["AWSCURRENT"]]
    clock.advance(seconds=1)
    second = store.put_secret("db/password", SecretPut(secret_string="two"))
    assert [v.stages for v in second.versions] == [["AWSCURRENT"], ["AWSPREVIOUS"]]
    assert second.versions[1].version_id == first.versions[0].version_id
    clock.advance(seconds=1)
    third = store.put_secret("db/password", SecretPut(secret_binary=base64.b64encode(b"\x00\xff").decode()))
    assert [v.version_id for v in third.versions] == [third.versions[0].version_id, second.versions[0].version_id]
    assert third.versions[0].binary and not third.versions[1].binary
    listed = store.list_secrets()
    assert [s.name for s in listed] == ["db/password"]
    assert listed[0] == third
    dumped = json.dumps([s.model_dump(mode="json") for s in listed])
    assert "two" not in dumped and "AP8=" not in dumped  # the admin view has no values


def test_values_are_sealed_in_the_database(store: Store, tmp_path: Path) -> None:
    store.put_secret(ARN, SecretPut(secret_string=VALUE))
    with store.db.read() as s:
        sealed = s.scalars(select(SecretVersionRow.sealed)).one()
    assert VALUE.encode() not in sealed and len(sealed) > len(VALUE)
    if store.db.is_sqlite:
        for path in (tmp_path).rglob("hub.db*"):
            assert VALUE.encode() not in path.read_bytes(), path
    key = store.secret_key_path
    assert key is not None and stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    # A hub with another key cannot open the values (a replica that made its own key): said clearly.
    device = enrol(store, "k-1")
    _deploy(store, "device:k-1", _sm({"arn": ARN}))
    assert store.device_secrets(device).secrets[0].versions[0].secret_string == VALUE
    key.write_bytes(os.urandom(32))
    store._secret_key = None
    with pytest.raises(HubServerError) as err:
        store.device_secrets(device)
    assert err.value.code == "SECRET_UNSEAL_FAILED" and ARN in err.value.message
    assert VALUE not in err.value.message


def test_bad_names_and_values_are_refused(store: Store) -> None:
    for name, where in (("arn:aws:secretsmanager:us-east-1:12:secret:x", "12 digits"), ("a b", "characters"),
                        ("x" * 513, "at most 512"), ("", "empty")):
        with pytest.raises(InvalidNameError) as err:
            store.put_secret(name, SecretPut(secret_string="v"))
        assert err.value.code == "INVALID_SECRET_NAME" and where in err.value.message
    for body, where in ((SecretPut(), "exactly one"),
                        (SecretPut(secret_string="a", secret_binary="YQ=="), "exactly one"),
                        (SecretPut(secret_binary="not base64!"), "not valid base64"),
                        (SecretPut(secret_string=""), "empty"),
                        (SecretPut(secret_string="x" * 65537), "at most 65536 bytes")):
        with pytest.raises(HubInvalidInputError) as bad:
            store.put_secret("ok", body)
        assert bad.value.code == "INVALID_SECRET_VALUE" and where in bad.value.message
        assert "x" * 100 not in bad.value.message
    assert store.list_secrets() == []
    with pytest.raises(HubNotFoundError) as missing:
        store.delete_secret("nope")
    assert missing.value.code == "SECRET_NOT_FOUND" and "nope" in missing.value.message
    store.put_secret("gone", SecretPut(secret_string="v"))
    assert store.delete_secret("gone").name == "gone" and store.list_secrets() == []


def test_a_device_receives_only_the_secrets_its_deployments_name(store: Store) -> None:
    publish_to_store(store, "com.example.App", "1.0.0")
    a = enrol(store, "d-a", "fleet")
    b = enrol(store, "d-b")
    store.put_secret(ARN, SecretPut(secret_string="old"))
    store.put_secret(ARN, SecretPut(secret_string=VALUE))
    store.put_secret("api-key", SecretPut(secret_binary=base64.b64encode(b"\x01\x02").decode()))
    store.put_secret("unrelated", SecretPut(secret_string="nobody gets this"))
    # Named by short name (as a Greengrass component may), with AWSPREVIOUS asked for; one unknown name.
    _deploy(store, "group:fleet", _sm({"arn": "db-password", "labels": ["AWSPREVIOUS"]}, {"arn": "not-on-hub"},
                                      refresh=5), **{"com.example.App": "1.0.0"})
    _deploy(store, "device:d-a", _sm({"arn": "api-key"}))
    got = store.device_secrets(a)
    assert {s.name for s in got.secrets} == {ARN, "api-key"}
    by = {s.name: s for s in got.secrets}
    assert [(v.stages, v.secret_string) for v in by[ARN].versions] == [(["AWSCURRENT"], VALUE),
                                                                      (["AWSPREVIOUS"], "old")]
    assert base64.b64decode(by["api-key"].versions[0].secret_binary or "") == b"\x01\x02"
    assert got.missing == ["not-on-hub"] and got.refresh_minutes == 5
    # Device b has no deployment naming secrets; a revoked device gets nothing at all.
    assert store.device_secrets(b).secrets == []
    store.revoke_device("d-a")
    with pytest.raises(AuthenticationError) as revoked:
        store.device_secrets(a)
    assert revoked.value.code == "DEVICE_REVOKED"
    # The built-in is not among the components the device installs.
    state, _ = store.desired_state(b, None)
    assert state is not None and SM not in state.components


def test_secret_manager_configuration_is_checked_at_deployment(store: Store) -> None:
    enrol(store, "c-1")
    for config, where in ((_sm({"nope": 1}), "cloudSecrets[0] must be an object"),
                          ({"MERGE": {"cloudSecrets": "x"}}, "must be a list"),
                          (_sm({"arn": "bad name"}), "cloudSecrets[0].arn"),
                          (_sm({"arn": "a", "labels": "AWSPREVIOUS"}), "labels must be a list"),
                          (_sm({"arn": "a"}, refresh=-1), "periodicRefreshIntervalMin"),
                          ({"MERGE": "{not json"}, "not a JSON document")):
        with pytest.raises(UnprocessableError) as err:
            _deploy(store, "device:c-1", config)
        assert err.value.code == "INVALID_CONFIGURATION" and where in err.value.message
    with pytest.raises(UnprocessableError) as version:
        store.create_deployment(DeploymentCreate(target="device:c-1", components={SM: "2.1.4"}))
    assert version.value.code == "BUILTIN_VERSION_MISMATCH" and "2.2.0" in version.value.message
    # The Greengrass API's form: MERGE as a JSON document.
    store.create_deployment(DeploymentCreate(target="device:c-1", components={SM: "2.2.0"}, configuration={
        SM: {"MERGE": json.dumps({"cloudSecrets": [{"arn": ARN}]})}}))


def test_arn_short_names() -> None:
    assert short_names(ARN) == ("db-password", "db-password-AbCdEf")
    assert short_names("plain") == ()
    names = [ARN, "arn:aws:secretsmanager:us-east-1:123456789012:secret:other-XyZ123"]
    assert resolve_secret_id("db-password", names) == ARN
    assert resolve_secret_id(ARN, names) == ARN
    assert resolve_secret_id("db", names) is None


# -- REST API ------------------------------------------------------------------------------------


def test_secret_routes_need_an_admin_token_and_never_answer_values(
        hub_server_factory: Callable[..., HubServer], db_url: str) -> None:
    hub_server = hub_server_factory(db_url=db_url)
    credential = enroll_device(hub_server, "api-dev")
    path = f"/v1/secrets/{ARN}"
    with hub_server.client(token=None) as anonymous:
        assert anonymous.put(path, json={"secret_string": VALUE}).status_code == 401
    with hub_server.client(token=credential) as device:
        refused = device.put(path, json={"secret_string": VALUE})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
        assert device.get("/v1/secrets").status_code == 403
    with hub_server.client() as admin:
        put = admin.put(path, json={"secret_string": VALUE})
        assert put.status_code == 200, put.text
        assert put.json()["name"] == ARN and VALUE not in put.text
        assert admin.put("/v1/secrets/prod/db", json={"secret_binary": "AAE="}).status_code == 200
        listed = admin.get("/v1/secrets")
        assert [s["name"] for s in listed.json()] == [ARN, "prod/db"] and VALUE not in listed.text
        bad = admin.put("/v1/secrets/a%20b", json={"secret_string": "v"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_SECRET_NAME"
        big = admin.put("/v1/secrets/big", json={"secret_string": "y" * 70000})
        assert big.status_code == 400 and "y" * 50 not in big.text
        # A device's own route is for device credentials only.
        assert admin.get("/v1/device/secrets").status_code == 403
        gone = admin.delete("/v1/secrets/prod/db")
        assert gone.status_code == 200 and gone.json()["name"] == "prod/db"
        assert admin.delete("/v1/secrets/prod/db").json()["error"]["code"] == "SECRET_NOT_FOUND"
        deploy = admin.post("/v1/deployments", json={"target": "device:api-dev", "components": {SM: "2.2.0"},
                                                     "configuration": {SM: _sm({"arn": ARN})}})
        assert deploy.status_code == 201, deploy.text
    answer = httpx.get(hub_server.url + "/v1/device/secrets", headers={"Authorization": f"Bearer {credential}"})
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    assert [(s["name"], s["versions"][0]["secret_string"]) for s in answer.json()["secrets"]] == [(ARN, VALUE)]


def test_a_store_without_a_key_file_says_so(store: Store) -> None:
    store.secret_key_path = None
    store._secret_key = None
    with pytest.raises(HubServerError) as err:
        store.put_secret("x", SecretPut(secret_string="v"))
    assert err.value.code == "SECRET_KEY_MISSING" and store.list_secrets() == []
