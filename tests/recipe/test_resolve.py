"""Dependency resolution and ordering, including property tests."""

from __future__ import annotations

import re

import nodesemver
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost import GGC_COMPAT_VERSION
from roost.recipe import DependencyError, Recipe, RecipeError, dependency_order, resolve, sort_versions
from roost.recipe.resolve import BUILTINS, resolution

from .helpers import make_recipe


def catalog(*recipes: Recipe) -> dict[str, list[Recipe]]:
    result: dict[str, list[Recipe]] = {}
    for recipe in recipes:
        result.setdefault(recipe.name, []).append(recipe)
    return result


def versions(resolved: dict[str, Recipe]) -> dict[str, str]:
    return {name: recipe.version for name, recipe in resolved.items()}


def test_highest_satisfying_versions_transitively() -> None:
    available = catalog(
        make_recipe("app", "1.0.0", {"lib": "^1.0.0"}),
        make_recipe("app", "1.1.0", {"lib": "^1.2.0", "log": "~2.0.0"}),
        make_recipe("lib", "1.0.0"),
        make_recipe("lib", "1.3.0"),
        make_recipe("lib", "2.0.0"),
        make_recipe("log", "2.0.5"),
        make_recipe("log", "2.1.0"),
    )
    assert versions(resolve({"app": "^1.0.0"}, available)) == {"app": "1.1.0", "lib": "1.3.0", "log": "2.0.5"}
    assert versions(resolve({"app": "1.0.0"}, available)) == {"app": "1.0.0", "lib": "1.3.0"}


def test_version_change_drops_dependencies() -> None:
    available = catalog(
        make_recipe("app", "1.0.0", {"old": "^1.0.0"}),
        make_recipe("app", "2.0.0", {"new": "^1.0.0"}),
        make_recipe("new", "1.0.0"),
    )
    assert versions(resolve({"app": "*"}, available)) == {"app": "2.0.0", "new": "1.0.0"}


def test_shared_dependency_intersection() -> None:
    available = catalog(
        make_recipe("a", "1.0.0", {"lib": ">=1.0.0"}),
        make_recipe("b", "1.0.0", {"lib": "<1.5.0"}),
        *(make_recipe("lib", v) for v in ("1.0.0", "1.4.9", "1.5.0", "2.0.0")),
    )
    assert versions(resolve({"a": "1.0.0", "b": "1.0.0"}, available))["lib"] == "1.4.9"


def test_conflict_names_every_requirer() -> None:
    available = catalog(
        make_recipe("com.a", "1.0.0", {"com.example.Lib": "^1.0.0"}),
        make_recipe("com.b", "1.0.0", {"com.example.Lib": ">=2.0.0"}),
        make_recipe("com.example.Lib", "2.1.0"),
        make_recipe("com.example.Lib", "1.0.0"),
    )
    with pytest.raises(DependencyError) as info:
        resolve({"com.a": "1.0.0", "com.b": "1.0.0"}, available)
    err = info.value
    assert err.code == "DEPENDENCY_CONFLICT"
    assert str(err) == (
        "no version of com.example.Lib satisfies every requirement: com.a requires ^1.0.0, "
        "com.b requires >=2.0.0; available: 1.0.0, 2.1.0"
    )
    assert err.requirements == {"com.a": "^1.0.0", "com.b": ">=2.0.0"}
    assert err.available == ["1.0.0", "2.1.0"]
    assert isinstance(err, RecipeError)


def test_root_conflict_names_deployment() -> None:
    available = catalog(make_recipe("app", "1.0.0"))
    with pytest.raises(DependencyError, match=re.escape("deployment requires 2.0.0; available: 1.0.0")):
        resolve({"app": "2.0.0"}, available)


