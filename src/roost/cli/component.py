"""`roost component list|details|restart|stop`."""

from __future__ import annotations

import json

import typer

from roost.cli import local
from roost.cli.agent import JsonOpt, RootOpt
from roost.cli.output import console, emit_json, handle_errors, styled, table

app = typer.Typer(help="Inspect and control the components on this device.", no_args_is_help=True)


@app.command("list")
@handle_errors
def list_(root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Every component with its version and state."""
    comps = local.call(root, "ListComponents", {})["components"]
    if as_json:
        emit_json(comps)
        return
    table("Components", ["name", "version", "state"],
          [(c["componentName"], c["version"], styled(c["state"])) for c in comps])


@app.command("details")
@handle_errors
def details(name: str, root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Version, state and configuration of one component."""
    comp = local.call(root, "GetComponentDetails", {"componentName": name})["componentDetails"]
    if as_json:
        emit_json(comp)
        return
    console.print(f"[bold]{comp['componentName']}[/] {comp['version']}  {styled(comp['state'])}")
    console.print_json(json.dumps(comp.get("configuration", {})))


@app.command("restart")
@handle_errors
def restart(name: str, root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Stop and start a component (clears BROKEN)."""
    out = local.call(root, "RestartComponent", {"componentName": name}, timeout=180)
    emit_json(out) if as_json else console.print(out.get("message", "restarted"))


@app.command("stop")
@handle_errors
def stop(name: str, root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Stop a component (Shutdown step, then SIGTERM/SIGKILL)."""
    out = local.call(root, "StopComponent", {"componentName": name}, timeout=180)
    emit_json(out) if as_json else console.print(out.get("message", "stopped"))


__all__ = ["app", "typer"]
