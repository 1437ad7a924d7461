"""Greengrass V2 recipes: model, parsing, validation, interpolation, platforms, dependencies.

Typical use::

    recipe = load_recipe(Path("com.example.Hello-1.0.0.yaml"))
    selected = recipe.select(current_platform())
    lifecycle = interpolate_lifecycle(selected.lifecycle, context)

Every failure is a :class:`RecipeError` (or its subclass :class:`DependencyError`) with a
stable ``code``.
"""

from roost.recipe.errors import DependencyError, RecipeError
from roost.recipe.interpolate import (
    DependencyPaths,
    InterpolationContext,
    escape_pointer_token,
    interpolate,
    interpolate_lifecycle,
    resolve_pointer,
)
from roost.recipe.model import (
    ARTIFACT_SCHEMES,
    DEFAULT_TIMEOUTS,
    Artifact,
    ArtifactPermission,
    Dependency,
    Lifecycle,
    LifecycleStep,
    Manifest,
    Recipe,
    SelectedRecipe,
    StepKind,
)
from roost.recipe.parse import MAX_RECIPE_BYTES, load_recipe, load_recipe_dir, parse_recipe, recipe_to_dict
from roost.recipe.platform import current_platform, platform_matches
from roost.recipe.resolve import dependency_order, resolve, sort_versions
from roost.recipe.validate import (
    RECIPE_FORMAT_VERSION,
    build_recipe,
    is_valid_component_name,
    is_valid_range,
    is_valid_version,
)

__all__ = [
    "ARTIFACT_SCHEMES",
    "DEFAULT_TIMEOUTS",
    "MAX_RECIPE_BYTES",
    "RECIPE_FORMAT_VERSION",
    "Artifact",
    "ArtifactPermission",
    "Dependency",
    "DependencyError",
    "DependencyPaths",
    "InterpolationContext",
    "Lifecycle",
    "LifecycleStep",
    "Manifest",
    "Recipe",
    "RecipeError",
    "SelectedRecipe",
    "StepKind",
    "build_recipe",
    "current_platform",
    "dependency_order",
    "escape_pointer_token",
    "interpolate",
    "interpolate_lifecycle",
    "is_valid_component_name",
    "is_valid_range",
    "is_valid_version",
    "load_recipe",
    "load_recipe_dir",
    "parse_recipe",
    "platform_matches",
    "recipe_to_dict",
    "resolve",
    "resolve_pointer",
    "sort_versions",
]
