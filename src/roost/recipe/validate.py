"""Turn a parsed YAML/JSON document into a validated :class:`~roost.recipe.model.Recipe`.

Every problem raises :class:`~roost.recipe.errors.RecipeError` naming the source, the exact
field path (``Manifests[0].Lifecycle.Run``) and what was expected. Field names are matched in
any case, as the Greengrass nucleus reads recipes (``Uri``, ``lifecycle``, ``platform``), and so
are enumerated values (``Unarchive: zip``, ``DependencyType: soft``); errors and the model use the
canonical names of the recipe format. Keys inside ``DefaultConfiguration`` are the component's own
data and keep their case. Two keys differing only in case are an error naming both.
"""

from __future__ import annotations

import re
from typing import Any

import nodesemver

from roost.recipe.checks import join_path as _join
from roost.recipe.docker import DOCKER_URI_FORM, parse_image_uri
from roost.recipe.lifecycle import (
    Lifecycle,
    LifecycleBuilder,
    build_lifecycle,
    filter_selections,
    selected_global_lifecycle,
)
from roost.recipe.model import (
    ARTIFACT_SCHEMES,
    Artifact,
    ArtifactPermission,
    Dependency,
    DependencyType,
    Manifest,
    PermissionLevel,
    Recipe,
    UnarchiveMode,
)

__all__ = [
    "COMPONENT_TYPES",
    "RECIPE_FORMAT_VERSION",
    "build_lifecycle",
    "build_recipe",
    "filter_selections",
    "is_valid_component_name",
    "is_valid_range",
    "is_valid_version",
    "selected_global_lifecycle",
]

RECIPE_FORMAT_VERSION = "2020-01-25"
COMPONENT_TYPES: frozenset[str] = frozenset(
    {"aws.greengrass.generic", "aws.greengrass.lambda", "aws.greengrass.plugin", "aws.greengrass.nucleus"}
)
MAX_NODES = 200_000

_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_IDENT = r"(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER_RE = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    rf"(?:-{_IDENT}(?:\.{_IDENT})*)?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)

_TOP_FIELDS = (
    "RecipeFormatVersion",
    "ComponentName",
    "ComponentVersion",
    "ComponentType",
    "ComponentDescription",
    "ComponentPublisher",
    "ComponentSource",
    "ComponentConfiguration",
    "ComponentDependencies",
    "Manifests",
    "Lifecycle",
)
_MANIFEST_FIELDS = ("Name", "Platform", "Lifecycle", "Selections", "Artifacts")
_ARTIFACT_FIELDS = ("URI", "Digest", "Algorithm", "Unarchive", "Permission")
_PERMISSION_FIELDS = ("Read", "Execute")
_DEPENDENCY_FIELDS = ("VersionRequirement", "DependencyType")
_CONFIGURATION_FIELDS = ("DefaultConfiguration",)
_POLICY_FIELDS = ("policyDescription", "operations", "resources")
_PLATFORM_KEYS = {
    name.casefold(): name for name in ("os", "architecture", "architecture.detail", "runtime")
}
_ALGORITHMS = ("SHA-256", "SHA-384", "SHA-512")
_PERMISSION_LEVELS: tuple[PermissionLevel, ...] = ("NONE", "OWNER", "ALL")
_UNARCHIVE_MODES: tuple[UnarchiveMode, ...] = ("NONE", "ZIP")
_DEPENDENCY_TYPES: tuple[DependencyType, ...] = ("HARD", "SOFT")

def is_valid_component_name(name: str) -> bool:
    """ComponentName rule: 1-128 of ``[A-Za-z0-9._-]``, no ``..`` (it becomes a folder name)."""
    return bool(_NAME_RE.fullmatch(name)) and ".." not in name and name != "."


def is_valid_version(version: str) -> bool:
    """Whether ``version`` is a strict semantic version (``1.0.0``, ``1.0.0-beta.1``)."""
    return len(version) <= 64 and _SEMVER_RE.fullmatch(version) is not None


def is_valid_range(requirement: str) -> bool:
    """Whether ``requirement`` is a valid npm-style semver range (``^1.0.0``, ``>=1.0 <2``)."""
    if not requirement.strip():
        return False
    try:
        return nodesemver.valid_range(requirement, False) is not None
    except Exception:  # nodesemver raises assorted errors on odd input
        return False


