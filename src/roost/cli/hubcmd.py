"""The CLI's hub side: shared options, `roost group ...`, and the `--hub` forms of
`roost component publish` and `roost deployment create|status|list|cancel`.

The admin token comes from ``--token`` or ``ROOST_TOKEN``; the hub URL from ``--hub`` or
``ROOST_HUB``. The hub's errors keep their codes and map to the documented exit codes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from roost.agent.paths import AgentPaths
from roost.cli.output import (
    EXIT_FAILED,
    EXIT_TIMEOUT,
    STATE_STYLE,
    console,
    emit_json,
    err_console,
    handle_errors,
    styled,
    table,
    when,
)
from roost.errors import ConflictError, InvalidInputError
from roost.hub.client import Deployment, HubClient
from roost.hub.contract import DONE_STATUSES, ENDED_DEPLOYMENT_STATUSES, DeploymentStatus, DeviceDeploymentStatus

HubOpt = Annotated[str | None, typer.Option("--hub", envvar="ROOST_HUB", help="Hub URL (or $ROOST_HUB).")]
#: ``--hub`` on commands that also have a local form: only the option switches (no $ROOST_HUB), so an
#: environment variable cannot silently turn a local deployment into a fleet one.
HubSwitchOpt = Annotated[str | None, typer.Option("--hub", help="Hub URL: act on the hub instead of this "
                                                                "device.")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="ROOST_TOKEN", show_default=False,
                                              help="Admin API token (or $ROOST_TOKEN).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]

#: A device's deployment status that will not change any more, other than SUCCEEDED.
DEVICE_FAILED = tuple(s for s in DONE_STATUSES if s is not DeviceDeploymentStatus.SUCCEEDED)

for _state, _style in {"ROLLED_BACK": "magenta", "TIMED_OUT": "red", "ACTIVE": "yellow", "COMPLETED": "green",
                       "ABORTED": "red", "SUPERSEDED": "dim", "REVOKED": "red"}.items():
    STATE_STYLE.setdefault(_state, _style)


def admin_client(hub: str | None, token: str | None) -> HubClient:
    if not hub:
        raise InvalidInputError("no hub given: pass --hub URL or set ROOST_HUB", code="HUB_REQUIRED")
    if not token:
        raise InvalidInputError("no API token given: pass --token or set ROOST_TOKEN (see `roost hub init`)",
                                code="TOKEN_REQUIRED")
    return HubClient(hub, token)


def parse_pairs(items: list[str], option: str, *, allow_remove: bool = False) -> dict[str, str | None]:
    """``k=v`` items (and ``k-`` meaning "remove k" when ``allow_remove``)."""
    out: dict[str, str | None] = {}
    for item in items:
        if allow_remove and item.endswith("-") and "=" not in item and len(item) > 1:
            out[item[:-1]] = None
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"{option} {item!r}: expected KEY=VALUE", code="INVALID_ARGUMENT")
        out[key.strip()] = value
    return out


# -- agent start --hub -----------------------------------------------------------------------------
def enroll_for_start(paths: AgentPaths, hub: str | None, token: str | None, thing_name: str | None,
                     labels: list[str]) -> str | None:
    """Enrol (first start) or load ``ROOT/hub.json``; the thing name the agent must use."""
    if not hub and not token and not (paths.root / "hub.json").exists():
        return thing_name
    from roost.agent.daemon import running_pid
    from roost.agent.sync import ensure_enrolled

    pid = running_pid(paths)
    if pid is not None:  # before redeeming the one-time token
        raise ConflictError(f"an agent is already running on {paths.root} (pid {pid})", code="AGENT_ALREADY_RUNNING")
    extra = {k: v for k, v in parse_pairs(labels, "--label").items() if v is not None}
    config = ensure_enrolled(paths, hub, token, thing_name, extra)
    return config.device if config is not None else thing_name


# -- groups ----------------------------------------------------------------------------------------
group_app = typer.Typer(help="Static groups of devices on the hub (deployment targets).", no_args_is_help=True)


@group_app.command("add")
@handle_errors
def group_add(group: str, devices: Annotated[list[str], typer.Argument(help="Device names.")],
              hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Add devices to group G (created on first use)."""
    with admin_client(hub, token) as client:
        out = client.add_members(group, devices)
    if as_json:
        emit_json(out if out is not None else {"group": group, "added": devices})
    else:
        console.print(f"added {', '.join(devices)} to group {group}")


