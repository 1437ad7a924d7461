"""Every invalid-recipe case names the exact field path, the code and what was expected."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from roost.recipe import (
    RecipeError,
    is_valid_component_name,
    is_valid_range,
    is_valid_version,
    parse_recipe,
)

from .helpers import minimal, parse_doc

Mutation = Callable[[dict[str, Any]], None]


def _set(path: tuple[str | int, ...], value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _delete(*path: str | int) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        node: Any = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


M0 = ("Manifests", 0)
LC = (*M0, "Lifecycle")
ART = (*M0, "Artifacts", 0)

CASES: list[tuple[str, Mutation, str, str]] = [
    # (id, mutation, field path, fragment of the message)
    ("run-list", _set((*LC, "Run"), ["echo"]), "Manifests[0].Lifecycle.Run", "got a list"),
    ("run-number", _set((*LC, "Run"), 3), "Manifests[0].Lifecycle.Run", "got a number (3)"),
    ("unknown-top", _set(("ComponentNmae",), "x"), "ComponentNmae", "did you mean 'ComponentName'"),
    (
        "case-duplicate-top",
        _set(("componentname",), "x"),
        "ComponentName",
        "ComponentName is given twice, as 'ComponentName' and 'componentname'",
    ),
    (
        "case-duplicate-artifact",
        _set((*ART, "Uri"), "s3://b/x.py"),
        "Manifests[0].Artifacts[0].URI",
        "as 'URI' and 'Uri'",
    ),
    (
        "case-duplicate-platform",
        _set((*M0, "Platform"), {"os": "linux", "OS": "all"}),
        "Manifests[0].Platform.os",
        "os is given twice, as 'os' and 'OS'",
    ),
    ("unknown-manifest", _set((*M0, "Platfrom"), {}), "Manifests[0].Platfrom", "allowed fields: Name"),
    ("unknown-lifecycle", _set((*LC, "Runn"), "x"), "Manifests[0].Lifecycle.Runn", "did you mean 'Run'"),
    (
        "unknown-step",
        _set((*LC, "Run"), {"Script": "x", "Timeuot": 3}),
        "Manifests[0].Lifecycle.Run.Timeuot",
        "allowed fields: Script, Timeout",
    ),
    (
        "step-no-script",
        _set((*LC, "Install"), {"Timeout": 3}),
        "Manifests[0].Lifecycle.Install.Script",
        "missing required field Script",
    ),
    (
        "script-not-string",
        _set((*LC, "Run"), {"Script": {"a": 1}}),
        "Manifests[0].Lifecycle.Run.Script",
        "expected a string, got an object",
    ),
    ("startup-and-run", _set((*LC, "Startup"), "x"), "Manifests[0].Lifecycle", "Startup and Run"),
    (
        "timeout-zero",
        _set((*LC, "Run"), {"Script": "x", "Timeout": 0}),
        "Manifests[0].Lifecycle.Run.Timeout",
        "expected a positive number of seconds",
    ),
    (
        "timeout-negative",
        _set((*LC, "Run"), {"Script": "x", "Timeout": -5}),
        "Manifests[0].Lifecycle.Run.Timeout",
        "positive number",
    ),
    (
        "timeout-string",
        _set((*LC, "Run"), {"Script": "x", "Timeout": "60"}),
        "Manifests[0].Lifecycle.Run.Timeout",
        "got the string '60'",
    ),
    (
        "timeout-bool",
        _set((*LC, "Run"), {"Script": "x", "Timeout": True}),
        "Manifests[0].Lifecycle.Run.Timeout",
        "got a boolean",
    ),
    (
        "skipif-bad",
        _set((*LC, "Run"), {"Script": "x", "Skipif": "ifexists foo"}),
        "Manifests[0].Lifecycle.Run.Skipif",
        "'onpath <executable>' or 'exists <file>'",
    ),
    (
        "skipif-no-arg",
        _set((*LC, "Run"), {"Script": "x", "Skipif": "onpath"}),
        "Manifests[0].Lifecycle.Run.Skipif",
        "onpath",
    ),
    (
        "privilege-bad",
        _set((*LC, "Run"), {"Script": "x", "RequiresPrivilege": "yes"}),
        "Manifests[0].Lifecycle.Run.RequiresPrivilege",
        "expected true or false",
    ),
    (
        "setenv-list",
        _set((*LC, "Setenv"), {"A": [1]}),
        "Manifests[0].Lifecycle.Setenv.A",
        "expected a string, number or boolean, got a list",
    ),
    ("setenv-null", _set((*LC, "Setenv"), {"A": None}), "Manifests[0].Lifecycle.Setenv.A", "got null"),
    (
        "setenv-not-object",
        _set((*LC, "Setenv"), "A=1"),
        "Manifests[0].Lifecycle.Setenv",
        "expected an object of environment variables",
    ),
    ("lifecycle-list", _set(LC, ["Run"]), "Manifests[0].Lifecycle", "expected an object, got a list"),
    ("name-slash", _set(("ComponentName",), "com/example"), "ComponentName", "'com/example'"),
    ("name-dotdot", _set(("ComponentName",), ".."), "ComponentName", "without '..'"),
    ("name-empty", _set(("ComponentName",), ""), "ComponentName", "expected 1-128 characters"),
    ("name-space", _set(("ComponentName",), "com example"), "ComponentName", "A-Z a-z 0-9"),
    ("name-missing", _delete("ComponentName"), "ComponentName", "missing required field ComponentName"),
    ("version-short", _set(("ComponentVersion",), "1.0"), "ComponentVersion", "got the string '1.0'"),
    ("version-v", _set(("ComponentVersion",), "v1.0.0"), "ComponentVersion", "semantic version"),
    ("version-leading-zero", _set(("ComponentVersion",), "01.0.0"), "ComponentVersion", "semantic version"),
    ("version-number", _set(("ComponentVersion",), 1.5), "ComponentVersion", "got a number (1.5)"),
    (
        "format-version",
        _set(("RecipeFormatVersion",), "2021-01-01"),
        "RecipeFormatVersion",
        "expected 2020-01-25, got the string '2021-01-01'",
    ),
    ("format-missing", _delete("RecipeFormatVersion"), "RecipeFormatVersion", "missing required field"),
    (
        "type-unknown",
        _set(("ComponentType",), "aws.greengrass.magic"),
        "ComponentType",
        "one of aws.greengrass.generic",
    ),
    ("description-list", _set(("ComponentDescription",), ["x"]), "ComponentDescription", "got a list"),
    (
        "uri-scheme",
        _set((*ART, "URI"), "ftp://host/x.py"),
        "Manifests[0].Artifacts[0].URI",
        "one of the schemes docker, file, greengrass, http, https, s3",
    ),
    ("uri-no-scheme", _set((*ART, "URI"), "hello.py"), "Manifests[0].Artifacts[0].URI", "schemes"),
    ("uri-missing", _delete(*ART, "URI"), "Manifests[0].Artifacts[0].URI", "missing required field URI"),
    (
        "uri-no-file",
        _set((*ART, "URI"), "s3://bucket/dir/"),
        "Manifests[0].Artifacts[0].URI",
        "ending with a file name",
    ),
    ("artifact-unknown", _set((*ART, "Urri"), "x"), "Manifests[0].Artifacts[0].Urri", "did you mean 'URI'"),
    (
        "unarchive-bad",
        _set((*ART, "Unarchive"), "TAR"),
        "Manifests[0].Artifacts[0].Unarchive",
        "expected one of NONE, ZIP, got the string 'TAR'",
    ),
    ("algorithm-bad", _set((*ART, "Algorithm"), "MD5"), "Manifests[0].Artifacts[0].Algorithm", "SHA-256"),
    (
        "permission-bad",
        _set((*ART, "Permission"), {"Read": "EVERYONE"}),
        "Manifests[0].Artifacts[0].Permission.Read",
        "expected one of NONE, OWNER, ALL",
    ),
    (
        "permission-unknown",
        _set((*ART, "Permission"), {"Write": "ALL"}),
        "Manifests[0].Artifacts[0].Permission.Write",
        "allowed fields: Read, Execute",
    ),
    (
        "artifacts-object",
        _set((*M0, "Artifacts"), {"URI": "s3://b/x"}),
        "Manifests[0].Artifacts",
        "expected a list of artifacts, got an object",
    ),
    ("manifests-object", _set(("Manifests",), {"Platform": {}}), "Manifests", "expected a list of manifests"),
    ("platform-number", _set((*M0, "Platform"), {"os": 7}), "Manifests[0].Platform.os", "got a number (7)"),
    (
        "platform-regex",
        _set((*M0, "Platform"), {"os": "/lin(ux/"}),
        "Manifests[0].Platform.os",
        "invalid regular expression",
    ),
    (
        "selections-string",
        _set((*M0, "Selections"), "linux"),
        "Manifests[0].Selections",
        "expected a list of strings",
    ),
    (
        "dep-range",
        _set(("ComponentDependencies",), {"com.x": {"VersionRequirement": "not a range"}}),
        "ComponentDependencies.com.x.VersionRequirement",
        "npm-style semver range",
    ),
    (
        "dep-range-missing",
        _set(("ComponentDependencies",), {"com.x": {"DependencyType": "HARD"}}),
        "ComponentDependencies.com.x.VersionRequirement",
        "missing required field VersionRequirement",
    ),
    (
        "dep-type",
        _set(("ComponentDependencies",), {"com.x": {"VersionRequirement": "^1", "DependencyType": "WEAK"}}),
        "ComponentDependencies.com.x.DependencyType",
        "expected one of HARD, SOFT",
    ),
    (
        "dep-unknown",
        _set(("ComponentDependencies",), {"com.x": {"Version": "^1"}}),
        "ComponentDependencies.com.x.Version",
        "allowed fields: VersionRequirement, DependencyType",
    ),
    (
        "dep-name",
        _set(("ComponentDependencies",), {"../evil": {"VersionRequirement": "^1"}}),
        "ComponentDependencies.../evil",
        "invalid component name",
    ),
    (
        "dep-self",
        _set(("ComponentDependencies",), {"com.example.Min": {"VersionRequirement": "^1"}}),
        "ComponentDependencies.com.example.Min",
        "cannot depend on itself",
    ),
    (
        "config-unknown",
        _set(("ComponentConfiguration",), {"Default": {}}),
        "ComponentConfiguration.Default",
        "allowed fields: DefaultConfiguration",
    ),
    (
        "config-list",
        _set(("ComponentConfiguration",), {"DefaultConfiguration": [1]}),
        "ComponentConfiguration.DefaultConfiguration",
        "expected an object, got a list",
    ),
    (
        "access-control-ops",
        _set(
            ("ComponentConfiguration",),
            {
                "DefaultConfiguration": {
                    "accessControl": {
                        "aws.greengrass.ipc.pubsub": {"p1": {"operations": "aws.greengrass#PublishToTopic"}}
                    }
                }
            },
        ),
        "ComponentConfiguration.DefaultConfiguration.accessControl.aws.greengrass.ipc.pubsub.p1.operations",
        "expected a list of strings",
    ),
    (
        "access-control-unknown",
        _set(
            ("ComponentConfiguration",),
            {
                "DefaultConfiguration": {
                    "accessControl": {
                        "aws.greengrass.ipc.pubsub": {"p1": {"operations": ["*"], "resource": ["x"]}}
                    }
                }
            },
        ),
        "ComponentConfiguration.DefaultConfiguration.accessControl.aws.greengrass.ipc.pubsub.p1.resource",
        "did you mean 'resources'",
    ),
    ("global-lifecycle-bad", _set(("Lifecycle",), {"all": {"Run": ["x"]}}), "Lifecycle.Run", "got a list"),
]


@pytest.mark.parametrize(
    ("mutate", "field_path", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_invalid(mutate: Mutation, field_path: str, fragment: str) -> None:
    doc = minimal()
    if field_path.startswith("Lifecycle"):
        doc["Manifests"][0].pop("Lifecycle")
    mutate(doc)
    with pytest.raises(RecipeError) as info:
        parse_doc(doc, source="recipe.json")
    err = info.value
    assert err.code == "RECIPE_INVALID"
    assert err.source == "recipe.json"
    assert err.field_path == field_path
    assert str(err).startswith(f"recipe.json: {field_path}: ")
    assert fragment in str(err)
    assert err.expected


def test_message_format_matches_contract() -> None:
    doc = minimal()
    doc["Manifests"][0]["Lifecycle"]["Run"] = ["a", "b"]
    with pytest.raises(RecipeError) as info:
        parse_doc(doc, source="recipe.yaml")
    assert str(info.value) == (
        "recipe.yaml: Manifests[0].Lifecycle.Run: expected a string or an object with Script, got a list"
    )
    assert info.value.expected == "a string or an object with Script"
    assert info.value.to_dict()["code"] == "RECIPE_INVALID"


def test_top_level_must_be_object() -> None:
    with pytest.raises(RecipeError) as info:
        parse_doc([1, 2], source="r.json")  # type: ignore[arg-type]
    assert str(info.value) == "r.json: expected an object (the recipe), got a list"


def test_lowercase_lifecycle_keys_accepted() -> None:
    doc = minimal()
    doc["Manifests"][0]["Lifecycle"] = {
        "setenv": {"A": True, "B": 2, "C": 1.5},
        "install": {
            "script": "pip install x",
            "timeout": 10,
            "requiresprivilege": True,
            "skipif": "exists /x",
        },
        "run": "echo hi",
        "shutdown": "echo bye",
        "recover": "echo fix",
        "bootstrap": "echo boot",
    }
    lifecycle = parse_doc(doc).manifests[0].lifecycle
    assert lifecycle is not None
    assert lifecycle.setenv == {"A": "true", "B": "2", "C": "1.5"}
    assert lifecycle.install is not None
    assert lifecycle.install.requires_privilege
    assert lifecycle.install.skip_condition == ("exists", "/x")
    assert lifecycle.bootstrap is not None
    assert lifecycle.bootstrap.script == "echo boot"
    assert list(lifecycle.steps()) == ["bootstrap", "install", "run", "shutdown", "recover"]


def test_both_spellings_refused() -> None:
    doc = minimal()
    doc["Manifests"][0]["Lifecycle"] = {"Run": "a", "run": "b"}
    with pytest.raises(RecipeError, match="given twice"):
        parse_doc(doc)


def test_empty_manifest_lifecycle_is_absent() -> None:
    doc = minimal()
    doc["Manifests"][0]["Lifecycle"] = {}
    assert parse_doc(doc).manifests[0].lifecycle is None


def test_non_finite_configuration_refused() -> None:
    text = (
        "RecipeFormatVersion: 2020-01-25\nComponentName: a\nComponentVersion: 1.0.0\n"
        "ComponentConfiguration:\n  DefaultConfiguration:\n    x: .nan\n"
    )
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, source="r.yaml")
    assert info.value.field_path == "ComponentConfiguration.DefaultConfiguration.x"


def test_unknown_scheme_vs_docker() -> None:
    doc = minimal()
    doc["Manifests"][0]["Artifacts"] = [{"URI": "docker:nginx:latest"}]
    assert parse_doc(doc).manifests[0].artifacts[0].scheme == "docker"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("com.example.Hello", True),
        ("a", True),
        ("A-b_c.9", True),
        ("a/b", False),
        ("a..b", False),
        (".", False),
        ("", False),
        ("x" * 129, False),
        ("héllo", False),
    ],
)
def test_component_names(name: str, ok: bool) -> None:
    assert is_valid_component_name(name) is ok


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("1.0.0", True),
        ("1.0.0-beta.1", True),
        ("0.0.1+build.5", True),
        ("1.0", False),
        ("1.0.0.0", False),
        ("v1.0.0", False),
        ("1.0.0-", False),
        ("1.0.0-01", False),
        (" 1.0.0", False),
    ],
)
def test_versions(version: str, ok: bool) -> None:
    assert is_valid_version(version) is ok


@pytest.mark.parametrize(
    ("requirement", "ok"),
    [
        ("^1.0.0", True),
        (">=1.0.0 <2.0.0", True),
        ("1.0.0", True),
        ("*", True),
        ("~1.2", True),
        ("^1 || ^2", True),
        ("", False),
        ("abc", False),
        (">=a", False),
    ],
)
def test_ranges(requirement: str, ok: bool) -> None:
    assert is_valid_range(requirement) is ok
