"""Names the hub accepts for devices, groups, components, versions and artifact files.

Names end up in URLs and file paths, so anything that could escape a folder (``/``, ``\\``,
``..``, NUL) is refused with :class:`~roost.hub.errors.InvalidNameError` (HTTP 400). An artifact
*path* (a file of a version's artifact folder, ``src/util.py``) is ``/``-separated segments, each
one checked like a file name; it is refused with code ``INVALID_PATH``.
"""

from __future__ import annotations

import re
from pathlib import Path

from roost.errors import InvalidInputError
from roost.hub.errors import InvalidNameError
from roost.paths import safe_join

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$")
_FILE = re.compile(r"^[^/\\\x00-\x1f]{1,255}$")


def check_name(value: str, what: str) -> str:
    """A device, group, component name or version: letters, digits and ``._:@+-``, at most 128."""
    if not _NAME.fullmatch(value) or value in (".", ".."):
        raise InvalidNameError(f"invalid {what} {value!r}: use letters, digits and . _ : @ + - "
                               "(at most 128, starting with a letter or digit)")
    return value


def check_file_name(value: str) -> str:
    """An artifact file name: one path segment, no ``..``, no separators, no control characters."""
    if not _FILE.fullmatch(value) or value in (".", ".."):
        raise InvalidNameError(f"invalid artifact file name {value!r}: names may not contain '/', '\\', "
                               "'..' or control characters")
    return value


#: The longest artifact path (the database column's width).
MAX_ARTIFACT_PATH = 255
#: The deepest artifact path, in segments.
MAX_ARTIFACT_DEPTH = 32


def check_artifact_path(value: str) -> str:
    """A file's path inside a version's artifact folder: ``/``-separated segments, each a valid file
    name (:func:`check_file_name`); not absolute, no empty, ``.`` or ``..`` segment, no backslash,
    at most :data:`MAX_ARTIFACT_PATH` characters and :data:`MAX_ARTIFACT_DEPTH` segments."""
    problem = None
    segments = value.split("/")
    if not value:
        problem = "it is empty"
    elif len(value) > MAX_ARTIFACT_PATH:
        problem = f"it is longer than {MAX_ARTIFACT_PATH} characters"
    elif value.startswith("/"):
        problem = "it is absolute (starts with '/')"
    elif len(segments) > MAX_ARTIFACT_DEPTH:
        problem = f"it has more than {MAX_ARTIFACT_DEPTH} segments"
    elif "\\" in value:
        problem = "it contains a backslash"
    elif any(s in ("", ".", "..") for s in segments):
        problem = "it has an empty, '.' or '..' segment"
    elif not all(_FILE.fullmatch(s) for s in segments):
        problem = "it contains NUL or another control character"
    if problem is not None:
        raise InvalidNameError(f"invalid artifact path {value!r}: {problem}; use a relative path of plain "
                               "names separated by '/' (like src/util.py)", code="INVALID_PATH")
    return value


def join(base: Path, *parts: str) -> Path:
    """``safe_join`` with the hub's error type."""
    try:
        return safe_join(base, *parts)
    except InvalidInputError as err:
        raise InvalidNameError(err.message) from err
