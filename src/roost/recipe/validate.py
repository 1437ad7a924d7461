"""Turn a parsed YAML/JSON document into a validated :class:`~roost.recipe.model.Recipe`.

Every problem raises :class:`~roost.recipe.errors.RecipeError` naming the source, the exact
field path (``Manifests[0].Lifecycle.Run``) and what was expected. Field names are the
case-sensitive PascalCase names of the Greengrass recipe format; lifecycle keys and lifecycle
step keys are also accepted all lower-case, as the Greengrass nucleus does.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast

import nodesemver

from roost.recipe.errors import RecipeError
from roost.recipe.model import (
    ARTIFACT_SCHEMES,
    Artifact,
    ArtifactPermission,
    Dependency,
    DependencyType,
    Lifecycle,
    LifecycleStep,
    Manifest,
    PermissionLevel,
    Recipe,
    StepKind,
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
ALL_SELECTION = "all"
MAX_NODES = 200_000

_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_IDENT = r"(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER_RE = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    rf"(?:-{_IDENT}(?:\.{_IDENT})*)?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)
_SKIPIF_RE = re.compile(r"(onpath|exists)\s+\S.*", re.DOTALL)

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
_STEP_FIELDS = ("Script", "Timeout", "Setenv", "RequiresPrivilege", "Skipif")
_LIFECYCLE_FIELDS = ("Setenv", "Bootstrap", "Install", "Startup", "Run", "Shutdown", "Recover")
_POLICY_FIELDS = ("policyDescription", "operations", "resources")
_ALGORITHMS = ("SHA-256", "SHA-384", "SHA-512")
_PERMISSION_LEVELS: tuple[PermissionLevel, ...] = ("NONE", "OWNER", "ALL")
_UNARCHIVE_MODES: tuple[UnarchiveMode, ...] = ("NONE", "ZIP")
_DEPENDENCY_TYPES: tuple[DependencyType, ...] = ("HARD", "SOFT")

_T = TypeVar("_T")


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


def _join(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


class _Builder:
    """Validates one document; carries the source name for error messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    # -- primitives ---------------------------------------------------------------------------

    def fail(self, path: str, problem: str, expected: str = "") -> RecipeError:
        return RecipeError(problem, source=self.source, field_path=path, expected=expected)

    def mismatch(self, path: str, expected: str, got: Any) -> RecipeError:
        return RecipeError.mismatch(self.source, path, expected, got)

    def mapping(self, value: Any, path: str, expected: str = "an object") -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.mismatch(path, expected, value)
        for key in value:
            if not isinstance(key, str):
                raise self.fail(path, f"field names must be strings, got {key!r}", "string field names")
        return value

    def fields(
        self, value: Any, path: str, allowed: Sequence[str], *, lowercase: bool = False, expected: str = ""
    ) -> dict[str, Any]:
        """Check an object's keys; return it keyed by canonical (PascalCase) field name."""
        obj = self.mapping(value, path, expected or "an object")
        canonical = {name: name for name in allowed}
        if lowercase:
            canonical.update({name.lower(): name for name in allowed})
        result: dict[str, Any] = {}
        for key, item in obj.items():
            name = canonical.get(key)
            if name is None:
                folded = {known.lower(): known for known in allowed}
                hint = difflib.get_close_matches(key.lower(), list(folded), n=1)
                did_you_mean = f" (did you mean {folded[hint[0]]!r}?)" if hint else ""
                allowed_text = ", ".join(allowed)
                raise self.fail(
                    _join(path, key),
                    f"unknown field {key!r}{did_you_mean}; allowed fields: {allowed_text}",
                    f"one of {allowed_text}",
                )
            if name in result:
                raise self.fail(_join(path, key), f"{name} is given twice (in two spellings)", "one spelling")
            result[name] = item
        return result

    def string(self, value: Any, path: str, expected: str = "a string") -> str:
        if not isinstance(value, str):
            raise self.mismatch(path, expected, value)
        return value

    def optional_string(self, obj: Mapping[str, Any], key: str, path: str) -> str | None:
        value = obj.get(key)
        return None if value is None else self.string(value, _join(path, key))

    def choice(self, value: Any, path: str, choices: Sequence[_T]) -> _T:
        expected = "one of " + ", ".join(str(c) for c in choices)
        if not isinstance(value, str) or value not in choices:
            raise self.mismatch(path, expected, value)
        return choices[choices.index(cast(_T, value))]

    def boolean(self, value: Any, path: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise self.mismatch(path, "true or false", value)

    def string_list(self, value: Any, path: str) -> list[str]:
        if not isinstance(value, list):
            raise self.mismatch(path, "a list of strings", value)
        return [self.string(item, _join(path, i)) for i, item in enumerate(value)]

    def json_value(self, value: Any, path: str) -> None:
        """Check that ``value`` is plain JSON (string keys, finite numbers)."""
        if value is None or isinstance(value, str | bool | int):
            return
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.mismatch(path, "a finite number", value)
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                self.json_value(item, _join(path, i))
            return
        if isinstance(value, dict):
            for key, item in self.mapping(value, path).items():
                self.json_value(item, _join(path, key))
            return
        raise self.mismatch(path, "a JSON value", value)

    def positive_number(self, value: Any, path: str) -> float:
        expected = "a positive number of seconds"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.mismatch(path, expected, value)
        try:
            number = float(value)
        except OverflowError as err:
            raise self.mismatch(path, expected, value) from err
        if not math.isfinite(number) or number <= 0:
            raise self.mismatch(path, expected, value)
        return number

    def setenv(self, value: Any, path: str) -> dict[str, str]:
        obj = self.mapping(value, path, "an object of environment variables")
        result: dict[str, str] = {}
        for key, item in obj.items():
            if not key or "=" in key or "\0" in key:
                raise self.fail(_join(path, key), "invalid environment variable name", "a name without '='")
            result[key] = self.env_value(item, _join(path, key))
        return result

    def env_value(self, value: Any, path: str) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float) and math.isfinite(value):
            return json.dumps(value)
        raise self.mismatch(path, "a string, number or boolean", value)

    # -- recipe parts -------------------------------------------------------------------------

    def step(self, value: Any, path: str) -> LifecycleStep:
        if isinstance(value, str):
            return LifecycleStep(script=value)
        if not isinstance(value, dict):
            raise self.mismatch(path, "a string or an object with Script", value)
        obj = self.fields(value, path, _STEP_FIELDS, lowercase=True)
        if "Script" not in obj:
            raise self.fail(_join(path, "Script"), "missing required field Script", "a string")
        script = self.string(obj["Script"], _join(path, "Script"))
        timeout: float | None = None
        raw_timeout = obj.get("Timeout")
        if raw_timeout is not None:
            timeout = self.positive_number(raw_timeout, _join(path, "Timeout"))
        setenv = self.setenv(obj["Setenv"], _join(path, "Setenv")) if obj.get("Setenv") is not None else {}
        privileged = obj.get("RequiresPrivilege")
        requires_privilege = (
            False if privileged is None else self.boolean(privileged, _join(path, "RequiresPrivilege"))
        )
        skipif = self.optional_string(obj, "Skipif", path)
        if skipif is not None and not _SKIPIF_RE.fullmatch(skipif.strip()):
            raise self.mismatch(_join(path, "Skipif"), "'onpath <executable>' or 'exists <file>'", skipif)
        return LifecycleStep(
            script=script,
            timeout=timeout,
            setenv=setenv,
            requires_privilege=requires_privilege,
            skipif=skipif.strip() if skipif is not None else None,
        )

    def lifecycle(self, value: Any, path: str) -> Lifecycle:
        obj = self.fields(value, path, _LIFECYCLE_FIELDS, lowercase=True)
        if obj.get("Startup") is not None and obj.get("Run") is not None:
            raise self.fail(
                path,
                "Startup and Run cannot both be given: Startup is for background processes that "
                "return once started, Run for a foreground process",
                "either Startup or Run",
            )
        steps: dict[StepKind, LifecycleStep] = {}
        kinds: tuple[StepKind, ...] = ("bootstrap", "install", "startup", "run", "shutdown", "recover")
        for kind in kinds:
            field_name = kind.capitalize()
            if obj.get(field_name) is not None:
                steps[kind] = self.step(obj[field_name], _join(path, field_name))
        setenv = self.setenv(obj["Setenv"], _join(path, "Setenv")) if obj.get("Setenv") is not None else {}
        return Lifecycle(setenv=setenv, **steps)

    def platform(self, value: Any, path: str) -> dict[str, str]:
        obj = self.mapping(value, path, "an object of platform attributes")
        result: dict[str, str] = {}
        for key, item in obj.items():
            item_path = _join(path, key)
            text = self.string(item, item_path, "a string ('*', a value, or /regex/)")
            if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
                try:
                    re.compile(text[1:-1])
                except re.error as err:
                    raise self.fail(
                        item_path, f"invalid regular expression {text!r}: {err}", "a valid /regex/"
                    ) from err
            result[key] = text
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
        if scheme.lower() != "docker" and not artifact.file_name:
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
                lifecycle = self.lifecycle(raw_lifecycle, _join(path, "Lifecycle"))
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


