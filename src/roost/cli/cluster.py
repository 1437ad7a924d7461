"""`roost cluster ...`: edge clusters.

- against a hub: ``nodes``, ``services``, ``replicas``, ``sessions``, ``service-type apply|list``;
- on a node, as a component: ``roost cluster replica`` (:mod:`roost.cli.replica`);
- parallel inference across a service's replicas: ``roost cluster infer`` (:mod:`roost.cli.cluster_infer`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from roost.cli import cluster_infer, replica
from roost.cli.hub import HubOpt, JsonOpt, TokenOpt, admin_client
from roost.cli.output import console, emit_json, handle_errors, styled, table, when
from roost.cluster.quantity import format_cpu

app = typer.Typer(help="Edge clusters: nodes and their capacity, service types, replicas, sessions.",
                  no_args_is_help=True)
service_type_app = typer.Typer(help="Service types: what clients may ask the cluster for.", no_args_is_help=True)
app.add_typer(service_type_app, name="service-type")
app.command("replica")(replica.replica)
app.command("infer")(cluster_infer.infer)


def _gib(value: int) -> str:
    return f"{value / 2**30:.1f}Gi"


def _bar(used: int, total: int, width: int = 12) -> str:
    share = min(1.0, used / total) if total > 0 else 1.0
    full = round(share * width)
    return "[" + "#" * full + "." * (width - full) + f"] {share * 100:3.0f}%"


@app.command("nodes")
@handle_errors
def nodes(hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Every node: tier, labels, memory and CPU allocatable and requested, replicas and sessions."""
    with admin_client(hub, token) as client:
        found = client.cluster_nodes()
    if as_json:
        emit_json([n.model_dump(mode="json") for n in found])
        return
    table("Cluster nodes", ["node", "tier", "status", "memory (requested / allocatable)", "cpu", "replicas",
                            "sessions", "labels"],
          [(n.name, n.tier, styled("ONLINE" if n.online else "OFFLINE"),
            f"{_bar(n.requested.memory_bytes, n.allocatable.memory_bytes)} "
            f"{_gib(n.requested.memory_bytes)} / {_gib(n.allocatable.memory_bytes)}",
            f"{format_cpu(n.requested.cpu_millis)} / {format_cpu(n.allocatable.cpu_millis)}", str(n.replicas),
            str(n.sessions), " ".join(f"{k}={v}" for k, v in n.labels.items())) for n in found])


@app.command("replicas")
@handle_errors
def replicas(hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Every replica: its service type, node, port, status and sessions."""
    with admin_client(hub, token) as client:
        found = client.cluster_replicas()
    if as_json:
        emit_json([r.model_dump(mode="json") for r in found])
        return
    table("Cluster replicas", ["replica", "type", "node", "tier", "port", "status", "sessions", "since", "reason"],
          [(r.id[:8], r.type, r.node, r.tier, str(r.port), styled(r.status), f"{r.sessions}/{r.capacity}",
            when(r.ready_at or r.created_at), r.reason or "") for r in found])


@app.command("services")
@handle_errors
def services(hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Every service type with its replicas and sessions."""
    with admin_client(hub, token) as client:
        types = client.service_types()
        found = client.cluster_replicas()
    if as_json:
        emit_json([{**t, "replicas": sum(1 for r in found if r.type == t["name"] and r.status in ("STARTING", "READY")),
                    "sessions": sum(r.sessions for r in found if r.type == t["name"])} for t in types])
        return
    rows = []
    for t in types:
        mine = [r for r in found if r.type == t["name"] and r.status in ("STARTING", "READY")]
        requests = t.get("resources", {}).get("requests", {})
        rows.append((t["name"], f"{t['component']}@{t.get('version') or 'latest'}", t.get("kind", ""),
                     f"memory {requests.get('memory', '-')} cpu {requests.get('cpu', '-')}",
                     f"{len(mine)} ({t.get('minReplicas', 0)}-{t.get('maxReplicas', '')})",
                     f"{sum(r.sessions for r in mine)} ({t.get('sessionsPerReplica', 1)}/replica)"))
    table("Service types", ["type", "component", "kind", "requests", "replicas (min-max)", "sessions"], rows)


@app.command("sessions")
@handle_errors
def sessions(hub: HubOpt = None, token: TokenOpt = None,
             all_: Annotated[bool, typer.Option("--all", help="Also ended sessions.")] = False,
             as_json: JsonOpt = False) -> None:
    """Sessions with their node and replica (live ones unless --all); offloaded ones run in the centre."""
    with admin_client(hub, token) as client:
        found = client.cluster_sessions(active=not all_)
    if as_json:
        emit_json([s.model_dump(mode="json", exclude={"token"}) for s in found])
        return
    table("Cluster sessions", ["session", "type", "client", "tier", "node", "replica", "status", "created", "ended"],
          [(s.id[:8], s.type, s.client_id, s.tier + (" (offloaded)" if s.offloaded else ""), s.node, s.replica[:8],
            styled(s.status), when(s.created_at), s.end_reason or "") for s in found])


@service_type_app.command("apply")
@handle_errors
def apply(file: Annotated[Path | None, typer.Argument(help="A YAML or JSON file of service types.")] = None,
          hub: HubOpt = None, token: TokenOpt = None,
          samples: Annotated[bool, typer.Option("--samples", help="Publish the sample cluster components and "
                                                                  "apply the shipped scalar and image types.")]
          = False, as_json: JsonOpt = False) -> None:
    """Create or replace service types from FILE (or the shipped ones with --samples)."""
    from roost.cluster.service_types import SHIPPED, load_service_types
    from roost.errors import InvalidInputError

    if (file is None) == (not samples):
        raise InvalidInputError("give a service-type FILE or --samples (one of them)", code="INVALID_ARGUMENT")
    specs = load_service_types(file) if file is not None else list(SHIPPED.values())
    applied = []
    with admin_client(hub, token) as client:
        if samples:
            from roost.cli.cluster_samples import publish_cluster_samples

            for line in publish_cluster_samples(client):
                if not as_json:
                    console.print(line, highlight=False)
        for spec in specs:
            applied.append(client.apply_service_type(spec.to_wire()))
    if as_json:
        emit_json(applied)
        return
    for item in applied:
        console.print(f"service type [bold]{item['name']}[/] applied ({item['component']}"
                      f"@{item.get('version') or 'latest'})", highlight=False)


@service_type_app.command("list")
@handle_errors
def list_types(hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """The service types the hub knows (as files write them)."""
    with admin_client(hub, token) as client:
        types = client.service_types()
    if as_json:
        emit_json(types)
        return
    import yaml

    console.print(yaml.safe_dump_all(types, sort_keys=False), highlight=False)
