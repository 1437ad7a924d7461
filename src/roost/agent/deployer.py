"""Local deployments: one transaction each, one at a time, never IN_PROGRESS forever.

A deployment goes QUEUED → IN_PROGRESS → SUCCEEDED | FAILED | CANCELED. It is applied in two
phases:

1. *prepare* (no running component is touched): store the new recipes, resolve the whole
   component set, copy and verify artifacts, compute each component's configuration and
   supervisor spec. Any error here ends the deployment as ``FAILED_NO_STATE_CHANGE``.
   Then, still before any change, the running components are asked (:mod:`roost.agent.update_policy`):
   subscribers to component updates are notified and may defer (``componentUpdatePolicy``), and
   components whose configuration changes may reject it (``configurationValidationPolicy``); a
   rejection, or no validity report in time, also ends as ``FAILED_NO_STATE_CHANGE``.
2. *apply*: stop what is removed or changed (reverse dependency order), install and start what
   is new or changed (dependency order), and wait until each is RUNNING or FINISHED and stays
   so for a short settle window, all within the deployment's timeout. On failure with the
   ``ROLLBACK`` policy the previous component set, versions and configuration come back exactly
   (``FAILED_ROLLBACK_COMPLETE``); with ``DO_NOTHING`` things are left as they are.

Cancelling an IN_PROGRESS deployment rolls it back the same way (while the components are still being
asked, nothing has changed yet: it just ends, ``CANCELED``). The deployment's timeout covers the asking
and the apply phase together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from roost.agent.artifacts import install_artifacts
from roost.agent.component_spec import ComponentSpec
from roost.agent.configuration import apply_update, deep_merge
from roost.agent.docker import DockerHost, ImageManager, images_of, references_in_use
from roost.agent.errors import DeploymentError
from roost.agent.packages import PackageStore
from roost.agent.paths import AgentPaths
from roost.agent.states import ComponentState
from roost.agent.store import ComponentRecord, DeploymentRecord, Store
from roost.agent.supervisor import Supervisor
from roost.agent.update_policy import (
    LOCAL_VALIDATION_TIMEOUT,
    SKIP_NOTIFY_COMPONENTS,
    ComponentUpdatePolicy,
    ConfigurationValidationPolicy,
    LifecycleEvents,
    proposals_to_validate,
)
from roost.errors import ConflictError, InvalidInputError, RoostError
from roost.recipe import Recipe, current_platform, dependency_order, load_recipe_dir
from roost.recipe.docker import DockerImage
from roost.recipe.resolve import BUILTINS, resolution

log = logging.getLogger(__name__)

QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, CANCELED = "QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "CANCELED"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED})
DONE_STATES = frozenset({ComponentState.RUNNING, ComponentState.FINISHED})
BAD_STATES = frozenset({ComponentState.ERRORED, ComponentState.BROKEN})


class DeploymentRequest(BaseModel):
    """Greengrass' ``CreateLocalDeploymentRequest`` (camelCase), plus Roost's timeouts."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    recipeDirectoryPath: str | None = None
    artifactsDirectoryPath: str | None = None
    rootComponentVersionsToAdd: dict[str, str] = Field(default_factory=dict)
    rootComponentsToRemove: list[str] = Field(default_factory=list)
    componentToConfiguration: dict[str, dict[str, Any]] = Field(default_factory=dict)
    componentToRunWithInfo: dict[str, Any] = Field(default_factory=dict)
    groupName: str | None = None
    failureHandlingPolicy: Literal["ROLLBACK", "DO_NOTHING"] = "ROLLBACK"
    timeoutSeconds: float = Field(default=300.0, gt=0, le=86400)
    # Roost: the hub's root set for this device (replaces the previous hub set; None = unchanged).
    hubComponents: dict[str, str] | None = None
    hubRevision: int | None = None
    settleSeconds: float = Field(default=1.0, ge=0, le=60)
    # Greengrass deployment-document policies. Local deployments default as greengrass-cli's do (no
    # notification, 20 s to validate); the hub sends its deployment's (NOTIFY_COMPONENTS, 60 s; 30 s).
    componentUpdatePolicy: ComponentUpdatePolicy = Field(
        default_factory=lambda: ComponentUpdatePolicy(action=SKIP_NOTIFY_COMPONENTS))
    configurationValidationPolicy: ConfigurationValidationPolicy = Field(
        default_factory=lambda: ConfigurationValidationPolicy(timeoutInSeconds=LOCAL_VALIDATION_TIMEOUT))

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> DeploymentRequest:
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "request"
            raise InvalidInputError(f"invalid deployment request: {where}: {first['msg']}",
                                    code="INVALID_DEPLOYMENT") from err