@group_app.command("remove")
@handle_errors
def group_remove(group: str, device: str, hub: HubOpt = None, token: TokenOpt = None,
                 as_json: JsonOpt = False) -> None:
    """Remove DEVICE from group G."""
    with admin_client(hub, token) as client:
        out = client.remove_member(group, device)
    if as_json:
        emit_json(out if out is not None else {"group": group, "removed": device})
    else:
        console.print(f"removed {device} from group {group}")


@group_app.command("list")
@handle_errors
def group_list(hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Every group with its members."""
    with admin_client(hub, token) as client:
        groups = client.groups()
    if as_json:
        emit_json([g.model_dump(mode="json") for g in groups])
        return
    table("Groups", ["group", "devices"], [(g.name, ", ".join(g.devices)) for g in groups])


# -- component publish --hub -------------------------------------------------------------------------
def publish(recipe_file: Path, artifacts_dir: Path | None, hub: str | None, token: str | None,
            as_json: bool) -> None:
    """Check the recipe here, find each artifact its URIs name in DIR, upload all with a progress bar."""
    from roost.recipe import load_recipe

    recipe = load_recipe(recipe_file)
    wanted = sorted({a.file_name for m in recipe.manifests for a in m.artifacts if a.scheme != "docker"})
    files: dict[str, Path] = {}
    missing: list[str] = []
    for name in wanted:
        path = (artifacts_dir / name) if artifacts_dir is not None else None
        if path is None or not path.is_file():
            missing.append(name)
        else:
            files[name] = path
    if missing:
        where = f"in {artifacts_dir}" if artifacts_dir is not None else "(no --artifacts DIR given)"
        raise InvalidInputError(f"{recipe.name}@{recipe.version}: artifact file(s) named by the recipe's URIs not "
                                f"found {where}: {', '.join(missing)}", code="ARTIFACT_MISSING")
    total = sum(p.stat().st_size for p in files.values())
    with admin_client(hub, token) as client:
        if total and not as_json:
            with Progress(TextColumn("uploading {task.description}"), BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), TimeElapsedColumn(), console=err_console,
                          transient=True) as progress:
                task = progress.add_task(f"{recipe.name}@{recipe.version}", total=total)
                result = client.publish_component(recipe_file, files,
                                                  lambda n: progress.advance(task, n))
        else:
            result = client.publish_component(recipe_file, files)
    if as_json:
        emit_json(result.model_dump(mode="json"))
        return
    console.print(f"published [bold]{result.name}@{result.version}[/] ({len(result.artifacts)} artifact(s))")
    for art in result.artifacts:
        console.print(f"  {art.file}  {art.size} bytes  sha256 {art.sha256}", highlight=False, soft_wrap=True)


# -- deployments --hub -------------------------------------------------------------------------------
def deployment_body(target: str | None, components: list[str], configuration: Mapping[str, Any],
                    failure_policy: str, max_per_minute: int | None, abort_failure_percent: int | None,
                    abort_min_devices: int | None, timeout_minutes: int | None) -> dict[str, Any]:
    if not target or not target.startswith(("device:", "group:")) or target.endswith(":"):
        raise InvalidInputError("--target must be device:NAME or group:NAME", code="INVALID_ARGUMENT")
    versions = parse_pairs(components, "--component")
    body: dict[str, Any] = {"target": target, "components": versions,
                            "failure_policy": failure_policy.upper()}
    if configuration:
        body["configuration"] = dict(configuration)
    for key, value in (("max_per_minute", max_per_minute), ("abort_failure_percent", abort_failure_percent),
                       ("abort_min_devices", abort_min_devices), ("timeout_minutes", timeout_minutes)):
        if value is not None:
            body[key] = value
    if body["failure_policy"] not in ("ROLLBACK", "DO_NOTHING"):
        raise InvalidInputError("--failure-policy must be ROLLBACK or DO_NOTHING", code="INVALID_ARGUMENT")
    return body


def deployment_create(hub: str | None, token: str | None, body: Mapping[str, Any], wait: bool,
                      wait_timeout: float, as_json: bool) -> None:
    with admin_client(hub, token) as client:
        dep = client.create_deployment(body)
        if not wait:
            if as_json:
                emit_json(dep.model_dump(mode="json"))
            else:
                console.print(f"deployment {dep.id} created ({dep.target})")
            return
        _wait_and_report(client, dep.id, wait_timeout, as_json)


def deployment_status(hub: str | None, token: str | None, deployment_id: str, wait: bool, wait_timeout: float,
                      as_json: bool) -> None:
    with admin_client(hub, token) as client:
        if wait:
            _wait_and_report(client, deployment_id, wait_timeout, as_json)
        else:
            print_deployment(client.deployment(deployment_id), as_json)


def deployment_list(hub: str | None, token: str | None, as_json: bool) -> None:
    with admin_client(hub, token) as client:
        deps = client.deployments()
    if as_json:
        emit_json([d.model_dump(mode="json") for d in deps])
        return
    table("Hub deployments", ["id", "target", "components", "status", "created"],
          [(d.id, d.target, ", ".join(f"{n}@{v}" for n, v in d.components.items()), styled(d.status),
            when(d.created_at)) for d in deps])


def deployment_cancel(hub: str | None, token: str | None, deployment_id: str, as_json: bool) -> None:
    with admin_client(hub, token) as client:
        print_deployment(client.cancel_deployment(deployment_id), as_json)


def _tally(dep: Deployment) -> tuple[int, int, int, int]:
    """(total, succeeded, failed, pending) over the deployment's devices."""
    statuses = [d.status for d in dep.devices or []]
    ok = sum(s == DeviceDeploymentStatus.SUCCEEDED for s in statuses)
    bad = sum(s in DEVICE_FAILED for s in statuses)
    return len(statuses), ok, bad, len(statuses) - ok - bad


def _finished(dep: Deployment) -> bool:
    pending = _tally(dep)[3]
    return dep.status in ENDED_DEPLOYMENT_STATUSES or pending == 0


def _wait_and_report(client: HubClient, deployment_id: str, timeout: float, as_json: bool) -> None:
    deadline = time.monotonic() + timeout
    dep = client.deployment(deployment_id)
    with Progress(TextColumn("deployment {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=err_console,
                  transient=False, disable=as_json) as progress:
        task = progress.add_task(deployment_id[:8], total=max(1, len(dep.devices or [])), detail="")
        while True:
            total, ok, bad, pending = _tally(dep)
            progress.update(task, total=max(1, total), completed=ok + bad,
                            detail=f"[green]{ok} done[/] [red]{bad} failed[/] [dim]{pending} pending[/]")
            if _finished(dep) or time.monotonic() >= deadline:
                break
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            dep = client.deployment(deployment_id)
    print_deployment(dep, as_json)
    total, ok, bad, pending = _tally(dep)
    if ok == total and dep.status not in (DeploymentStatus.ABORTED, DeploymentStatus.CANCELED):
        return
    if pending and not _finished(dep):
        err_console.print(f"[yellow]gave up waiting after {timeout:g} s: {pending} device(s) pending[/]")
        raise typer.Exit(EXIT_TIMEOUT)
    raise typer.Exit(EXIT_FAILED)


def print_deployment(dep: Deployment, as_json: bool) -> None:
    if as_json:
        emit_json(dep.model_dump(mode="json"))
        return
    total, ok, bad, pending = _tally(dep)
    console.print(f"deployment {dep.id} → {dep.target}: {styled(dep.status)}  "
                  f"({ok}/{total} succeeded, {bad} failed, {pending} pending)")
    if dep.components:
        console.print("  components: " + ", ".join(f"{n}@{v}" for n, v in dep.components.items()), highlight=False)
    if dep.dependencies:
        console.print("  dependencies: " + ", ".join(f"{n}@{v}" for n, v in dep.dependencies.items()),
                      highlight=False)
    if dep.devices:
        table("Devices", ["device", "status", "reason", "message"],
              [(d.device, styled(d.status), d.reason_code, d.message) for d in dep.devices])
