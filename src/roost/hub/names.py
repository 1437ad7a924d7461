"""Names the hub accepts for devices, groups, components, versions and artifact files.

Names end up in URLs and file paths, so anything that could escape a folder (``/``, ``\\``,
``..``, NUL) is refused with :class:`~roost.hub.errors.InvalidNameError` (HTTP 400).
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


def join(base: Path, *parts: str) -> Path:
    """``safe_join`` with the hub's error type."""
    try:
        return safe_join(base, *parts)
    except InvalidInputError as err:
        raise InvalidNameError(err.message) from err
