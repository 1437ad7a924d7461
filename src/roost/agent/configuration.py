"""Component configuration trees: JSON-pointer reads, MERGE and RESET updates.

Greengrass semantics: a deployment's configuration update first applies RESET (each JSON pointer
goes back to the recipe's default value, or disappears when the default has none; the empty
pointer resets the whole tree), then MERGE (objects merge key by key, anything else replaces).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from roost.errors import InvalidInputError, NotFoundError

_MISSING = object()


def parse_pointer(pointer: str) -> list[str]:
    """Split an RFC 6901 JSON pointer into keys (``""`` is the whole document)."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise InvalidInputError(f"invalid JSON pointer {pointer!r}: it must be empty or start with '/'",
                                code="INVALID_POINTER")
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def get_path(tree: Any, key_path: Sequence[str]) -> Any:
    """The node at ``key_path``; :class:`NotFoundError` naming the first missing key."""
    node = tree
    for i, key in enumerate(key_path):
        if isinstance(node, Mapping) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            where = "/" + "/".join(key_path[: i + 1])
            raise NotFoundError(f"configuration has no key at {where}", code="CONFIG_KEY_NOT_FOUND")
    return node


def deep_merge(base: Any, update: Any) -> Any:
    """A new tree: ``update`` merged into ``base`` (objects merge, everything else replaces)."""
    if isinstance(base, Mapping) and isinstance(update, Mapping):
        out = {k: copy.deepcopy(v) for k, v in base.items()}
        for key, value in update.items():
            out[key] = deep_merge(out[key], value) if key in out else copy.deepcopy(value)
        return out
    return copy.deepcopy(update)


def merge_at(tree: Mapping[str, Any], key_path: Sequence[str], value: Any) -> dict[str, Any]:
    """Merge ``value`` into the node at ``key_path`` (creating objects on the way)."""
    wrapped: Any = value
    for key in reversed(key_path):
        wrapped = {key: wrapped}
    merged = deep_merge(tree, wrapped)
    assert isinstance(merged, dict)
    return merged


def reset(tree: Mapping[str, Any], defaults: Mapping[str, Any], pointer: str) -> dict[str, Any]:
    """Reset the node at ``pointer`` to its default (or remove it when there is none)."""
    keys = parse_pointer(pointer)
    if not keys:
        return copy.deepcopy(dict(defaults))
    out: dict[str, Any] = copy.deepcopy(dict(tree))
    try:
        default = get_path(defaults, keys)
    except NotFoundError:
        default = _MISSING
    parent: Any = out
    for key in keys[:-1]:
        if not isinstance(parent, dict) or key not in parent:
            if default is _MISSING:
                return out
            parent.setdefault(key, {})
        parent = parent[key]
    if not isinstance(parent, dict):
        return out
    if default is _MISSING:
        parent.pop(keys[-1], None)
    else:
        parent[keys[-1]] = copy.deepcopy(default)
    return out


def apply_update(tree: Mapping[str, Any], defaults: Mapping[str, Any], update: Mapping[str, Any],
                 component: str) -> dict[str, Any]:
    """Apply one ``{"MERGE": {...}, "RESET": ["/ptr", ...]}`` update (RESET first, then MERGE)."""
    unknown = set(update) - {"MERGE", "RESET"}
    if unknown:
        raise InvalidInputError(
            f"configuration update for {component}: unknown key(s) {sorted(unknown)}; expected MERGE and/or RESET",
            code="INVALID_CONFIG_UPDATE")
    out = dict(tree)
    resets = update.get("RESET", [])
    if not isinstance(resets, list) or not all(isinstance(p, str) for p in resets):
        raise InvalidInputError(f"configuration update for {component}: RESET must be a list of JSON pointers",
                                code="INVALID_CONFIG_UPDATE")
    for pointer in resets:
        out = reset(out, defaults, pointer)
    merge = update.get("MERGE", {})
    if not isinstance(merge, Mapping):
        raise InvalidInputError(f"configuration update for {component}: MERGE must be an object",
                                code="INVALID_CONFIG_UPDATE")
    merged = deep_merge(out, merge)
    assert isinstance(merged, dict)
    return merged
