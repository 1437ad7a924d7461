"""The on-disk artifact store: ``ARTIFACTS/<name>/<version>/<path>``.

A version holds a whole artifact folder: every uploaded file under its relative path (``hello.py``,
``lib/greet.py``; each segment checked by :func:`~roost.hub.names.check_artifact_path`). Uploads
are written to a staging folder inside the artifact folder (same file system, so the final rename
is atomic), hashed with SHA-256 as they stream in, and refused as soon as a file passes the size
cap or the upload passes the folder limits of :mod:`roost.artifact_folder` (files, bytes). A
version's folder appears complete or not at all.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from roost.artifact_folder import MAX_FOLDER_BYTES, MAX_FOLDER_FILES
from roost.hub.errors import HubNotFoundError, InvalidNameError, PayloadTooLargeError
from roost.hub.names import check_artifact_path, check_name, join

logger = logging.getLogger(__name__)

#: The default cap for one artifact file: 1 GiB.
DEFAULT_MAX_ARTIFACT_BYTES = 1024 * 1024 * 1024


def digest_b64(sha256_hex: str) -> str:
    """The Greengrass ``Digest`` form of a SHA-256: base64 of the raw 32 bytes."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode("ascii")


@dataclass(frozen=True)
class StagedFile:
    file_name: str
    path: Path
    sha256: str
    size: int


class StagedWriter:
    """Writes one uploaded file, hashing on the fly and enforcing the size cap."""

    def __init__(self, path: Path, file_name: str, max_bytes: int, staging: Staging | None = None) -> None:
        self.path = path
        self.file_name = file_name
        self.max_bytes = max_bytes
        self._staging = staging
        self._hash = hashlib.sha256()
        self._size = 0
        self._fh: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in finish()/abort()

    def write(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self.max_bytes:
            self.abort()
            raise PayloadTooLargeError(
                f"artifact {self.file_name} is larger than the hub accepts ({self.max_bytes} bytes)",
                code="ARTIFACT_TOO_LARGE")
        if self._staging is not None:
            try:
                self._staging.count_bytes(len(data))
            except PayloadTooLargeError:
                self.abort()
                raise
        self._hash.update(data)
        self._fh.write(data)

    def finish(self) -> StagedFile:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        return StagedFile(self.file_name, self.path, self._hash.hexdigest(), self._size)

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()


class Staging:
    """A private folder for one upload; removed by :meth:`cleanup` unless installed."""

    def __init__(self, directory: Path, max_bytes: int, *, max_files: int = MAX_FOLDER_FILES,
                 max_total_bytes: int = MAX_FOLDER_BYTES) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.max_total_bytes = max_total_bytes
        self.files: dict[str, StagedFile] = {}
        self._opened = 0
        self._total = 0

    def open(self, file_name: str) -> StagedWriter:
        """A writer for the file at relative path ``file_name`` (folders made as needed)."""
        segments = check_artifact_path(file_name).split("/")
        self._opened += 1
        if self._opened > self.max_files:
            raise PayloadTooLargeError(f"the upload has more than {self.max_files} artifact files; pack them into "
                                       "a ZIP artifact (Unarchive: ZIP)", code="ARTIFACT_FOLDER_TOO_LARGE")
        path = join(self.dir, *segments)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                raise IsADirectoryError(str(path))
            return StagedWriter(path, file_name, self.max_bytes, self)
        except OSError as err:
            raise InvalidNameError(f"artifact path {file_name!r} collides with another uploaded file: one path "
                                   "cannot be both a file and a folder", code="INVALID_PATH") from err

    def count_bytes(self, n: int) -> None:
        """Account ``n`` more uploaded bytes; refuse past the folder limit."""
        self._total += n
        if self._total > self.max_total_bytes:
            raise PayloadTooLargeError(f"the upload holds more than {self.max_total_bytes} bytes of artifacts",
                                       code="ARTIFACT_FOLDER_TOO_LARGE")

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class ArtifactStore:
    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._tmp = root / ".staging"

    def staging(self) -> Staging:
        directory = self._tmp / uuid.uuid4().hex
        directory.mkdir(parents=True, exist_ok=False)
        return Staging(directory, self.max_bytes)

    def version_dir(self, name: str, version: str) -> Path:
        return join(self.root, check_name(name, "component name"), check_name(version, "component version"))

    def path(self, name: str, version: str, file_name: str) -> Path:
        return join(self.version_dir(name, version), *check_artifact_path(file_name).split("/"))

    def install(self, staging: Staging, name: str, version: str, files: list[StagedFile]) -> None:
        """Move the staged files into ``<name>/<version>/`` with one atomic rename of the folder.

        Only the publisher that won the database insert calls this, so a folder already there is a
        leftover of a publish that crashed before its commit and is replaced.
        """
        final = self.version_dir(name, version)
        final.parent.mkdir(parents=True, exist_ok=True)
        wanted = {f.path for f in files}
        for dirpath, _dirs, names in os.walk(staging.dir):
            for file_name in names:
                if Path(dirpath, file_name) not in wanted:
                    os.unlink(os.path.join(dirpath, file_name))
        if final.exists():
            logger.warning("replacing leftover artifact folder %s", final)
            shutil.rmtree(final)
        os.replace(staging.dir, final)

    def link_version(self, name: str, version: str, alias: str) -> None:
        """Make ``<alias>/<version>/`` hold the same files as ``<name>/<version>/`` (hard links, else copies;
        one atomic rename). A cluster replica's alias component uses it (:mod:`roost.hub.store.cluster`)."""
        source = self.version_dir(name, version)
        final = self.version_dir(alias, version)
        if final.exists():
            return
        staging = self.staging()
        try:
            for dirpath, _dirs, names in os.walk(source):
                rel = Path(dirpath).relative_to(source)
                (staging.dir / rel).mkdir(parents=True, exist_ok=True)
                for file_name in names:
                    src, dest = Path(dirpath, file_name), staging.dir / rel / file_name
                    try:
                        os.link(src, dest)
                    except OSError:
                        shutil.copy2(src, dest)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(staging.dir, final)
            except OSError:
                if not final.exists():  # another hub process made it first: fine
                    raise
        finally:
            staging.cleanup()

    def remove(self, name: str, version: str) -> None:
        shutil.rmtree(self.version_dir(name, version), ignore_errors=True)

    def existing(self, name: str, version: str, file_name: str) -> Path:
        path = self.path(name, version, file_name)
        if not path.is_file():
            raise HubNotFoundError(f"artifact {name}/{version}/{file_name} is missing from the artifact store",
                                   code="ARTIFACT_NOT_FOUND")
        return path
