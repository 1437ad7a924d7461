"""Platform detection and manifest Platform matching."""

from __future__ import annotations

import pytest

from roost.recipe import current_platform, platform_matches
from roost.recipe.platform import normalise_architecture


def test_current_platform_uses_greengrass_names() -> None:
    platform = current_platform()
    assert platform["os"] in {"linux", "darwin", "windows"}
    assert platform["architecture"] in {"amd64", "aarch64", "arm", "x86"}


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", ("amd64", None)),
        ("AMD64", ("amd64", None)),
        ("aarch64", ("aarch64", None)),
        ("arm64", ("aarch64", None)),
        ("armv7l", ("arm", "armv7l")),
        ("armv6l", ("arm", "armv6l")),
        ("i686", ("x86", None)),
        ("riscv64", ("riscv64", None)),
    ],
)
def test_normalise_architecture(machine: str, expected: tuple[str, str | None]) -> None:
    assert normalise_architecture(machine) == expected


LINUX_AMD64 = {"os": "linux", "architecture": "amd64"}
LINUX_ARM = {"os": "linux", "architecture": "arm", "architecture.detail": "armv7l"}


@pytest.mark.parametrize(
    ("spec", "platform", "matches"),
    [
        ({}, LINUX_AMD64, True),
        ({"os": "linux"}, LINUX_AMD64, True),
        ({"os": "Linux"}, LINUX_AMD64, True),
        ({"os": "windows"}, LINUX_AMD64, False),
        ({"os": "*"}, LINUX_AMD64, True),
        ({"runtime": "*"}, LINUX_AMD64, True),
        # Roost runs components as the classic nucleus does (recipes with a nucleus-lite manifest).
        ({"runtime": "aws_nucleus_classic"}, LINUX_AMD64, True),
        ({"runtime": "aws_nucleus_lite"}, LINUX_AMD64, False),
        ({"runtime": "aws_nucleus_lite"}, {**LINUX_AMD64, "runtime": "aws_nucleus_lite"}, True),
        ({"os": "linux", "architecture": "/amd64|x86_64/"}, LINUX_AMD64, True),
        ({"architecture": "/amd/"}, LINUX_AMD64, False),  # full match, not search
        ({"architecture.detail": "/armv[67]l/"}, LINUX_ARM, True),
        ({"architecture.detail": "armv8"}, LINUX_ARM, False),
        ({"architecture.detail": "/armv.*/"}, LINUX_AMD64, False),
        ({"os": "linux", "architecture": "aarch64"}, LINUX_AMD64, False),
    ],
)
def test_platform_matches(spec: dict[str, str], platform: dict[str, str], matches: bool) -> None:
    assert platform_matches(spec, platform) is matches
