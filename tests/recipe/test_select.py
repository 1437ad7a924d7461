"""Manifest selection and the global Lifecycle with Selections."""

from __future__ import annotations

from typing import Any

import pytest

from roost.recipe import Lifecycle, LifecycleStep, RecipeError, parse_recipe

from .helpers import HELLO_YAML, INFERENCE_JSON, minimal, parse_doc

LINUX = {"os": "linux", "architecture": "amd64"}
WINDOWS = {"os": "windows", "architecture": "amd64"}
DARWIN = {"os": "darwin", "architecture": "aarch64"}


def test_first_matching_manifest_wins() -> None:
    recipe = parse_recipe(HELLO_YAML)
    linux = recipe.select(LINUX)
    assert linux.manifest_index == 0
    assert linux.lifecycle.run is not None
    assert linux.lifecycle.run.script.startswith("python3 -u")
    assert [a.file_name for a in linux.artifacts] == ["hello.py"]
    windows = recipe.select(WINDOWS)
    assert windows.manifest_index == 1
    assert windows.recipe is recipe


def test_wildcard_manifest_after_specific() -> None:
    recipe = parse_recipe(INFERENCE_JSON)
    arm = recipe.select({"os": "linux", "architecture": "aarch64"})
    assert arm.manifest_index == 0
    other = recipe.select(LINUX)
    assert other.manifest_index == 1
    assert other.lifecycle == Lifecycle()
    assert other.artifacts[0].scheme == "docker"


def test_no_manifest_matches() -> None:
    recipe = parse_recipe(HELLO_YAML, source="hello.yaml")
    with pytest.raises(RecipeError) as info:
        recipe.select(DARWIN)
    err = info.value
    assert err.code == "PLATFORM_UNSUPPORTED"
    assert err.field_path == "Manifests"
    message = str(err)
    assert message.startswith("hello.yaml: Manifests: com.example.HelloWorld 1.0.0 has no manifest")
    assert "{os: darwin, architecture: aarch64}" in message
    assert "[0] {os: linux}" in message
    assert "[1] {os: windows}" in message


def _selections_recipe(global_lifecycle: dict[str, Any]) -> dict[str, Any]:
    doc = minimal()
    doc["Manifests"] = [
        {"Platform": {"os": "linux"}, "Selections": ["linux"]},
        {"Platform": {"os": "windows"}, "Selections": ["windows"]},
        {"Platform": {"os": "darwin"}},
    ]
    doc["Lifecycle"] = global_lifecycle
    return doc


def test_global_lifecycle_top_level_selections() -> None:
    recipe = parse_doc(
        _selections_recipe(
            {
                "linux": {"Install": "apt-get install -y python3", "Run": "python3 app.py"},
                "windows": {"Run": "py -3 app.py"},
                "all": {"Run": "echo unsupported"},
            }
        )
    )
    assert recipe.select(LINUX).lifecycle == Lifecycle(
        install=LifecycleStep(script="apt-get install -y python3"), run=LifecycleStep(script="python3 app.py")
    )
    assert recipe.select(WINDOWS).lifecycle == Lifecycle(run=LifecycleStep(script="py -3 app.py"))
    assert recipe.select(DARWIN).lifecycle == Lifecycle(run=LifecycleStep(script="echo unsupported"))


def test_global_lifecycle_nested_selections() -> None:
    recipe = parse_doc(
        _selections_recipe(
            {
                "Setenv": {"MODE": "prod"},
                "Run": {"Script": {"linux": "ls", "windows": "dir", "all": "echo"}, "Timeout": {"all": 30}},
            }
        )
    )
    linux = recipe.select(LINUX).lifecycle
    assert linux.setenv == {"MODE": "prod"}
    assert linux.run == LifecycleStep(script="ls", timeout=30.0)
    assert recipe.select(WINDOWS).lifecycle.run == LifecycleStep(script="dir", timeout=30.0)
    assert recipe.select(DARWIN).lifecycle.run == LifecycleStep(script="echo", timeout=30.0)


def test_global_lifecycle_checked_for_every_manifest_at_parse_time() -> None:
    # The darwin manifest has no selection and Script has no "all": its Run would lack a Script.
    with pytest.raises(RecipeError) as info:
        parse_doc(_selections_recipe({"Run": {"Script": {"linux": "ls", "windows": "dir"}}}), source="s.json")
    assert info.value.field_path == "Lifecycle.Run.Script"
    assert str(info.value) == (
        "s.json: Lifecycle.Run.Script: missing required field Script"
        " (as selected for Manifests[2] with Selections ['all'])"
    )


def test_global_lifecycle_plain_keys() -> None:
    doc = minimal()
    doc["Manifests"][0].pop("Lifecycle")
    doc["Lifecycle"] = {"Run": "echo global"}
    assert parse_doc(doc).select(LINUX).lifecycle.run == LifecycleStep(script="echo global")


def test_manifest_lifecycle_overrides_global() -> None:
    doc = minimal()
    doc["Lifecycle"] = {"Run": "echo global"}
    assert parse_doc(doc).select(LINUX).lifecycle.run == LifecycleStep(script="echo hi")


def test_selection_without_match_gives_empty_lifecycle() -> None:
    recipe = parse_doc(_selections_recipe({"linux": {"Run": "x"}}))
    assert recipe.select(DARWIN).lifecycle == Lifecycle()


def test_no_manifests_applies_everywhere() -> None:
    doc = minimal()
    doc.pop("Manifests")
    doc["Lifecycle"] = {"all": {"Run": "echo everywhere"}}
    recipe = parse_doc(doc)
    for platform in (LINUX, WINDOWS, DARWIN):
        selected = recipe.select(platform)
        assert selected.manifest_index is None
        assert selected.artifacts == []
        assert selected.lifecycle.run == LifecycleStep(script="echo everywhere")


def test_manifest_without_lifecycle_or_global() -> None:
    doc = minimal()
    doc["Manifests"][0].pop("Lifecycle")
    assert parse_doc(doc).select(LINUX).lifecycle == Lifecycle()


def test_startup_and_run_in_global_lifecycle() -> None:
    doc = _selections_recipe({"all": {"Startup": "a", "Run": "b"}})
    with pytest.raises(RecipeError) as info:
        parse_doc(doc)
    assert info.value.field_path == "Lifecycle"
    assert "Startup and Run" in str(info.value)
