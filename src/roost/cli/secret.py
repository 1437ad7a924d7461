"""`roost secret put|list|delete`: secrets on the hub, which deploys them to devices.

A value is read from a file (``--value-file F``) or standard input (``--value-stdin``), never from
the command line (it would be in the shell history and the process list), and never printed.
Devices receive the secrets that ``cloudSecrets`` of ``aws.greengrass.SecretManager`` names in
their deployments (docs/secrets.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from roost.cli.hub import HubOpt, JsonOpt, TokenOpt, admin_client
from roost.cli.output import console, emit_json, handle_errors, table
from roost.errors import InvalidInputError

app = typer.Typer(help="Secrets on the hub: put, list, delete (deployed with aws.greengrass.SecretManager).",
                  no_args_is_help=True)

#: The largest value (AWS Secrets Manager's limit, which the hub enforces too).
MAX_VALUE_BYTES = 65536


def _read_value(value_file: Path | None, value_stdin: bool, binary: bool) -> bytes:
    if (value_file is None) == (not value_stdin):
        raise InvalidInputError("give the value with exactly one of --value-file FILE and --value-stdin",
                                code="INVALID_ARGUMENT")
    if value_file is not None:
        try:
            with open(value_file.expanduser(), "rb") as fh:
                raw = fh.read(MAX_VALUE_BYTES + 1)
        except OSError as err:
            raise InvalidInputError(f"cannot read {value_file}: {err.strerror}", code="FILE_UNREADABLE") from err
        where = str(value_file)
    else:
        raw = sys.stdin.buffer.read(MAX_VALUE_BYTES + 1)
        where = "standard input"
    if len(raw) > MAX_VALUE_BYTES:
        raise InvalidInputError(f"the value in {where} is over {MAX_VALUE_BYTES} bytes", code="INVALID_SECRET_VALUE")
    if not raw:
        raise InvalidInputError(f"the value in {where} is empty", code="INVALID_SECRET_VALUE")
    if not binary:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidInputError(f"the value in {where} is not UTF-8 text; pass --binary to store bytes",
                                    code="INVALID_SECRET_VALUE") from err
    return raw


@app.command("put")
@handle_errors
def secret_put(name: Annotated[str, typer.Argument(help="Secret name or ARN (arn:aws:secretsmanager:...).")],
               value_file: Annotated[Path | None, typer.Option("--value-file", help="Read the value from FILE.")]
               = None,
               value_stdin: Annotated[bool, typer.Option("--value-stdin", help="Read the value from standard "
                                                                               "input.")] = False,
               binary: Annotated[bool, typer.Option("--binary", help="Store the bytes as a binary secret "
                                                                     "(SecretBinary) instead of text.")] = False,
               hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Store a new version of secret NAME (AWSCURRENT; the previous one becomes AWSPREVIOUS)."""
    raw = _read_value(value_file, value_stdin, binary)
    with admin_client(hub, token) as client:
        info = client.put_secret(name, raw, binary=binary)
    if as_json:
        emit_json(info.model_dump(mode="json"))
        return
    current = next((v.version_id for v in info.versions if "AWSCURRENT" in v.stages), "?")
    console.print(f"secret {info.name}: version {current} is AWSCURRENT", highlight=False)


@app.command("list")
@handle_errors
def secret_list(hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Every secret on the hub with its versions and stages (never a value)."""
    with admin_client(hub, token) as client:
        secrets = client.secrets()
    if as_json:
        emit_json([s.model_dump(mode="json") for s in secrets])
        return
    rows = [(s.name, v.version_id, ", ".join(v.stages), "binary" if v.binary else "string",
             v.created_at.isoformat(timespec="seconds")) for s in secrets for v in s.versions]
    table("Secrets", ["name", "version", "stages", "kind", "created"], rows, ids=("version",))


@app.command("delete")
@handle_errors
def secret_delete(name: Annotated[str, typer.Argument(help="Secret name or ARN.")],
                  hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Delete every version of secret NAME; devices drop it at their next refresh."""
    with admin_client(hub, token) as client:
        info = client.delete_secret(name)
    if as_json:
        emit_json(info.model_dump(mode="json"))
        return
    console.print(f"secret {info.name} deleted ({len(info.versions)} version(s))", highlight=False)
