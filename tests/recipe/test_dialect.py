"""The recipe dialect as the Greengrass nucleus reads it: keys and enumerated values in any case,
``all`` / ``any`` platform wildcards, canonical names in errors and output."""

from __future__ import annotations

import json

import pytest

from roost.recipe import RecipeError, parse_recipe, platform_matches, recipe_to_dict

# The shape of AWS's gdk "HelloWorld" Python template (gdk component init -t HelloWorld -l python).
GDK_TEMPLATE = """\
---
RecipeFormatVersion: "2020-01-25"
ComponentName: "com.example.PythonHelloWorld"
ComponentVersion: "1.0.0"
ComponentDescription: "This is simple Hello World component written in Python."
ComponentPublisher: "Amazon"
ComponentConfiguration:
  DefaultConfiguration:
    Message: "World"
Manifests:
  - Platform:
      os: all
    Artifacts:
      - Uri: "s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/com.example.PythonHelloWorld.zip"
        Unarchive: ZIP
    Lifecycle:
      Run: "python3 -u {artifacts:decompressedPath}/com.example.PythonHelloWorld/main.py {configuration:/Message}"
"""

# Lower-case and mixed-case keys as found in AWS documentation snippets and community recipes.
MIXED_CASE = """\
recipeFormatVersion: 2020-01-25
componentName: com.example.Mixed
componentVersion: 1.0.0
componentType: AWS.GREENGRASS.GENERIC
componentConfiguration:
  defaultConfiguration:
    Message: keep
    message: me too
    accessControl:
      aws.greengrass.ipc.pubsub:
        p1:
          operations: ["aws.greengrass#PublishToTopic"]
          resources: ["local/x"]
componentDependencies:
  com.example.Lib:
    versionRequirement: ^1.0.0
    dependencyType: soft
manifests:
  - name: Linux
    platform:
      OS: linux
      Architecture: any
    artifacts:
      - uri: s3://b/model.zip
        digest: abc=
        algorithm: SHA-256
        unarchive: zip
        permission:
          read: all
          execute: owner
    lifecycle:
      SETENV: {A: "1"}
      install: {SCRIPT: pip install x, TimeOut: 30, requiresPrivilege: TRUE}
      Run: python3 -u {artifacts:path}/main.py
"""

LINUX = {"os": "linux", "architecture": "amd64"}
WINDOWS = {"os": "windows", "architecture": "amd64"}


def test_gdk_template_parses_and_selects_everywhere() -> None:
    recipe = parse_recipe(GDK_TEMPLATE, source="recipe.yaml")
    manifest = recipe.manifests[0]
    assert manifest.platform == {"os": "all"}
    assert manifest.artifacts[0].uri.endswith("/com.example.PythonHelloWorld.zip")
    assert manifest.artifacts[0].unarchive == "ZIP"
    for device in (LINUX, WINDOWS, {"os": "darwin", "architecture": "aarch64"}):
        selected = recipe.select(device)
        assert selected.manifest_index == 0
        assert selected.lifecycle.run is not None


def test_mixed_case_keys_and_enums_read_canonically() -> None:
    recipe = parse_recipe(MIXED_CASE, source="recipe.yaml")
    assert recipe.type == "aws.greengrass.generic"
    # DefaultConfiguration is the component's own data: its keys keep their case, both survive.
    assert recipe.default_configuration["Message"] == "keep"
    assert recipe.default_configuration["message"] == "me too"
    assert recipe.access_control["aws.greengrass.ipc.pubsub"]["p1"]["resources"] == ["local/x"]
    dep = recipe.dependencies["com.example.Lib"]
    assert (dep.version_requirement, dep.dependency_type) == ("^1.0.0", "SOFT")
    manifest = recipe.manifests[0]
    assert manifest.name == "Linux"
    assert manifest.platform == {"os": "linux", "architecture": "any"}
    art = manifest.artifacts[0]
    assert (art.uri, art.digest, art.unarchive) == ("s3://b/model.zip", "abc=", "ZIP")
    assert (art.permission.read, art.permission.execute) == ("ALL", "OWNER")
    lifecycle = manifest.lifecycle
    assert lifecycle is not None and lifecycle.install is not None
    assert lifecycle.setenv == {"A": "1"}
    assert (lifecycle.install.script, lifecycle.install.timeout) == ("pip install x", 30.0)
    assert lifecycle.install.requires_privilege
    assert recipe.select({"os": "Linux", "architecture": "aarch64"}).manifest_index == 0
    with pytest.raises(RecipeError) as info:
        recipe.select(WINDOWS)
    assert info.value.code == "PLATFORM_UNSUPPORTED"


def test_output_uses_canonical_names_and_round_trips() -> None:
    recipe = parse_recipe(MIXED_CASE, source="recipe.yaml")
    raw = recipe_to_dict(recipe)
    assert "ComponentName" in raw and "componentName" not in raw
    manifest = raw["Manifests"][0]
    assert set(manifest) == {"Name", "Platform", "Lifecycle", "Artifacts"}
    assert manifest["Artifacts"][0]["URI"] == "s3://b/model.zip"
    assert manifest["Artifacts"][0]["Unarchive"] == "ZIP"
    assert manifest["Lifecycle"]["Install"]["Script"] == "pip install x"
    assert raw["ComponentDependencies"]["com.example.Lib"]["DependencyType"] == "SOFT"
    assert raw["ComponentConfiguration"]["DefaultConfiguration"]["message"] == "me too"
    assert parse_recipe(json.dumps(raw), fmt="json") == recipe


