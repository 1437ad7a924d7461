"""Dependency resolution: choose one version of every component a deployment needs.

Every component gets the highest available version that satisfies the ranges of everyone who
requires it (the deployment's roots are required by ``"deployment"``). Choosing a version
changes which dependencies exist, so resolution repeats until the chosen set stops changing.
As on Greengrass, HARD and SOFT dependencies are both installed (the type only changes restart
behaviour: a deployment that restarts a component restarts its HARD dependents, not its SOFT
ones; see ``docs/builtins.md``); only HARD dependencies can form a forbidden cycle.
Backtracking is not attempted: the greedy choice is reported as a conflict when it fails.

AWS-provided components (:data:`BUILTINS`: ``aws.greengrass.Nucleus``, ``aws.greengrass.Cli``,
...) are satisfied by Roost itself: no recipe, nothing to run; each has the version Roost
reports, which must satisfy every requirer's range (``BUILTIN_VERSION_MISMATCH``). Any other
``aws.greengrass.*`` name with no recipe available is a component of AWS's catalogue that Roost
does not provide (``AWS_COMPONENT_UNAVAILABLE``); a recipe of that name published to the hub (or
in the deployment's recipe folder) replaces it.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cmp_to_key, lru_cache
from typing import Any

import nodesemver

from roost import GGC_COMPAT_VERSION
from roost.recipe.errors import DependencyError, RecipeError
from roost.recipe.model import Recipe
from roost.recipe.validate import is_valid_range

__all__ = ["AWS_PREFIX", "BUILTINS", "DEPLOYMENT_REQUIRER", "Builtin", "Resolution", "dependency_order",
           "is_builtin", "resolution", "resolve", "sort_versions"]

logger = logging.getLogger(__name__)

#: The requirer named for the roots of a deployment.
DEPLOYMENT_REQUIRER = "deployment"
_MAX_ROUNDS = 1000
#: Names of AWS-provided (catalogue) components.
AWS_PREFIX = "aws.greengrass."


@dataclass(frozen=True)
class Builtin:
    """An AWS-provided component that Roost itself stands in for: no recipe, nothing to run."""

    name: str
    version: str
    #: What it does on Roost today (one line; docs/builtins.md says more).
    summary: str


BUILTINS: dict[str, Builtin] = {b.name: b for b in (
    Builtin("aws.greengrass.Nucleus", GGC_COMPAT_VERSION,
            "the Roost agent itself: supervisor, deployments, local IPC (the Greengrass nucleus level it implements)"),
    Builtin("aws.greengrass.Cli", GGC_COMPAT_VERSION,
            "the agent's CLI IPC operations and the `roost` command line"),
    Builtin("aws.greengrass.DockerApplicationManager", "2.0.12",
            "satisfied as a name; docker: artifacts are not supported yet"),
    Builtin("aws.greengrass.TokenExchangeService", "2.0.3",
            "satisfied as a name; no AWS credentials are served (Roost needs no cloud account)"),
    Builtin("aws.greengrass.ShadowManager", "2.3.9",
            "satisfied as a name; the shadow IPC operations are not implemented yet"),
    Builtin("aws.greengrass.SecretManager", "2.2.0",
            "GetSecretValue serves the secrets the hub deploys (cloudSecrets; docs/secrets.md)"),
    Builtin("aws.greengrass.LambdaLauncher", "2.0.13",
            "satisfied as a name; Lambda functions run through Roost's Lambda host (roost.serve), not a launcher"),
    Builtin("aws.greengrass.LambdaManager", "2.3.3",
            "satisfied as a name; Lambda components are not managed as on Greengrass"),
    Builtin("aws.greengrass.LambdaRuntimes", "2.0.8",
            "satisfied as a name; Lambda handlers run on the device's own Python"),
    Builtin("aws.greengrass.clientdevices.mqtt.Bridge", "2.3.2",
            "satisfied as a name; the MQTT bridge's topic mapping is not implemented yet"),
)}


def is_builtin(name: str) -> bool:
    """Whether ``name`` is an AWS-provided component that Roost stands in for (:data:`BUILTINS`)."""
    return name in BUILTINS


@dataclass
class Resolution:
    """What a deployment needs: recipes to install (sorted by name) and the built-ins it relies on."""

    recipes: dict[str, Recipe]
    #: name → the built-in standing in for it, for every built-in a root or a dependency names.
    builtins: dict[str, Builtin] = field(default_factory=dict)
    #: name → {requirer: range} of those built-ins.
    builtin_requirements: dict[str, dict[str, str]] = field(default_factory=dict)

    def notes(self) -> list[str]:
        """One line per built-in, for deployment notes."""
        return [f"{name}@{b.version} is built into Roost (no recipe, nothing to run; required by "
                f"{', '.join(sorted(self.builtin_requirements.get(name, {})))}): {b.summary}"
                for name, b in sorted(self.builtins.items())]


def sort_versions(versions: Sequence[str]) -> list[str]:
    """Semantic versions in ascending order."""
    return sorted(versions, key=cmp_to_key(lambda a, b: int(nodesemver.compare(a, b, False))))


@lru_cache(maxsize=1024)
def _range(requirement: str) -> Any:
    """A parsed (cached) nodesemver range; parsing dominates the cost of a check."""
    return nodesemver.make_range(requirement, False)


def _satisfies(version: str, requirement: str) -> bool:
    try:
        return bool(_range(requirement).test(version))
    except Exception:  # an invalid version or range satisfies nothing
        return False


def _describe_requirements(requirements: Mapping[str, str]) -> str:
    return ", ".join(f"{who} requires {rng}" for who, rng in sorted(requirements.items()))


def _check_builtin(builtin: Builtin, requirements: Mapping[str, str]) -> None:
    unmet = {who: rng for who, rng in requirements.items() if not _satisfies(builtin.version, rng)}
    if unmet:
        raise DependencyError(
            f"{builtin.name} is built into Roost at version {builtin.version}, which does not satisfy "
            f"{_describe_requirements(unmet)}; widen the range (Roost provides no other version of it)",
            code="BUILTIN_VERSION_MISMATCH",
            component=builtin.name,
            requirements=requirements,
            available=[builtin.version],
        )


def _choose(name: str, requirements: Mapping[str, str], candidates: Sequence[Recipe]) -> Recipe:
    by_version: dict[str, Recipe] = {}
    for recipe in candidates:
        by_version.setdefault(recipe.version, recipe)
    if not by_version and name.startswith(AWS_PREFIX):
        raise DependencyError(
            f"{name} is a component of AWS's Greengrass catalogue that Roost does not provide "
            f"({_describe_requirements(requirements)}); Roost stands in only for "
            f"{', '.join(sorted(BUILTINS))}. Publish a replacement under that name to the hub "
            f"(`roost component publish --recipe {name}.yaml --artifacts DIR`) or put its recipe in the "
            "deployment's recipe folder",
            code="AWS_COMPONENT_UNAVAILABLE",
            component=name,
            requirements=requirements,
        )
    if not by_version:
        raise DependencyError(
            f"{name} is required but no version of it is available: {_describe_requirements(requirements)}",
            code="DEPENDENCY_MISSING",
            component=name,
            requirements=requirements,
        )
    versions = sort_versions(list(by_version))
    fitting = [v for v in versions if all(_satisfies(v, rng) for rng in requirements.values())]
    if not fitting:
        raise DependencyError(
            f"no version of {name} satisfies every requirement: {_describe_requirements(requirements)}; "
            f"available: {', '.join(versions)}",
            code="DEPENDENCY_CONFLICT",
            component=name,
            requirements=requirements,
            available=versions,
        )
    return by_version[fitting[-1]]


def _present(roots: Mapping[str, str], chosen: Mapping[str, Recipe]) -> set[str]:
    """The roots plus everything reachable from them over the dependencies (HARD and SOFT) of chosen versions."""
    present = set(roots)
    stack = sorted(roots)
    while stack:
        recipe = chosen.get(stack.pop())
        if recipe is None:
            continue
        for dep_name in sorted(recipe.dependencies):
            if dep_name not in present:
                present.add(dep_name)
                stack.append(dep_name)
    return present


def resolve(roots: Mapping[str, str], available: Mapping[str, Sequence[Recipe]]) -> dict[str, Recipe]:
    """Pick a version of every component needed by ``roots`` (name → exact version or range).

    Returns name → recipe, sorted by name; built-ins (:data:`BUILTINS`) are satisfied and left
    out (:func:`resolution` names them). Raises :class:`DependencyError` with code
    ``DEPENDENCY_MISSING`` (nothing available), ``DEPENDENCY_CONFLICT`` (no version satisfies
    every requirer), ``DEPENDENCY_CYCLE`` (HARD dependencies form a cycle),
    ``BUILTIN_VERSION_MISMATCH`` (a range excludes a built-in's version) or
    ``AWS_COMPONENT_UNAVAILABLE`` (an AWS catalogue component Roost does not provide).
    """
    return resolution(roots, available).recipes


def resolution(roots: Mapping[str, str], available: Mapping[str, Sequence[Recipe]]) -> Resolution:
    """:func:`resolve`, also naming the built-ins the component set relies on."""
    for name, requirement in roots.items():
        if not isinstance(requirement, str) or not is_valid_range(requirement):
            raise RecipeError.mismatch(
                DEPLOYMENT_REQUIRER, f"components.{name}", "a version or npm-style semver range", requirement
            )
    chosen: dict[str, Recipe] = {}
    for _ in range(_MAX_ROUNDS):
        present = _present(roots, chosen)
        requirements: dict[str, dict[str, str]] = {
            name: {DEPLOYMENT_REQUIRER: requirement} for name, requirement in roots.items()
        }
        for requirer in sorted(present):
            recipe = chosen.get(requirer)
            if recipe is None:
                continue
            for dep_name, dep in recipe.dependencies.items():
                if dep_name in present:
                    requirements.setdefault(dep_name, {})[requirer] = dep.version_requirement
        new_chosen = {
            name: _choose(name, requirements.get(name, {}), available.get(name, ()))
            for name in sorted(present) if name not in BUILTINS
        }
        if {n: r.version for n, r in new_chosen.items()} == {n: r.version for n, r in chosen.items()}:
            builtins = {name: BUILTINS[name] for name in sorted(present) if name in BUILTINS}
            for name, builtin in builtins.items():
                _check_builtin(builtin, requirements.get(name, {}))
            _check_cycles(new_chosen)
            logger.debug("resolved %s (built in: %s)", {n: r.version for n, r in new_chosen.items()},
                         ", ".join(builtins) or "none")
            return Resolution(new_chosen, builtins, {n: dict(requirements.get(n, {})) for n in builtins})
        chosen = new_chosen
    raise DependencyError(
        f"dependency resolution did not settle after {_MAX_ROUNDS} rounds",
        code="DEPENDENCY_CONFLICT",
    )


def _find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as ``[a, b, a]``, found deterministically (names in sorted order), or ``None``."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def _edges(recipes: Mapping[str, Recipe], *, soft: bool) -> dict[str, list[str]]:
    return {
        name: sorted(
            dep
            for dep, spec in recipe.dependencies.items()
            if dep in recipes and (soft or spec.dependency_type == "HARD")
        )
        for name, recipe in recipes.items()
    }


def _check_cycles(recipes: Mapping[str, Recipe]) -> None:
    cycle = _find_cycle(_edges(recipes, soft=False))
    if cycle is not None:
        raise DependencyError(
            f"dependency cycle: {' -> '.join(cycle)}",
            code="DEPENDENCY_CYCLE",
            component=cycle[0],
            cycle=cycle,
        )


def _topological(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    dependents: dict[str, list[str]] = {name: [] for name in edges}
    remaining = {name: len(deps) for name, deps in edges.items()}
    for name, deps in edges.items():
        for dep in deps:
            dependents[dep].append(name)
    ready = [name for name, count in remaining.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for dependent in dependents[name]:
            remaining[dependent] -= 1
            if remaining[dependent] == 0:
                heapq.heappush(ready, dependent)
    return order if len(order) == len(edges) else None


def dependency_order(recipes: Mapping[str, Recipe]) -> list[str]:
    """Component names with dependencies first; among ready components, by name.

    Dependencies outside ``recipes`` are ignored. SOFT dependencies order too, unless they
    close a cycle (then only HARD ones do); a HARD cycle raises ``DEPENDENCY_CYCLE``.
    """
    order = _topological(_edges(recipes, soft=True))
    if order is not None:
        return order
    _check_cycles(recipes)
    hard_order = _topological(_edges(recipes, soft=False))
    assert hard_order is not None  # no HARD cycle, checked above
    return hard_order
