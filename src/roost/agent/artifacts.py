"""Artifacts: copy a component's files into the package store, verify digests, unarchive, chmod.

Greengrass writes ``Digest`` as the base64 of the raw digest (``Algorithm`` SHA-256 by default);
Roost also accepts the hex form. ZIP artifacts are extracted into
``artifacts-unarchived/<name>/<version>/<zip stem>/`` with every member checked so that none can
escape that folder (zip-slip); every extracted file gets the artifact's ``Permission``, as the
nucleus applies it (folders stay traversable by whoever may read). ``docker:`` artifacts are images, not files: they are
skipped here and handled by :mod:`roost.agent.docker`.

A local deployment's artifact folder (``--artifact-dir A``) is brought over whole, as
``greengrass-cli deployment create --artifactDir`` does: every file and folder of ``A/<name>/<version>/``
(:func:`copy_artifact_folder`), whether the recipe lists it or not. Symlinks never lead out of that
folder, special files (FIFOs, sockets, devices) are refused and the copy is bounded
(:data:`MAX_FOLDER_FILES`, :data:`MAX_FOLDER_BYTES`): the checks of :mod:`roost.artifact_folder`,
which ``roost component publish`` applies too.
"""

from __future__ import annotations

import base64
import binascii
import filecmp
import hashlib
import logging
import os
import shutil
import stat
import zipfile
from collections.abc import Sequence
from pathlib import Path

from roost.agent.errors import ArtifactError
from roost.artifact_folder import MAX_FOLDER_BYTES, MAX_FOLDER_FILES, FolderEntry, scan_folder
from roost.recipe import Artifact, ArtifactPermission

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
                      dest_dir: Path, unarchive_dir: Path, *, whole_folder: bool = False) -> None:
    """Copy and verify every artifact of one component version into ``dest_dir``.

    ``source_dir`` holds the files named by each artifact URI's last path segment; ``None`` means
    the files must already be in ``dest_dir`` (a version installed earlier). With ``whole_folder``
    every file and folder of ``source_dir`` is copied too (:func:`copy_artifact_folder`); the
    recipe's artifacts are verified all the same.
    """
    # docker: artifacts are images, not files: the deployer gets them through the engine (roost.agent.docker).
    artifacts = [art for art in artifacts if art.scheme != "docker"]
    for art in artifacts:
        name = art.file_name
        if not name or name in (".", "..") or "/" in name:
            raise ArtifactError(f"{component}-{version}: artifact URI {art.uri!r} names no file",
                                code="ARTIFACT_INVALID")
        if source_dir is not None and not (source_dir / name).is_file():
            raise ArtifactError(
                f"{component}-{version}: artifact {name} (from {art.uri}) not found in {source_dir}",
                code="ARTIFACT_MISSING")
    dest_dir.mkdir(parents=True, exist_ok=True)
    folder_copied: set[str] | None = None
    if whole_folder and source_dir is not None:
        folder_copied = set(copy_artifact_folder(component, version, source_dir, dest_dir))
    for art in artifacts:
        name = art.file_name
        target = dest_dir / name
        written = True
        if folder_copied is not None:
            # Kept as installed (same bytes): its Permission was applied then, and a running component
            # may be reading it, so it is not touched.
            written = name in folder_copied
        elif source_dir is not None:
            src = source_dir / name
            if src.resolve() != target.resolve() and not (target.is_file() and _same_bytes(src, target)):
                tmp = target.with_name(f".{name}.part")
                shutil.copyfile(src, tmp)
                os.replace(tmp, target)
            else:
                written = False
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
            if written or not (unarchive_dir / Path(name).stem).exists():
                _unzip(component, version, target, unarchive_dir / Path(name).stem, art)
            else:  # the same archive, extracted when it was installed: only a changed Permission applies
                _apply_permission_tree(unarchive_dir / Path(name).stem, art.permission)


def _scan_folder(component: str, version: str, source_dir: Path, max_files: int,
                 max_bytes: int) -> list[FolderEntry]:
    """Every entry under ``source_dir`` (parents first), checked before anything is copied."""
    return scan_folder(f"{component}-{version}", source_dir, error=ArtifactError, max_files=max_files,
                       max_bytes=max_bytes)


