from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

from roost.agent.artifacts import digest_matches, install_artifacts
from roost.agent.errors import ArtifactError
from roost.recipe import Artifact, ArtifactPermission


def _dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    src, dest, unz = tmp_path / "src", tmp_path / "dest", tmp_path / "unz"
    src.mkdir()
    return src, dest, unz


def test_copy_verify_and_permissions(tmp_path: Path) -> None:
    src, dest, unz = _dirs(tmp_path)
    (src / "run.sh").write_text("echo hi")
    digest = base64.b64encode(hashlib.sha256(b"echo hi").digest()).decode()
    art = Artifact(uri="s3://bucket/path/run.sh", digest=digest,
                   permission=ArtifactPermission(read="ALL", execute="OWNER"))
    install_artifacts("c", "1.0.0", [art], src, dest, unz)
    assert (dest / "run.sh").read_text() == "echo hi"
    assert (dest / "run.sh").stat().st_mode & 0o777 == 0o744
    # already installed: verified again without a source dir
    install_artifacts("c", "1.0.0", [art], None, dest, unz)


def test_hex_digest_accepted_and_mismatch_named(tmp_path: Path) -> None:
    assert digest_matches(hashlib.sha256(b"x").digest(), hashlib.sha256(b"x").hexdigest())
    src, dest, unz = _dirs(tmp_path)
    (src / "a.bin").write_bytes(b"tampered")
    art = Artifact(uri="greengrass:a.bin", digest=hashlib.sha256(b"original").hexdigest())
    with pytest.raises(ArtifactError, match=r"a\.bin failed its SHA-256 check") as info:
        install_artifacts("c", "1.0.0", [art], src, dest, unz)
    assert info.value.code == "ARTIFACT_DIGEST_MISMATCH"
    assert not (dest / "a.bin").exists()


def test_missing_and_docker(tmp_path: Path) -> None:
    src, dest, unz = _dirs(tmp_path)
    with pytest.raises(ArtifactError, match="not found") as info:
        install_artifacts("c", "1.0.0", [Artifact(uri="s3://b/missing.py")], src, dest, unz)
    assert info.value.code == "ARTIFACT_MISSING"
    # A docker: artifact is an image, not a file: the engine gets it (roost.agent.docker), nothing is copied.
    (src / "run.py").write_text("x")
    install_artifacts("c", "1.0.0", [Artifact(uri="docker:nginx:1.25"), Artifact(uri="s3://b/run.py")], src, dest, unz)
    assert sorted(p.name for p in dest.iterdir()) == ["run.py"]


def test_unzip_and_zip_slip(tmp_path: Path) -> None:
    src, dest, unz = _dirs(tmp_path)
    with zipfile.ZipFile(src / "model.zip", "w") as zf:
        zf.writestr("model/weights.txt", "w")
    install_artifacts("c", "1.0.0", [Artifact(uri="s3://b/model.zip", unarchive="ZIP")], src, dest, unz)
    assert (unz / "model" / "model" / "weights.txt").read_text() == "w"
    with zipfile.ZipFile(src / "evil.zip", "w") as zf:
        zf.writestr("../../escape.txt", "x")
    with pytest.raises(ArtifactError, match="outside its folder"):
        install_artifacts("c", "1.0.0", [Artifact(uri="s3://b/evil.zip", unarchive="ZIP")], src, dest, unz)
    assert not (tmp_path / "escape.txt").exists()
    (src / "bad.zip").write_text("not a zip")
    with pytest.raises(ArtifactError, match="not a valid ZIP"):
        install_artifacts("c", "1.0.0", [Artifact(uri="s3://b/bad.zip", unarchive="ZIP")], src, dest, unz)


@pytest.mark.parametrize("linked", [True, False])
def test_reinstalling_an_unchanged_version_leaves_its_files_alone(tmp_path: Path, linked: bool) -> None:
    """A hub revision that keeps a component re-delivers its folder (linked to the installed files, or a
    copy with the same bytes): the installed files keep their inode and mode, so the running component
    can read them throughout. A changed file is replaced."""
    import os
    import shutil

    src, dest, unz = _dirs(tmp_path)
    (src / "model.json").write_text('{"trees": []}')
    (src / "lib").mkdir()
    (src / "lib" / "util.py").write_text("x = 1\n")
    art = Artifact(uri="s3://bucket/model.json")
    install_artifacts("c", "1.0.0", [art], src, dest, unz, whole_folder=True)
    os.chmod(dest / "model.json", 0o640)  # as the workspace shares it with the component's group
    before = (dest / "model.json").stat()
    again = tmp_path / "again"
    (again / "lib").mkdir(parents=True)
    for rel in ("model.json", "lib/util.py"):
        if linked:
            os.link(dest / rel, again / rel)
        else:
            shutil.copyfile(dest / rel, again / rel)
    (again / "lib" / "util.py").unlink()
    (again / "lib" / "util.py").write_text("x = 2\n")
    install_artifacts("c", "1.0.0", [art], again, dest, unz, whole_folder=True)
    after = (dest / "model.json").stat()
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert (dest / "lib" / "util.py").read_text() == "x = 2\n"
