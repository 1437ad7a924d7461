"""`roost stream`: ask the hub for an ML service session (or take a direct endpoint), stream data to it
in windows, and measure end-to-end latency, server time and bytes on the socket.

Through the hub, ``--hub URL --token T`` (the API token): the session is admitted with
``POST /v1/cluster/sessions`` and ended with ``DELETE`` when the stream ends. An admission into the
centre (``offloaded``) is followed the same way; the endpoint is printed. Direct, without a hub:
``--endpoint ws://HOST:PORT/v1/stream --session-token T`` (``--claim-token`` for ``--format legacy``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from roost import eventloop
from roost.cli.hub import HubOpt, TokenOpt, admin_client
from roost.cli.output import EXIT_FAILED, console, err_console, handle_errors
from roost.errors import InvalidInputError

if TYPE_CHECKING:
    from roost.cluster.stream_client import StreamOptions, StreamReport, WindowStat
    from roost.hub.contract.cluster import ClusterSession


def _print_window(stat: WindowStat) -> None:
    server = f"{stat.server_ms:7.2f}" if stat.server_ms is not None else "      -"
    result = stat.result if not isinstance(stat.result, list) else \
        ", ".join(f"{x['label']} {x['score']:.2f}" for x in stat.result[:3])
    if isinstance(result, dict):
        conf = result.get("confidence")
        result = f"{result.get('result'):.4g}" + (f" ({conf:.2f})" if conf is not None else "")
    console.print(f"#{stat.seq:<5} e2e {stat.e2e_ms:7.2f} ms  server {server} ms  sent {stat.sent:>6} B  "
                  f"recv {stat.received:>5} B  {result}", highlight=False, soft_wrap=True)


def _print_summary(report: StreamReport) -> None:
    from rich.table import Table

    doc = report.summary()
    table = Table(title=f"{report.type} over {report.format}: {doc['windows']} windows", title_justify="left")
    for column in ("", "mean", "p50", "p99"):
        table.add_column(column, justify="right")

    def cell(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    for name in ("e2e_ms", "server_ms"):
        table.add_row(name, *(cell(doc[name][k]) for k in ("mean", "p50", "p99")))
    console.print(table)
    per = doc["bytes_per_window"]
    if per["sent"] is not None:
        console.print(f"bytes per window on the socket: sent {per['sent']:.0f}, received {per['received']:.0f}")
    if report.warmup is not None:
        console.print(f"warm-up window: {report.warmup.e2e_ms:.2f} ms end to end")
    if report.error_count:
        err_console.print(f"[red]{report.error_count} error(s)[/]; first: {report.errors[0]['code']}: "
                          f"{report.errors[0]['message']}", highlight=False)


def _run(options: StreamOptions, *, as_json: bool) -> StreamReport:
    from roost.cluster.stream_client import stream

    async def main() -> StreamReport:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await stream(options, on_window=None if as_json else _print_window, stop=stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return eventloop.run(main())


@handle_errors
def stream(
    type: Annotated[str, typer.Option("--type", help="The service type: scalar, image, ...")] = "scalar",
    data: Annotated[Path | None, typer.Option("--data", help="CSV to stream (tabular types); columns are "
                                                             "taken by name.")] = None,
    images: Annotated[Path | None, typer.Option("--images", help="Folder of images to stream (image types).")] = None,
    window: Annotated[int | None, typer.Option("--window", min=1, max=65535,
                                               help="Rows per window (default: the replica's).")] = None,
    duration: Annotated[float, typer.Option("--duration", min=0.0, help="Seconds to stream after the "
                                                                       "warm-up.")] = 300.0,
    max_windows: Annotated[int | None, typer.Option("--windows", min=1, help="Stop after this many "
                                                                              "windows.")] = None,
    interval: Annotated[float, typer.Option("--interval", min=0.0, help="Seconds between windows.")] = 0.0,
    fmt: Annotated[str, typer.Option("--format", help="binary | json | legacy (the original protocol: one "
                                                      "JSON frame per row).")] = "binary",
    hub: HubOpt = None,
    token: TokenOpt = None,
    client_id: Annotated[str | None, typer.Option("--client-id", help="Who asks (default: this host's "
                                                                      "name).")] = None,
    wait: Annotated[float, typer.Option("--wait", min=0.1, max=300.0, help="Seconds the hub may take to "
                                                                           "start a replica.")] = 30.0,
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="Direct mode: ws://HOST:PORT/v1/stream "
                                                                    "(no hub; --hub is then ignored).")] = None,
    session_token: Annotated[str | None, typer.Option("--session-token", help="Direct mode: the session "
                                                                              "token.")] = None,
    claim_token: Annotated[str | None, typer.Option("--claim-token", help="Direct mode, --format legacy: a "
                                                                          "claim token to present first.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write latency over time and its histogram "
                                                             "(PNG).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary object.")] = False,
) -> None:
    """Stream data to an ML service session of an edge cluster and measure it."""
    from roost.cluster.stream_client import StreamOptions, write_plot

    if fmt not in ("binary", "json", "legacy"):
        raise InvalidInputError(f"--format {fmt!r}: choose binary, json or legacy", code="INVALID_ARGUMENT")
    if (data is None) == (images is None):
        raise InvalidInputError("give either --data FILE.csv (tabular) or --images DIR (image)",
                                code="INVALID_ARGUMENT")
    session: ClusterSession | None = None
    if endpoint is not None:
        if not endpoint.startswith(("ws://", "wss://")):
            raise InvalidInputError(f"--endpoint {endpoint!r}: expected ws://HOST:PORT/v1/stream",
                                    code="INVALID_ARGUMENT")
        target, session_tok, offloaded = endpoint, session_token, False
    else:
        if fmt == "legacy":
            raise InvalidInputError("--format legacy needs a claim, which only the hub or --claim-token gives: use "
                                    "--endpoint with --claim-token", code="INVALID_ARGUMENT")
        with admin_client(hub, token) as client:
            session = client.create_cluster_session(type, client_id or socket.gethostname(), wait)
        target, session_tok, offloaded = session.endpoint, session.token, session.offloaded
        if not as_json:
            where = "the centre (offloaded)" if session.offloaded else f"node {session.node}"
            console.print(f"session {session.id}: {session.type} on {where}, replica {session.replica}, "
                          f"endpoint {session.endpoint}", highlight=False)
    options = StreamOptions(endpoint=target, session_token=session_tok, type=type, format=fmt,  # type: ignore[arg-type]
                            data=data, images=images, window=window, duration=duration, max_windows=max_windows,
                            interval=interval, claim_token=claim_token, offloaded=offloaded)
    lost: str | None = "the client stopped before streaming ended"
    try:
        report = _run(options, as_json=as_json)
        lost = f"{report.lost.code}: {report.lost.message}" if report.lost is not None else None
    finally:
        if session is not None:
            _end(hub, token, session.id, lost)
    if plot is not None:
        write_plot(report, plot)
    if as_json:
        print(json.dumps(report.summary()))
    else:
        _print_summary(report)
        if plot is not None:
            console.print(f"plot written to {plot}")
    if report.lost is not None:
        if not as_json:
            err_console.print(f"[bold red]error[/] [dim]({report.lost.code})[/]: {report.lost.message}",
                              highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED)


def _end(hub: str | None, token: str | None, session_id: str, reason: str | None) -> None:
    from roost.errors import RoostError

    try:
        with admin_client(hub, token) as client:
            client.end_cluster_session(session_id, reason)
    except RoostError as err:
        err_console.print(f"[yellow]warning[/]: could not end session {session_id}: {err.message}")
