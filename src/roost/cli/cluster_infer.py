"""`roost cluster infer`: parallel inference of a CSV across the replicas of a cluster service, answers
merged in row order (see ``docs/joint-inference.md``). Registered in the ``cluster`` group.

Replicas come from the hub (``--hub URL --token T --type TYPE --replicas N``: N sessions admitted, ended
afterwards) or directly (``--replica ws://HOST:PORT/v1/stream=TOKEN``, repeated).
"""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from roost import eventloop
from roost.cli.hub import HubOpt, TokenOpt, admin_client
from roost.cli.output import console, err_console, handle_errors
from roost.errors import InvalidInputError

if TYPE_CHECKING:
    from roost.cluster.replica_session import ReplicaTarget
    from roost.hub.contract.cluster import ClusterSession


def _direct(items: list[str]) -> list[ReplicaTarget]:
    from roost.cluster.replica_session import ReplicaTarget

    out: list[ReplicaTarget] = []
    for item in items:
        endpoint, sep, token = item.partition("=")
        if not endpoint.startswith(("ws://", "wss://")) or not sep or not token:
            raise InvalidInputError(f"--replica {item[:80]!r}: expected ws://HOST:PORT/v1/stream=SESSION_TOKEN",
                                    code="INVALID_ARGUMENT")
        out.append(ReplicaTarget(endpoint, token))
    return out


@handle_errors
def infer(
    data: Annotated[Path, typer.Option("--data", help="CSV of rows to answer; columns taken by name.")],
    replica: Annotated[list[str] | None, typer.Option("--replica", help="Direct: ENDPOINT=SESSION_TOKEN of a "
                                                                        "replica session (repeat).")] = None,
    type: Annotated[str | None, typer.Option("--type", help="Through the hub: the service type.")] = None,
    replicas: Annotated[int, typer.Option("--replicas", min=1, max=64, help="Through the hub: sessions to "
                                                                            "ask for.")] = 2,
    hub: HubOpt = None,
    token: TokenOpt = None,
    window: Annotated[int | None, typer.Option("--window", min=1, max=65535, help="Rows per window (default "
                                                                                  "the replicas').")] = None,
    depth: Annotated[int, typer.Option("--depth", min=1, max=16, help="Windows in flight per replica.")] = 2,
    wait: Annotated[float, typer.Option("--wait", min=0.1, max=300.0, help="Seconds the hub may take to "
                                                                           "start a replica.")] = 30.0,
    out: Annotated[Path | None, typer.Option("--out", help="Write the predictions, one per row in order "
                                                           "(CSV with a prediction column).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary object.")] = False,
) -> None:
    """Parallel inference: split a CSV across a service's replicas, merge the answers in order."""
    from roost.cluster.replica_session import ReplicaTarget
    from roost.cluster.stream_client import load_csv
    from roost.learn.parallel import parallel_infer

    sessions: list[ClusterSession] = []
    if replica:
        targets = _direct(replica)
    elif type is not None:
        with admin_client(hub, token) as client:
            host = socket.gethostname()
            try:
                for i in range(replicas):
                    sessions.append(client.create_cluster_session(type, f"parallel-{host}-{i}", wait))
            except BaseException:
                for s in sessions:
                    client.end_cluster_session(s.id, "parallel run failed to start")
                raise
        targets = [ReplicaTarget(s.endpoint, s.token, name=s.replica) for s in sessions]
    else:
        raise InvalidInputError("give --replica ENDPOINT=TOKEN (repeat), or --type TYPE with --hub",
                                code="INVALID_ARGUMENT")
    try:
        report = eventloop.run(parallel_infer(targets, rows=lambda features: load_csv(data, features),
                                              window=window, depth=depth))
    finally:
        if sessions:
            try:
                with admin_client(hub, token) as client:
                    for s in sessions:
                        client.end_cluster_session(s.id, None)
            except Exception as err:  # the run's own outcome matters more than a failed clean-up
                err_console.print(f"[yellow]warning[/]: could not end the sessions: {err}")
    if out is not None:
        with out.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["prediction"])
            writer.writerows([p] for p in report.predictions)
    doc = report.summary()
    if as_json:
        print(json.dumps(doc))
        return
    console.print(f"{doc['rows']} rows in {doc['windows']} windows of {doc['window']} over "
                  f"{len(doc['replicas'])} replica(s): {doc['rows_per_s']} rows/s", highlight=False)
    for r in doc["replicas"]:
        lost = f"  lost: {r['lost']['code']} {r['lost']['message']}" if r["lost"] else ""
        console.print(f"  {r['replica']}: {r['windows']} windows, {r['rows']} rows{lost}", highlight=False)
    for entry in doc["retried"]:
        console.print(f"[yellow]{entry['code']}[/] {entry['replica']}: re-sent windows {entry['requeued']}",
                      highlight=False)
    if out is not None:
        console.print(f"predictions written to {out}")