def filter_selections(source: Mapping[str, Any], keywords: set[str], selectors: Sequence[str]) -> Any:
    """Greengrass' platform-selection filter over a (global) lifecycle section.

    At any level, a map with at least one key in ``keywords`` (every selection named by any
    manifest, plus ``all``) is a selector map: the value of the first of ``selectors`` present
    (else of ``all``) replaces it, and is filtered in turn; other maps are filtered entry by
    entry. Returns ``None`` when filtering removes everything at this level.
    """
    if any(key in keywords for key in source):
        chosen = next((source[s] for s in selectors if source.get(s) is not None), None)
        if chosen is None:
            chosen = source.get(ALL_SELECTION)
        if chosen is None:
            return None
        return filter_selections(chosen, keywords, selectors) if isinstance(chosen, dict) else chosen
    result: dict[str, Any] = {}
    for key, value in source.items():
        filtered = filter_selections(value, keywords, selectors) if isinstance(value, dict) else value
        if filtered is not None:
            result[key] = filtered
    return result


def selected_global_lifecycle(recipe: Recipe, manifest_index: int | None) -> Lifecycle:
    """The recipe's global Lifecycle as seen by one manifest (``None``: the recipe has none)."""
    if not recipe.global_lifecycle:
        return Lifecycle()
    keywords = {ALL_SELECTION}
    for manifest in recipe.manifests:
        keywords.update(manifest.selections)
    selectors = [] if manifest_index is None else recipe.manifests[manifest_index].selections
    filtered = filter_selections(recipe.global_lifecycle, keywords, selectors)
    if not isinstance(filtered, dict) or not filtered:
        return Lifecycle()
    try:
        return _Builder(recipe.source).lifecycle(filtered, "Lifecycle")
    except RecipeError as err:
        if manifest_index is None:
            raise
        where = f"as selected for Manifests[{manifest_index}] with Selections {selectors or ['all']}"
        raise RecipeError(
            f"{err.problem} ({where})", source=err.source, field_path=err.field_path, expected=err.expected
        ) from err


def build_lifecycle(value: Any, source: str = "<string>", path: str = "Lifecycle") -> Lifecycle:
    """Validate one raw Lifecycle object."""
    return _Builder(source).lifecycle(value, path)


def build_recipe(document: Any, source: str = "<string>") -> Recipe:
    """Validate a parsed YAML/JSON document and build the :class:`Recipe`."""
    return _Builder(source).recipe(document)
