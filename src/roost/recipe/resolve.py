"""Dependency resolution: choose one version of every component a deployment needs.

Every component gets the highest available version that satisfies the ranges of everyone who
requires it (the deployment's roots are required by ``"deployment"``). Choosing a version
changes which dependencies exist, so resolution repeats until the chosen set stops changing.
SOFT dependencies never pull a component in, but their ranges apply when it is present.
Backtracking is not attempted: the greedy choice is reported as a conflict when it fails.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Mapping, Sequence
from functools import cmp_to_key, lru_cache
from typing import Any

import nodesemver

from roost.recipe.errors import DependencyError, RecipeError
from roost.recipe.model import Recipe
from roost.recipe.validate import is_valid_range

__all__ = ["DEPLOYMENT_REQUIRER", "dependency_order", "resolve", "sort_versions"]

logger = logging.getLogger(__name__)

#: The requirer named for the roots of a deployment.
DEPLOYMENT_REQUIRER = "deployment"
_MAX_ROUNDS = 1000


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


def _choose(name: str, requirements: Mapping[str, str], candidates: Sequence[Recipe]) -> Recipe:
    by_version: dict[str, Recipe] = {}
    for recipe in candidates:
        by_version.setdefault(recipe.version, recipe)
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
    """The roots plus everything reachable from them over HARD dependencies of chosen versions."""
    present = set(roots)
    stack = sorted(roots)
    while stack:
        recipe = chosen.get(stack.pop())
        if recipe is None:
            continue
        for dep_name, dep in sorted(recipe.dependencies.items()):
            if dep.dependency_type == "HARD" and dep_name not in present:
                present.add(dep_name)
                stack.append(dep_name)
    return present


def resolve(roots: Mapping[str, str], available: Mapping[str, Sequence[Recipe]]) -> dict[str, Recipe]:
    """Pick a version of every component needed by ``roots`` (name → exact version or range).

    Returns name → recipe, sorted by name. Raises :class:`DependencyError` with code
    ``DEPENDENCY_MISSING`` (nothing available), ``DEPENDENCY_CONFLICT`` (no version satisfies
    every requirer) or ``DEPENDENCY_CYCLE`` (HARD dependencies form a cycle).
    """
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
            for name in sorted(present)
        }
        if {n: r.version for n, r in new_chosen.items()} == {n: r.version for n, r in chosen.items()}:
            _check_cycles(new_chosen)
            logger.debug("resolved %s", {n: r.version for n, r in new_chosen.items()})
            return new_chosen
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
