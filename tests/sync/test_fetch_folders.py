"""The sync's fetch step against a real hub (uvicorn in a thread): every file of a version's artifact
folder arrives under its relative path, checked against the desired state's SHA-256, installed
identical files are reused, a mismatch names the file, and a hub without the list still works.

Only :meth:`HubSync._fetch` runs here (it uses the device client and the agent's paths, not the
deployer or the supervisor); the whole loop through a real agent is in ``test_publish_folder_e2e``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import cast

import pytest

from roost.agent.deployer import Deployer
from roost.agent.enrolment import HubConfig
from roost.agent.errors import ArtifactError
from roost.agent.paths import AgentPaths
from roost.agent.store import Store
from roost.agent.sync import HubSync
from roost.errors import InvalidInputError
from roost.hub.contract import Artifact
from roost.hub.device_client import DeviceClient
from tests.hub.conftest import HubServer, enroll_device, hub_server, hub_server_factory, make_recipe, publish

__all__ = ["hub_server", "hub_server_factory"]

NAME = "com.example.Fetch"
FOLDER = {"hello.py": b"from lib.greet import greet\nprint(greet())\n", "lib/__init__.py": b"",
          "lib/greet.py": b"def greet():\n    return 'hi'\n", "data/deep/model.bin": b"\x07" * 4096}


def _sync(hub: HubServer, tmp_path: Path, credential: str) -> HubSync:
    paths = AgentPaths.at(tmp_path / "root")
    paths.ensure()
    config = HubConfig(hub.url, "fetch-dev", credential)
    # The fetch step never touches the deployer: no supervisor is started for it.
    return HubSync(paths, config, cast(Deployer, None), Store(paths.state_db),
                   client=DeviceClient(hub.url, credential))


def _deployed(hub: HubServer) -> str:
    credential = enroll_device(hub, "fetch-dev")
    with hub.client() as admin:
        r = publish(admin, NAME, "1.0.0", files=FOLDER, recipe=make_recipe(NAME, "1.0.0", ("hello.py",)))
        assert r.status_code == 201, r.text
        r = admin.post("/v1/deployments", json={"target": "device:fetch-dev", "components": {NAME: "1.0.0"}})
        assert r.status_code == 201, r.text
    return credential


async def test_every_file_arrives_and_identical_installed_files_are_reused(hub_server: HubServer,
                                                                          tmp_path: Path) -> None:
    sync = _sync(hub_server, tmp_path, _deployed(hub_server))
    try:
        desired = await sync.client.desired(0, 0)
        assert desired is not None
        _recipes, artifacts = await sync._fetch(desired, tmp_path / "work")
        got = artifacts / NAME / "1.0.0"
        assert {str(p.relative_to(got)): p.read_bytes() for p in got.rglob("*") if p.is_file()} == FOLDER

        # Installed already: an identical file is linked, a different one downloaded again.
        installed = sync.paths.artifacts(NAME, "1.0.0")
        (installed / "lib").mkdir(parents=True)
        (installed / "lib" / "greet.py").write_bytes(FOLDER["lib/greet.py"])
        (installed / "hello.py").write_bytes(b"print('stale')\n")
        _recipes, artifacts = await sync._fetch(desired, tmp_path / "work2")
        got = artifacts / NAME / "1.0.0"
        assert os.stat(got / "lib" / "greet.py").st_ino == os.stat(installed / "lib" / "greet.py").st_ino
        assert os.stat(got / "hello.py").st_ino != os.stat(installed / "hello.py").st_ino
        assert (got / "hello.py").read_bytes() == FOLDER["hello.py"]
    finally:
        await sync.client.close()


async def test_a_file_unlike_the_desired_state_fails_naming_it(hub_server: HubServer, tmp_path: Path) -> None:
    sync = _sync(hub_server, tmp_path, _deployed(hub_server))
    try:
        desired = await sync.client.desired(0, 0)
        assert desired is not None and desired.components[NAME].artifacts is not None
        listed = desired.components[NAME].artifacts
        listed[:] = [a if a.file != "lib/greet.py" else a.model_copy(update={"sha256": "0" * 64}) for a in listed]
        with pytest.raises(ArtifactError, match=r"artifact lib/greet\.py .* desired state lists 0{64}") as info:
            await sync._fetch(desired, tmp_path / "work")
        assert info.value.code == "ARTIFACT_DIGEST_MISMATCH"
        assert not (tmp_path / "work" / "artifacts" / NAME / "1.0.0" / "lib" / "greet.py").exists()
        assert not sync.paths.artifacts(NAME, "1.0.0").exists()  # nothing installed

        # A hostile path in a desired state is refused before anything is written for it.
        desired.components[NAME].artifacts = [Artifact(file="../../escape.py", sha256="0" * 64, size=1)]
        with pytest.raises(InvalidInputError) as bad:
            await sync._fetch(desired, tmp_path / "work3")
        assert bad.value.code == "INVALID_PATH"
        assert not (tmp_path / "work3" / "escape.py").exists() and not (tmp_path / "escape.py").exists()
    finally:
        await sync.client.close()


async def test_a_hub_without_the_list_gives_the_recipe_artifacts(hub_server: HubServer, tmp_path: Path) -> None:
    sync = _sync(hub_server, tmp_path, _deployed(hub_server))
    try:
        desired = await sync.client.desired(0, 0)
        assert desired is not None
        desired.components[NAME].artifacts = None  # what an older hub sends
        _recipes, artifacts = await sync._fetch(desired, tmp_path / "work")
        got = artifacts / NAME / "1.0.0"
        assert [p.name for p in got.rglob("*")] == ["hello.py"]
        assert hashlib.sha256((got / "hello.py").read_bytes()).hexdigest() == hashlib.sha256(
            FOLDER["hello.py"]).hexdigest()
    finally:
        await sync.client.close()