def test_missing_names_requirer() -> None:
    available = catalog(make_recipe("app", "1.0.0", {"ghost": "^1.0.0"}))
    with pytest.raises(DependencyError) as info:
        resolve({"app": "1.0.0"}, available)
    assert info.value.code == "DEPENDENCY_MISSING"
    assert str(info.value) == "ghost is required but no version of it is available: app requires ^1.0.0"
    with pytest.raises(DependencyError, match="deployment requires") as root_info:
        resolve({"nothing": "1.0.0"}, {})
    assert root_info.value.code == "DEPENDENCY_MISSING"


def test_soft_dependency_is_installed_as_on_greengrass() -> None:
    available = catalog(
        make_recipe("app", "1.0.0", {"metrics": ("^1.0.0", "SOFT")}),
        make_recipe("metrics", "1.0.0", {"store": ("^1.0.0", "SOFT")}),
        make_recipe("metrics", "2.0.0"),
        make_recipe("store", "1.1.0"),
    )
    # SOFT dependencies are pulled in (transitively), with their ranges applied.
    assert versions(resolve({"app": "1.0.0"}, available)) == {"app": "1.0.0", "metrics": "1.0.0", "store": "1.1.0"}
    # A SOFT dependency that is absent is missing, as a HARD one is (Greengrass resolves both alike).
    with pytest.raises(DependencyError) as info:
        resolve({"app": "1.0.0"}, catalog(make_recipe("app", "1.0.0", {"x": ("^1", "SOFT")})))
    assert info.value.code == "DEPENDENCY_MISSING"
    assert "x is required" in str(info.value) and "app requires ^1" in str(info.value)


def test_soft_range_conflict_when_present() -> None:
    available = catalog(
        make_recipe("app", "1.0.0", {"metrics": ("^1.0.0", "SOFT")}),
        make_recipe("metrics", "2.0.0"),
    )
    with pytest.raises(DependencyError, match=re.escape("app requires ^1.0.0, deployment requires *")):
        resolve({"app": "1.0.0", "metrics": "*"}, available)


def test_cycle() -> None:
    available = catalog(
        make_recipe("a", "1.0.0", {"b": "^1.0.0"}),
        make_recipe("b", "1.0.0", {"c": "^1.0.0"}),
        make_recipe("c", "1.0.0", {"a": "^1.0.0"}),
    )
    with pytest.raises(DependencyError) as info:
        resolve({"a": "1.0.0"}, available)
    assert info.value.code == "DEPENDENCY_CYCLE"
    assert str(info.value) == "dependency cycle: a -> b -> c -> a"
    assert info.value.cycle == ["a", "b", "c", "a"]


def test_soft_cycle_is_not_an_error() -> None:
    available = catalog(
        make_recipe("a", "1.0.0", {"b": "^1.0.0"}),
        make_recipe("b", "1.0.0", {"a": ("^1.0.0", "SOFT")}),
    )
    resolved = resolve({"a": "1.0.0"}, available)
    assert dependency_order(resolved) == ["b", "a"]


@pytest.mark.parametrize("builtin", sorted(BUILTINS))
def test_aws_provided_components_are_built_in(builtin: str) -> None:
    available = catalog(make_recipe("app", "1.0.0", {builtin: ">=2.0.0 <3.0.0", "lib": "^1.0.0"}),
                        make_recipe("lib", "1.0.0", {builtin: ("^2.0.0", "SOFT")}))
    result = resolution({"app": "1.0.0"}, available)
    assert versions(result.recipes) == {"app": "1.0.0", "lib": "1.0.0"}  # nothing to install for the built-in
    assert list(result.builtins) == [builtin]
    assert result.builtin_requirements[builtin] == {"app": ">=2.0.0 <3.0.0", "lib": "^2.0.0"}
    (note,) = result.notes()
    assert note.startswith(f"{builtin}@{BUILTINS[builtin].version} is built into Roost") and "app, lib" in note
    assert versions(resolve({"app": "1.0.0"}, available)) == {"app": "1.0.0", "lib": "1.0.0"}


