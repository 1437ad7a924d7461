"""From an installed recipe to the supervisor's :class:`ComponentSpec`.

Selects the manifest for this platform, interpolates the recipe variables, decides the user the
component runs as (its ``componentToRunWithInfo.posixUser`` through :class:`~roost.agent.users.Isolation`)
and builds the component's environment: the Greengrass variables (``SVCUID``, the IPC socket
path, the thing name, ``GGC_VERSION``), their ``ROOST_*`` twins, ``DOCKER_HOST`` when the agent has
one (:mod:`roost.agent.docker`), its own ``PATH`` (its Python
environment, then ``ROOT/bin``, then the system's: never the agent's interpreter, see
:mod:`roost.agent.workspace`), ``HOME``/``USER`` of its user, and the lifecycle ``Setenv``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from roost import GGC_COMPAT_VERSION
from roost.agent.component_spec import ComponentSpec, StepSpec
from roost.agent.paths import AgentPaths
from roost.agent.users import Isolation
from roost.agent.workspace import Workspace
from roost.recipe import (
    DependencyPaths,
    InterpolationContext,
    LifecycleStep,
    Recipe,
    SelectedRecipe,
    StepKind,
    interpolate_lifecycle,
)

# Variables passed through from the agent's own environment; everything else is left out so a
# component does not see the agent's secrets.
_PASS_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL",
                 "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")



@dataclass(frozen=True)
class SpecContext:
    paths: AgentPaths
    thing_name: str
    platform: Mapping[str, str]
    error_reset_time: float = 3600.0
    restart_backoff: tuple[float, float] = (1.0, 60.0)
    isolation: Isolation = field(default_factory=Isolation.off)
    workspace: Workspace | None = None
    #: The engine components' ``docker`` CLI talks to (their ``DOCKER_HOST``), when the agent was given one.
    docker_host: str | None = None


def select(recipe: Recipe, platform: Mapping[str, str]) -> SelectedRecipe:
    return recipe.select(platform)


def build_spec(recipe: Recipe, configuration: Mapping[str, Any], svcuid: str, ctx: SpecContext,
               dependencies: Mapping[str, tuple[Recipe, Mapping[str, Any]]],
               run_with: Mapping[str, Any] | None = None) -> ComponentSpec:
    """The supervisor spec of ``recipe`` with ``configuration``; ``dependencies`` give the
    recipe and configuration of each dependency, for ``{dep:configuration:/x}`` variables;
    ``run_with`` is the deployment's ``componentToRunWithInfo`` entry. Raises
    :class:`~roost.agent.errors.PosixUserError` when its ``posixUser`` cannot be honoured."""
    paths = ctx.paths
    posix_user = (run_with or {}).get("posixUser")
    run_as = ctx.isolation.resolve(posix_user if isinstance(posix_user, str) else None, recipe.name)
    selected = recipe.select(ctx.platform)
    deps = {
        name: DependencyPaths(configuration=conf,
                              artifacts_path=str(paths.artifacts(name, dep.version)),
                              decompressed_path=str(paths.artifacts_unarchived(name, dep.version)),
                              work_path=str(paths.work(name)))
        for name, (dep, conf) in dependencies.items()
    }
    ictx = InterpolationContext(
        component=recipe.name, configuration=configuration,
        artifacts_path=str(paths.artifacts(recipe.name, recipe.version)),
        decompressed_path=str(paths.artifacts_unarchived(recipe.name, recipe.version)),
        work_path=str(paths.work(recipe.name)), kernel_root=str(paths.root), thing_name=ctx.thing_name,
        dependencies=deps)
    lifecycle = interpolate_lifecycle(selected.lifecycle, ictx)
    env = base_environment(recipe.name, svcuid, paths, ctx.thing_name)
    if ctx.workspace is not None:
        env.update(ctx.workspace.environment(recipe.name, run_as, env.get("PATH", os.defpath)))
    if ctx.docker_host:
        env["DOCKER_HOST"] = ctx.docker_host
    env.update(lifecycle.setenv)
    return ComponentSpec(
        name=recipe.name, version=recipe.version,
        install=_step(lifecycle.install, "install"), startup=_step(lifecycle.startup, "startup"),
        run=_step(lifecycle.run, "run"), shutdown=_step(lifecycle.shutdown, "shutdown"),
        recover=_step(lifecycle.recover, "recover"),
        env=env, work_dir=paths.work(recipe.name), log_path=paths.log_file(recipe.name),
        error_reset_time=ctx.error_reset_time, restart_backoff=ctx.restart_backoff, run_as=run_as)


def _step(step: LifecycleStep | None, kind: StepKind) -> StepSpec | None:
    if step is None:
        return None
    timeout = step.effective_timeout(kind)
    return StepSpec(script=step.script, timeout=timeout, setenv=dict(step.setenv), skipif=step.skipif,
                    requires_privilege=step.requires_privilege)


def base_environment(name: str, svcuid: str, paths: AgentPaths, thing_name: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in _PASS_THROUGH if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    socket = str(paths.ipc_socket)
    env.update({
        "SVCUID": svcuid,
        "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": socket,
        "AWS_IOT_THING_NAME": thing_name,
        "GGC_VERSION": GGC_COMPAT_VERSION,
        "AWS_REGION": os.environ.get("AWS_REGION", "local"),
        "ROOST_SVCUID": svcuid,
        "ROOST_IPC_SOCKET": socket,
        "ROOST_THING_NAME": thing_name,
        "ROOST_COMPONENT_NAME": name,
        "ROOST_ROOT": str(paths.root),
        "PYTHONUNBUFFERED": "1",
    })
    return env
