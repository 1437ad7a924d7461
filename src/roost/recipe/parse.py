"""Read recipes from text and files (YAML or JSON) and write them back in Greengrass form.

Every failure, from unreadable files to syntax errors to invalid fields, is a
:class:`~roost.recipe.errors.RecipeError` naming the file; syntax errors also carry the line
and column.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import yaml

from roost.recipe.errors import RecipeError
from roost.recipe.model import Artifact, Lifecycle, LifecycleStep, Manifest, Recipe
from roost.recipe.validate import build_recipe

__all__ = [
    "MAX_RECIPE_BYTES",
    "RECIPE_SUFFIXES",
    "load_recipe",
    "load_recipe_dir",
    "parse_recipe",
    "recipe_to_dict",
]

logger = logging.getLogger(__name__)

#: Recipes larger than this are refused.
MAX_RECIPE_BYTES = 1024 * 1024
#: File suffixes :func:`load_recipe_dir` reads.
RECIPE_SUFFIXES = (".yaml", ".yml", ".json")

RecipeFormat = Literal["yaml", "json"]


class _RecipeYamlLoader(yaml.SafeLoader):
    """Safe YAML without implicit timestamps: ``RecipeFormatVersion: 2020-01-25`` stays a string.

    The pure-Python loader on purpose: libyaml's (``CSafeLoader``) recurses in C and crashes the
    process on deeply nested input, where this one raises ``RecursionError``.
    """


_RecipeYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _too_large(source: str, size: int) -> RecipeError:
    return RecipeError(
        f"recipe is {size} bytes; the limit is {MAX_RECIPE_BYTES} bytes",
        source=source,
        expected=f"at most {MAX_RECIPE_BYTES} bytes",
    )


def _guess_format(text: str, source: str) -> RecipeFormat:
    lowered = source.lower()
    if lowered.endswith(".json"):
        return "json"
    if lowered.endswith((".yaml", ".yml")):
        return "yaml"
    return "json" if text.lstrip().startswith("{") else "yaml"


def _load_document(text: str, source: str, fmt: RecipeFormat) -> Any:
    if fmt == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise RecipeError(
                f"line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}",
                source=source,
                expected="valid JSON",
                line=err.lineno,
                column=err.colno,
            ) from err
        except RecursionError as err:
            raise RecipeError(
                "invalid JSON: nested too deeply", source=source, expected="valid JSON"
            ) from err
        except ValueError as err:  # e.g. an integer beyond Python's digit limit
            raise RecipeError(f"invalid JSON: {err}", source=source, expected="valid JSON") from err
    try:
        return yaml.load(text, Loader=_RecipeYamlLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = err.problem or err.context or "syntax error"
        if mark is None:
            raise RecipeError(f"invalid YAML: {problem}", source=source, expected="valid YAML") from err
        line, column = mark.line + 1, mark.column + 1
        raise RecipeError(
            f"line {line}, column {column}: invalid YAML: {problem}",
            source=source,
            expected="valid YAML",
            line=line,
            column=column,
        ) from err
    except (yaml.YAMLError, RecursionError, ValueError) as err:
        raise RecipeError(f"invalid YAML: {err}", source=source, expected="valid YAML") from err


def parse_recipe(text: str | bytes, source: str = "<string>", fmt: RecipeFormat | None = None) -> Recipe:
    """Parse and validate a recipe.

    ``fmt`` defaults to the extension of ``source`` (``.json``, ``.yaml``, ``.yml``), else is
    sniffed (JSON when the text starts with ``{``). Text over :data:`MAX_RECIPE_BYTES` is refused.
    """
    if isinstance(text, bytes):
        if len(text) > MAX_RECIPE_BYTES:
            raise _too_large(source, len(text))
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise RecipeError(
                f"not UTF-8 text (byte {err.start})", source=source, expected="UTF-8 encoded text"
            ) from err
    else:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_RECIPE_BYTES:
            raise _too_large(source, size)
        text = text.removeprefix("\ufeff")
    document = _load_document(text, source, fmt or _guess_format(text, source))
    try:
        return build_recipe(document, source)
    except RecursionError as err:
        raise RecipeError(
            "recipe is nested too deeply", source=source, expected="a shallower recipe"
        ) from err


def load_recipe(path: Path) -> Recipe:
    """Read and validate one recipe file; errors name ``path``."""
    source = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise _too_large(source, size)
        data = path.read_bytes()
    except OSError as err:
        raise RecipeError(f"cannot read recipe: {err.strerror or err}", source=source) from err
    return parse_recipe(data, source=source)


def load_recipe_dir(path: Path) -> list[Recipe]:
    """Load every ``*.yaml``, ``*.yml`` and ``*.json`` file of a folder (not recursive), by name.

    The first invalid file raises, naming it. Two files with the same component name and
    version are an error too.
    """
    try:
        files = sorted(
            entry for entry in path.iterdir() if entry.suffix.lower() in RECIPE_SUFFIXES and entry.is_file()
        )
    except OSError as err:
        raise RecipeError(f"cannot list recipe folder: {err.strerror or err}", source=str(path)) from err
    recipes: list[Recipe] = []
    seen: dict[tuple[str, str], str] = {}
    for file in files:
        recipe = load_recipe(file)
        key = (recipe.name, recipe.version)
        if key in seen:
            raise RecipeError(
                f"{recipe.name} {recipe.version} is also defined in {seen[key]}",
                source=str(file),
                field_path="ComponentVersion",
                expected="one recipe per component version",
            )
        seen[key] = str(file)
        recipes.append(recipe)
    logger.debug("loaded %d recipes from %s", len(recipes), path)
    return recipes


def _step_to_raw(step: LifecycleStep) -> str | dict[str, Any]:
    if step.timeout is None and not step.setenv and not step.requires_privilege and step.skipif is None:
        return step.script
    raw: dict[str, Any] = {"Script": step.script}
    if step.timeout is not None:
        raw["Timeout"] = int(step.timeout) if step.timeout.is_integer() else step.timeout
    if step.setenv:
        raw["Setenv"] = dict(step.setenv)
    if step.requires_privilege:
        raw["RequiresPrivilege"] = True
    if step.skipif is not None:
        raw["Skipif"] = step.skipif
    return raw


def _lifecycle_to_raw(lifecycle: Lifecycle) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if lifecycle.setenv:
        raw["Setenv"] = dict(lifecycle.setenv)
    for kind, step in lifecycle.steps().items():
        raw[kind.capitalize()] = _step_to_raw(step)
    return raw


def _artifact_to_raw(artifact: Artifact) -> dict[str, Any]:
    raw: dict[str, Any] = {"URI": artifact.uri}
    if artifact.digest is not None:
        raw["Digest"] = artifact.digest
    raw["Algorithm"] = artifact.algorithm
    raw["Unarchive"] = artifact.unarchive
    raw["Permission"] = {"Read": artifact.permission.read, "Execute": artifact.permission.execute}
    return raw


def _manifest_to_raw(manifest: Manifest) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if manifest.name is not None:
        raw["Name"] = manifest.name
    raw["Platform"] = dict(manifest.platform)
    if manifest.selections:
        raw["Selections"] = list(manifest.selections)
    if manifest.lifecycle is not None and not manifest.lifecycle.is_empty:
        raw["Lifecycle"] = _lifecycle_to_raw(manifest.lifecycle)
    if manifest.artifacts:
        raw["Artifacts"] = [_artifact_to_raw(a) for a in manifest.artifacts]
    return raw


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe in Greengrass' PascalCase JSON form (normalised; parses back to an equal recipe)."""
    raw: dict[str, Any] = {
        "RecipeFormatVersion": recipe.format_version,
        "ComponentName": recipe.name,
        "ComponentVersion": recipe.version,
        "ComponentType": recipe.type,
    }
    if recipe.description is not None:
        raw["ComponentDescription"] = recipe.description
    if recipe.publisher is not None:
        raw["ComponentPublisher"] = recipe.publisher
    if recipe.component_source is not None:
        raw["ComponentSource"] = recipe.component_source
    if recipe.default_configuration:
        raw["ComponentConfiguration"] = {
            "DefaultConfiguration": json.loads(json.dumps(recipe.default_configuration))
        }
    if recipe.dependencies:
        raw["ComponentDependencies"] = {
            name: {"VersionRequirement": dep.version_requirement, "DependencyType": dep.dependency_type}
            for name, dep in recipe.dependencies.items()
        }
    if recipe.manifests:
        raw["Manifests"] = [_manifest_to_raw(m) for m in recipe.manifests]
    if recipe.global_lifecycle:
        raw["Lifecycle"] = json.loads(json.dumps(recipe.global_lifecycle))
    return raw