def test_builtin_versions_and_roots() -> None:
    assert BUILTINS["aws.greengrass.Nucleus"].version == GGC_COMPAT_VERSION
    assert {"aws.greengrass.Nucleus", "aws.greengrass.Cli", "aws.greengrass.DockerApplicationManager",
            "aws.greengrass.TokenExchangeService", "aws.greengrass.ShadowManager", "aws.greengrass.SecretManager",
            "aws.greengrass.LambdaLauncher", "aws.greengrass.LambdaManager", "aws.greengrass.LambdaRuntimes",
            "aws.greengrass.clientdevices.mqtt.Bridge"} == set(BUILTINS)
    # A built-in named as a root (greengrass-cli deployments add aws.greengrass.Cli) is satisfied too.
    result = resolution({"aws.greengrass.Cli": "^2.0.0"}, {})
    assert result.recipes == {} and list(result.builtins) == ["aws.greengrass.Cli"]
    # A recipe of a built-in's name never replaces it: the name is Roost's.
    result = resolution({"aws.greengrass.Cli": "*"}, catalog(make_recipe("aws.greengrass.Cli", "2.0.0")))
    assert result.recipes == {} and list(result.builtins) == ["aws.greengrass.Cli"]


def test_builtin_version_outside_a_range_is_refused() -> None:
    available = catalog(make_recipe("app", "1.0.0", {"aws.greengrass.Nucleus": ">=2.0.0 <2.5.0"}))
    with pytest.raises(DependencyError) as info:
        resolve({"app": "1.0.0"}, available)
    assert info.value.code == "BUILTIN_VERSION_MISMATCH"
    assert str(info.value) == (f"aws.greengrass.Nucleus is built into Roost at version {GGC_COMPAT_VERSION}, which "
                               "does not satisfy app requires >=2.0.0 <2.5.0; widen the range (Roost provides no "
                               "other version of it)")
    assert info.value.component == "aws.greengrass.Nucleus" and info.value.available == [GGC_COMPAT_VERSION]
    with pytest.raises(DependencyError, match=re.escape("deployment requires 3.0.0")) as root_info:
        resolve({"aws.greengrass.Cli": "3.0.0"}, {})
    assert root_info.value.code == "BUILTIN_VERSION_MISMATCH"


def test_unknown_aws_catalogue_component_says_so_and_how_to_replace_it() -> None:
    available = catalog(make_recipe("app", "1.0.0", {"aws.greengrass.DLRImageClassification": "^2.1.0"}))
    with pytest.raises(DependencyError) as info:
        resolve({"app": "1.0.0"}, available)
    err = info.value
    assert err.code == "AWS_COMPONENT_UNAVAILABLE" and err.component == "aws.greengrass.DLRImageClassification"
    message = str(err)
    assert message.startswith("aws.greengrass.DLRImageClassification is a component of AWS's Greengrass catalogue "
                              "that Roost does not provide (app requires ^2.1.0)")
    assert "roost component publish" in message and "aws.greengrass.Nucleus" in message
    # As a root too.
    with pytest.raises(DependencyError) as root_info:
        resolve({"aws.greengrass.DLRImageClassification": "*"}, {})
    assert root_info.value.code == "AWS_COMPONENT_UNAVAILABLE"
    # A replacement published under that name is used like any component.
    replaced = catalog(*available["app"], make_recipe("aws.greengrass.DLRImageClassification", "2.1.9"))
    assert versions(resolve({"app": "1.0.0"}, replaced)) == {
        "app": "1.0.0", "aws.greengrass.DLRImageClassification": "2.1.9"}


def test_invalid_root_range() -> None:
    with pytest.raises(RecipeError) as info:
        resolve({"app": "not a version"}, {})
    assert info.value.field_path == "components.app"


def test_prerelease_only_when_asked() -> None:
    available = catalog(make_recipe("app", "1.0.0"), make_recipe("app", "1.1.0-beta.1"))
    assert versions(resolve({"app": "^1.0.0"}, available)) == {"app": "1.0.0"}
    assert versions(resolve({"app": "1.1.0-beta.1"}, available)) == {"app": "1.1.0-beta.1"}