def _copy_regular(component: str, version: str, entry: FolderEntry, target: Path) -> None:
    """Copy one regular file, opened without following a link (it may have been swapped since the scan)."""
    try:
        fd = os.open(entry.src, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise ArtifactError(f"{component}-{version}: cannot read {entry.rel} from the artifact folder: "
                            f"{err.strerror or err} (changed while being copied?)",
                            code="ARTIFACT_UNSAFE_FILE") from err
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError(f"{component}-{version}: {entry.rel} in the artifact folder changed into something "
                                "other than a regular file while being copied", code="ARTIFACT_UNSAFE_FILE")
        tmp = target.with_name(f".{target.name}.part")
        with open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
    mode = stat.S_IRUSR | stat.S_IWUSR
    if st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        mode |= stat.S_IXUSR
    os.chmod(tmp, mode)
    os.replace(tmp, target)


def copy_artifact_folder(component: str, version: str, source_dir: Path, dest_dir: Path, *,
                         max_files: int | None = None, max_bytes: int | None = None) -> list[str]:
    """Copy every file and folder of ``source_dir`` into ``dest_dir``, as greengrass-cli does.

    Everything is checked before anything is copied: a symlink must resolve inside ``source_dir``
    (it is recreated as a relative link), FIFOs, sockets and devices are refused
    (``ARTIFACT_UNSAFE_FILE``), and the folder must stay within ``max_files`` entries and
    ``max_bytes`` bytes (``ARTIFACT_FOLDER_TOO_LARGE``). Files get owner read/write (plus owner
    execute where the source is executable); folders ``0755``. Returns the relative paths copied.

    A file already in ``dest_dir`` with the same bytes (the installed version's own file, which the hub
    sync links into its download) is left as it is, mode and owner included: a running component keeps
    reading it while a deployment that does not change it is applied.
    """
    limit_files = MAX_FOLDER_FILES if max_files is None else max_files
    limit_bytes = MAX_FOLDER_BYTES if max_bytes is None else max_bytes
    if os.path.realpath(source_dir) == os.path.realpath(dest_dir):
        return []
    entries = _scan_folder(component, version, source_dir, limit_files, limit_bytes)
    dest_dir.mkdir(parents=True, exist_ok=True)
    copied: list[str] = []
    for entry in entries:
        target = dest_dir / entry.rel
        if entry.kind == "dir":
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                target.unlink()
            target.mkdir(exist_ok=True)
            os.chmod(target, 0o755)
            continue
        if entry.kind == "file" and not target.is_symlink() and target.is_file() and _same_bytes(entry.src, target):
            continue
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        copied.append(entry.rel)
        if entry.kind == "link":
            os.symlink(entry.link, target)
            continue
        _copy_regular(component, version, entry, target)
    log.debug("%s-%s: copied %d of %d entries of %s", component, version, len(copied), len(entries), source_dir)
    return copied


def _same_bytes(src: str | Path, target: Path) -> bool:
    """Whether ``target`` is ``src`` (a hard link) or holds the same bytes."""
    try:
        a, b = os.stat(src), os.stat(target)
    except OSError:
        return False
    if os.path.samestat(a, b):
        return True
    return a.st_size == b.st_size and filecmp.cmp(src, target, shallow=False)


def _permission_mode(perm: ArtifactPermission, *, folder: bool = False) -> int:
    mode = stat.S_IRUSR | stat.S_IWUSR
    if perm.read == "ALL":
        mode |= stat.S_IRGRP | stat.S_IROTH
    if perm.execute in ("OWNER", "ALL"):
        mode |= stat.S_IXUSR
    if perm.execute == "ALL":
        mode |= stat.S_IXGRP | stat.S_IXOTH
    if folder:  # a folder must stay traversable by whoever may read what is in it
        mode |= stat.S_IXUSR
        if perm.read == "ALL":
            mode |= stat.S_IXGRP | stat.S_IXOTH
    return mode


#: The group's read and execute bits: the workspace gives them to the component's group after install
#: (roost.agent.workspace), so a Permission applied again keeps them instead of taking them away for a
#: moment from a component that is reading the file.
_GROUP_SHARED = stat.S_IRGRP | stat.S_IXGRP


def _set_mode(path: str | Path, mode: int) -> None:
    """``mode`` on ``path``, keeping the group read/execute bits it has; nothing when that is its mode."""
    current = stat.S_IMODE(os.stat(path).st_mode)
    wanted = mode | (current & _GROUP_SHARED)
    if wanted != current:
        os.chmod(path, wanted)


def _apply_permission(path: Path, art: Artifact) -> None:
    _set_mode(path, _permission_mode(art.permission))


def _apply_permission_tree(root: Path, perm: ArtifactPermission) -> None:
    """The artifact's Permission on every unarchived file (and folder) under ``root``."""
    file_mode, folder_mode = _permission_mode(perm), _permission_mode(perm, folder=True)
    _set_mode(root, folder_mode)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                _set_mode(path, folder_mode)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                _set_mode(path, file_mode)


def _unzip(component: str, version: str, archive: Path, dest: Path, art: Artifact | None = None) -> None:
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
    if art is not None:
        _apply_permission_tree(dest, art.permission)
