"""`roost device add|upgrade|remove|host-key`: devices registered and provisioned over SSH by the hub.

The hub does the work (its SSH key, Ansible); these commands start a run and follow its steps until it
ends: a progress line per step for people, ``--json`` for scripts (``{"device", "status", "steps"}``),
exit codes from the failure's error code (3 bad input, 7 host key mismatch, 8 key or become refused,
1 a failed step, 6 a wait that ran out).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from roost.cli.hub import HubOpt, JsonOpt, TokenOpt, admin_client, parse_pairs
from roost.cli.output import console, emit_json, exit_code_for, handle_errors, styled
from roost.errors import InvalidInputError, OperationTimeoutError, RoostError
from roost.provision import errors as perr

if TYPE_CHECKING:
    from roost.hub.client import HubClient

#: The become password for scripts (else it is asked for on the terminal); never stored by Roost.
BECOME_ENV = "ROOST_BECOME_PASSWORD"
_ERRORS: dict[str, type[RoostError]] = {
    "SSH_TARGET_INVALID": perr.SshTargetError, "HOST_KEY_INVALID": perr.SshTargetError,
    "SSH_UNREACHABLE": perr.SshUnreachableError, "SSH_AUTH_REFUSED": perr.SshAuthError,
    "HOST_KEY_MISMATCH": perr.HostKeyError, "HOST_KEY_CHANGED": perr.HostKeyError, "BECOME_FAILED": perr.BecomeError,
    "PYTHON_UNSUITABLE": perr.ProvisionStepError, "PROVISION_STEP_TIMEOUT": OperationTimeoutError,
}
_PIP_KEYS = {"index-url": "PIP_INDEX_URL", "extra-index-url": "PIP_EXTRA_INDEX_URL", "find-links": "PIP_FIND_LINKS",
             "trusted-host": "PIP_TRUSTED_HOST", "cert": "PIP_CERT", "default-timeout": "PIP_DEFAULT_TIMEOUT",
             "constraint": "PIP_CONSTRAINT"}

DeviceHubOpt = Annotated[str | None, typer.Option("--device-hub-url", help="The hub's URL as the device reaches it "
                                                                           "(default: --hub).")]
BecomeOpt = Annotated[bool, typer.Option("--become", help=(
    "Install system-wide with sudo (agent as root, components as their own users). The password is asked "
    f"for (or ${BECOME_ENV}); it is never stored."))]
PipHereOpt = Annotated[bool, typer.Option("--pip-from-here", help=(
    "Give the device this machine's pip index settings (pip config list, PIP_*): for devices that "
    "reach the same index."))]
WheelhouseOpt = Annotated[bool, typer.Option("--wheelhouse", help=(
    "Install dependencies from the hub's wheelhouse (roost hub wheelhouse build): for devices that reach "
    "no package index."))]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for the run to end.")]


def add(name: str,
        ssh: Annotated[str, typer.Option("--ssh", help="user@host[:port] of the account to register (the "
                                                       "device grants the hub that account's privilege).")],
        hub: HubOpt = None, token: TokenOpt = None,
        host_key: Annotated[str | None, typer.Option("--host-key", help=(
            "The device's host key (TYPE BASE64, e.g. its /etc/ssh/ssh_host_ed25519_key.pub), checked "
            "instead of trusting the key first seen; also re-pins a changed key."))] = None,
        group: Annotated[str | None, typer.Option("--group", help="Put the device in this group.")] = None,
        label: Annotated[list[str] | None, typer.Option("--label", help="k=v device label (repeatable); the "
                                                                        "device's facts are added.")] = None,
        become: BecomeOpt = False, device_hub_url: DeviceHubOpt = None, pip_from_here: PipHereOpt = False,
        wheelhouse: WheelhouseOpt = False, timeout: TimeoutOpt = 1800.0, as_json: JsonOpt = False) -> None:
    """Register a device over SSH and provision it: Roost installed, enrolled, started, reporting."""
    from roost.provision.target import parse_target

    parse_target(ssh)  # a malformed target is refused here, before the hub is asked (it checks it again)
    labels = {k: v for k, v in parse_pairs(label or [], "--label").items() if v is not None}
    with admin_client(hub, token) as client:
        body: dict[str, Any] = {"name": name, "ssh": ssh, "hub_url": device_hub_url or client.base_url,
                                "labels": labels, "become": become, "pip": pip_settings() if pip_from_here else {},
                                "wheelhouse": wheelhouse}
        if host_key:
            body["host_key"] = host_key
        if group:
            body["group"] = group
        password = become_password(become)
        if password is not None:
            body["become_password"] = password
        registration = client.register_ssh(body)
        follow(client, registration, timeout, as_json)


AskBecomeOpt = Annotated[bool, typer.Option("--become", help=(
    f"Ask for the sudo password (or ${BECOME_ENV}) of a device registered with --become."))]


def upgrade(name: str, hub: HubOpt = None, token: TokenOpt = None, device_hub_url: DeviceHubOpt = None,
            become: AskBecomeOpt = False, pip_from_here: PipHereOpt = False, wheelhouse: WheelhouseOpt = False,
            timeout: TimeoutOpt = 1800.0, as_json: JsonOpt = False) -> None:
    """Re-provision a device registered over SSH with the hub's Roost (rebuilt wheel) and restart its agent."""
    with admin_client(hub, token) as client:
        _again(client, name, "upgrade", device_hub_url or client.base_url, become, pip_from_here, wheelhouse,
               timeout, as_json)


