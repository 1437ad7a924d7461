"""Artifacts: copy a component's files into the package store, verify digests, unarchive, chmod.

Greengrass writes ``Digest`` as the base64 of the raw digest (``Algorithm`` SHA-256 by default);
Roost also accepts the hex form. ZIP artifacts are extracted into
``artifacts-unarchived/<name>/<version>/<zip stem>/`` with every member checked so that none can
escape that folder (zip-slip).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import shutil
import stat
import zipfile
from collections.abc import Sequence
from pathlib import Path

from roost.agent.errors import ArtifactError
from roost.recipe import Artifact

log = logging.getLogger(__name__)

_ALGORITHMS = {"SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512", "SHA-1": "sha1", "MD5": "md5"}


def file_digest(path: Path, algorithm: str = "SHA-256") -> bytes:
    try:
        name = _ALGORITHMS[algorithm.upper()]
    except KeyError as err:
        raise ArtifactError(f"unsupported digest algorithm {algorithm!r}; expected one of {sorted(_ALGORITHMS)}",
                            code="ARTIFACT_ALGORITHM_UNSUPPORTED") from err
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, name).digest()


def digest_matches(actual: bytes, expected: str) -> bool:
    """``expected`` in base64 (Greengrass) or hex."""
    text = expected.strip()
    candidates: list[bytes] = []
    try:
        candidates.append(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        pass
    try:
        candidates.append(bytes.fromhex(text))
    except ValueError:
        pass
    return actual in candidates


def install_artifacts(component: str, version: str, artifacts: Sequence[Artifact], source_dir: Path | None,
                      dest_dir: Path, unarchive_dir: Path) -> None:
    """Copy and verify every artifact of one component version into ``dest_dir``.

    ``source_dir`` holds the files named by each artifact URI's last path segment; ``None`` means
    the files must already be in ``dest_dir`` (a version installed earlier).
    """
    for art in artifacts:
        if art.scheme == "docker":
            raise ArtifactError(
                f"{component}-{version}: artifact {art.uri} is a Docker image, but this device has no Docker "
                "engine; Roost runs docker: artifacts only where a Docker engine is available",
                code="DOCKER_UNAVAILABLE")
    dest_dir.mkdir(parents=True, exist_ok=True)
    for art in artifacts:
        name = art.file_name
        if not name or name in (".", "..") or "/" in name:
            raise ArtifactError(f"{component}-{version}: artifact URI {art.uri!r} names no file",
                                code="ARTIFACT_INVALID")
        target = dest_dir / name
        if source_dir is not None:
            src = source_dir / name
            if not src.is_file():
                raise ArtifactError(
                    f"{component}-{version}: artifact {name} (from {art.uri}) not found in {source_dir}",
                    code="ARTIFACT_MISSING")
            if src.resolve() != target.resolve():
                tmp = target.with_name(f".{name}.part")
                shutil.copyfile(src, tmp)
                os.replace(tmp, target)
        elif not target.is_file():
            raise ArtifactError(f"{component}-{version}: artifact {name} is not in the package store ({dest_dir})",
                                code="ARTIFACT_MISSING")
        if art.digest:
            actual = file_digest(target, art.algorithm)
            if not digest_matches(actual, art.digest):
                target.unlink(missing_ok=True)
                raise ArtifactError(
                    f"{component}-{version}: artifact {name} failed its {art.algorithm} check: recipe says "
                    f"{art.digest}, file has {base64.b64encode(actual).decode()}",
                    code="ARTIFACT_DIGEST_MISMATCH")
        _apply_permission(target, art)
        if art.unarchive == "ZIP":
            _unzip(component, version, target, unarchive_dir / Path(name).stem)


def _apply_permission(path: Path, art: Artifact) -> None:
    mode = stat.S_IRUSR | stat.S_IWUSR
    perm = art.permission
    if perm.read == "ALL":
        mode |= stat.S_IRGRP | stat.S_IROTH
    if perm.execute in ("OWNER", "ALL"):
        mode |= stat.S_IXUSR
    if perm.execute == "ALL":
        mode |= stat.S_IXGRP | stat.S_IXOTH
    os.chmod(path, mode)


def _unzip(component: str, version: str, archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            root = dest.resolve()
            for member in zf.infolist():
                out = (dest / member.filename).resolve()
                if not out.is_relative_to(root):
                    raise ArtifactError(
                        f"{component}-{version}: archive {archive.name} has a member {member.filename!r} that "
                        "would be written outside its folder", code="ARTIFACT_UNSAFE_ARCHIVE")
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir(parents=True)
            zf.extractall(dest)
    except zipfile.BadZipFile as err:
        raise ArtifactError(f"{component}-{version}: artifact {archive.name} is not a valid ZIP archive: {err}",
                            code="ARTIFACT_INVALID") from err
