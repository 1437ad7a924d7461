"""`roost learn`: federated learning (see ``docs/learning.md``).

``roost learn supernode`` is the Run step of the ``com.roost.FlowerSuperNode`` component: a device's
SuperNode for one job. Local module: roost.learn and roost.hub are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from roost.cli.output import handle_errors
from roost.cli.serve import JsonLogOpt, _logging

app = typer.Typer(help="Federated learning on Flower: a device's SuperNode.", no_args_is_help=True)


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
