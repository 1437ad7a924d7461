"""Path helpers shared by every part of Roost (the agent, the hub): nothing here knows either."""

from __future__ import annotations

from pathlib import Path

from roost.errors import InvalidInputError


def safe_join(base: Path, *parts: str) -> Path:
    """Join ``parts`` below ``base``; refuse anything that would escape it.

    Names come from recipes and IPC requests, so ``..``, absolute paths and separators are
    rejected instead of being resolved.
    """
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\\" in part or "\x00" in part:
            raise InvalidInputError(f"invalid path segment {part!r}: names may not contain '/', '..' or NUL",
                                    code="INVALID_PATH")
    return base.joinpath(*parts)
