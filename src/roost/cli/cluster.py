"""`roost cluster ...`: edge clusters.

Commands, by who runs them:

- on a node, as a component: ``roost cluster replica`` (:mod:`roost.cli.replica`);
- against a hub: ``nodes``, ``services``, ``sessions``, ``service-type`` (the lead's).
"""

from __future__ import annotations

import typer

from roost.cli import replica

app = typer.Typer(help="Edge clusters: nodes and their capacity, service types, replicas, sessions.",
                  no_args_is_help=True)
app.command("replica")(replica.replica)
