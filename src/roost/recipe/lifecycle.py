"""Lifecycles: the model (:class:`Lifecycle`, :class:`LifecycleStep`), how a raw Lifecycle object is
validated into one, and Greengrass' selection of the global Lifecycle for a manifest.

Timeouts: ``LifecycleStep.timeout`` is what the recipe says (``None`` when absent) so that a
recipe round-trips unchanged; :meth:`LifecycleStep.effective_timeout` applies the Greengrass
defaults (:data:`DEFAULT_TIMEOUTS`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from roost.recipe.checks import Checker
from roost.recipe.checks import join_path as _join
from roost.recipe.errors import RecipeError

StepKind = Literal["bootstrap", "install", "startup", "run", "shutdown", "recover"]

#: Greengrass' default step timeouts in seconds; ``None`` means "runs until stopped".
DEFAULT_TIMEOUTS: Mapping[StepKind, float | None] = {
    "bootstrap": 120.0,
    "install": 120.0,
    "startup": 120.0,
    "run": None,
    "shutdown": 15.0,
    "recover": 60.0,
}


@dataclass(frozen=True, kw_only=True)
class LifecycleStep:
    """One lifecycle step. A recipe step given as a plain string is ``{Script: <string>}``."""

    script: str
    timeout: float | None = None
    setenv: dict[str, str] = field(default_factory=dict)
    requires_privilege: bool = False
    skipif: str | None = None

    def effective_timeout(self, kind: StepKind) -> float | None:
        """The recipe's timeout, else the Greengrass default for ``kind`` (``None`` for run)."""
        return self.timeout if self.timeout is not None else DEFAULT_TIMEOUTS[kind]

    @property
    def skip_condition(self) -> tuple[Literal["onpath", "exists"], str] | None:
        """``Skipif`` split into ``("onpath", exe)`` or ``("exists", path)``, or ``None``."""
        if self.skipif is None:
            return None
        keyword, _, argument = self.skipif.strip().partition(" ")
        kind: Literal["onpath", "exists"] = "onpath" if keyword == "onpath" else "exists"
        return kind, argument.strip()


@dataclass(frozen=True, kw_only=True)
class Lifecycle:
    """A manifest's (or the selected global) lifecycle. Startup and Run never coexist."""

    setenv: dict[str, str] = field(default_factory=dict)
    bootstrap: LifecycleStep | None = None
    install: LifecycleStep | None = None
    startup: LifecycleStep | None = None
    run: LifecycleStep | None = None
    shutdown: LifecycleStep | None = None
    recover: LifecycleStep | None = None

    def step(self, kind: StepKind) -> LifecycleStep | None:
        """The step of the given kind, if the recipe defines it."""
        step: LifecycleStep | None = getattr(self, kind)
        return step

    def steps(self) -> dict[StepKind, LifecycleStep]:
        """Every defined step, in execution order (bootstrap, install, startup/run, ...)."""
        kinds: tuple[StepKind, ...] = ("bootstrap", "install", "startup", "run", "shutdown", "recover")
        return {kind: step for kind in kinds if (step := self.step(kind)) is not None}

    @property
    def is_empty(self) -> bool:
        return not self.setenv and not self.steps()


ALL_SELECTION = "all"


class SelectableManifest(Protocol):
    """What the global-lifecycle selection reads of a manifest (:class:`~roost.recipe.model.Manifest`)."""

    @property
    def selections(self) -> list[str]: ...


class SelectableRecipe(Protocol):
    """What the global-lifecycle selection reads of a recipe (:class:`~roost.recipe.model.Recipe`;
    a protocol, so that this module does not import the model that imports it)."""

    @property
    def global_lifecycle(self) -> dict[str, Any]: ...
    @property
    def manifests(self) -> Sequence[SelectableManifest]: ...
    @property
    def source(self) -> str: ...


_SKIPIF_RE = re.compile(r"(onpath|exists)\s+\S.*", re.DOTALL)
_STEP_FIELDS = ("Script", "Timeout", "Setenv", "RequiresPrivilege", "Skipif")
_LIFECYCLE_FIELDS = ("Setenv", "Bootstrap", "Install", "Startup", "Run", "Shutdown", "Recover")


