"""`roost inventory`: the fleet as an Ansible inventory, for operators' own playbooks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
import yaml

from roost.cli.hub import HubOpt, TokenOpt, admin_client
from roost.cli.output import handle_errors
from roost.errors import InvalidInputError


@handle_errors
def inventory(hub: HubOpt = None, token: TokenOpt = None,
              output_format: Annotated[str, typer.Option("--format", help="yaml (Ansible's YAML inventory) or json "
                                                                         "(the --list form of a dynamic inventory)")]
              = "yaml",
              known_hosts: Annotated[Path | None, typer.Option(
                  "--known-hosts", help="Write the host keys the hub pinned to this known_hosts file and make every "
                                        "SSH host check against it (StrictHostKeyChecking=yes).")] = None,
              output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the inventory here "
                                                                                "(default: stdout).")] = None,
              as_json: Annotated[bool, typer.Option("--json", help=(
                  "Machine-readable output: the JSON --list form on stdout; with --output, what was written "
                  "({\"output\", \"hosts\", \"ssh_hosts\", \"known_hosts\"}))."))] = False) -> None:
    """Print an Ansible inventory of the fleet: groups as roost_<group>, roost_ssh (devices registered over
    SSH, with their address, user and pinned host key) and roost_no_ssh (the others)."""
    from roost.provision.inventory import as_yaml_inventory, with_known_hosts  # the hub's contract: not at start-up

    if output_format not in ("yaml", "json"):
        raise InvalidInputError(f"--format {output_format!r}: use yaml or json", code="INVALID_ARGUMENT")
    with admin_client(hub, token) as client:
        listing = client.inventory()
    if known_hosts is not None:
        listing, lines = with_known_hosts(listing, str(known_hosts.expanduser().resolve()))
        known_hosts.parent.mkdir(parents=True, exist_ok=True)
        known_hosts.write_text(lines)
        os.chmod(known_hosts, 0o644)
    if as_json and output is None:
        output_format = "json"
    text = (json.dumps(listing, indent=2) + "\n" if output_format == "json"
            else yaml.safe_dump(as_yaml_inventory(listing), sort_keys=False))
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text)
    if as_json:
        typer.echo(json.dumps({"output": str(output), "hosts": len(listing["_meta"]["hostvars"]),
                               "ssh_hosts": len(listing.get("roost_ssh", {}).get("hosts", [])),
                               "known_hosts": str(known_hosts) if known_hosts else None}, indent=2))
