"""`roost agent install-service|uninstall-service` and `roost hub install-service|uninstall-service`.

The units themselves, and why each is hardened as it is, are in :mod:`roost.provision.service_unit`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from roost.agent.paths import AgentPaths
from roost.cli.output import console, emit_json, handle_errors
from roost.provision.service_unit import DEFAULT_HUB_USER, InstallResult, ServiceUnit, agent_unit, hub_unit, install
from roost.provision.service_unit import uninstall as uninstall_unit

RootOpt = Annotated[str | None, typer.Option("--root", help="Agent root folder (default $ROOST_ROOT, else "
                                                            "/var/lib/roost as root, ~/.roost otherwise).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
PrintOpt = Annotated[bool, typer.Option("--print", help="Print the unit and change nothing.")]
NoStartOpt = Annotated[bool, typer.Option("--no-start", help="Enable the unit but do not start it now.")]


def _finish(unit: ServiceUnit, show: bool, start: bool, as_json: bool) -> None:
    if show:
        typer.echo(unit.text, nl=False)
        return
    _report(install(unit, start=start), as_json)


def _report(result: InstallResult, as_json: bool) -> None:
    if as_json:
        emit_json(result.as_json())
        return
    console.print(f"unit {result.unit}: " + ("enabled" + (" and started" if result.started else "")
                                              if result.enabled else f"written, not enabled: {result.reason}"))


def agent_install_service(
        root: RootOpt = None,
        user: Annotated[str | None, typer.Option("--user", help=(
            "Run the agent as this dedicated unprivileged user (created when missing; it then owns ROOT). "
            "Components then run as that user too: no per-component isolation. Default: root, which "
            "isolation needs."))] = None,
        harden: Annotated[bool, typer.Option("--harden", help=(
            "Also make /usr, /etc and /boot read-only (ProtectSystem=full) for a root agent: only for devices "
            "whose components install nothing."))] = False,
        name: Annotated[str, typer.Option("--name", help="Unit name.")] = "roost-agent.service",
        show: PrintOpt = False, no_start: NoStartOpt = False, as_json: JsonOpt = False) -> None:
    """Install the agent as a systemd service (a system unit as root, else a user unit) and enable it where
    systemd runs; elsewhere the unit is written and the output says why it was not enabled."""
    paths = AgentPaths.at(root)
    _finish(agent_unit(paths.root, name=name, user=user, harden=harden), show, not no_start, as_json)


def agent_uninstall_service(
        root: RootOpt = None,
        name: Annotated[str, typer.Option("--name", help="Unit name.")] = "roost-agent.service",
        as_json: JsonOpt = False) -> None:
    """Stop, disable and remove the agent's unit (the agent root stays); a unit of another root is refused."""
    _report(uninstall_unit(name, root=AgentPaths.at(root).root), as_json)


def hub_install_service(
        root: Annotated[Path, typer.Option("--root", help="Hub root folder (database, artifacts).")],
        db: Annotated[str | None, typer.Option("--db", help=(
            "Database URL, written to ROOT/hub.env (0600), never into the unit."))] = None,
        user: Annotated[str, typer.Option("--user", help="Dedicated user the hub runs as (created when missing; "
                                                         "it then owns ROOT).")] = DEFAULT_HUB_USER,
        host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port")] = 8080,
        workers: Annotated[int, typer.Option("--workers", min=1)] = 1,
        name: Annotated[str, typer.Option("--name", help="Unit name.")] = "roost-hub.service",
        show: PrintOpt = False, no_start: NoStartOpt = False, as_json: JsonOpt = False) -> None:
    """Install the hub as a hardened systemd system service run by a dedicated user (root only)."""
    unit = hub_unit(root.expanduser().resolve(), name=name, user=user, host=host, port=port, workers=workers,
                    db_url=db, scope="system")
    _finish(unit, show, not no_start, as_json)


def hub_uninstall_service(
        root: Annotated[Path, typer.Option("--root", help="Hub root folder the unit serves.")],
        name: Annotated[str, typer.Option("--name", help="Unit name.")] = "roost-hub.service",
        as_json: JsonOpt = False) -> None:
    """Stop, disable and remove the hub's unit (the hub root and its user stay)."""
    _report(uninstall_unit(name, "system", root=root.expanduser().resolve()), as_json)


def register(agent_app: typer.Typer, hub_app: typer.Typer) -> None:
    agent_app.command("install-service")(handle_errors(agent_install_service))
    agent_app.command("uninstall-service")(handle_errors(agent_uninstall_service))
    hub_app.command("install-service")(handle_errors(hub_install_service))
    hub_app.command("uninstall-service")(handle_errors(hub_uninstall_service))
