"""`roost joint`: joint inference over a CSV: the edge model here answers what it is sure of, a hard-example
filter sends the rest to the big model in the centre (see ``docs/joint-inference.md``).

The centre is a replica session: ``--centre ws://HOST:PORT/v1/stream --centre-token T`` (direct), or
``--hub URL --token T --centre-type TYPE`` (the hub admits a session of that service type in the
centre tier). Heavy libraries are imported inside the command.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from roost import eventloop
from roost.cli.hub import HubOpt, TokenOpt
from roost.cli.output import console, handle_errors
from roost.errors import InvalidInputError

if TYPE_CHECKING:
    from roost.learn.joint import CentreSource


def _centre(centre: str | None, centre_token: str | None, hub: str | None, token: str | None,
            centre_type: str | None, wait: float) -> CentreSource | None:
    from roost.cluster.replica_session import ReplicaTarget
    from roost.learn.joint import direct_centre, hub_centre

    if centre is not None:
        if not centre.startswith(("ws://", "wss://")):
            raise InvalidInputError(f"--centre {centre!r}: expected ws://HOST:PORT/v1/stream", code="INVALID_ARGUMENT")
        return direct_centre(ReplicaTarget(centre, centre_token))
    if centre_type is not None:
        if not hub or not token:
            raise InvalidInputError("--centre-type needs --hub and --token (or $ROOST_HUB, $ROOST_TOKEN)",
                                    code="HUB_REQUIRED")
        return hub_centre(hub, token, centre_type, f"joint-{socket.gethostname()}", wait=wait)
    return None


@handle_errors
def joint(
    edge_model: Annotated[Path, typer.Option("--edge-model", help="The edge model (XGBoost JSON/UBJ classifier).")],
    data: Annotated[Path, typer.Option("--data", help="CSV of rows to answer; columns taken by name.")],
    centre: Annotated[str | None, typer.Option("--centre", help="The centre replica's ws://HOST:PORT/v1/stream "
                                                                "(with --centre-token).")] = None,
    centre_token: Annotated[str | None, typer.Option("--centre-token", help="The centre session's token.")] = None,
    centre_type: Annotated[str | None, typer.Option("--centre-type", help="Through the hub: the service type "
                                                                          "admitted in the centre tier.")] = None,
    hub: HubOpt = None,
    token: TokenOpt = None,
    filter_name: Annotated[str, typer.Option("--filter", help="threshold | cross-entropy | margin | "
                                                              "random.")] = "threshold",
    threshold: Annotated[float | None, typer.Option("--threshold", help="Hard when the row's score is below it, "
                                                                        "0..1 (the random filter: its ratio); "
                                                                        "default Sedna's.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the random filter.")] = None,
    batch: Annotated[int, typer.Option("--batch", min=1, max=65535, help="Rows per batch (1: per sample, as "
                                                                         "Sedna).")] = 1,
    label: Annotated[str | None, typer.Option("--label", help="Label column: report accuracy against it.")] = None,
    require_centre: Annotated[bool, typer.Option("--require-centre", help="Fail (CENTRE_UNREACHABLE) instead of "
                                                                          "letting the edge answer hard examples "
                                                                          "when the centre is unreachable.")] = False,
    wait: Annotated[float, typer.Option("--wait", min=0.1, max=300.0, help="Seconds the hub may take to start "
                                                                           "a centre replica.")] = 30.0,
    out: Annotated[Path | None, typer.Option("--out", help="Write every row's answer as JSON lines.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary object.")] = False,
) -> None:
    """Joint inference: the edge model answers, hard examples go to the centre's big model."""
    from roost.cluster.stream_client import load_csv
    from roost.learn.hard_examples import make_filter
    from roost.learn.joint import HubCentre, JointInference, XGBoostEdgeModel, run_joint

    hard_filter = make_filter(filter_name, threshold, seed=seed)
    source = _centre(centre, centre_token, hub, token, centre_type, wait)
    if source is None and require_centre:
        raise InvalidInputError("--require-centre needs a centre: --centre URL --centre-token T, or --centre-type "
                                "with --hub", code="INVALID_ARGUMENT")
    edge = XGBoostEdgeModel(edge_model)
    matrix = load_csv(data, edge.features)
    labels = load_csv(data, [label])[:, 0] if label else None

    async def main() -> dict[str, object]:
        async with JointInference(edge, source, hard_filter, require_centre=require_centre) as joint_run:
            report = await run_joint(joint_run, matrix, batch=batch)
            doc = report.summary(labels)
            doc["centre_features"] = joint_run.centre_features
        if out is not None:
            with out.open("w", encoding="utf-8") as fh:
                for answer in report.answers:
                    fh.write(json.dumps(answer.to_json()) + "\n")
        return doc

    try:
        doc = eventloop.run(main())
    finally:
        if isinstance(source, HubCentre):
            source.end()
    if as_json:
        print(json.dumps(doc))
        return
    f = doc["filter"]
    assert isinstance(f, dict)
    console.print(f"filter {f['name']} < {f['threshold']}: {doc['rows']} rows, {doc['answered_by']} "
                  f"(share sent {doc['share_sent']})", highlight=False)
    if doc["accuracy"] is not None:
        console.print(f"accuracy {doc['accuracy']:.4f} (edge alone {doc['edge_accuracy']:.4f})", highlight=False)
    console.print(f"latency ms {doc['latency_ms']}; bytes {doc['bytes']}", highlight=False, soft_wrap=True)
    if doc["centre_error"]:
        console.print(f"[yellow]centre unreachable for {doc['centre_errors']} batch(es)[/]: {doc['centre_error']}",
                      highlight=False)
    if out is not None:
        console.print(f"answers written to {out}")