@dataclass
class Target:
    """The component set a deployment wants, fully prepared."""

    recipes: dict[str, Recipe]
    records: dict[str, ComponentRecord]
    specs: dict[str, ComponentSpec]
    order: list[str]
    notes: list[str] = field(default_factory=list)
    #: component -> the images of its docker: artifacts (got through the engine before anything changes)
    images: dict[str, list[DockerImage]] = field(default_factory=dict)
    #: The new configuration of each configurable built-in the deployment configures (applied on success).
    builtin_configs: dict[str, dict[str, Any]] = field(default_factory=dict)


class ConfigurableBuiltin(Protocol):
    """A built-in component that takes configuration from deployments (the MQTT bridge)."""

    def check(self, configuration: Mapping[str, Any]) -> None:
        """Raise a RoostError naming what is wrong; nothing may change."""
        ...

    async def apply(self, configuration: Mapping[str, Any]) -> None: ...


def builtin_config_key(name: str) -> str:
    """Where the store keeps a configurable built-in's configuration (``meta``)."""
    return f"builtin_config:{name}"


@dataclass
class _Watch:
    names: set[str]
    errors: dict[str, list[str]] = field(default_factory=dict)


SpecBuilder = Callable[[Mapping[str, Recipe], Mapping[str, ComponentRecord]], dict[str, ComponentSpec]]