def test_dependency_order() -> None:
    recipes = {
        r.name: r
        for r in (
            make_recipe("web", "1.0.0", {"db": "*", "cache": "*"}),
            make_recipe("db", "1.0.0", {"base": "*"}),
            make_recipe("cache", "1.0.0", {"base": "*", "outside": "*"}),
            make_recipe("base", "1.0.0"),
            make_recipe("zeta", "1.0.0"),
            make_recipe("alpha", "1.0.0"),
        )
    }
    assert dependency_order(recipes) == ["alpha", "base", "cache", "db", "web", "zeta"]


def test_dependency_order_hard_cycle() -> None:
    recipes = {"a": make_recipe("a", "1.0.0", {"b": "*"}), "b": make_recipe("b", "1.0.0", {"a": "*"})}
    with pytest.raises(DependencyError, match="dependency cycle: a -> b -> a"):
        dependency_order(recipes)


def test_sort_versions() -> None:
    assert sort_versions(["1.10.0", "1.2.0", "1.2.0-rc.1", "0.9.9"]) == [
        "0.9.9",
        "1.2.0-rc.1",
        "1.2.0",
        "1.10.0",
    ]


# -- property test ---------------------------------------------------------------------------

NAMES = ["c0", "c1", "c2", "c3", "c4"]
VERSIONS = ["1.0.0", "1.1.0", "1.2.3", "2.0.0", "2.5.0", "3.0.0"]
RANGES = ["*", "^1.0.0", "^2.0.0", ">=1.1.0", "<2.0.0", "~1.2.0", "1.0.0 - 2.0.0", ">=2.0.0 <3.0.0"]


@st.composite
def catalogs(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, list[Recipe]]]:
    available: dict[str, list[Recipe]] = {}
    for index, name in enumerate(NAMES):
        for version in draw(st.lists(st.sampled_from(VERSIONS), max_size=4, unique=True)):
            # Only depend on later names, so HARD cycles cannot happen.
            later = NAMES[index + 1 :]
            deps = (
                draw(st.dictionaries(st.sampled_from(later), st.sampled_from(RANGES), max_size=2))
                if later
                else {}
            )
            available.setdefault(name, []).append(make_recipe(name, version, dict(deps)))
    roots = draw(st.dictionaries(st.sampled_from(NAMES), st.sampled_from(RANGES), min_size=1, max_size=2))
    return roots, available


def _all_requirements(roots: dict[str, str], resolved: dict[str, Recipe]) -> list[tuple[str, str]]:
    reqs = [(name, rng) for name, rng in roots.items()]
    for recipe in resolved.values():
        reqs.extend((dep, spec.version_requirement) for dep, spec in recipe.dependencies.items())
    return reqs


@settings(max_examples=60, deadline=None)
@given(catalogs())
def test_resolution_satisfies_every_requirement(case: tuple[dict[str, str], dict[str, list[Recipe]]]) -> None:
    roots, available = case
    try:
        resolved = resolve(roots, available)
    except DependencyError as err:
        code = err.code
        resolved = {}
    else:
        code = "OK"
    assert code in {"OK", "DEPENDENCY_CONFLICT", "DEPENDENCY_MISSING"}
    if code != "OK":
        return
    assert set(roots) <= set(resolved)
    for name, requirement in _all_requirements(roots, resolved):
        assert name in resolved
        assert nodesemver.satisfies(resolved[name].version, requirement, loose=False)
    for name, recipe in resolved.items():
        assert recipe in available[name]
        # Highest version satisfying everyone who requires it.
        ranges = [rng for dep, rng in _all_requirements(roots, resolved) if dep == name]
        fitting = [
            r.version for r in available[name] if all(nodesemver.satisfies(r.version, x) for x in ranges)
        ]
        assert recipe.version == sort_versions(fitting)[-1]
    order = dependency_order(resolved)
    assert sorted(order) == sorted(resolved)
    for name, recipe in resolved.items():
        for dep in recipe.dependencies:
            assert order.index(dep) < order.index(name)
