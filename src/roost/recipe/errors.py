"""Errors raised while reading, validating, selecting and resolving recipes.

``RecipeError`` (code ``RECIPE_INVALID``, or ``PLATFORM_UNSUPPORTED`` when no manifest fits the
device) says which file and which field was wrong and what was expected; retrying will not help,
fix the recipe. ``DependencyError`` is raised by dependency resolution with the codes
``DEPENDENCY_MISSING``, ``DEPENDENCY_CONFLICT`` and ``DEPENDENCY_CYCLE``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from roost.errors import InvalidInputError

__all__ = ["DependencyError", "RecipeError", "describe_value"]


def describe_value(value: object) -> str:
    """A short human description of a parsed YAML/JSON value, for "got ..." messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, float) and not math.isfinite(value):
        return f"a non-finite number ({value})"
    if isinstance(value, int) and abs(value) > 10**30:
        return "a huge number"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, bytes | bytearray):
        return "binary data"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the string {shown!r}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, Sequence):
        return "a list"
    return type(value).__name__


class RecipeError(InvalidInputError):
    """A recipe is malformed or cannot be used here; fix the recipe.

    ``source`` is the file name (or ``"<string>"``), ``field_path`` the offending field
    (``Manifests[0].Lifecycle.Run``; empty for whole-document problems), ``expected`` what would
    have been accepted. ``line``/``column`` (1-based) are set for syntax errors.
    """

    code = "RECIPE_INVALID"

    def __init__(
        self,
        problem: str,
        *,
        source: str = "<string>",
        field_path: str = "",
        expected: str = "",
        code: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.source = source
        self.field_path = field_path
        self.expected = expected
        self.problem = problem
        self.line = line
        self.column = column
        message = ": ".join(part for part in (source, field_path, problem) if part)
        super().__init__(message, code=code)

    @classmethod
    def mismatch(cls, source: str, field_path: str, expected: str, got: Any) -> RecipeError:
        """``<source>: <path>: expected <expected>, got <description of got>``."""
        return cls(
            f"expected {expected}, got {describe_value(got)}",
            source=source,
            field_path=field_path,
            expected=expected,
        )


class DependencyError(RecipeError):
    """The requested component set cannot be resolved.

    ``component`` is the component at fault, ``requirements`` maps each requirer to its range,
    ``available`` lists the versions that exist and ``cycle`` the names along a cycle.
    """

    code = "DEPENDENCY_CONFLICT"

    def __init__(
        self,
        message: str,
        *,
        code: str,
        component: str = "",
        requirements: Mapping[str, str] | None = None,
        available: Sequence[str] = (),
        cycle: Sequence[str] = (),
    ) -> None:
        super().__init__(message, source="", field_path="", expected="", code=code)
        self.component = component
        self.requirements = dict(requirements or {})
        self.available = list(available)
        self.cycle = list(cycle)
