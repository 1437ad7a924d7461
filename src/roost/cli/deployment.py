"""`roost deployment create|status|list|cancel`: local deployments, or a hub's with `--hub URL`."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from roost.cli import local
from roost.cli.agent import JsonOpt, RootOpt
from roost.cli.hub import HubSwitchOpt, TokenOpt, admin_client, parse_pairs
from roost.cli.output import (
    EXIT_FAILED,
    EXIT_TIMEOUT,
    console,
    emit_json,
    err_console,
    exit_code_for_cause,
    handle_errors,
    styled,
    table,
    when,
)
from roost.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from roost.hub.client import Deployment, HubClient

app = typer.Typer(help="Deploy components on this device, one transaction at a time.", no_args_is_help=True)


def _parse_merge(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, version = item.partition("=")
        if not sep or not name or not version:
            raise InvalidInputError(f"--merge {item!r}: expected NAME=VERSION", code="INVALID_ARGUMENT")
        out[name] = version
    return out


def _parse_config(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)
    except (json.JSONDecodeError, OSError) as err:
        raise InvalidInputError(f"--update-config is not valid JSON: {err}", code="INVALID_ARGUMENT") from err
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise InvalidInputError('--update-config must be {"NAME": {"MERGE": {...}, "RESET": ["/ptr"]}}',
                                code="INVALID_ARGUMENT")
    return value


@app.command("create")
@handle_errors
def create(root: RootOpt = None,
           recipe_dir: Annotated[Path | None, typer.Option("--recipe-dir", help="Folder of recipes.")] = None,
           artifact_dir: Annotated[Path | None, typer.Option("--artifact-dir",
                                                             help="Artifacts as A/<name>/<version>/...")] = None,
           merge: Annotated[list[str] | None, typer.Option("--merge", help="NAME=VERSION to add or update.")] = None,
           remove: Annotated[list[str] | None, typer.Option("--remove", help="Root component to remove.")] = None,
           update_config: Annotated[str | None, typer.Option("--update-config",
                                                             help='JSON (or @file): {"NAME": {"MERGE": {}, '
                                                                  '"RESET": []}}')] = None,
           run_with: Annotated[list[str] | None, typer.Option(
               "--run-with", help="NAME:posixUser=USER[:GROUP]: the user a component runs as when the agent is "
                                  "root (repeatable; greengrass-cli's --runWith).")] = None,
           failure_policy: Annotated[str, typer.Option("--failure-policy", help="ROLLBACK or DO_NOTHING")]
           = "ROLLBACK",
           wait: Annotated[bool, typer.Option("--wait", help="Wait for the end; exit 0 only if SUCCEEDED.")]
           = False,
           timeout: Annotated[float, typer.Option("--timeout", help="Deployment timeout, seconds.")] = 300.0,
           update_policy: Annotated[str | None, typer.Option(
               "--update-policy", help="notify: components subscribed to component updates are told first and may "
                                       "defer (NOTIFY_COMPONENTS; the default with --hub, as Greengrass' cloud "
                                       "deployments); skip: they are not (SKIP_NOTIFY_COMPONENTS; the default of "
                                       "local deployments, as greengrass-cli's).")] = None,
           update_timeout: Annotated[int, typer.Option(
               "--update-timeout", min=1, max=86400, help="With --update-policy notify: seconds the subscribers "
                                                          "have to answer each notification.")] = 60,
           validation_timeout: Annotated[int | None, typer.Option(
               "--validation-timeout", min=1, max=86400, help="Seconds a component subscribed to configuration "
                                                              "validation has to report (default 20 local, 30 with "
                                                              "--hub).")] = None,
           hub: HubSwitchOpt = None, token: TokenOpt = None,
           target: Annotated[str | None, typer.Option("--target", help="Hub: device:NAME or group:NAME (an existing "
                                                                       "group, unless --create-group).")] = None,
           create_group: Annotated[bool, typer.Option("--create-group", help="Hub: create the --target group if it "
                                                                             "does not exist (else GROUP_NOT_FOUND)."
                                                      )] = False,
           component: Annotated[list[str] | None, typer.Option("--component", help="Hub: NAME=VERSION "
                                                                                   "(repeatable).")] = None,
           max_per_minute: Annotated[int | None, typer.Option("--max-per-minute", min=1,
                                                              help="Hub: devices released per minute.")] = None,
           abort_failure_percent: Annotated[int | None, typer.Option("--abort-failure-percent", min=0, max=100,
                                                                       help="Hub: abort when this % failed.")]
           = None,
           abort_min_devices: Annotated[int | None, typer.Option("--abort-min-devices", min=1,
                                                                 help="Hub: ...once this many finished.")] = None,
           timeout_minutes: Annotated[int | None, typer.Option("--timeout-minutes", min=1,
                                                               help="Hub: per-device timeout.")] = None,
           wait_timeout: Annotated[float, typer.Option("--wait-timeout", help="Hub: seconds --wait waits.")]
           = 900.0,
           max_regression: Annotated[float | None, typer.Option("--max-regression", help=(
               "Hub: the validation gate, the largest relative loss of a model version's metric against its "
               "baseline (a fraction; default 0.01 for versions with a validation report)."))] = None,
           baseline: Annotated[list[str] | None, typer.Option("--baseline", help=(
               "Hub: NAME=VERSION to compare with (default: the version deployed on the target)."))] = None,
           override_gate: Annotated[bool, typer.Option("--override-gate", help=(
               "Hub: deploy although the validation gate failed (needs --override-reason)."))] = False,
           override_reason: Annotated[str | None, typer.Option("--override-reason", help=(
               "Hub: why the gate is overridden (recorded in the deployment)."))] = None,
           as_json: JsonOpt = False) -> None:
    """Create a deployment: on this device, or with --hub for a device or group of a hub."""
    if hub:
        if recipe_dir or artifact_dir or merge or remove or run_with:
            raise InvalidInputError("--recipe-dir/--artifact-dir/--merge/--remove/--run-with are for local "
                                    "deployments; with --hub use --target and --component", code="INVALID_ARGUMENT")
        body = _hub_body(target, component or [], _parse_config(update_config), failure_policy,
                         max_per_minute, abort_failure_percent, abort_min_devices, timeout_minutes)
        policies = update_policies(update_policy or "notify", update_timeout, validation_timeout or 30)
        body["component_update_policy"] = {"action": policies["componentUpdatePolicy"]["action"],
                                           "timeout_seconds": update_timeout}
        body["configuration_validation_policy"] = {"timeout_seconds": validation_timeout or 30}
        if max_regression is not None:
            body["max_regression"] = max_regression
        if baseline:
            body["baseline"] = parse_pairs(baseline, "--baseline")
        if override_gate or override_reason:
            body["override_gate"] = override_gate
            body["override_reason"] = override_reason
        if create_group:
            if not body["target"].startswith("group:"):
                raise InvalidInputError("--create-group is for a group:NAME --target", code="INVALID_ARGUMENT")
            body["create_group"] = True
        _hub_create(hub, token, body, wait, wait_timeout, as_json)
        return
    request = local_request(merge or [], remove or [], update_config, run_with or [], recipe_dir, artifact_dir,
                            failure_policy=failure_policy, timeout=timeout)
    request.update(update_policies(update_policy or "skip", update_timeout, validation_timeout or 20))
    deployment_id = local.call(root, "CreateLocalDeployment", request)["deploymentId"]
    if not wait:
        emit_json({"deploymentId": deployment_id}) if as_json else console.print(
            f"deployment {deployment_id} queued")
        return
    _wait_and_report(root, deployment_id, timeout + 30, as_json)


_FULL_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: Candidates named in an ambiguous-prefix error.
_CANDIDATES_SHOWN = 10


def local_request(merge: list[str], remove: list[str], update_config: str | None, run_with: list[str],
                  recipe_dir: Path | None, artifact_dir: Path | None, *, failure_policy: str = "ROLLBACK",
                  timeout: float = 300.0) -> dict[str, Any]:
    """The ``CreateLocalDeployment`` request of the command-line arguments (also greengrass-cli's)."""
    request: dict[str, Any] = {
        "rootComponentVersionsToAdd": _parse_merge(merge),
        "rootComponentsToRemove": list(remove),
        "componentToConfiguration": _parse_config(update_config),
        "failureHandlingPolicy": failure_policy.upper(),
        "timeoutSeconds": timeout,
    }
    if run_with:
        request["componentToRunWithInfo"] = _parse_run_with(run_with)
    if recipe_dir is not None:
        request["recipeDirectoryPath"] = str(recipe_dir.resolve())
    if artifact_dir is not None:
        request["artifactsDirectoryPath"] = str(artifact_dir.resolve())
    return request


_UPDATE_ACTIONS = {"notify": "NOTIFY_COMPONENTS", "skip": "SKIP_NOTIFY_COMPONENTS",
                   "notify_components": "NOTIFY_COMPONENTS", "skip_notify_components": "SKIP_NOTIFY_COMPONENTS"}


def update_policies(update_policy: str, update_timeout: int, validation_timeout: int) -> dict[str, Any]:
    """``componentUpdatePolicy`` and ``configurationValidationPolicy`` of the command-line options."""
    action = _UPDATE_ACTIONS.get(update_policy.strip().lower())
    if action is None:
        raise InvalidInputError(f"--update-policy must be notify or skip, got {update_policy!r}",
                                code="INVALID_ARGUMENT")
    return {"componentUpdatePolicy": {"action": action, "timeoutInSeconds": update_timeout},
            "configurationValidationPolicy": {"timeoutInSeconds": validation_timeout}}


def local_deployment_id(root: str | None, text: str) -> str:
    """The full id of the one local deployment whose id is or starts with ``text`` (the progress bar and
    `deployment list` show 8-character prefixes). Unknown: DEPLOYMENT_NOT_FOUND; several: DEPLOYMENT_ID_AMBIGUOUS."""
    wanted = text.strip().lower()
    if _FULL_ID.fullmatch(wanted) or not wanted:
        return wanted or text
    ids = [str(d["deploymentId"]) for d in local.call(root, "ListLocalDeployments", {})["localDeployments"]]
    matches = [i for i in reversed(ids) if i.lower().startswith(wanted)]
    if not matches:
        raise NotFoundError(f"no local deployment id starts with {text!r} (see `roost deployment list`)",
                            code="DEPLOYMENT_NOT_FOUND")
    if len(matches) > 1:
        shown = ", ".join(matches[:_CANDIDATES_SHOWN]) + (", ..." if len(matches) > _CANDIDATES_SHOWN else "")
        raise InvalidInputError(f"deployment id prefix {text!r} is ambiguous: it starts {shown}; give more "
                                "characters", code="DEPLOYMENT_ID_AMBIGUOUS")
    return matches[0]


def _parse_run_with(items: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for item in items:
        name, sep, setting = item.partition(":")
        key, eq, value = setting.partition("=")
        if not name or not sep or not eq or key not in ("posixUser", "windowsUser") or not value:
            raise InvalidInputError(f"invalid --run-with {item!r}: expected NAME:posixUser=USER[:GROUP]",
                                    code="INVALID_ARGUMENT")
        out.setdefault(name, {})[key] = value
    return out


def _wait_and_report(root: str | None, deployment_id: str, timeout: float, as_json: bool) -> None:
    deadline = time.monotonic() + timeout
    dep: dict[str, Any] = {}
    while time.monotonic() < deadline:
        wait_s = max(0.1, min(20.0, deadline - time.monotonic()))
        dep = local.call(root, "GetLocalDeploymentStatus", {"deploymentId": deployment_id, "waitSeconds": wait_s},
                         timeout=wait_s + 10)["deployment"]
        if dep["status"] in ("SUCCEEDED", "FAILED", "CANCELED"):
            break
    _print_deployment(dep, as_json)
    if dep.get("status") in ("QUEUED", "IN_PROGRESS"):
        raise typer.Exit(EXIT_TIMEOUT)
    if dep.get("status") == "FAILED":
        raise typer.Exit(exit_code_for_cause(dep.get("deploymentStatusDetails", {}).get("deploymentFailureCause")))
    if dep.get("status") != "SUCCEEDED":
        raise typer.Exit(EXIT_FAILED)


def _print_deployment(dep: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(dep)
        return
    details = dep.get("deploymentStatusDetails", {})
    console.print(f"deployment {dep['deploymentId']}: {styled(dep['status'])}"
                  + (f" ({details['detailedDeploymentStatus']})" if "detailedDeploymentStatus" in details else ""))
    for line in details.get("deploymentErrorStack", []):
        console.print(f"  [red]{line}[/]", highlight=False)


@app.command("status")
@handle_errors
def status(deployment_id: str, root: RootOpt = None, hub: HubSwitchOpt = None,
           token: TokenOpt = None,
           wait: Annotated[bool, typer.Option("--wait", help="Hub: wait with a progress bar; exit 0 only if "
                                                             "every device SUCCEEDED.")] = False,
           wait_timeout: Annotated[float, typer.Option("--wait-timeout", help="Hub: seconds --wait waits.")]
           = 900.0,
           as_json: JsonOpt = False) -> None:
    """Status of one deployment (with --hub: per-device results)."""
    if hub:
        _hub_status(hub, token, deployment_id, wait, wait_timeout, as_json)
        return
    deployment_id = local_deployment_id(root, deployment_id)
    _print_deployment(local.call(root, "GetLocalDeploymentStatus", {"deploymentId": deployment_id})["deployment"],
                      as_json)


@app.command("list")
@handle_errors
def list_(root: RootOpt = None, hub: HubSwitchOpt = None, token: TokenOpt = None,
          as_json: JsonOpt = False) -> None:
    """All local deployments, oldest first (with --hub: the hub's deployments)."""
    if hub:
        _hub_list(hub, token, as_json)
        return
    deps = local.call(root, "ListLocalDeployments", {})["localDeployments"]
    if as_json:
        emit_json(deps)
        return
    table("Deployments", ["id", "status", "detail"],
          [(d["deploymentId"], styled(d["status"]),
            d.get("deploymentStatusDetails", {}).get("detailedDeploymentStatus", "")) for d in deps])


@app.command("cancel")
@handle_errors
def cancel(deployment_id: str, root: RootOpt = None, hub: HubSwitchOpt = None,
           token: TokenOpt = None,
           as_json: JsonOpt = False) -> None:
    """Cancel a queued deployment, or roll back one in progress (with --hub: cancel a hub deployment)."""
    if hub:
        _hub_cancel(hub, token, deployment_id, as_json)
        return
    deployment_id = local_deployment_id(root, deployment_id)
    _print_deployment(local.call(root, "CancelLocalDeployment", {"deploymentId": deployment_id})["deployment"],
                      as_json)


# -- a hub's deployments (--hub) ------------------------------------------------------------------
def _hub_body(target: str | None, components: list[str], configuration: Mapping[str, Any],
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


def _hub_create(hub: str | None, token: str | None, body: Mapping[str, Any], wait: bool,
                      wait_timeout: float, as_json: bool) -> None:
    with admin_client(hub, token) as client:
        dep = client.create_deployment(body)
        if not wait:
            if as_json:
                emit_json(dep.model_dump(mode="json"))
            else:
                console.print(f"deployment {dep.id} created ({dep.target})")
            return
        _hub_wait_and_report(client, dep.id, wait_timeout, as_json)


def _hub_status(hub: str | None, token: str | None, deployment_id: str, wait: bool, wait_timeout: float,
                      as_json: bool) -> None:
    with admin_client(hub, token) as client:
        if wait:
            _hub_wait_and_report(client, deployment_id, wait_timeout, as_json)
        else:
            _hub_print_deployment(client.deployment(deployment_id), as_json)


def _hub_list(hub: str | None, token: str | None, as_json: bool) -> None:
    with admin_client(hub, token) as client:
        deps = client.deployments()
    if as_json:
        emit_json([d.model_dump(mode="json") for d in deps])
        return
    table("Hub deployments", ["id", "target", "components", "status", "created"],
          [(d.id, d.target, ", ".join(f"{n}@{v}" for n, v in d.components.items()), styled(d.status),
            when(d.created_at)) for d in deps])


def _hub_cancel(hub: str | None, token: str | None, deployment_id: str, as_json: bool) -> None:
    with admin_client(hub, token) as client:
        _hub_print_deployment(client.cancel_deployment(deployment_id), as_json)


def _hub_tally(dep: Deployment) -> tuple[int, int, int, int]:
    """(total, succeeded, failed, pending) over the deployment's devices."""
    from roost.hub.contract import DONE_STATUSES, DeviceDeploymentStatus

    statuses = [d.status for d in dep.devices or []]
    ok = sum(s == DeviceDeploymentStatus.SUCCEEDED for s in statuses)
    bad = sum(s in DONE_STATUSES and s != DeviceDeploymentStatus.SUCCEEDED for s in statuses)
    return len(statuses), ok, bad, len(statuses) - ok - bad


def _hub_finished(dep: Deployment) -> bool:
    from roost.hub.contract import ENDED_DEPLOYMENT_STATUSES

    pending = _hub_tally(dep)[3]
    return dep.status in ENDED_DEPLOYMENT_STATUSES or pending == 0


def _hub_wait_and_report(client: HubClient, deployment_id: str, timeout: float, as_json: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from roost.hub.contract import DeploymentStatus

    deadline = time.monotonic() + timeout
    dep = client.deployment(deployment_id)
    with Progress(TextColumn("deployment {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=err_console,
                  transient=False, disable=as_json) as progress:
        task = progress.add_task(deployment_id[:8], total=max(1, len(dep.devices or [])), detail="")
        while True:
            total, ok, bad, pending = _hub_tally(dep)
            progress.update(task, total=max(1, total), completed=ok + bad,
                            detail=f"[green]{ok} done[/] [red]{bad} failed[/] [dim]{pending} pending[/]")
            if _hub_finished(dep) or time.monotonic() >= deadline:
                break
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            dep = client.deployment(deployment_id)
    _hub_print_deployment(dep, as_json)
    total, ok, bad, pending = _hub_tally(dep)
    if ok == total and dep.status not in (DeploymentStatus.ABORTED, DeploymentStatus.CANCELED):
        return
    if pending and not _hub_finished(dep):
        err_console.print(f"[yellow]gave up waiting after {timeout:g} s: {pending} device(s) pending[/]")
        raise typer.Exit(EXIT_TIMEOUT)
    raise typer.Exit(EXIT_FAILED)


def _hub_print_deployment(dep: Deployment, as_json: bool) -> None:
    if as_json:
        emit_json(dep.model_dump(mode="json"))
        return
    total, ok, bad, pending = _hub_tally(dep)
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