class LifecycleBuilder(Checker):
    """Validates raw Lifecycle objects (and their steps) of one document."""

    def step(self, value: Any, path: str) -> LifecycleStep:
        if isinstance(value, str):
            return LifecycleStep(script=value)
        if not isinstance(value, dict):
            raise self.mismatch(path, "a string or an object with Script", value)
        obj = self.fields(value, path, _STEP_FIELDS, lowercase=True)
        if "Script" not in obj:
            raise self.fail(_join(path, "Script"), "missing required field Script", "a string")
        script = self.string(obj["Script"], _join(path, "Script"))
        timeout: float | None = None
        raw_timeout = obj.get("Timeout")
        if raw_timeout is not None:
            timeout = self.positive_number(raw_timeout, _join(path, "Timeout"))
        setenv = self.setenv(obj["Setenv"], _join(path, "Setenv")) if obj.get("Setenv") is not None else {}
        privileged = obj.get("RequiresPrivilege")
        requires_privilege = (
            False if privileged is None else self.boolean(privileged, _join(path, "RequiresPrivilege"))
        )
        skipif = self.optional_string(obj, "Skipif", path)
        if skipif is not None and not _SKIPIF_RE.fullmatch(skipif.strip()):
            raise self.mismatch(_join(path, "Skipif"), "'onpath <executable>' or 'exists <file>'", skipif)
        return LifecycleStep(
            script=script,
            timeout=timeout,
            setenv=setenv,
            requires_privilege=requires_privilege,
            skipif=skipif.strip() if skipif is not None else None,
        )

    def lifecycle(self, value: Any, path: str) -> Lifecycle:
        obj = self.fields(value, path, _LIFECYCLE_FIELDS, lowercase=True)
        if obj.get("Startup") is not None and obj.get("Run") is not None:
            raise self.fail(
                path,
                "Startup and Run cannot both be given: Startup is for background processes that "
                "return once started, Run for a foreground process",
                "either Startup or Run",
            )
        steps: dict[StepKind, LifecycleStep] = {}
        kinds: tuple[StepKind, ...] = ("bootstrap", "install", "startup", "run", "shutdown", "recover")
        for kind in kinds:
            field_name = kind.capitalize()
            if obj.get(field_name) is not None:
                steps[kind] = self.step(obj[field_name], _join(path, field_name))
        setenv = self.setenv(obj["Setenv"], _join(path, "Setenv")) if obj.get("Setenv") is not None else {}
        return Lifecycle(setenv=setenv, **steps)


def filter_selections(source: Mapping[str, Any], keywords: set[str], selectors: Sequence[str]) -> Any:
    """Greengrass' platform-selection filter over a (global) lifecycle section.

    At any level, a map with at least one key in ``keywords`` (every selection named by any
    manifest, plus ``all``) is a selector map: the value of the first of ``selectors`` present
    (else of ``all``) replaces it, and is filtered in turn; other maps are filtered entry by
    entry. Returns ``None`` when filtering removes everything at this level.
    """
    if any(key in keywords for key in source):
        chosen = next((source[s] for s in selectors if source.get(s) is not None), None)
        if chosen is None:
            chosen = source.get(ALL_SELECTION)
        if chosen is None:
            return None
        return filter_selections(chosen, keywords, selectors) if isinstance(chosen, dict) else chosen
    result: dict[str, Any] = {}
    for key, value in source.items():
        filtered = filter_selections(value, keywords, selectors) if isinstance(value, dict) else value
        if filtered is not None:
            result[key] = filtered
    return result


def selected_global_lifecycle(recipe: SelectableRecipe, manifest_index: int | None) -> Lifecycle:
    """The recipe's global Lifecycle as seen by one manifest (``None``: the recipe has none)."""
    if not recipe.global_lifecycle:
        return Lifecycle()
    keywords = {ALL_SELECTION}
    for manifest in recipe.manifests:
        keywords.update(manifest.selections)
    selectors = [] if manifest_index is None else recipe.manifests[manifest_index].selections
    filtered = filter_selections(recipe.global_lifecycle, keywords, selectors)
    if not isinstance(filtered, dict) or not filtered:
        return Lifecycle()
    try:
        return LifecycleBuilder(recipe.source).lifecycle(filtered, "Lifecycle")
    except RecipeError as err:
        if manifest_index is None:
            raise
        where = f"as selected for Manifests[{manifest_index}] with Selections {selectors or ['all']}"
        raise RecipeError(
            f"{err.problem} ({where})", source=err.source, field_path=err.field_path, expected=err.expected
        ) from err


def build_lifecycle(value: Any, source: str = "<string>", path: str = "Lifecycle") -> Lifecycle:
    """Validate one raw Lifecycle object."""
    return LifecycleBuilder(source).lifecycle(value, path)
