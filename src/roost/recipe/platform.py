"""The device platform, in Greengrass terms, and manifest Platform matching."""

from __future__ import annotations

import platform as _platform
import re
import sys
from collections.abc import Mapping

__all__ = ["RUNTIME", "WILDCARD_ATTRIBUTES", "current_platform", "normalise_architecture", "platform_matches"]

_ARCHITECTURES: Mapping[str, str] = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "x64": "amd64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armv8b": "aarch64",
    "i386": "x86",
    "i486": "x86",
    "i586": "x86",
    "i686": "x86",
    "x86": "x86",
}


def normalise_architecture(machine: str) -> tuple[str, str | None]:
    """Map ``platform.machine()`` to a Greengrass ``(architecture, architecture.detail)``.

    ARM 32-bit machines (``armv6l``, ``armv7l``, ``armv8l``) are ``arm`` with the machine name as
    the detail; anything unknown is reported lower-cased, without detail.
    """
    lowered = machine.strip().lower()
    if lowered in _ARCHITECTURES:
        return _ARCHITECTURES[lowered], None
    if lowered.startswith("arm"):
        return "arm", lowered
    return lowered, None


def current_platform() -> dict[str, str]:
    """This device's platform: ``os``, ``architecture`` and, where known, ``architecture.detail``."""
    if sys.platform.startswith("linux"):
        os_name = "linux"
    elif sys.platform == "darwin":
        os_name = "darwin"
    elif sys.platform in ("win32", "cygwin"):
        os_name = "windows"
    else:
        os_name = sys.platform
    architecture, detail = normalise_architecture(_platform.machine())
    result = {"os": os_name, "architecture": architecture}
    if detail is not None:
        result["architecture.detail"] = detail
    return result


#: The ``runtime`` a manifest matches when the device reports none: Roost runs components as the
#: classic (Java) nucleus does, not as Greengrass nucleus lite (``aws_nucleus_lite``).
RUNTIME = "aws_nucleus_classic"

#: Platform attributes whose values ``all`` and ``any`` are wildcards too (the nucleus' OS and
#: architecture enums have both); ``*`` is a wildcard for every attribute.
WILDCARD_ATTRIBUTES = frozenset({"os", "architecture"})
_WILDCARD_WORDS = frozenset({"all", "any"})


def _value_matches(expected: str, actual: str | None, key: str = "") -> bool:
    if expected == "*":
        return True
    if key == "runtime" and actual is None:
        actual = RUNTIME  # Roost runs the classic nucleus' component model
    if key in WILDCARD_ATTRIBUTES and expected.strip().casefold() in _WILDCARD_WORDS:
        return True
    if actual is None:
        return False
    if len(expected) >= 2 and expected.startswith("/") and expected.endswith("/"):
        try:
            return re.fullmatch(expected[1:-1], actual) is not None
        except re.error:
            return False
    return expected.casefold() == actual.casefold()


def platform_matches(spec: Mapping[str, str], platform: Mapping[str, str]) -> bool:
    """Whether a manifest's ``Platform`` (``spec``) accepts ``platform``.

    Every key of ``spec`` must match: ``*`` matches anything (even an absent key), and so do
    ``all`` and ``any`` for ``os`` and ``architecture`` (the nucleus' wildcards); an absent
    ``runtime`` is :data:`RUNTIME` (``aws_nucleus_classic``); ``/regex/`` is
    a full-match regular expression, anything else is a case-insensitive equality. An empty spec
    matches every platform.
    """
    return all(_value_matches(expected, platform.get(key), key) for key, expected in spec.items())
