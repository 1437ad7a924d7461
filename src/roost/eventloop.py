"""Running a process's event loop: on uvloop when it imports (a dependency; it cuts the per-message cost
of asyncio's transports), else plain asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on uvloop where it is available."""
    try:
        import uvloop
    except ImportError:  # plain asyncio still works where uvloop cannot build
        return asyncio.run(main)
    return uvloop.run(main)


__all__ = ["run"]
