"""`roost group add|remove|list`: static groups of devices on a hub (deployment targets)."""

from __future__ import annotations

from typing import Annotated

import typer

from roost.cli.hub import HubOpt, JsonOpt, TokenOpt, admin_client
from roost.cli.output import console, emit_json, handle_errors, table

app = typer.Typer(help="Static groups of devices on the hub (deployment targets).", no_args_is_help=True)


@app.command("add")
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


@app.command("remove")
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


@app.command("list")
@handle_errors
def group_list(hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Every group with its members."""
    with admin_client(hub, token) as client:
        groups = client.groups()
    if as_json:
        emit_json([g.model_dump(mode="json") for g in groups])
        return
    table("Groups", ["group", "devices"], [(g.name, ", ".join(g.devices)) for g in groups])