class Deployer:
    def __init__(self, paths: AgentPaths, store: Store, packages: PackageStore, supervisor: Supervisor,
                 build_specs: SpecBuilder, on_applied: Callable[[Mapping[str, ComponentRecord]], Awaitable[None]],
                 images: ImageManager | None = None,
                 configurable_builtins: Mapping[str, ConfigurableBuiltin] | None = None,
                 events: LifecycleEvents | None = None) -> None:
        self.paths = paths
        self.configurable_builtins = dict(configurable_builtins or {})
        self.store = store
        self.packages = packages
        self.supervisor = supervisor
        self.build_specs = build_specs
        self.images = images if images is not None else ImageManager(DockerHost.resolve(None), store)
        self.on_applied = self._releasing_images(on_applied)
        #: Component-update and configuration-validation subscribers (the IPC handlers add them).
        self.events = events if events is not None else LifecycleEvents()
        self.current_specs: dict[str, ComponentSpec] = {}
        # The configuration components see over IPC: the store's copy, except while a deployment
        # is being applied, when the components it starts must already see their new settings.
        self.live: dict[str, ComponentRecord] = store.components()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._running: tuple[str, asyncio.Task[None]] | None = None
        self._watch: _Watch | None = None
        self._changed = asyncio.Event()
        self._platform = current_platform()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        for rec in self.store.deployments(IN_PROGRESS):
            self.store.update_deployment(rec.id, FAILED, "FAILED_UNABLE_TO_ROLLBACK",
                                         ["the agent stopped while this deployment was in progress; the "
                                          "last successful component set was restored at start"],
                                         "agent restarted")
        for rec in self.store.deployments(QUEUED):
            self._queue.put_nowait(rec.id)
        self._worker = asyncio.create_task(self._work(), name="deployer")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    # -- API -------------------------------------------------------------------------------------
    def submit(self, raw: Mapping[str, Any]) -> DeploymentRecord:
        request = DeploymentRequest.parse(raw)
        for path in (request.recipeDirectoryPath, request.artifactsDirectoryPath):
            if path is not None and not Path(path).is_dir():
                raise InvalidInputError(f"deployment directory {path} does not exist or is not a folder",
                                        code="INVALID_DEPLOYMENT")
        if request.recipeDirectoryPath is not None:
            # A malformed recipe is refused now (RECIPE_INVALID, naming the file and field), not queued to
            # fail later: a caller that does not wait must hear of it too. _prepare reads them again.
            load_recipe_dir(Path(request.recipeDirectoryPath))
        record = self.store.add_deployment(str(uuid.uuid4()), request.model_dump(exclude_defaults=True))
        self._queue.put_nowait(record.id)
        log.info("deployment %s queued", record.id)
        return record

    def cancel(self, deployment_id: str) -> DeploymentRecord:
        record = self.store.deployment(deployment_id)
        if record.status == QUEUED:
            self.store.update_deployment(deployment_id, CANCELED, "CANCELED", ["canceled before it started"],
                                         "canceled")
        elif record.status == IN_PROGRESS and self._running and self._running[0] == deployment_id:
            self._running[1].cancel()
        elif record.status in TERMINAL:
            raise ConflictError(f"deployment {deployment_id} already ended with status {record.status}",
                                code="DEPLOYMENT_ENDED")
        return self.store.deployment(deployment_id)

    async def wait(self, deployment_id: str, timeout: float) -> DeploymentRecord:
        deadline = time.monotonic() + timeout
        while True:
            record = self.store.deployment(deployment_id)
            if record.status in TERMINAL or time.monotonic() >= deadline:
                return record
            self._changed.clear()
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that lands as
            # the event is set
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(1.0, deadline - time.monotonic())):
                    await self._changed.wait()

    def on_state(self, name: str, old: ComponentState, new: ComponentState, reason: str | None) -> None:
        watch = self._watch
        if watch is not None and name in watch.names and new in BAD_STATES:
            watch.errors.setdefault(name, []).append(f"{name} went {new.value}" + (f": {reason}" if reason else ""))

    # -- worker ----------------------------------------------------------------------------------
    async def _work(self) -> None:
        while True:
            deployment_id = await self._queue.get()
            record = self.store.deployment(deployment_id)
            if record.status != QUEUED:
                continue
            task = asyncio.create_task(self._run(record), name=f"deployment-{deployment_id}")
            self._running = (deployment_id, task)
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.done():  # the worker itself is being closed
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    raise
            finally:
                self._running = None
                self._changed.set()

    async def _run(self, record: DeploymentRecord) -> None:
        request = DeploymentRequest.parse(record.request)
        self.store.update_deployment(record.id, IN_PROGRESS)
        self._changed.set()
        log.info("deployment %s in progress", record.id)
        try:
            target = self._prepare(request)
            target.notes += await self.images.ensure(target.images, request.timeoutSeconds)
        except RoostError as err:
            log.warning("deployment %s failed before any change: %s", record.id, err)
            self.store.update_deployment(record.id, FAILED, "FAILED_NO_STATE_CHANGE", [str(err)], err.code)
            await self.images.release_unused(self._image_refs(self.store.components()))
            return
        except asyncio.CancelledError:
            self.store.update_deployment(record.id, CANCELED, "CANCELED", ["canceled"], "canceled")
            return
        previous = self.store.components()
        previous_specs = dict(self.current_specs)
        deadline = asyncio.get_running_loop().time() + request.timeoutSeconds
        try:
            if await self._negotiate(record.id, request, target, previous, deadline):
                await self._apply_or_roll_back(record.id, request, target, previous, previous_specs, deadline)
        finally:
            self.events.finished(record.id)  # postUpdateEvent, if the subscribers were notified

    async def _negotiate(self, deployment_id: str, request: DeploymentRequest, target: Target,
                         previous: Mapping[str, ComponentRecord], deadline: float) -> bool:
        """Before any change: the component update policy, then configuration validation (see
        :mod:`roost.agent.update_policy`). False if the deployment ended here (nothing changed)."""
        try:
            async with asyncio.timeout_at(deadline):
                _, notes = await self.events.negotiate_update(deployment_id, request.componentUpdatePolicy)
                target.notes.extend(notes)
                proposals = proposals_to_validate(
                    {n: (r.version, r.configuration) for n, r in previous.items()},
                    {n: (r.version, r.configuration) for n, r in target.records.items()})
                await self.events.validate(deployment_id, proposals, request.configurationValidationPolicy)
        except asyncio.CancelledError:
            self.store.update_deployment(deployment_id, CANCELED, "CANCELED",
                                         ["canceled before any change (components were being asked)"], "canceled")
            return False
        except (RoostError, TimeoutError) as err:
            reason = (f"timed out after {request.timeoutSeconds:g} s before any change (components deferred the "
                      "update or were validating)" if isinstance(err, TimeoutError) else str(err))
            log.warning("deployment %s failed before any change: %s", deployment_id, reason)
            self.store.update_deployment(deployment_id, FAILED, "FAILED_NO_STATE_CHANGE", [reason], _code(err))
            return False
        return True

    async def _apply_or_roll_back(self, record_id: str, request: DeploymentRequest, target: Target,
                                  previous: Mapping[str, ComponentRecord],
                                  previous_specs: Mapping[str, ComponentSpec], deadline: float) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                await self._apply(target, previous_specs, request.settleSeconds)
        except (RoostError, TimeoutError, asyncio.CancelledError) as err:
            canceled = isinstance(err, asyncio.CancelledError)
            reason = ("canceled by request" if canceled else
                      f"timed out after {request.timeoutSeconds:g} s" if isinstance(err, TimeoutError) else str(err))
            errors = [reason]
            log.warning("deployment %s failed: %s", record_id, reason)
            if request.failureHandlingPolicy == "DO_NOTHING" and not canceled:
                # The device keeps the new set as it is (failed components included), as Greengrass does.
                self.store.replace_components(target.records)
                await self.on_applied(target.records)
                self.store.update_deployment(record_id, FAILED, "FAILED_ROLLBACK_NOT_REQUESTED", errors,
                                             _code(err))
                return
            try:
                async with asyncio.timeout(request.timeoutSeconds):
                    await self._rollback(target, previous, previous_specs)
            except (RoostError, TimeoutError) as rb_err:
                log.error("deployment %s: rollback failed: %s", record_id, rb_err)
                self.store.update_deployment(record_id, CANCELED if canceled else FAILED,
                                             "FAILED_UNABLE_TO_ROLLBACK", [*errors, f"rollback: {rb_err}"],
                                             _code(err))
                return
            self.store.update_deployment(record_id, CANCELED if canceled else FAILED, "FAILED_ROLLBACK_COMPLETE",
                                         errors, _code(err))
            return
        for name, conf in target.builtin_configs.items():
            self.store.set_meta(builtin_config_key(name), json.dumps(conf))
            try:
                await self.configurable_builtins[name].apply(conf)
            except RoostError as err:  # checked in prepare: only a failure to start is left
                log.error("deployment %s: %s did not apply its configuration: %s", record_id, name, err)
        self.store.update_deployment(record_id, SUCCEEDED, "SUCCESSFUL", notes=target.notes)
        log.info("deployment %s succeeded", record_id)

    # -- phase 1 -------------------------------------------------------------------------------
    def _prepare(self, request: DeploymentRequest) -> Target:
        if request.recipeDirectoryPath:
            self.packages.put(load_recipe_dir(Path(request.recipeDirectoryPath)))
        current = self.store.components()
        local = {name: rec.local_version or rec.version for name, rec in current.items() if rec.is_root}
        hub = {name: rec.version for name, rec in current.items() if rec.hub_root}
        for name in request.rootComponentsToRemove:
            if name not in local:
                raise DeploymentError(f"cannot remove {name}: it is not a local root component on this device "
                                      f"(local root components: {', '.join(sorted(local)) or 'none'})",
                                      code="COMPONENT_NOT_DEPLOYED")
        for name in request.rootComponentsToRemove:
            del local[name]
        local.update(request.rootComponentVersionsToAdd)
        if request.hubComponents is not None:
            hub = dict(request.hubComponents)
        # The hub's version wins where both name a component; the deployment says so.
        overridden = sorted(n for n in local if n in hub and local[n] != hub[n])
        roots = {**local, **hub}
        unknown_conf = set(request.componentToConfiguration) - set(roots) - set(current)
        resolved = resolution(roots, self.packages.available())
        recipes = resolved.recipes
        # AWS-provided components (aws.greengrass.Nucleus, ...) are built in: nothing to install or run.
        builtin_conf = sorted(set(request.componentToConfiguration) & set(BUILTINS))
        unknown_conf -= set(recipes) | set(BUILTINS)
        if unknown_conf:
            raise DeploymentError(f"configuration given for component(s) not in the deployment: "
                                  f"{', '.join(sorted(unknown_conf))}", code="INVALID_DEPLOYMENT")
        run_with_info = _run_with_info(request.componentToRunWithInfo, set(recipes))
        artifact_root = Path(request.artifactsDirectoryPath) if request.artifactsDirectoryPath else None
        records: dict[str, ComponentRecord] = {}
        for name, recipe in recipes.items():
            selected = recipe.select(self._platform)
            old = current.get(name)
            same_version = old is not None and old.version == recipe.version
            src = None
            whole_folder = False
            if artifact_root is not None and (artifact_root / name / recipe.version).is_dir():
                # The whole NAME/VERSION/ folder, as greengrass-cli's --artifactDir brings it.
                src = artifact_root / name / recipe.version
                whole_folder = True
            elif not same_version and selected.artifacts and artifact_root is not None:
                src = artifact_root / name / recipe.version  # reported as missing by install_artifacts
            install_artifacts(name, recipe.version, selected.artifacts, src,
                              self.paths.artifacts(name, recipe.version),
                              self.paths.artifacts_unarchived(name, recipe.version), whole_folder=whole_folder)
            conf = deep_merge(recipe.default_configuration, old.configuration if old else {})
            update = request.componentToConfiguration.get(name)
            if update is not None:
                if not set(update) <= {"MERGE", "RESET"}:
                    update = {"MERGE": update}
                conf = apply_update(conf, recipe.default_configuration, update, name)
            # A run-with entry replaces the previous one; without one the component keeps its own.
            run_with = run_with_info.get(name, old.run_with if old else {})
            records[name] = ComponentRecord(name, recipe.version, name in local, conf, hub_root=name in hub,
                                            local_version=local[name] if name in local and local[name] !=
                                            recipe.version else None, run_with=dict(run_with))
        specs = self.build_specs(recipes, records)
        # Images of new component versions only: one already installed got its images then (an engine
        # that went away since fails its `docker run`, not an unrelated deployment).
        images = {name: found for name, recipe in recipes.items()
                  if (found := images_of(recipe, self._platform))
                  and (name not in current or current[name].version != recipe.version)}
        notes = [f"the hub's {n}@{hub[n]} overrides the local deployment's {n}@{local[n]}" for n in overridden]
        notes += [f"{n}: systemResourceLimits are not enforced by this agent (recorded only)"
                  for n, info in sorted(run_with_info.items()) if "systemResourceLimits" in info]
        notes += resolved.notes()
        notes += [f"{n}: a local deployment delivers no secrets: its cloudSecrets are read from hub deployments "
                  "(roost secret put, docs/secrets.md)" if n == "aws.greengrass.SecretManager" else
                  f"{n}: configuration of a built-in component is not applied (Roost reads its own options)"
                  for n in builtin_conf if n not in self.configurable_builtins]
        builtin_configs: dict[str, dict[str, Any]] = {}
        for n in builtin_conf:
            handler = self.configurable_builtins.get(n)
            if handler is None:
                continue
            update = request.componentToConfiguration[n]
            if not set(update) <= {"MERGE", "RESET"}:
                update = {"MERGE": update}
            builtin_configs[n] = apply_update(self.builtin_configuration(n), {}, update, n)
            handler.check(builtin_configs[n])
            notes.append(f"{n}: configuration applied by the agent's built-in {n}")
        return Target(recipes, records, specs, dependency_order(recipes), notes, images, builtin_configs)

    def _releasing_images(self, on_applied: Callable[[Mapping[str, ComponentRecord]], Awaitable[None]]
                          ) -> Callable[[Mapping[str, ComponentRecord]], Awaitable[None]]:
        """``on_applied``, then the removal of the pulled images no applied component names any more."""
        async def applied(records: Mapping[str, ComponentRecord]) -> None:
            await on_applied(records)
            await self.images.release_unused(self._image_refs(records))
        return applied

    def _image_refs(self, records: Mapping[str, ComponentRecord]) -> set[str] | None:
        """The images the components of ``records`` name; None when a recipe cannot be read (keep all)."""
        recipes = []
        for name, rec in records.items():
            try:
                recipes.append(self.packages.get(name, rec.version))
            except RoostError as err:
                log.warning("cannot tell the images of %s@%s, so no image is removed now: %s", name, rec.version, err)
                return None
        return references_in_use(recipes, self._platform)

    def builtin_configuration(self, name: str) -> dict[str, Any]:
        """The stored configuration of a configurable built-in (``{}`` if none was deployed)."""
        raw = self.store.get_meta(builtin_config_key(name))
        conf = json.loads(raw) if raw else {}
        return conf if isinstance(conf, dict) else {}

    # -- phase 2 -------------------------------------------------------------------------------
    async def _apply(self, target: Target, previous_specs: Mapping[str, ComponentSpec], settle: float) -> None:
        changed = _with_hard_dependents(target, [n for n in target.order if previous_specs.get(n) != target.specs[n]
                                                 or self.supervisor_state(n) in BAD_STATES], previous_specs)
        removed = [n for n in previous_specs if n not in target.specs]
        old_order = self.order_of(previous_specs)
        to_stop = [n for n in reversed(old_order) if n in removed or n in changed]
        for name in to_stop:
            await self.supervisor.stop(name)
        for name in removed:
            self.supervisor.remove(name)
            self.current_specs.pop(name, None)
        self.live = dict(target.records)
        self._watch = _Watch(set(changed))
        try:
            for name in changed:
                self.supervisor.add(target.specs[name])
                self.current_specs[name] = target.specs[name]
                await self.supervisor.install(name)
                await self.supervisor.start(name)
                self._raise_if_failed()
            await self._wait_done(changed, settle)
        finally:
            self._watch = None
        self.store.replace_components(target.records)
        await self.on_applied(target.records)

    def supervisor_state(self, name: str) -> ComponentState | None:
        try:
            return self.supervisor.state(name)
        except RoostError:
            return None

    def _raise_if_failed(self) -> None:
        watch = self._watch
        if watch is not None and watch.errors:
            # Each distinct message once (a component that errors again says the same), then where its log is.
            msgs = ["; ".join(dict.fromkeys(ms)) + f" (log: {self.paths.log_file(name)}; `roost logs {name}`)"
                    for name, ms in watch.errors.items()]
            raise DeploymentError("; ".join(msgs), code="COMPONENT_FAILED")

    async def _wait_done(self, names: list[str], settle: float) -> None:
        while True:
            self._raise_if_failed()
            states = {n: self.supervisor.state(n) for n in names}
            if all(s in DONE_STATES for s in states.values()):
                break
            await asyncio.sleep(0.02)
        if settle > 0:
            await asyncio.sleep(settle)
            self._raise_if_failed()

    @property
    def busy(self) -> bool:
        """A deployment is being applied now."""
        return self._running is not None

    def order_of(self, specs: Mapping[str, ComponentSpec]) -> list[str]:
        """Dependency order (dependencies first) of the components in ``specs``."""
        try:
            return dependency_order({n: self.packages.get(n, s.version) for n, s in specs.items()})
        except RoostError:
            return sorted(specs)

    async def _rollback(self, target: Target, previous: Mapping[str, ComponentRecord],
                        previous_specs: Mapping[str, ComponentSpec]) -> None:
        log.info("rolling back to the previous component set: %s",
                 ", ".join(f"{n}@{r.version}" for n, r in previous.items()) or "(empty)")
        touched = [n for n in reversed(target.order) if n in self.current_specs
                   and self.current_specs.get(n) != previous_specs.get(n)]
        for name in touched:
            with contextlib.suppress(RoostError):
                await self.supervisor.stop(name)
        self.live = dict(previous)
        for name in touched:
            if name not in previous_specs:
                self.supervisor.remove(name)
                self.current_specs.pop(name, None)
        restore = [n for n in self.order_of(previous_specs)
                   if self.current_specs.get(n) != previous_specs[n]
                   or self.supervisor_state(n) not in DONE_STATES]
        for name in restore:
            spec = previous_specs[name]
            self.supervisor.add(spec)
            self.current_specs[name] = spec
            await self.supervisor.install(name)
            await self.supervisor.start(name)
        self.store.replace_components(dict(previous))
        await self.on_applied(previous)


