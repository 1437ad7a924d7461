"""The recipe model: immutable snake_case views of a Greengrass V2 recipe.

Instances are built by :mod:`roost.recipe.validate` (through :func:`roost.recipe.parse_recipe`),
which guarantees every invariant documented here; constructing them by hand skips validation.

Lifecycles (:class:`Lifecycle`, :class:`LifecycleStep`, their timeouts) are defined in
:mod:`roost.recipe.lifecycle` and re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from roost.recipe.errors import RecipeError
from roost.recipe.lifecycle import DEFAULT_TIMEOUTS, Lifecycle, LifecycleStep, StepKind, selected_global_lifecycle
from roost.recipe.platform import platform_matches

__all__ = [
    "ARTIFACT_SCHEMES",
    "DEFAULT_TIMEOUTS",
    "Artifact",
    "ArtifactPermission",
    "Dependency",
    "DependencyType",
    "Lifecycle",
    "LifecycleStep",
    "Manifest",
    "PermissionLevel",
    "Recipe",
    "SelectedRecipe",
    "StepKind",
    "UnarchiveMode",
]

PermissionLevel = Literal["NONE", "OWNER", "ALL"]
UnarchiveMode = Literal["NONE", "ZIP"]
DependencyType = Literal["HARD", "SOFT"]


#: Artifact URI schemes a recipe may use. ``docker:`` parses; the deployer decides whether it
#: can honour it (it needs a Docker engine).
ARTIFACT_SCHEMES: frozenset[str] = frozenset({"s3", "greengrass", "file", "docker", "http", "https"})


@dataclass(frozen=True, kw_only=True)
class ArtifactPermission:
    """Who may read / execute an artifact file once installed."""

    read: PermissionLevel = "OWNER"
    execute: PermissionLevel = "NONE"


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """One artifact of a manifest."""

    uri: str
    digest: str | None = None
    algorithm: str = "SHA-256"
    unarchive: UnarchiveMode = "NONE"
    permission: ArtifactPermission = field(default_factory=ArtifactPermission)

    @property
    def scheme(self) -> str:
        """The URI scheme, lower-case (``s3``, ``greengrass``, ``file``, ``docker``, ...)."""
        return self.uri.partition(":")[0].lower()

    @property
    def file_name(self) -> str:
        """The last path segment of the URI: the name of the file once downloaded."""
        rest = self.uri.partition(":")[2]
        if rest.startswith("//"):
            rest = urlsplit(self.uri).path
        return rest.rsplit("/", 1)[-1]


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A platform-specific part of a recipe. An empty ``platform`` matches every device."""

    platform: dict[str, str] = field(default_factory=dict)
    lifecycle: Lifecycle | None = None
    selections: list[str] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class Dependency:
    """A dependency on another component: an npm-style semver range, HARD or SOFT."""

    version_requirement: str
    dependency_type: DependencyType = "HARD"


@dataclass(frozen=True, kw_only=True)
class SelectedRecipe:
    """A recipe narrowed to one device: the manifest that matched and its effective lifecycle.

    ``manifest_index`` is ``None`` for a recipe without manifests (its global lifecycle
    applies everywhere).
    """

    recipe: Recipe
    manifest_index: int | None
    lifecycle: Lifecycle
    artifacts: list[Artifact]


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A validated recipe. ``source`` (the file it came from) does not take part in equality."""

    format_version: str = "2020-01-25"
    name: str
    version: str
    type: str = "aws.greengrass.generic"
    description: str | None = None
    publisher: str | None = None
    component_source: str | None = None
    default_configuration: dict[str, Any] = field(default_factory=dict)
    dependencies: dict[str, Dependency] = field(default_factory=dict)
    manifests: list[Manifest] = field(default_factory=list)
    global_lifecycle: dict[str, Any] = field(default_factory=dict)
    source: str = field(default="<string>", compare=False)

    @property
    def access_control(self) -> dict[str, Any]:
        """``DefaultConfiguration.accessControl`` (IPC authorisation policies), or ``{}``."""
        value = self.default_configuration.get("accessControl")
        return value if isinstance(value, dict) else {}

    def select(self, platform: Mapping[str, str]) -> SelectedRecipe:
        """Pick the first manifest matching ``platform`` and work out its lifecycle.

        A manifest without its own Lifecycle takes the recipe's global Lifecycle, filtered by
        the manifest's Selections the way Greengrass does (``all`` is the fallback). Raises
        :class:`RecipeError` with code ``PLATFORM_UNSUPPORTED`` when no manifest matches.
        """
        if not self.manifests:
            lifecycle = selected_global_lifecycle(self, None)
            return SelectedRecipe(recipe=self, manifest_index=None, lifecycle=lifecycle, artifacts=[])
        for index, manifest in enumerate(self.manifests):
            if platform_matches(manifest.platform, platform):
                if manifest.lifecycle is not None:
                    lifecycle = manifest.lifecycle
                else:
                    lifecycle = selected_global_lifecycle(self, index)
                return SelectedRecipe(
                    recipe=self, manifest_index=index, lifecycle=lifecycle, artifacts=list(manifest.artifacts)
                )
        wanted = _format_platform(platform)
        offered = "; ".join(f"[{i}] {_format_platform(m.platform)}" for i, m in enumerate(self.manifests))
        raise RecipeError(
            f"{self.name} {self.version} has no manifest for platform {wanted}; manifests: {offered}",
            source=self.source,
            field_path="Manifests",
            expected=f"a manifest whose Platform matches {wanted}",
            code="PLATFORM_UNSUPPORTED",
        )


def _format_platform(platform: Mapping[str, str]) -> str:
    if not platform:
        return "{} (any)"
    return "{" + ", ".join(f"{key}: {value}" for key, value in platform.items()) + "}"
