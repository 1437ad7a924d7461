"""`roost device enroll-token|list|show|revoke|label` (the hub's device registry); `add|upgrade|remove|
pin-host-key` (over SSH) live in :mod:`roost.cli.device_ssh`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from roost.cli import device_ssh
from roost.cli.hub import HubOpt, JsonOpt, TokenOpt, admin_client, parse_pairs
from roost.cli.output import console, emit_json, handle_errors, styled, table, when

app = typer.Typer(help="Devices enrolled with a hub: enrolment tokens, labels, revocation; registered and "
                       "provisioned over SSH (add, upgrade, remove --uninstall).", no_args_is_help=True)
device_ssh.register(app)


@app.command("enroll-token")
@handle_errors
def enroll_token(hub: HubOpt = None, token: TokenOpt = None,
                 group: Annotated[str | None, typer.Option("--group", help="Put the enrolled device in "
                                                                           "this group.")] = None,
                 ttl: Annotated[int | None, typer.Option("--ttl", min=1, help="Seconds the token stays valid "
                                                                               "(hub default 3600).")] = None,
                 as_json: JsonOpt = False) -> None:
    """Create a one-time enrolment token for `roost agent start --hub URL --enroll-token T`."""
    with admin_client(hub, token) as client:
        result = client.create_enroll_token(group, ttl)
    if as_json:
        emit_json(result.model_dump(mode="json"))
        return
    console.print(result.token, highlight=False, soft_wrap=True)
    if result.expires_at:
        console.print(f"[dim]one use; expires {when(result.expires_at)}[/]")


@app.command("list")
@handle_errors
def list_(hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Every device with its status, labels, groups and last-seen time."""
    with admin_client(hub, token) as client:
        devices = client.devices()
    if as_json:
        emit_json([d.model_dump(mode="json") for d in devices])
        return
    table("Devices", ["name", "status", "groups", "last seen", "components", "labels"],
          [(d.name, styled("REVOKED" if d.revoked else d.status), ", ".join(d.groups), when(d.last_seen_at),
            ", ".join(f"{n}@{c.version} {c.state}" for n, c in d.components.items()),
            " ".join(f"{k}={v}" for k, v in d.labels.items())) for d in devices])


@app.command("show")
@handle_errors
def show(name: str, hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """One device: labels, groups, reported component states."""
    with admin_client(hub, token) as client:
        device = client.device(name)
    if as_json:
        emit_json(device.model_dump(mode="json"))
        return
    console.print(f"[bold]{device.name}[/] {styled('REVOKED' if device.revoked else device.status)}  "
                  f"last seen {when(device.last_seen_at) or 'never'}")
    console.print("groups: " + (", ".join(device.groups) or "none"), highlight=False)
    console.print("labels: " + (" ".join(f"{k}={v}" for k, v in device.labels.items()) or "none"), highlight=False)
    table("Components", ["name", "version", "state"],
          [(n, c.version, styled(c.state or "")) for n, c in device.components.items()])


@app.command("revoke")
@handle_errors
def revoke(name: str, hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke a device's credential: its next call to the hub is refused."""
    with admin_client(hub, token) as client:
        out = client.revoke_device(name)
    if as_json:
        emit_json(out if out is not None else {"device": name, "revoked": True})
    else:
        console.print(f"device {name} revoked")


@app.command("label")
@handle_errors
def label(name: str, labels: Annotated[list[str], typer.Argument(help="k=v to set, k- to remove.")],
          hub: HubOpt = None, token: TokenOpt = None,
          replace: Annotated[bool, typer.Option("--replace", help="Replace every label (default: merge).")]
          = False,
          as_json: JsonOpt = False) -> None:
    """Set (k=v) or remove (k-) labels of a device; other labels are kept unless --replace."""
    changes = parse_pairs(labels, "label", allow_remove=True)
    with admin_client(hub, token) as client:
        current: dict[str, Any] = {} if replace else dict(client.device(name).labels)
        for key, value in changes.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        client.set_labels(name, current)
        device = client.device(name)
    if as_json:
        emit_json(device.model_dump(mode="json"))
    else:
        console.print(f"{name}: " + (" ".join(f"{k}={v}" for k, v in device.labels.items()) or "no labels"),
                      highlight=False)
