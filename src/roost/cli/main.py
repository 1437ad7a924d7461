"""The `roost` command: `roost <group> <verb>`."""

from __future__ import annotations

import sys

import typer

from roost import __version__
from roost.cli import agent, cluster, component, demo, deployment, device, group, hub, logs, samples, secret, serve
from roost.cli import learn as learn_commands
from roost.cli import model as model_commands
from roost.cli import service as service_units
from roost.cli.inventory import inventory as inventory_command
from roost.cli.joint import joint as joint_command
from roost.cli.output import fail
from roost.cli.stream import stream as stream_command
from roost.extras import extra_missing

app = typer.Typer(name="roost", help="Roost: machine learning on edge devices, self-hosted.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
service_units.register(agent.app, hub.app)
DEVICE, INFERENCE, FLEET = "On a device", "Inference components", "Fleet (hub)"
app.add_typer(agent.app, name="agent", rich_help_panel=DEVICE)
app.add_typer(deployment.app, name="deployment", rich_help_panel=DEVICE)
app.add_typer(component.app, name="component", rich_help_panel=DEVICE)
app.command("logs", rich_help_panel=DEVICE)(logs.logs)
app.command("demo", rich_help_panel=DEVICE)(demo.demo)
app.command("serve", rich_help_panel=INFERENCE)(serve.serve)
app.add_typer(serve.lambda_app, name="lambda", rich_help_panel=INFERENCE)
app.add_typer(samples.app, name="samples", rich_help_panel=INFERENCE)
app.add_typer(model_commands.app, name="model", rich_help_panel=INFERENCE)
app.add_typer(learn_commands.app, name="learn", rich_help_panel=INFERENCE)
app.command("stream", rich_help_panel=FLEET)(stream_command)
app.command("joint", rich_help_panel=FLEET)(joint_command)
app.add_typer(hub.app, name="hub", rich_help_panel=FLEET)
app.add_typer(device.app, name="device", rich_help_panel=FLEET)
app.add_typer(group.app, name="group", rich_help_panel=FLEET)
app.add_typer(secret.app, name="secret", rich_help_panel=FLEET)
app.add_typer(cluster.app, name="cluster", rich_help_panel=FLEET)
app.command("inventory", rich_help_panel=FLEET)(inventory_command)

def _version(value: bool) -> None:
    if value:
        typer.echo(f"roost {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version.")) -> None:
    """Roost: machine learning on edge devices, self-hosted."""


def main() -> None:
    try:
        app()
    except ModuleNotFoundError as err:
        missing = extra_missing(err)
        if missing is None:
            raise
        try:
            fail(missing, "--json" in sys.argv[1:])
        except typer.Exit as exit_:  # outside click's context: exit as click would
            sys.exit(exit_.exit_code)
