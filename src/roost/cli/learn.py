"""`roost learn`: federated learning (see ``docs/learning.md``).

``roost learn supernode`` is the Run step of the ``com.roost.FlowerSuperNode`` component: a device's
SuperNode for one job. Local module: roost.learn and roost.hub are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from roost.cli.hub import HubOpt, TokenOpt, admin_client
from roost.cli.output import console, handle_errors
from roost.cli.serve import JsonLogOpt, _logging

app = typer.Typer(help="Federated learning on Flower: jobs at the hub, a device's SuperNode.", no_args_is_help=True)


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
    import time

    from roost.errors import InvalidInputError, OperationTimeoutError
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
        deadline = time.monotonic() + timeout
        while wait and job.status not in ("SUCCEEDED", "FAILED"):
            if time.monotonic() > deadline:
                raise OperationTimeoutError(f"learn job {job.job} is still {job.status} after {timeout:.0f} s",
                                            code="TIMEOUT")
            time.sleep(1.0)
            job = client.learn_job(job.job)
    doc = {"job": job.job, "status": job.status, "rounds": [r.model_dump() for r in job.rounds],
           "final_metric": job.final_metric, "centralised_metric": job.centralised_metric,
           "component": job.component, "reason": job.reason}
    if as_json:
        print(json.dumps(doc))
    else:
        console.print(f"learn job {job.job}: {job.status}" + (f" ({job.reason})" if job.reason else ""))
        for r in job.rounds:
            console.print(f"  round {r.round}: {r.participants} participants, RMSE {r.metric}, {r.bytes} bytes")
        if job.component:
            console.print(f"  published {job.component} (its validation report: roost component show)")
    if wait and job.status != "SUCCEEDED":
        raise typer.Exit(1)