def _with_hard_dependents(target: Target, changed: list[str], previous_specs: Mapping[str, ComponentSpec]
                          ) -> list[str]:
    """``changed`` plus the components that HARD-depend on one of them (transitively), in ``target.order``.

    As on Greengrass, restarting a component restarts what depends on it with a HARD dependency;
    a SOFT dependent keeps running.
    """
    restart = set(changed)
    for name in target.order:  # dependencies first: a chain restarts whole
        if name in restart or name not in previous_specs:
            continue
        deps = target.recipes[name].dependencies
        if any(dep in restart and spec.dependency_type == "HARD" for dep, spec in deps.items()):
            restart.add(name)
    return [n for n in target.order if n in restart]


_RUN_WITH_KEYS = frozenset({"posixUser", "windowsUser", "systemResourceLimits"})


def _run_with_info(raw: Mapping[str, Any], components: set[str]) -> dict[str, dict[str, Any]]:
    """Validate Greengrass' ``componentToRunWithInfo``: component -> {posixUser, windowsUser, systemResourceLimits}."""
    out: dict[str, dict[str, Any]] = {}
    for name, info in raw.items():
        if name not in components:
            raise DeploymentError(f"componentToRunWithInfo names {name}, which is not in the deployment",
                                  code="INVALID_DEPLOYMENT")
        if not isinstance(info, Mapping):
            raise DeploymentError(f"componentToRunWithInfo.{name} must be an object, not {type(info).__name__}",
                                  code="INVALID_DEPLOYMENT")
        unknown = sorted(set(info) - _RUN_WITH_KEYS)
        if unknown:
            raise DeploymentError(f"componentToRunWithInfo.{name}: unknown field(s) {', '.join(unknown)} "
                                  f"(expected {', '.join(sorted(_RUN_WITH_KEYS))})", code="INVALID_DEPLOYMENT")
        for key in ("posixUser", "windowsUser"):
            if key in info and not isinstance(info[key], str):
                raise DeploymentError(f"componentToRunWithInfo.{name}.{key} must be a string",
                                      code="INVALID_DEPLOYMENT")
        out[name] = dict(info)
    return out


def _code(err: BaseException) -> str:
    if isinstance(err, RoostError):
        return err.code
    if isinstance(err, asyncio.CancelledError):
        return "CANCELED"
    return "TIMEOUT"
