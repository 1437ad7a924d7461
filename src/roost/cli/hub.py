"""`roost hub init|serve`: the fleet hub; and what every command that talks to a hub shares.

The admin token comes from ``--token`` or ``ROOST_TOKEN``; the hub URL from ``--hub`` or
``ROOST_HUB``. The hub's errors keep their codes and map to the documented exit codes. The hub
client (httpx, the contract's models) is imported only when a command talks to a hub.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from roost.cli.output import console, emit_json, handle_errors
from roost.errors import ConflictError, InvalidInputError

if TYPE_CHECKING:
    from roost.hub.client import HubClient

app = typer.Typer(help="Run the fleet hub: devices, components, deployments, REST API.", no_args_is_help=True)

HubRootOpt = Annotated[Path, typer.Option("--root", help="Hub root folder (database, artifacts).")]
DbOpt = Annotated[str | None, typer.Option("--db", envvar="ROOST_HUB_DB",
                                           help="Database URL (default sqlite:///ROOT/hub.db; "
                                                "postgresql+psycopg://... for fleets; or $ROOST_HUB_DB).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
HubOpt = Annotated[str | None, typer.Option("--hub", envvar="ROOST_HUB",
                                            help="Hub URL, e.g. http://hub:8080 (default $ROOST_HUB).")]
#: ``--hub`` on commands that also have a local form: only the option switches (no $ROOST_HUB), so an
#: environment variable cannot silently turn a local deployment into a fleet one.
HubSwitchOpt = Annotated[str | None, typer.Option("--hub", help="Hub URL: act on the hub instead of this "
                                                                "device ($ROOST_HUB is not read here: the "
                                                                "option alone switches).")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="ROOST_TOKEN", show_default=False,
                                              help="Admin API token (or $ROOST_TOKEN).")]


def admin_client(hub: str | None, token: str | None) -> HubClient:
    if not hub:
        raise InvalidInputError("no hub given: pass --hub URL or set ROOST_HUB", code="HUB_REQUIRED")
    if not token:
        raise InvalidInputError("no API token given: pass --token or set ROOST_TOKEN (see `roost hub init`)",
                                code="TOKEN_REQUIRED")
    from roost.hub.client import HubClient

    return HubClient(hub, token)


def parse_pairs(items: list[str], option: str, *, allow_remove: bool = False) -> dict[str, str | None]:
    """``k=v`` items (and ``k-`` meaning "remove k" when ``allow_remove``)."""
    out: dict[str, str | None] = {}
    for item in items:
        if allow_remove and item.endswith("-") and "=" not in item and len(item) > 1:
            out[item[:-1]] = None
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"{option} {item!r}: expected KEY=VALUE", code="INVALID_ARGUMENT")
        out[key.strip()] = value
    return out




@app.command("init")
@handle_errors
def init(root: HubRootOpt, db: DbOpt = None,
         name: Annotated[str, typer.Option("--name", help="Name of the admin token.")] = "admin",
         force: Annotated[bool, typer.Option("--force", help=(
             "Mint another admin token although the hub already has one (the existing tokens keep "
             "working; nothing else changes)."))] = False,
         as_json: JsonOpt = False) -> None:
    """Create the hub root, migrate the database and print a new admin API token (shown once).

    Run on an initialised hub it refuses (HUB_ALREADY_INITIALISED, exit code 7) unless --force.
    """
    from roost.hub.app import HubConfig, open_store

    config = HubConfig(root=root.expanduser().resolve(), db_url=db)
    store = open_store(config)
    try:
        existing = store.admin_token_names()
        if existing and not force:
            raise ConflictError(
                f"the hub at {config.root} is already initialised ({len(existing)} admin token(s): "
                f"{', '.join(existing)}); use the token you were given, or pass --force to mint another admin "
                "token (the existing ones keep working)", code="HUB_ALREADY_INITIALISED")
        token = store.create_admin_token(name)
        store.ensure_secret_key()  # seals secret values in the database (0600; copy it to hub replicas)
    finally:
        store.db.dispose()
    from roost.provision.identity import ensure_identity

    identity = ensure_identity(config.root)  # the hub's SSH key (0600) for devices registered over SSH
    if as_json:
        emit_json({"token": token, "ssh_public_key": identity.public_key})
    else:
        console.print(f"hub initialised at {config.root}")
        console.print("admin API token (shown once, keep it secret):")
        console.print(token, highlight=False, soft_wrap=True)


@app.command("metrics-token")
@handle_errors
def metrics_token(root: HubRootOpt, db: DbOpt = None,
                  name: Annotated[str, typer.Option("--name", help="Name of the token.")] = "metrics",
                  as_json: JsonOpt = False) -> None:
    """Print a new metrics token (shown once): it reads /metrics, /metrics/fleet and /v1/prometheus/targets
    only (Prometheus' bearer token; see docs/metrics.md). Admins may also POST /v1/metrics-tokens."""
    from roost.hub.app import HubConfig, open_store

    store = open_store(HubConfig(root=root.expanduser().resolve(), db_url=db))
    try:
        token = store.create_metrics_token(name)
    finally:
        store.db.dispose()
    if as_json:
        emit_json({"name": name, "token": token})
    else:
        console.print("metrics token (shown once, keep it secret):")
        console.print(token, highlight=False, soft_wrap=True)


@app.command("ssh-key")
@handle_errors
def ssh_key(root: HubRootOpt, as_json: JsonOpt = False) -> None:
    """Print the hub's SSH public key (one authorized_keys line) for the accounts of devices to register.

    The device grants the hub exactly the privilege of the account whose ~/.ssh/authorized_keys holds it."""
    from roost.provision.identity import ensure_identity

    identity = ensure_identity(root.expanduser().resolve())
    if as_json:
        emit_json({"public_key": identity.public_key, "fingerprint": identity.fingerprint})
    else:
        print(identity.public_key)


wheelhouse_app = typer.Typer(help="The wheels the hub serves to devices that reach no package index.",
                             no_args_is_help=True)
app.add_typer(wheelhouse_app, name="wheelhouse")


@wheelhouse_app.command("build")
@handle_errors
def wheelhouse_build(root: HubRootOpt, as_json: JsonOpt = False) -> None:
    """Build ROOT/wheelhouse: the Roost wheel and all its dependencies, from this machine's package index
    (then `roost device add ... --wheelhouse` installs devices from the hub alone)."""
    from roost.provision.dist import build_wheelhouse

    wheels = build_wheelhouse(root.expanduser().resolve())
    if as_json:
        emit_json({"wheels": [w.name for w in wheels]})
    else:
        console.print(f"{len(wheels)} wheels in {root / 'wheelhouse'}")


@app.command("serve")
@handle_errors
def serve(root: HubRootOpt, db: DbOpt = None,
          artifacts: Annotated[Path | None, typer.Option("--artifacts", help="Artifact folder "
                                                                             "(default ROOT/artifacts).")] = None,
          host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
          port: Annotated[int, typer.Option("--port")] = 8080,
          workers: Annotated[int, typer.Option("--workers", min=1, help=(
              "Worker processes, all on the one database; for thousands of devices, one per core."))] = 1,
          max_artifact_bytes: Annotated[int, typer.Option("--max-artifact-bytes", min=1,
                                                          help="Largest artifact file accepted.")]
          = 1024 * 1024 * 1024,
          log_level: Annotated[str, typer.Option("--log-level")] = "info",
          backend: Annotated[str, typer.Option("--backend", help="Where the cluster's edge replicas run: agents "
                                                                 "(Roost's own nodes) or kubernetes.")] = "agents",
          kube_namespace: Annotated[str, typer.Option("--kube-namespace", help="Namespace of the kubernetes "
                                                                               "backend's Deployments.")] = "roost",
          replica_image: Annotated[str | None, typer.Option("--replica-image", help="Image the kubernetes "
                                                                                    "backend's replicas run.")]
          = None,
          kubeconfig: Annotated[str | None, typer.Option("--kubeconfig", help="kubeconfig of the kubernetes backend "
                                                                              "(default: in-cluster, else "
                                                                              "~/.kube/config).")] = None,
          kube_context: Annotated[str | None, typer.Option("--kube-context")] = None,
          as_json: JsonOpt = False) -> None:
    """Serve the hub's REST API (migrates the database first)."""
    import os
    import signal

    import uvicorn

    from roost.hub import migrate
    from roost.hub.app import HubConfig
    from roost.hub.db import Database

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = HubConfig(root=root.expanduser().resolve(), db_url=db,
                       artifacts_dir=artifacts.expanduser().resolve() if artifacts else None,
                       max_artifact_bytes=max_artifact_bytes, cluster_backend=backend, kube_namespace=kube_namespace,
                       replica_image=replica_image, kubeconfig=kubeconfig, kube_context=kube_context)
    if backend not in ("agents", "kubernetes"):
        raise InvalidInputError(f"--backend {backend!r}: use agents or kubernetes", code="INVALID_ARGUMENT")
    if backend == "kubernetes" and not replica_image:
        raise InvalidInputError("--backend kubernetes needs --replica-image", code="INVALID_ARGUMENT")
    config.root.mkdir(parents=True, exist_ok=True)
    database = Database(config.database_url)
    try:
        migrate.upgrade(database)
    finally:
        database.dispose()
    os.environ.update(config.to_env())
    if not as_json:
        console.print(f"hub on http://{host}:{port} (root {config.root})")
    # SIGTERM stops the server gracefully (long polls are answered, see roost.hub.app); uvicorn then
    # raises the signal again for the handler it found, which must not kill the process: exit 0.
    previous = signal.signal(signal.SIGTERM, lambda _sig, _frame: None)
    try:
        uvicorn.run("roost.hub.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level.lower(), proxy_headers=True, timeout_graceful_shutdown=5,
                    # devices keep one connection open between long polls and reports
                    timeout_keep_alive=75)
    except KeyboardInterrupt:  # SIGINT (Ctrl-C), re-raised by uvicorn once it has stopped
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