def remove(name: str, hub: HubOpt = None, token: TokenOpt = None,
           uninstall: Annotated[bool, typer.Option("--uninstall", help=(
               "Also remove Roost from the device over SSH (agent stopped, venv and agent root deleted)."))]
           = False, become: AskBecomeOpt = False, timeout: TimeoutOpt = 600.0, as_json: JsonOpt = False) -> None:
    """Revoke a device; with --uninstall, remove Roost from it over SSH first."""
    with admin_client(hub, token) as client:
        if uninstall:
            _again(client, name, "uninstall", None, become, False, False, timeout, as_json)
            return
        client.revoke_device(name)
    if as_json:
        emit_json({"device": name, "revoked": True})
    else:
        console.print(f"device {name} revoked")


def pin(host: str, port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 22,
        host_key: Annotated[str, typer.Option("--host-key", help="The key to pin (TYPE BASE64).")] = "",
        hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Re-pin the host key of HOST (after checking it on the device: ssh-keygen -lf its key)."""
    if not host_key:
        raise InvalidInputError("give the key to pin with --host-key 'TYPE BASE64'", code="HOST_KEY_INVALID")
    with admin_client(hub, token) as client:
        pinned = client.pin_host_key(host, port, host_key)
    if as_json:
        emit_json(pinned.model_dump(mode="json"))
    else:
        console.print(f"pinned {pinned.fingerprint} for {host}:{port}", highlight=False)


def _again(client: HubClient, name: str, kind: str, hub_url: str | None, become: bool, pip_here: bool,
           wheelhouse: bool, timeout: float, as_json: bool) -> None:
    body: dict[str, Any] = {"pip": pip_settings() if pip_here else {}, "wheelhouse": wheelhouse}
    if hub_url:
        body["hub_url"] = hub_url
    password = become_password(become) if become else os.environ.get(BECOME_ENV)
    if password is not None:
        body["become_password"] = password
    follow(client, client.provision_again(name, kind, body), timeout, as_json)


def become_password(become: bool) -> str | None:
    if not become:
        return None
    if BECOME_ENV in os.environ:
        return os.environ[BECOME_ENV]
    if sys.stdin.isatty():
        return str(typer.prompt("sudo password on the device (not stored; empty for passwordless sudo)",
                                hide_input=True, default="", show_default=False)) or None
    return None


def pip_settings() -> dict[str, str]:
    """This machine's pip index settings (``pip config list`` of this Python, then ``PIP_*``)."""
    out: dict[str, str] = {}
    try:
        listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                                timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    for line in listed.splitlines():
        key, sep, value = line.partition("=")
        option = key.rpartition(".")[2]
        if sep and option in _PIP_KEYS:
            out[_PIP_KEYS[option]] = value.strip().strip("'\"")
    for env in _PIP_KEYS.values():
        if os.environ.get(env):
            out[env] = os.environ[env]
    return out


def follow(client: HubClient, registration: Any, timeout: float, as_json: bool) -> None:
    """Poll the run until it ends; show each step as it ends; exit with the failure's code."""
    deadline = time.monotonic() + timeout
    shown: set[str] = set()
    if not as_json:
        console.print(f"{registration.kind} {registration.device} via {registration.target} (run {registration.id})",
                      highlight=False)
    while True:
        if not as_json:
            for step in registration.steps:
                if step.status in ("OK", "CHANGED", "SKIPPED", "FAILED") and step.name not in shown:
                    shown.add(step.name)
                    took = f" {step.seconds:.1f} s" if step.seconds is not None else ""
                    console.print(f"  {styled(step.status):<20} {step.name}{took}"
                                  + (f": {step.message}" if step.status == "FAILED" and step.message else ""),
                                  highlight=False, soft_wrap=True)
            if registration.host_key_fingerprint and "fingerprint" not in shown:
                shown.add("fingerprint")
                console.print(f"  host key {registration.host_key_fingerprint}", highlight=False)
        if registration.status in ("SUCCEEDED", "FAILED"):
            break
        if time.monotonic() > deadline:
            raise OperationTimeoutError(f"run {registration.id} did not end within {timeout:g} s (it goes on in "
                                        f"the hub: GET /v1/devices/ssh/{registration.id})",
                                        code="PROVISION_WAIT_TIMEOUT")
        time.sleep(0.5)
        registration = client.registration(registration.id)
    out = {"device": registration.device, "status": registration.status,
           "steps": [s.model_dump(mode="json") for s in registration.steps], "id": registration.id,
           "kind": registration.kind, "host_key_fingerprint": registration.host_key_fingerprint,
           "labels": registration.labels}
    if registration.status == "SUCCEEDED":
        if as_json:
            emit_json(out)
        else:
            console.print(f"device {registration.device}: {styled('SUCCEEDED')}", highlight=False)
        return
    err = _ERRORS.get(registration.error_code or "", perr.ProvisionStepError)(
        registration.message or "the run failed", code=registration.error_code or "PROVISION_FAILED")
    if as_json:
        emit_json({**out, "error": err.to_dict()})
    else:
        console.print(f"[bold red]error[/] [dim]({err.code})[/]: {err.message}", highlight=False, soft_wrap=True)
    raise typer.Exit(exit_code_for(err))


def register(app: typer.Typer) -> None:
    """Add these commands to `roost device`."""
    app.command("add")(handle_errors(add))
    app.command("upgrade")(handle_errors(upgrade))
    app.command("remove")(handle_errors(remove))
    app.command("pin-host-key")(handle_errors(pin))
