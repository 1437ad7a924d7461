"""`roost learn`: federated learning (see ``docs/learning.md``).

``roost learn supernode`` is the Run step of the ``com.roost.FlowerSuperNode`` component: a device's
SuperNode for one job. ``start`` creates a job at the hub, ``status JOB [--follow]`` shows one (following
prints each round as it lands), ``list`` lists them. Local module: roost.learn and roost.hub are imported
inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from roost.hub.client import HubClient
    from roost.hub.contract import LearnJob, LearnRound

from roost.cli.hub import HubOpt, TokenOpt, admin_client
from roost.cli.output import console, handle_errors, table
from roost.cli.serve import JsonLogOpt, _logging

app = typer.Typer(help="Federated learning on Flower: jobs at the hub, a device's SuperNode.", no_args_is_help=True)

ENDED = ("SUCCEEDED", "FAILED")
#: Seconds between two reads of a job while waiting for or following it.
POLL = 1.0


def _doc(job: LearnJob) -> dict[str, Any]:
    """A job as ``--json`` prints it (the issue's form, plus the reason and each round's seconds and
    rejected updates)."""
    return {"job": job.job, "status": job.status, "rounds": [r.model_dump() for r in job.rounds],
            "final_metric": job.final_metric, "centralised_metric": job.centralised_metric,
            "component": job.component, "reason": job.reason}


def _round_line(r: LearnRound) -> str:
    metric = "-" if r.metric is None else f"{r.metric:.4f}"
    seconds = "" if r.seconds is None else f", {r.seconds:.1f} s"
    rejected = "".join(f"\n    rejected node {x.node}: {x.reason}" for x in r.rejected)
    return f"  round {r.round}: {r.participants} participants, RMSE {metric}, {r.bytes} bytes{seconds}{rejected}"


def _print_job(job: LearnJob) -> None:
    console.print(f"learn job {job.job}: {job.status}" + (f" ({job.reason})" if job.reason else ""), markup=False)
    for r in job.rounds:
        console.print(_round_line(r), markup=False, highlight=False)
    if job.component:
        console.print(f"  published {job.component} (its validation report: roost component show)", markup=False)


def _wait(client: HubClient, job: LearnJob, timeout: float, seen: set[int] | None = None,
          on_round: Any = None) -> LearnJob:
    """Read ``job`` every POLL seconds until it ends (``OperationTimeoutError`` after ``timeout``), handing
    each round not in ``seen`` to ``on_round``."""
    import time

    from roost.errors import OperationTimeoutError

    deadline = time.monotonic() + timeout
    while True:
        if on_round is not None and seen is not None:
            for r in job.rounds:
                if r.round not in seen:
                    seen.add(r.round)
                    on_round(r)
        if job.status in ENDED:
            return job
        if time.monotonic() > deadline:
            raise OperationTimeoutError(f"learn job {job.job} is still {job.status} after {timeout:.0f} s",
                                        code="TIMEOUT")
        time.sleep(POLL)
        job = client.learn_job(job.job)


@app.command("supernode")
@handle_errors
def supernode(
    job: Annotated[str, typer.Option("--job", help="The federated job's id.")],
    superlink: Annotated[str, typer.Option("--superlink", help="The job's SuperLink, host:port.")],
    data_path: Annotated[Path, typer.Option("--data-path", help="This device's training CSV (never leaves it).")],
    flower_bin: Annotated[str | None, typer.Option("--flower-bin", help="The Flower venv's bin folder "
                                                   "(default $ROOST_FLOWER_BIN or the repo's .venv-flower).")] = None,
    ca_cert: Annotated[str | None, typer.Option("--ca-cert", envvar="ROOST_LEARN_CA_CERT",
                                                help="The job's CA certificate: PEM text or a file.")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Join a SuperLink without TLS (tests).")] = False,
    work_dir: Annotated[Path, typer.Option("--work-dir", help="Folder for the SuperNode's log and app files.")] = Path(
        "."),
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="The SuperNode's ClientAppIo port "
                                                                       "(0: any free one).")] = 0,
    log_level: Annotated[str, typer.Option("--log-level")] = "INFO",
    as_json: JsonLogOpt = False,
) -> None:
    """Run Flower's SuperNode for a job on this device's data (run as a component)."""
    from roost.errors import InvalidInputError
    from roost.learn.supernode import SuperNodeOptions, run_supernode

    _logging(log_level, as_json)
    if not ca_cert and not insecure:
        raise InvalidInputError("--ca-cert (the job's CA, PEM text or a file) is required unless --insecure",
                                code="INVALID_ARGUMENT")
    code = run_supernode(SuperNodeOptions(job=job, superlink=superlink, data_path=data_path, flower_bin=flower_bin,
                                          ca_cert=None if insecure else ca_cert, work_dir=work_dir, port=port))
    raise typer.Exit(code)


@app.command("start")
@handle_errors
def start(
    target: Annotated[str, typer.Option("--target", help="group:NAME: the devices that train.")],
    task: Annotated[str, typer.Option("--task", help="The federated task (wine).")] = "wine",
    strategy: Annotated[str, typer.Option("--strategy", help="fedavg, fedprox, fedxgb-bagging or "
                                                             "fedxgb-cyclic.")] = "fedavg",
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds (1..100).")] = 3,
    min_participants: Annotated[int | None, typer.Option("--min-participants",
                                                         help="Usable updates a round needs (default: all).")] = None,
    data_path: Annotated[str, typer.Option("--data-path", help="The training CSV's path on each device.")] = (
        "/var/lib/roost/learn/wine.csv"),
    device_data: Annotated[list[str] | None, typer.Option("--device-data", help="DEVICE=PATH: that device's own "
                                                                               "data path (repeatable).")] = None,
    component: Annotated[str, typer.Option("--component", help="The serving component the model becomes the next "
                                                              "version of.")] = "com.roost.WineQuality",
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job to end; exit 0 only if it SUCCEEDED.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds --wait waits.")] = 3600.0,
    hub: HubOpt = None,
    token: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
) -> None:
    """Start a federated learning job at the hub on a group's devices (SuperNode components)."""
    import json

    from roost.errors import InvalidInputError
    from roost.hub.contract import LearnJobIn

    paths: dict[str, str] = {}
    for item in device_data or []:
        device, sep, path = item.partition("=")
        if not sep or not device or not path:
            raise InvalidInputError(f"--device-data {item!r}: expected DEVICE=PATH", code="INVALID_ARGUMENT")
        paths[device] = path
    with admin_client(hub, token) as client:
        job = client.create_learn_job(LearnJobIn(target=target, task=task, strategy=strategy, rounds=rounds,
                                                 min_participants=min_participants, data_paths=paths,
                                                 data_path=data_path, component=component))
        if wait:
            job = _wait(client, job, timeout)
    if as_json:
        print(json.dumps(_doc(job)))
    else:
        _print_job(job)
    if wait and job.status != "SUCCEEDED":
        raise typer.Exit(1)


