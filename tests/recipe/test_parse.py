"""Parsing valid recipes, round-tripping them, loading files and folders, syntax errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roost.recipe import (
    MAX_RECIPE_BYTES,
    ArtifactPermission,
    LifecycleStep,
    RecipeError,
    load_recipe,
    load_recipe_dir,
    parse_recipe,
    recipe_to_dict,
)

from .helpers import HELLO_YAML, INFERENCE_JSON, minimal, parse_doc


def test_hello_world_yaml() -> None:
    recipe = parse_recipe(HELLO_YAML, source="hello.yaml")
    assert recipe.format_version == "2020-01-25"
    assert recipe.name == "com.example.HelloWorld"
    assert recipe.version == "1.0.0"
    assert recipe.type == "aws.greengrass.generic"
    assert recipe.publisher == "Amazon"
    assert recipe.source == "hello.yaml"
    assert recipe.default_configuration["Message"] == "world"
    assert recipe.access_control == {
        "aws.greengrass.ipc.pubsub": {
            "com.example.HelloWorld:pubsub:1": {
                "policyDescription": "Allows access to publish to local/inference.",
                "operations": ["aws.greengrass#PublishToTopic"],
                "resources": ["local/inference"],
            }
        }
    }
    dep = recipe.dependencies["aws.greengrass.Nucleus"]
    assert (dep.version_requirement, dep.dependency_type) == (">=2.0.0 <3.0.0", "SOFT")

    linux = recipe.manifests[0]
    assert linux.platform == {"os": "linux"}
    assert linux.lifecycle is not None
    assert linux.lifecycle.setenv == {"PYTHONUNBUFFERED": "1"}
    assert linux.lifecycle.run == LifecycleStep(
        script="python3 -u {artifacts:path}/hello.py '{configuration:/Message}'"
    )
    install = linux.lifecycle.install
    assert install is not None
    assert install.timeout == 300.0
    assert install.skipif == "onpath awsiotsdk-check"
    assert install.skip_condition == ("onpath", "awsiotsdk-check")
    artifact = linux.artifacts[0]
    assert artifact.file_name == "hello.py"
    assert artifact.scheme == "s3"
    assert artifact.digest == "5Hjy9Ct6yHm0yjDc5fItS4HfE+yYfvIXhDYEhLgk8BE="
    assert artifact.permission == ArtifactPermission(read="ALL", execute="OWNER")

    windows = recipe.manifests[1]
    assert windows.lifecycle is not None
    assert windows.lifecycle.run is not None
    assert windows.artifacts[0].permission == ArtifactPermission(read="OWNER", execute="NONE")


def test_inference_json() -> None:
    recipe = parse_recipe(INFERENCE_JSON)
    assert recipe.version == "2.1.0-beta.1"
    assert recipe.access_control == {}
    assert recipe.dependencies["com.example.XGBoostRuntime"].dependency_type == "HARD"
    manifest = recipe.manifests[0]
    assert manifest.name == "arm"
    assert [a.file_name for a in manifest.artifacts] == ["model.zip", "serve.py"]
    assert [a.scheme for a in manifest.artifacts] == ["greengrass", "file"]
    assert manifest.artifacts[0].unarchive == "ZIP"
    assert manifest.lifecycle is not None
    startup = manifest.lifecycle.startup
    assert startup is not None
    assert startup.requires_privilege
    recover = manifest.lifecycle.recover
    assert recover is not None
    assert recover.timeout == 5.5
    assert recover.setenv == {"MODE": "recover"}
    docker = recipe.manifests[1].artifacts[0]
    assert docker.scheme == "docker"
    assert docker.file_name == "serve:latest"
    assert recipe.manifests[1].lifecycle is None


def test_default_timeouts() -> None:
    recipe = parse_recipe(INFERENCE_JSON)
    lifecycle = recipe.manifests[0].lifecycle
    assert lifecycle is not None
    assert lifecycle.startup is not None
    assert lifecycle.startup.timeout is None
    assert lifecycle.startup.effective_timeout("startup") == 120.0
    assert lifecycle.shutdown is not None
    assert lifecycle.shutdown.effective_timeout("shutdown") == 15.0
    assert lifecycle.recover is not None
    assert lifecycle.recover.effective_timeout("recover") == 5.5
    step = LifecycleStep(script="x")
    assert step.effective_timeout("install") == 120.0
    assert step.effective_timeout("run") is None
    assert step.effective_timeout("recover") == 60.0


@pytest.mark.parametrize("text", [HELLO_YAML, INFERENCE_JSON])
def test_round_trip(text: str) -> None:
    recipe = parse_recipe(text, source="original.yaml")
    again = parse_recipe(json.dumps(recipe_to_dict(recipe)))
    assert again == recipe
    assert recipe_to_dict(again) == recipe_to_dict(recipe)


def test_round_trip_global_lifecycle() -> None:
    doc = minimal()
    doc["Manifests"][0].pop("Lifecycle")
    doc["Manifests"][0]["Selections"] = ["linux"]
    doc["Lifecycle"] = {"linux": {"Run": "echo linux"}, "all": {"Run": "echo all"}}
    recipe = parse_doc(doc)
    assert parse_recipe(json.dumps(recipe_to_dict(recipe))) == recipe


def test_yaml_keeps_version_strings() -> None:
    text = HELLO_YAML.replace("RecipeFormatVersion: 2020-01-25", "RecipeFormatVersion: '2020-01-25'")
    assert parse_recipe(text) == parse_recipe(HELLO_YAML)


def test_format_sniffing_and_explicit() -> None:
    assert parse_recipe(INFERENCE_JSON).name == "com.example.WineInference"
    assert parse_recipe(INFERENCE_JSON, fmt="yaml").name == "com.example.WineInference"
    assert parse_recipe(HELLO_YAML.encode(), source="x.yml").name == "com.example.HelloWorld"


def test_invalid_yaml_names_line_and_column() -> None:
    text = "RecipeFormatVersion: 2020-01-25\nComponentName: [a\nComponentVersion: 1.0.0\n"
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, source="bad.yaml")
    err = info.value
    assert err.code == "RECIPE_INVALID"
    assert err.source == "bad.yaml"
    assert err.line is not None
    assert err.column is not None
    assert str(err).startswith(f"bad.yaml: line {err.line}, column {err.column}: invalid YAML")


def test_invalid_json_names_line_and_column() -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe('{\n  "ComponentName": "x",\n  oops\n}', source="bad.json")
    assert (info.value.line, info.value.column) == (3, 3)
    assert str(info.value).startswith("bad.json: line 3, column 3: invalid JSON")


def test_yaml_python_tags_are_refused() -> None:
    with pytest.raises(RecipeError, match="invalid YAML"):
        parse_recipe("a: !!python/object/apply:os.system ['true']\n", source="evil.yaml")


def test_non_utf8_and_empty() -> None:
    with pytest.raises(RecipeError, match="UTF-8"):
        parse_recipe(b"\xff\xfe\x00garbage", source="x.yaml")
    with pytest.raises(RecipeError) as info:
        parse_recipe("", source="empty.yaml")
    assert str(info.value) == "empty.yaml: expected an object (the recipe), got null"


def test_oversized_text_refused() -> None:
    big = "#" * (MAX_RECIPE_BYTES + 1)
    with pytest.raises(RecipeError, match="limit"):
        parse_recipe(big)
    with pytest.raises(RecipeError, match="limit"):
        parse_recipe(big.encode())


def test_alias_bomb_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    with pytest.raises(RecipeError, match="too large"):
        parse_recipe("\n".join(lines), source="bomb.yaml")


def test_load_recipe_and_dir(tmp_path: Path) -> None:
    (tmp_path / "hello.yaml").write_text(HELLO_YAML)
    (tmp_path / "inference.json").write_text(INFERENCE_JSON)
    (tmp_path / "notes.txt").write_text("not a recipe")
    recipe = load_recipe(tmp_path / "hello.yaml")
    assert recipe.source == str(tmp_path / "hello.yaml")
    recipes = load_recipe_dir(tmp_path)
    assert [r.name for r in recipes] == ["com.example.HelloWorld", "com.example.WineInference"]


def test_load_recipe_dir_names_bad_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(HELLO_YAML)
    bad = minimal()
    bad["ComponentVersion"] = "1.0"
    (tmp_path / "b.json").write_text(json.dumps(bad))
    with pytest.raises(RecipeError) as info:
        load_recipe_dir(tmp_path)
    assert info.value.source == str(tmp_path / "b.json")
    assert info.value.field_path == "ComponentVersion"


def test_load_recipe_dir_duplicate(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(HELLO_YAML)
    (tmp_path / "b.yml").write_text(HELLO_YAML)
    with pytest.raises(RecipeError, match="also defined in"):
        load_recipe_dir(tmp_path)


def test_load_missing_file_and_dir(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="cannot read recipe") as info:
        load_recipe(tmp_path / "nope.yaml")
    assert info.value.source == str(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match="cannot list"):
        load_recipe_dir(tmp_path / "nope")


def test_load_oversized_file(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (MAX_RECIPE_BYTES + 10))
    with pytest.raises(RecipeError, match="limit"):
        load_recipe(path)