class _Builder(LifecycleBuilder):
    """Validates one document; carries the source name for error messages."""

    # -- recipe parts -------------------------------------------------------------------------

    def platform(self, value: Any, path: str) -> dict[str, str]:
        obj = self.mapping(value, path, "an object of platform attributes")
        result: dict[str, str] = {}
        spelled: dict[str, str] = {}
        for key, item in obj.items():
            # The nucleus' own attributes match in any case; custom ones keep theirs.
            name = _PLATFORM_KEYS.get(key.casefold(), key)
            item_path = _join(path, name)
            if name in result:
                raise self.fail(
                    item_path,
                    f"{name} is given twice, as {spelled[name]!r} and {key!r} (field names are not "
                    "case-sensitive)",
                    "one spelling",
                )
            text = self.string(item, item_path, "a string ('*', 'all', 'any', a value, or /regex/)")
            if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
                try:
                    re.compile(text[1:-1])
                except re.error as err:
                    raise self.fail(
                        item_path, f"invalid regular expression {text!r}: {err}", "a valid /regex/"
                    ) from err
            result[name] = text
            spelled[name] = key
        return result

    def artifact(self, value: Any, path: str) -> Artifact:
        obj = self.fields(value, path, _ARTIFACT_FIELDS, expected="an object with URI")
        if obj.get("URI") is None:
            raise self.fail(_join(path, "URI"), "missing required field URI", "a URI")
        uri_path = _join(path, "URI")
        uri = self.string(obj["URI"], uri_path, "a URI")
        scheme, colon, rest = uri.partition(":")
        known = ", ".join(sorted(ARTIFACT_SCHEMES))
        if not colon or scheme.lower() not in ARTIFACT_SCHEMES:
            raise self.mismatch(uri_path, f"a URI with one of the schemes {known}", uri)
        artifact = Artifact(
            uri=uri,
            digest=self.optional_string(obj, "Digest", path),
            algorithm=self.choice(obj["Algorithm"], _join(path, "Algorithm"), _ALGORITHMS)
            if obj.get("Algorithm") is not None
            else "SHA-256",
            unarchive=self.choice(obj["Unarchive"], _join(path, "Unarchive"), _UNARCHIVE_MODES)
            if obj.get("Unarchive") is not None
            else "NONE",
            permission=self.permission(obj["Permission"], _join(path, "Permission"))
            if obj.get("Permission") is not None
            else ArtifactPermission(),
        )
        if scheme.lower() == "docker":
            try:
                parse_image_uri(uri)
            except ValueError as err:
                raise self.fail(uri_path, f"invalid docker: image URI {uri!r}: {err}", DOCKER_URI_FORM) from err
        elif not artifact.file_name:
            raise self.mismatch(uri_path, "a URI ending with a file name", uri)
        if not rest:
            raise self.mismatch(uri_path, "a URI with a path after the scheme", uri)
        return artifact

    def permission(self, value: Any, path: str) -> ArtifactPermission:
        obj = self.fields(value, path, _PERMISSION_FIELDS)
        read = obj.get("Read")
        execute = obj.get("Execute")
        return ArtifactPermission(
            read="OWNER" if read is None else self.choice(read, _join(path, "Read"), _PERMISSION_LEVELS),
            execute="NONE"
            if execute is None
            else self.choice(execute, _join(path, "Execute"), _PERMISSION_LEVELS),
        )

    def manifest(self, value: Any, path: str) -> Manifest:
        obj = self.fields(value, path, _MANIFEST_FIELDS)
        lifecycle: Lifecycle | None = None
        raw_lifecycle = obj.get("Lifecycle")
        if raw_lifecycle is not None:
            if not isinstance(raw_lifecycle, dict):
                raise self.mismatch(_join(path, "Lifecycle"), "an object", raw_lifecycle)
            if raw_lifecycle:
                parsed = self.lifecycle(raw_lifecycle, _join(path, "Lifecycle"))
                # {Run: null} is no lifecycle, as {} is (they serialise the same way)
                lifecycle = None if parsed.is_empty else parsed
        raw_artifacts = obj.get("Artifacts")
        artifacts: list[Artifact] = []
        if raw_artifacts is not None:
            if not isinstance(raw_artifacts, list):
                raise self.mismatch(_join(path, "Artifacts"), "a list of artifacts", raw_artifacts)
            artifacts = [
                self.artifact(item, _join(_join(path, "Artifacts"), i))
                for i, item in enumerate(raw_artifacts)
            ]
        return Manifest(
            platform=self.platform(obj["Platform"], _join(path, "Platform"))
            if obj.get("Platform") is not None
            else {},
            lifecycle=lifecycle,
            selections=self.string_list(obj["Selections"], _join(path, "Selections"))
            if obj.get("Selections") is not None
            else [],
            artifacts=artifacts,
            name=self.optional_string(obj, "Name", path),
        )

    def dependency(self, value: Any, path: str) -> Dependency:
        obj = self.fields(value, path, _DEPENDENCY_FIELDS, expected="an object with VersionRequirement")
        req_path = _join(path, "VersionRequirement")
        if obj.get("VersionRequirement") is None:
            raise self.fail(req_path, "missing required field VersionRequirement", "a semver range")
        requirement = self.string(obj["VersionRequirement"], req_path, "an npm-style semver range")
        if not is_valid_range(requirement):
            raise self.mismatch(
                req_path, "an npm-style semver range such as ^1.0.0 or >=1.2.0 <2.0.0", requirement
            )
        raw_type = obj.get("DependencyType")
        dependency_type: DependencyType = (
            "HARD"
            if raw_type is None
            else self.choice(raw_type, _join(path, "DependencyType"), _DEPENDENCY_TYPES)
        )
        return Dependency(version_requirement=requirement, dependency_type=dependency_type)

    def access_control(self, value: Any, path: str) -> None:
        services = self.mapping(value, path, "an object of IPC services to policies")
        for service, policies in services.items():
            service_path = _join(path, service)
            for policy_id, policy in self.mapping(policies, service_path, "an object of policies").items():
                policy_path = _join(service_path, policy_id)
                obj = self.fields(policy, policy_path, _POLICY_FIELDS, expected="an object with operations")
                if obj.get("operations") is None:
                    raise self.fail(_join(policy_path, "operations"), "missing required field operations")
                self.string_list(obj["operations"], _join(policy_path, "operations"))
                if obj.get("resources") is not None:
                    self.string_list(obj["resources"], _join(policy_path, "resources"))
                if obj.get("policyDescription") is not None:
                    self.string(obj["policyDescription"], _join(policy_path, "policyDescription"))

    def recipe(self, document: Any) -> Recipe:
        _check_node_count(document, self)
        obj = self.fields(document, "", _TOP_FIELDS, expected="an object (the recipe)")
        for required in ("RecipeFormatVersion", "ComponentName", "ComponentVersion"):
            if obj.get(required) is None:
                raise self.fail(required, f"missing required field {required}", "a string")
        format_version = obj["RecipeFormatVersion"]
        if format_version != RECIPE_FORMAT_VERSION:
            raise self.mismatch("RecipeFormatVersion", RECIPE_FORMAT_VERSION, format_version)
        name = self.string(obj["ComponentName"], "ComponentName")
        if not is_valid_component_name(name):
            raise self.mismatch(
                "ComponentName",
                "1-128 characters of A-Z a-z 0-9 . _ - without '..' (e.g. com.example.Hello)",
                name,
            )
        version = obj["ComponentVersion"]
        if not isinstance(version, str) or not is_valid_version(version):
            raise self.mismatch(
                "ComponentVersion", "a semantic version such as 1.0.0 or 1.0.0-beta.1", version
            )
        component_type = obj.get("ComponentType")
        if component_type is None:
            component_type = "aws.greengrass.generic"
        component_type = self.choice(component_type, "ComponentType", sorted(COMPONENT_TYPES))

        default_configuration: dict[str, Any] = {}
        if obj.get("ComponentConfiguration") is not None:
            configuration = self.fields(
                obj["ComponentConfiguration"], "ComponentConfiguration", _CONFIGURATION_FIELDS
            )
            path = "ComponentConfiguration.DefaultConfiguration"
            if configuration.get("DefaultConfiguration") is not None:
                default_configuration = self.mapping(configuration["DefaultConfiguration"], path)
                self.json_value(default_configuration, path)
                if default_configuration.get("accessControl") is not None:
                    self.access_control(default_configuration["accessControl"], _join(path, "accessControl"))

        dependencies: dict[str, Dependency] = {}
        if obj.get("ComponentDependencies") is not None:
            raw = self.mapping(obj["ComponentDependencies"], "ComponentDependencies")
            for dep_name, dep in raw.items():
                dep_path = _join("ComponentDependencies", dep_name)
                if not is_valid_component_name(dep_name):
                    raise self.fail(
                        dep_path, f"invalid component name {dep_name!r}", "a valid component name"
                    )
                if dep_name == name:
                    raise self.fail(dep_path, "a component cannot depend on itself", "another component")
                dependencies[dep_name] = self.dependency(dep, dep_path)

        manifests: list[Manifest] = []
        if obj.get("Manifests") is not None:
            raw_manifests = obj["Manifests"]
            if not isinstance(raw_manifests, list):
                raise self.mismatch("Manifests", "a list of manifests", raw_manifests)
            manifests = [self.manifest(item, _join("Manifests", i)) for i, item in enumerate(raw_manifests)]

        global_lifecycle: dict[str, Any] = {}
        if obj.get("Lifecycle") is not None:
            global_lifecycle = self.mapping(obj["Lifecycle"], "Lifecycle")
            self.json_value(global_lifecycle, "Lifecycle")

        recipe = Recipe(
            format_version=format_version,
            name=name,
            version=version,
            type=component_type,
            description=self.optional_string(obj, "ComponentDescription", ""),
            publisher=self.optional_string(obj, "ComponentPublisher", ""),
            component_source=self.optional_string(obj, "ComponentSource", ""),
            default_configuration=default_configuration,
            dependencies=dependencies,
            manifests=manifests,
            global_lifecycle=global_lifecycle,
            source=self.source,
        )
        # Validate the global lifecycle as every manifest (or every device) would see it.
        if not manifests:
            selected_global_lifecycle(recipe, None)
        for index, manifest in enumerate(manifests):
            if manifest.lifecycle is None:
                selected_global_lifecycle(recipe, index)
        return recipe


def _check_node_count(document: Any, builder: _Builder) -> None:
    """Refuse documents that expand to huge trees (e.g. YAML alias bombs)."""
    count = 0
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise builder.fail("", f"recipe is too large (more than {MAX_NODES} values)", "a smaller recipe")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def build_recipe(document: Any, source: str = "<string>") -> Recipe:
    """Validate a parsed YAML/JSON document and build the :class:`Recipe`."""
    return _Builder(source).recipe(document)