@app.command("status")
@handle_errors
def status(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="The job's id (fl-...).")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Print each round as it lands until the job "
                                                                "ends; exit 1 if it FAILED.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds --follow follows.")] = 3600.0,
    hub: HubOpt = None,
    token: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON (with --follow: one JSON line "
                                                         "per round, then the job).")] = False,
) -> None:
    """Show a federated learning job: its state, reason and rounds (participants, RMSE, bytes, seconds)."""
    import json

    with admin_client(hub, token) as client:
        job = client.learn_job(job_id)
        if follow:
            if not as_json:
                console.print(f"learn job {job.job}: {job.status}, {job.rounds_planned} rounds on {job.target}",
                              markup=False)

            def show(r: LearnRound) -> None:
                if as_json:
                    print(json.dumps({"job": job_id, "event": "round", **r.model_dump()}), flush=True)
                else:
                    console.print(_round_line(r), markup=False, highlight=False)
            job = _wait(client, job, timeout, set(), show)
    if as_json:
        print(json.dumps({**({"event": "end"} if follow else {}), **_doc(job)}))
    elif follow:
        console.print(f"learn job {job.job}: {job.status}" + (f" ({job.reason})" if job.reason else ""),
                      markup=False)
    else:
        _print_job(job)
    if follow and job.status != "SUCCEEDED":
        raise typer.Exit(1)


@app.command("list")
@handle_errors
def list_jobs(
    hub: HubOpt = None,
    token: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the jobs as JSON.")] = False,
) -> None:
    """List the hub's federated learning jobs, newest first (at most 100)."""
    import json

    with admin_client(hub, token) as client:
        jobs = client.learn_jobs()
    if as_json:
        print(json.dumps([{**_doc(j), "target": j.target, "strategy": j.strategy, "rounds_planned": j.rounds_planned,
                           "created_at": j.created_at.isoformat()} for j in jobs]))
        return
    rows = []
    for j in jobs:
        last = j.rounds[-1] if j.rounds else None
        rows.append((j.job, j.target, j.strategy, j.status, f"{len(j.rounds)}/{j.rounds_planned}",
                     "-" if last is None or last.metric is None else f"{last.metric:.4f}",
                     j.created_at.isoformat(timespec="seconds")))
    table("Federated learning jobs", ["job", "target", "strategy", "status", "rounds", "RMSE", "created"], rows,
          ids=("job",))
