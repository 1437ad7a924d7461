"""A component version's artifact folder, checked before anything in it is used.

Two places take a whole folder of artifacts: a local deployment (``--artifact-dir``, copied by
:mod:`roost.agent.artifacts`) and ``roost component publish`` (uploaded to a hub). Both scan it
with :func:`scan_folder` first, with the same rules: a symlink must resolve inside the folder, a
FIFO, socket or device is refused (``ARTIFACT_UNSAFE_FILE``), and the folder is bounded by
:data:`MAX_FOLDER_FILES` entries and :data:`MAX_FOLDER_BYTES` bytes (``ARTIFACT_FOLDER_TOO_LARGE``).
The caller names the error class to raise (the agent's ``ArtifactError``, the CLI's input error),
so each side keeps its own exception tree. Nothing here knows the agent or the hub.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from roost.errors import RoostError

#: At most this many entries (files, folders, links) in one component version's artifact folder.
MAX_FOLDER_FILES = 10_000
#: At most this many bytes of files in one component version's artifact folder.
MAX_FOLDER_BYTES = 4 * 1024**3

#: Builds the caller's error from a message and a code.
ErrorFactory = Callable[..., RoostError]


@dataclass(frozen=True, slots=True)
class FolderEntry:
    """One entry of a scanned folder: ``rel`` its path inside the folder (``/``-separated), ``src``
    its path on disk, ``kind`` ``file``, ``dir`` or ``link``; for a link, ``link`` is its target
    relative to the link's own folder and ``target`` the resolved absolute path."""

    rel: str
    src: str
    kind: str
    size: int = 0
    link: str = ""
    target: str = ""


def scan_folder(where: str, source_dir: Path, *, error: ErrorFactory, max_files: int = MAX_FOLDER_FILES,
                max_bytes: int = MAX_FOLDER_BYTES) -> list[FolderEntry]:
    """Every entry under ``source_dir`` (parents before children), all checked.

    ``where`` prefixes every message (``name-version``); ``error(message, code=...)`` makes what is
    raised. Links are not descended (a link to a folder inside is one entry); byte counts are those
    of regular files.
    """
    root = os.path.realpath(source_dir)
    entries: list[FolderEntry] = []
    total = 0
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        try:
            with os.scandir(os.path.join(source_dir, rel_dir)) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as err:
            raise error(f"{where}: cannot list artifact folder {source_dir / rel_dir}: "
                        f"{err.strerror or err}", code="ARTIFACT_MISSING") from err
        for child in children:
            rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
            st = child.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                resolved = os.path.realpath(child.path)
                if os.path.commonpath([root, resolved]) != root:
                    raise error(
                        f"{where}: {rel} in the artifact folder {source_dir} is a symlink to {resolved}, outside "
                        "that folder; Roost never follows links out of it (copy the file in instead)",
                        code="ARTIFACT_UNSAFE_FILE")
                if not (os.path.isfile(resolved) or os.path.isdir(resolved)):
                    raise error(
                        f"{where}: {rel} in the artifact folder {source_dir} is a symlink to {resolved}, which "
                        "is not a file or folder (a dangling link or a special file)",
                        code="ARTIFACT_UNSAFE_FILE")
                # Folders walked are real ones (links are not descended), so this is the link's own.
                link = os.path.relpath(resolved, os.path.join(root, rel_dir))
                size = os.path.getsize(resolved) if os.path.isfile(resolved) else 0
                entries.append(FolderEntry(rel, child.path, "link", size=size, link=link, target=resolved))
            elif stat.S_ISDIR(st.st_mode):
                entries.append(FolderEntry(rel, child.path, "dir"))
                pending.append(rel)
            elif stat.S_ISREG(st.st_mode):
                total += st.st_size
                entries.append(FolderEntry(rel, child.path, "file", size=st.st_size))
            else:
                raise error(
                    f"{where}: {rel} in the artifact folder {source_dir} is not a regular file or folder "
                    "(a FIFO, socket or device); only files, folders and links inside it are taken",
                    code="ARTIFACT_UNSAFE_FILE")
            if len(entries) > max_files:
                raise error(
                    f"{where}: the artifact folder {source_dir} has more than {max_files} files and folders; "
                    "pack them into a ZIP artifact (Unarchive: ZIP)", code="ARTIFACT_FOLDER_TOO_LARGE")
            if total > max_bytes:
                raise error(f"{where}: the artifact folder {source_dir} holds more than {max_bytes} bytes",
                            code="ARTIFACT_FOLDER_TOO_LARGE")
    return entries


__all__ = ["MAX_FOLDER_BYTES", "MAX_FOLDER_FILES", "ErrorFactory", "FolderEntry", "scan_folder"]
