"""Whole artifact folders on the hub: every uploaded file stored under its relative path, listed in the
component version and in the desired state, served at ``/v1/artifacts/{name}/{version}/{path}``.

The store tests run against SQLite and PostgreSQL (the ``store`` fixture); the API tests against a
real uvicorn hub.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from roost.hub.contract import DeploymentCreate, PrincipalKind
from roost.hub.errors import ForbiddenError, InvalidNameError, PayloadTooLargeError, UnprocessableError
from roost.hub.names import check_artifact_path
from roost.hub.store import Store
from roost.hub.store.records import Principal
from tests.hub.conftest import HubServer, enroll_device, make_recipe, publish
from tests.hub.test_api import error_code

FOLDER = {
    "hello.py": b"from lib.greet import greet\nprint(greet())\n",
    "lib/__init__.py": b"",
    "lib/greet.py": b"def greet():\n    return 'hello from lib'\n",
    "data/deep/model.bin": b"\x00\x01\x02" * 100,
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _publish_folder(store: Store, name: str, version: str, files: dict[str, bytes],
                    listed: tuple[str, ...] = ("hello.py",)) -> object:
    staging = store.artifacts.staging()
    try:
        staged = []
        for rel, data in files.items():
            writer = staging.open(rel)
            writer.write(data)
            staged.append(writer.finish())
        return store.publish_component(make_recipe(name, version, listed), staging, staged)
    finally:
        staging.cleanup()


# -- the path rule --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["hello.py", "lib/greet.py", "a/b/c/d.txt", "with space/ünïcode.txt", "x..y/z"])
def test_relative_paths_are_accepted(path: str) -> None:
    assert check_artifact_path(path) == path


@pytest.mark.parametrize(("path", "why"), [
    ("", "empty"), ("/etc/passwd", "absolute"), ("../x", "'..'"), ("lib/../../x", "'..'"), ("a//b", "empty"),
    ("./a", "'.'"), ("a/", "empty"), ("a\\b", "backslash"), ("a\x00b", "control"), ("a/b\nc", "control"),
    ("x" * 256, "longer than 255"), ("/".join(["d"] * 33), "more than 32"),
])
def test_bad_relative_paths_are_refused_naming_the_path(path: str, why: str) -> None:
    with pytest.raises(InvalidNameError, match=why) as info:
        check_artifact_path(path)
    assert info.value.code == "INVALID_PATH"
    assert repr(path)[:40] in info.value.message


# -- the store (SQLite and PostgreSQL) --------------------------------------------------------------


def test_every_file_is_stored_listed_and_in_the_desired_state(store: Store) -> None:
    token = store.create_enroll_token(None).token
    device = store.authenticate(store.enroll(token, "folder-dev").credential)
    info = _publish_folder(store, "com.example.Folder", "1.0.0", FOLDER)
    expected = sorted((rel, _sha(data), len(data)) for rel, data in FOLDER.items())
    listed = store.get_component("com.example.Folder", "1.0.0")
    assert [(a.file, a.sha256, a.size) for a in listed.artifacts] == expected
    assert info == listed.model_copy(update={"recipe": None})
    for rel, data in FOLDER.items():
        assert (store.artifacts.root / "com.example.Folder" / "1.0.0" / rel).read_bytes() == data
    # Only the recipe-listed file gets a Digest in the stored recipe; the rest are listed beside it.
    artifacts = listed.recipe["Manifests"][0]["Artifacts"]  # type: ignore[index]
    assert [a["URI"].rsplit("/", 1)[-1] for a in artifacts] == ["hello.py"]

    admin = Principal(PrincipalKind.ADMIN, 0, "admin")
    where = store.artifact(admin, "com.example.Folder", "1.0.0", "lib/greet.py")
    assert Path(where.path).read_bytes() == FOLDER["lib/greet.py"] and where.sha256 == _sha(FOLDER["lib/greet.py"])
    # A device reads the files of versions in its desired state only.
    with pytest.raises(ForbiddenError) as forbidden:
        store.artifact(device, "com.example.Folder", "1.0.0", "lib/greet.py")
    assert forbidden.value.code == "ARTIFACT_FORBIDDEN"
    store.create_deployment(DeploymentCreate(target="device:folder-dev", components={"com.example.Folder": "1.0.0"}))
    assert store.artifact(device, "com.example.Folder", "1.0.0", "data/deep/model.bin").size == 300
    with pytest.raises(InvalidNameError) as bad:
        store.artifact(device, "com.example.Folder", "1.0.0", "lib/../hello.py")
    assert bad.value.code == "INVALID_PATH"

    state, _ = store.desired_state(device.id, None)
    assert state is not None
    comp = state.components["com.example.Folder"]
    assert comp.artifacts is not None
    assert [(a.file, a.sha256, a.size) for a in comp.artifacts] == expected


def test_recipe_listed_files_are_still_required_and_digest_checked(store: Store) -> None:
    with pytest.raises(UnprocessableError) as missing:
        _publish_folder(store, "com.example.Folder", "1.0.0", {"lib/hello.py": b"x"})
    assert missing.value.code == "ARTIFACT_MISSING" and "hello.py" in missing.value.message
    recipe = make_recipe("com.example.Folder", "1.0.0", ("hello.py",)).replace(
        b"hello.py\n", b"hello.py\n        Digest: " + b"A" * 43 + b"=\n")
    staging = store.artifacts.staging()
    try:
        writer = staging.open("hello.py")
        writer.write(b"print(1)\n")
        with pytest.raises(UnprocessableError) as mismatch:
            store.publish_component(recipe, staging, [writer.finish()])
        assert mismatch.value.code == "ARTIFACT_DIGEST_MISMATCH"
    finally:
        staging.cleanup()
    assert store.list_components() == []


def test_staging_refuses_collisions_bad_paths_and_too_many_files(store: Store, tmp_path: Path) -> None:
    staging = store.artifacts.staging()
    try:
        staging.open("lib").finish()
        with pytest.raises(InvalidNameError, match=re.escape("'lib/x.py' collides")) as clash:
            staging.open("lib/x.py")
        assert clash.value.code == "INVALID_PATH"
        staging.open("src/a.py").finish()
        with pytest.raises(InvalidNameError, match="'src' collides"):
            staging.open("src")
        with pytest.raises(InvalidNameError, match=re.escape("'src/../../x'")):
            staging.open("src/../../x")
    finally:
        staging.cleanup()
    from roost.hub.artifacts import Staging

    folder = tmp_path / "small"
    folder.mkdir()
    small = Staging(folder, 1024, max_files=2, max_total_bytes=10)
    small.open("a").finish()
    writer = small.open("b")
    writer.write(b"12345")
    with pytest.raises(PayloadTooLargeError) as too_big:
        writer.write(b"123456")
    assert too_big.value.code == "ARTIFACT_FOLDER_TOO_LARGE" and "10 bytes" in too_big.value.message
    with pytest.raises(PayloadTooLargeError) as too_many:
        small.open("c")
    assert too_many.value.code == "ARTIFACT_FOLDER_TOO_LARGE" and "more than 2 artifact files" in too_many.value.message


# -- the API (a real hub) ---------------------------------------------------------------------------


def test_nested_files_upload_and_download_over_http(hub_server: HubServer) -> None:
    credential = enroll_device(hub_server, "nested-dev")
    recipe = make_recipe("com.example.Nested", "1.0.0", ("hello.py",))
    with hub_server.client() as admin:
        r = publish(admin, "com.example.Nested", "1.0.0", files=FOLDER, recipe=recipe)
        assert r.status_code == 201, r.text
        assert [a["file"] for a in r.json()["artifacts"]] == sorted(FOLDER)
        r = admin.get("/v1/artifacts/com.example.Nested/1.0.0/lib/greet.py")
        assert r.status_code == 200 and r.content == FOLDER["lib/greet.py"]
        assert r.headers["X-Roost-Sha256"] == _sha(FOLDER["lib/greet.py"])
        assert "greet.py" in r.headers["content-disposition"] and "lib" not in r.headers["content-disposition"]
        r = admin.get("/v1/artifacts/com.example.Nested/1.0.0/lib/nope.py")
        assert (r.status_code, error_code(r)) == (404, "ARTIFACT_NOT_FOUND")
        for bad in ("/etc/passwd", "a//b", "lib/./greet.py"):
            r = publish(admin, "com.example.Bad", "1.0.0", files={"hello.py": b"x", bad: b"y"},
                        recipe=make_recipe("com.example.Bad", "1.0.0", ("hello.py",)))
            assert (r.status_code, error_code(r)) == (400, "INVALID_PATH"), (bad, r.text)
            assert repr(bad) in r.json()["error"]["message"]
        r = publish(admin, "com.example.Bad", "1.0.0", files={"hello.py": b"x", "lib": b"y", "lib/z.py": b"z"},
                    recipe=make_recipe("com.example.Bad", "1.0.0", ("hello.py",)))
        assert (r.status_code, error_code(r)) == (400, "INVALID_PATH") and "collides" in r.text
        assert [c["name"] for c in admin.get("/v1/components").json()] == ["com.example.Nested"]
    with hub_server.client(token=credential) as dev:
        r = dev.get("/v1/artifacts/com.example.Nested/1.0.0/lib/greet.py")
        assert (r.status_code, error_code(r)) == (403, "ARTIFACT_FORBIDDEN")
    with hub_server.client() as admin:
        dep = admin.post("/v1/deployments", json={"target": "device:nested-dev",
                                                  "components": {"com.example.Nested": "1.0.0"}})
        assert dep.status_code == 201, dep.text
    with hub_server.client(token=credential) as dev:
        desired = dev.get("/v1/device/desired", params={"after": 0, "wait": 0}).json()
        files = desired["components"]["com.example.Nested"]["artifacts"]
        assert {f["file"]: f["sha256"] for f in files} == {rel: _sha(data) for rel, data in FOLDER.items()}
        for rel, data in FOLDER.items():
            r = dev.get(f"/v1/artifacts/com.example.Nested/1.0.0/{rel}")
            assert r.status_code == 200 and r.content == data, rel
        r = dev.get("/v1/artifacts/com.example.Nested/1.0.0/lib/%2e%2e/hello.py")
        assert r.status_code in (400, 404)
        assert r.status_code != 200
