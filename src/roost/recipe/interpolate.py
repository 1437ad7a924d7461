"""Recipe variable interpolation: ``{configuration:/ptr}``, ``{artifacts:path}`` and friends.

Supported forms (``<dep>`` is a dependency's component name)::

    {configuration:/json/pointer}        {<dep>:configuration:/json/pointer}
    {artifacts:path}                     {<dep>:artifacts:path}
    {artifacts:decompressedPath}         {<dep>:artifacts:decompressedPath}
    {work:path}                          {<dep>:work:path}
    {kernel:rootPath}                    {iot:thingName}

Configuration pointers follow RFC 6901 (``~0`` is ``~``, ``~1`` is ``/``). A leaf becomes its
string form (strings as they are, numbers as JSON text, ``true``/``false``, ``null``); an object
or array becomes compact JSON. Anything unknown (namespace, dependency, missing node) stays
exactly as written. Substitution is a single pass: replaced text is never re-scanned.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from roost.recipe.model import Lifecycle, LifecycleStep

__all__ = [
    "DependencyPaths",
    "InterpolationContext",
    "escape_pointer_token",
    "interpolate",
    "interpolate_lifecycle",
    "resolve_pointer",
]

_VARIABLE_RE = re.compile(r"\{([^{}]+)\}")
_INDEX_RE = re.compile(r"0|[1-9][0-9]*")
_MISSING = object()


@dataclass(frozen=True)
class DependencyPaths:
    """What a component may read of one of its dependencies."""

    configuration: Mapping[str, Any]
    artifacts_path: str
    decompressed_path: str
    work_path: str


@dataclass(frozen=True)
class InterpolationContext:
    """Everything the variables of one component's recipe can refer to."""

    component: str
    configuration: Mapping[str, Any]
    artifacts_path: str
    decompressed_path: str
    work_path: str
    kernel_root: str
    thing_name: str
    dependencies: Mapping[str, DependencyPaths] = field(default_factory=dict)


def escape_pointer_token(token: str) -> str:
    """Escape one key for use in a JSON pointer (``~`` → ``~0``, ``/`` → ``~1``)."""
    return token.replace("~", "~0").replace("/", "~1")


def resolve_pointer(document: Any, pointer: str) -> Any:
    """Resolve an RFC 6901 pointer; raise ``KeyError`` when it does not lead to a node."""
    if pointer == "":
        return document
    if not pointer.startswith("/"):
        raise KeyError(pointer)
    node = document
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping):
            if token not in node:
                raise KeyError(pointer)
            node = node[token]
        elif isinstance(node, list):
            if not _INDEX_RE.fullmatch(token) or int(token) >= len(node):
                raise KeyError(pointer)
            node = node[int(token)]
        else:
            raise KeyError(pointer)
    return node


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        value = dict(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _configuration(document: Mapping[str, Any], pointer: str) -> Any:
    try:
        return _to_text(resolve_pointer(document, pointer))
    except (KeyError, TypeError, ValueError):
        return _MISSING


def _own(namespace: str, rest: str, ctx: InterpolationContext) -> Any:
    if namespace == "kernel" and rest == "rootPath":
        return ctx.kernel_root
    if namespace == "iot" and rest == "thingName":
        return ctx.thing_name
    own = DependencyPaths(configuration=ctx.configuration, artifacts_path=ctx.artifacts_path,
                          decompressed_path=ctx.decompressed_path, work_path=ctx.work_path)
    return _dependency(own, namespace, rest)


def _dependency(dep: DependencyPaths, namespace: str, rest: str) -> Any:
    if namespace == "configuration":
        return _configuration(dep.configuration, rest)
    if namespace == "artifacts" and rest == "path":
        return dep.artifacts_path
    if namespace == "artifacts" and rest == "decompressedPath":
        return dep.decompressed_path
    if namespace == "work" and rest == "path":
        return dep.work_path
    return _MISSING


def _lookup(expression: str, ctx: InterpolationContext) -> Any:
    namespace, colon, rest = expression.partition(":")
    if not colon:
        return _MISSING
    value = _own(namespace, rest, ctx)
    if value is not _MISSING:
        return value
    dep_namespace, colon, dep_rest = rest.partition(":")
    if not colon:
        return _MISSING
    dep = ctx.dependencies.get(namespace)
    if dep is None and namespace == ctx.component:
        dep = DependencyPaths(ctx.configuration, ctx.artifacts_path, ctx.decompressed_path, ctx.work_path)
    if dep is None:
        return _MISSING
    return _dependency(dep, dep_namespace, dep_rest)


def interpolate(text: str, ctx: InterpolationContext) -> str:
    """Replace every known ``{...}`` variable of ``text`` in one pass."""
    if "{" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        value = _lookup(match.group(1), ctx)
        return match.group(0) if value is _MISSING else str(value)

    return _VARIABLE_RE.sub(replace, text)


def _step(step: LifecycleStep | None, ctx: InterpolationContext) -> LifecycleStep | None:
    if step is None:
        return None
    return dataclasses.replace(
        step,
        script=interpolate(step.script, ctx),
        setenv={key: interpolate(value, ctx) for key, value in step.setenv.items()},
        skipif=None if step.skipif is None else interpolate(step.skipif, ctx),
    )


def interpolate_lifecycle(lifecycle: Lifecycle, ctx: InterpolationContext) -> Lifecycle:
    """Interpolate every Script, Setenv value and Skipif argument of a lifecycle."""
    return Lifecycle(
        setenv={key: interpolate(value, ctx) for key, value in lifecycle.setenv.items()},
        bootstrap=_step(lifecycle.bootstrap, ctx),
        install=_step(lifecycle.install, ctx),
        startup=_step(lifecycle.startup, ctx),
        run=_step(lifecycle.run, ctx),
        shutdown=_step(lifecycle.shutdown, ctx),
        recover=_step(lifecycle.recover, ctx),
    )
