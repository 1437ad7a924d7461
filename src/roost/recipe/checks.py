"""The primitives of recipe validation: type checks that raise :class:`~roost.recipe.errors.RecipeError`
naming the source, the field path and what was expected. Used by :mod:`roost.recipe.lifecycle` and
:mod:`roost.recipe.validate`; knows nothing of the recipe model.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from roost.recipe.errors import RecipeError

_T = TypeVar("_T")


def join_path(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


_join = join_path


class Checker:
    """Validates one document; carries the source name for error messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    # -- primitives ---------------------------------------------------------------------------

    def fail(self, path: str, problem: str, expected: str = "") -> RecipeError:
        return RecipeError(problem, source=self.source, field_path=path, expected=expected)

    def mismatch(self, path: str, expected: str, got: Any) -> RecipeError:
        return RecipeError.mismatch(self.source, path, expected, got)

    def mapping(self, value: Any, path: str, expected: str = "an object") -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.mismatch(path, expected, value)
        for key in value:
            if not isinstance(key, str):
                raise self.fail(path, f"field names must be strings, got {key!r}", "string field names")
        return value

    def fields(
        self, value: Any, path: str, allowed: Sequence[str], *, lowercase: bool = True, expected: str = ""
    ) -> dict[str, Any]:
        """Check an object's keys; return it keyed by canonical (PascalCase) field name.

        Keys match in any case, as the Greengrass nucleus reads recipes (``Uri``, ``lifecycle``,
        ``URI`` are one field); two keys that differ only in case are an error naming both.
        ``lowercase`` is accepted for compatibility and has no effect.
        """
        obj = self.mapping(value, path, expected or "an object")
        folded = {name.casefold(): name for name in allowed}
        result: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        for key, item in obj.items():
            name = folded.get(key.casefold())
            if name is None:
                hint = difflib.get_close_matches(key.casefold(), list(folded), n=1)
                did_you_mean = f" (did you mean {folded[hint[0]]!r}?)" if hint else ""
                allowed_text = ", ".join(allowed)
                raise self.fail(
                    _join(path, key),
                    f"unknown field {key!r}{did_you_mean}; allowed fields: {allowed_text}",
                    f"one of {allowed_text}",
                )
            if name in result:
                raise self.fail(
                    _join(path, name),
                    f"{name} is given twice, as {spelled[name]!r} and {key!r} (field names are not "
                    "case-sensitive)",
                    "one spelling",
                )
            result[name] = item
            spelled[name] = key
        return result

    def string(self, value: Any, path: str, expected: str = "a string") -> str:
        if not isinstance(value, str):
            raise self.mismatch(path, expected, value)
        return value

    def optional_string(self, obj: Mapping[str, Any], key: str, path: str) -> str | None:
        value = obj.get(key)
        return None if value is None else self.string(value, _join(path, key))

    def choice(self, value: Any, path: str, choices: Sequence[_T]) -> _T:
        """One of ``choices``, matched in any case (as the nucleus reads enums); the canonical one."""
        expected = "one of " + ", ".join(str(c) for c in choices)
        if isinstance(value, str):
            for candidate in choices:
                if str(candidate).casefold() == value.casefold():
                    return candidate
        raise self.mismatch(path, expected, value)

    def boolean(self, value: Any, path: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise self.mismatch(path, "true or false", value)

    def string_list(self, value: Any, path: str) -> list[str]:
        if not isinstance(value, list):
            raise self.mismatch(path, "a list of strings", value)
        return [self.string(item, _join(path, i)) for i, item in enumerate(value)]

    def json_value(self, value: Any, path: str) -> None:
        """Check that ``value`` is plain JSON (string keys, finite numbers)."""
        if value is None or isinstance(value, str | bool | int):
            return
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.mismatch(path, "a finite number", value)
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                self.json_value(item, _join(path, i))
            return
        if isinstance(value, dict):
            for key, item in self.mapping(value, path).items():
                self.json_value(item, _join(path, key))
            return
        raise self.mismatch(path, "a JSON value", value)

    def positive_number(self, value: Any, path: str) -> float:
        expected = "a positive number of seconds"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.mismatch(path, expected, value)
        try:
            number = float(value)
        except OverflowError as err:
            raise self.mismatch(path, expected, value) from err
        if not math.isfinite(number) or number <= 0:
            raise self.mismatch(path, expected, value)
        return number

    def setenv(self, value: Any, path: str) -> dict[str, str]:
        obj = self.mapping(value, path, "an object of environment variables")
        result: dict[str, str] = {}
        for key, item in obj.items():
            if not key or "=" in key or "\0" in key:
                raise self.fail(_join(path, key), "invalid environment variable name", "a name without '='")
            result[key] = self.env_value(item, _join(path, key))
        return result

    def env_value(self, value: Any, path: str) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float) and math.isfinite(value):
            return json.dumps(value)
        raise self.mismatch(path, "a string, number or boolean", value)