@pytest.mark.parametrize("word", ["all", "any", "ALL", "Any", "*"])
def test_all_and_any_are_wildcards_for_os_and_architecture(word: str) -> None:
    assert platform_matches({"os": word}, WINDOWS)
    assert platform_matches({"architecture": word}, {"os": "linux", "architecture": "riscv64"})
    assert platform_matches({"os": "linux", "architecture": word}, LINUX)
    assert not platform_matches({"os": "linux", "architecture": word}, WINDOWS)


def test_all_is_a_plain_value_for_other_attributes() -> None:
    # Only os and architecture have the nucleus' all/any wildcards; '*' works everywhere.
    assert not platform_matches({"architecture.detail": "all"}, {**LINUX, "architecture.detail": "armv7l"})
    assert platform_matches({"architecture.detail": "*"}, LINUX)


def _doc(manifest: str) -> str:
    return f"RecipeFormatVersion: 2020-01-25\nComponentName: a\nComponentVersion: 1.0.0\nManifests:\n{manifest}"


@pytest.mark.parametrize(
    ("manifest", "field_path", "fragment"),
    [
        (
            "  - Lifecycle: {Run: a, RUN: b}\n",
            "Manifests[0].Lifecycle.Run",
            "Run is given twice, as 'Run' and 'RUN'",
        ),
        (
            "  - Lifecycle: {Run: {Script: a, script: b}}\n",
            "Manifests[0].Lifecycle.Run.Script",
            "as 'Script' and 'script'",
        ),
        (
            "  - Platform: {os: all}\n    platform: {os: linux}\n",
            "Manifests[0].Platform",
            "as 'Platform' and 'platform'",
        ),
        (
            "  - Artifacts: [{URI: s3://b/a.py, Permission: {Read: ALL, READ: OWNER}}]\n",
            "Manifests[0].Artifacts[0].Permission.Read",
            "as 'Read' and 'READ'",
        ),
        (
            "  - Artifacts: [{Uri: s3://b/a.py, Unarchive: tar}]\n",
            "Manifests[0].Artifacts[0].Unarchive",
            "expected one of NONE, ZIP, got the string 'tar'",
        ),
        (
            "  - Artifacts: [{uri: s3://b/a.py, Permission: {Read: everyone}}]\n",
            "Manifests[0].Artifacts[0].Permission.Read",
            "expected one of NONE, OWNER, ALL",
        ),
        (
            "  - Platform: {os: 3}\n",
            "Manifests[0].Platform.os",
            "'*', 'all', 'any'",
        ),
        (
            "  - Lifecycle: {Runn: a}\n",
            "Manifests[0].Lifecycle.Runn",
            "did you mean 'Run'",
        ),
    ],
)
def test_nucleus_rejections_keep_clear_field_paths(manifest: str, field_path: str, fragment: str) -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe(_doc(manifest), source="r.yaml")
    err = info.value
    assert err.code == "RECIPE_INVALID"
    assert err.field_path == field_path
    assert fragment in str(err)


def test_duplicate_dependency_fields_named() -> None:
    text = (
        "RecipeFormatVersion: 2020-01-25\nComponentName: a\nComponentVersion: 1.0.0\n"
        "ComponentDependencies:\n  b: {VersionRequirement: ^1.0.0, versionrequirement: ^2.0.0}\n"
    )
    with pytest.raises(RecipeError) as info:
        parse_recipe(text)
    assert info.value.field_path == "ComponentDependencies.b.VersionRequirement"
    assert "as 'VersionRequirement' and 'versionrequirement'" in str(info.value)


def test_dependency_type_any_case() -> None:
    text = (
        "RecipeFormatVersion: 2020-01-25\nComponentName: a\nComponentVersion: 1.0.0\n"
        "ComponentDependencies:\n  b: {VersionRequirement: ^1.0.0, DependencyType: Hard}\n"
    )
    assert parse_recipe(text).dependencies["b"].dependency_type == "HARD"


def test_runtime_attribute_classic_nucleus() -> None:
    # Recipes written for both nuclei carry a manifest per runtime; Roost takes the classic one.
    text = """\
RecipeFormatVersion: 2020-01-25
ComponentName: com.example.Both
ComponentVersion: 1.0.0
Manifests:
  - Platform: {os: linux, runtime: aws_nucleus_lite}
    Lifecycle: {run: echo lite}
  - Platform: {os: linux, runtime: aws_nucleus_classic}
    Lifecycle: {run: echo classic}
"""
    selected = parse_recipe(text).select(LINUX)
    assert selected.manifest_index == 1
    assert selected.lifecycle.run is not None and selected.lifecycle.run.script == "echo classic"
