"""The hub's FastAPI application factory.

``create_app(HubConfig(...))`` builds the app over a :class:`~roost.hub.store.Store`;
``app_from_env()`` is the uvicorn factory ``roost hub serve`` uses (it reads ``ROOST_HUB_*``
variables, so every worker process builds the same app). No state lives in the process besides
caches: the database is the truth.

The web console (``roost.hub.console``, built separately) is mounted when present: its
``install(app)`` function is called with the app, whose ``app.state.store`` is the Store.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import FastAPI

from roost import __version__
from roost.cluster.admission import Admission
from roost.cluster.monitor import ReplicaMonitor
from roost.cluster.tokens import TokenSigner
from roost.errors import InvalidInputError
from roost.hub import migrate
from roost.hub.api import admin, components, device, secrets
from roost.hub.api import cluster as cluster_api
from roost.hub.api import errors as api_errors
from roost.hub.api import learn_jobs as learn_jobs_api
from roost.hub.api import model_gate as model_gate_api
from roost.hub.api import provision as provision_api
from roost.hub.api.auth import AuthMiddleware
from roost.hub.api.device import DeviceBatches, RevisionWatcher
from roost.hub.artifacts import DEFAULT_MAX_ARTIFACT_BYTES, ArtifactStore
from roost.hub.background import BackgroundLoop
from roost.hub.db import Database, default_url
from roost.hub.learn_runner import LearnRunner
from roost.hub.presence import Presence
from roost.hub.store import Store
from roost.observe.hub_metrics import HubMetrics, LatencyMiddleware
from roost.provision.registration import Provisioner

if TYPE_CHECKING:
    from roost.cluster.kubernetes import KubernetesBackend

logger = logging.getLogger(__name__)

ENV_ROOT = "ROOST_HUB_ROOT"
ENV_DB = "ROOST_HUB_DB"
ENV_ARTIFACTS = "ROOST_HUB_ARTIFACTS"
ENV_MAX_ARTIFACT = "ROOST_HUB_MAX_ARTIFACT_BYTES"
ENV_MIGRATE = "ROOST_HUB_MIGRATE"
ENV_SECRETS_KEY = "ROOST_HUB_SECRETS_KEY"
ENV_CLUSTER_KEY = "ROOST_HUB_CLUSTER_KEY"
ENV_BACKEND = "ROOST_HUB_CLUSTER_BACKEND"
ENV_KUBE_NAMESPACE = "ROOST_HUB_KUBE_NAMESPACE"
ENV_REPLICA_IMAGE = "ROOST_HUB_REPLICA_IMAGE"
ENV_KUBECONFIG = "ROOST_HUB_KUBECONFIG"
ENV_KUBE_CONTEXT = "ROOST_HUB_KUBE_CONTEXT"


@dataclass(frozen=True)
class HubConfig:
    root: Path
    db_url: str | None = None
    artifacts_dir: Path | None = None
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES
    migrate: bool = True
    poll_interval: float = 0.5
    #: The key that seals secret values in the database (default ROOT/secrets.key; hub replicas
    #: sharing one database need the same key file).
    secrets_key: Path | None = None
    #: The Ed25519 key that signs cluster session tokens (default ROOT/cluster.key; shared like secrets_key).
    cluster_key: Path | None = None
    #: Where edge replicas run: ``agents`` (Roost's own nodes) or ``kubernetes`` (roost.cluster.kubernetes;
    #: the centre tier stays on agents).
    cluster_backend: str = "agents"
    kube_namespace: str = "roost"
    replica_image: str | None = None
    #: A kubeconfig file (None: the in-cluster service account, else ~/.kube/config).
    kubeconfig: str | None = None
    kube_context: str | None = None

    @property
    def database_url(self) -> str:
        return self.db_url or default_url(self.root)

    @property
    def artifacts_path(self) -> Path:
        return self.artifacts_dir or self.root / "artifacts"

    @property
    def secrets_key_path(self) -> Path:
        return self.secrets_key or self.root / "secrets.key"

    @property
    def cluster_key_path(self) -> Path:
        return self.cluster_key or self.root / "cluster.key"

    def to_env(self) -> dict[str, str]:
        env = {ENV_ROOT: str(self.root), ENV_DB: self.database_url, ENV_ARTIFACTS: str(self.artifacts_path),
               ENV_MAX_ARTIFACT: str(self.max_artifact_bytes), ENV_MIGRATE: "1" if self.migrate else "0",
               ENV_SECRETS_KEY: str(self.secrets_key_path), ENV_CLUSTER_KEY: str(self.cluster_key_path),
               ENV_BACKEND: self.cluster_backend, ENV_KUBE_NAMESPACE: self.kube_namespace}
        for name, value in ((ENV_REPLICA_IMAGE, self.replica_image), (ENV_KUBECONFIG, self.kubeconfig),
                            (ENV_KUBE_CONTEXT, self.kube_context)):
            if value:
                env[name] = value
        return env

    @classmethod
    def from_env(cls) -> HubConfig:
        root = Path(os.environ.get(ENV_ROOT, "~/.roost-hub")).expanduser()
        return cls(root=root, db_url=os.environ.get(ENV_DB) or None,
                   artifacts_dir=Path(os.environ[ENV_ARTIFACTS]) if os.environ.get(ENV_ARTIFACTS) else None,
                   max_artifact_bytes=int(os.environ.get(ENV_MAX_ARTIFACT, DEFAULT_MAX_ARTIFACT_BYTES)),
                   migrate=os.environ.get(ENV_MIGRATE, "1") == "1",
                   secrets_key=Path(os.environ[ENV_SECRETS_KEY]) if os.environ.get(ENV_SECRETS_KEY) else None,
                   cluster_key=Path(os.environ[ENV_CLUSTER_KEY]) if os.environ.get(ENV_CLUSTER_KEY) else None,
                   cluster_backend=os.environ.get(ENV_BACKEND, "agents"),
                   kube_namespace=os.environ.get(ENV_KUBE_NAMESPACE, "roost"),
                   replica_image=os.environ.get(ENV_REPLICA_IMAGE) or None,
                   kubeconfig=os.environ.get(ENV_KUBECONFIG) or None,
                   kube_context=os.environ.get(ENV_KUBE_CONTEXT) or None)


def open_store(config: HubConfig) -> Store:
    """The database (migrated when ``config.migrate``) and artifact folder behind a Store."""
    config.root.mkdir(parents=True, exist_ok=True)
    db = Database(config.database_url)
    if config.migrate:
        migrate.upgrade(db)
    artifacts_dir = config.artifacts_path
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    store = Store(db, ArtifactStore(artifacts_dir, config.max_artifact_bytes))
    store.secret_key_path = config.secrets_key_path
    store.cluster_key_path = config.cluster_key_path
    return store


def create_app(config: HubConfig | None = None, *, store: Store | None = None) -> FastAPI:
    if store is None:
        store = open_store(config or HubConfig.from_env())
    watcher = RevisionWatcher(store, interval=config.poll_interval if config else 0.5)
    presence = Presence(store)
    signer = TokenSigner.from_file(store.cluster_key_path or store.artifacts.root.parent / "cluster.key")
    cluster = Admission(store, signer, wake=watcher.refresh, kube=_kubernetes(config, signer))
    monitor = BackgroundLoop(lambda: ReplicaMonitor(store, signer, cluster.http(), wake=watcher.refresh).run())
    provisioner = Provisioner(store, config.root if config else store.artifacts.root.parent)
    learn_runner = LearnRunner(store, (config.root if config else store.artifacts.root.parent) / "learn",
                               os.environ.get("ROOST_LEARN_SUPERLINK_HOST", "127.0.0.1"))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Every transaction runs in a worker thread: no more threads than pooled connections (more
        # would open and close overflow connections under load and contend for the GIL).
        anyio.to_thread.current_default_thread_limiter().total_tokens = store.db.pool_size
        watcher.ensure_started()
        monitor.ensure_started()
        await anyio.to_thread.run_sync(learn_runner.recover)  # jobs whose SuperLink died with an old process
        restore = _on_stop_signal(watcher.close_polls)
        try:
            yield
        finally:
            restore()
            await provisioner.stop()
            await anyio.to_thread.run_sync(learn_runner.close)
            await monitor.stop()
            await cluster.close()
            if cluster.kube is not None:
                cluster.kube.close()
            await watcher.stop()
            await presence.stop()
            store.db.dispose()

    # FastAPI's native OpenTelemetry hooks are off: the hub configures no OpenTelemetry provider, and
    # asking whether one exists costs ~5% of a device request at fleet scale.
    app = FastAPI(title="Roost hub", version=__version__, lifespan=lifespan,
                  telemetry={"tracing": False, "metrics": False, "logs": False},
                  description="Fleet control plane of Roost: devices, components, artifacts, deployments.")
    app.state.store = store
    app.state.watcher = watcher
    app.state.admission = cluster
    app.state.provisioner = provisioner
    app.state.learn_runner = learn_runner
    app.state.device_batches = DeviceBatches(store, max_in_flight=1 if store.db.is_sqlite else 2)
    api_errors.install(app)
    # Routes match in order: the device routes (most of the traffic of a fleet) first.
    app.include_router(device.router)
    app.include_router(components.router)
    app.include_router(model_gate_api.router)
    app.include_router(model_gate_api.device_router)
    app.include_router(learn_jobs_api.router)
    app.include_router(admin.router)
    app.include_router(secrets.device_router)
    app.include_router(secrets.router)
    app.include_router(cluster_api.device_router)
    app.include_router(cluster_api.router)
    app.include_router(cluster_api.compat_router)
    _install_metrics(app, store)
    app.include_router(provision_api.router)
    app.include_router(provision_api.dist_router)
    app.add_middleware(AuthMiddleware, store=store, presence=presence)
    app.add_middleware(LatencyMiddleware, metrics=app.state.hub_metrics)  # outermost: 401s are timed too

    _document_bearer_auth(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if importlib.util.find_spec("roost.hub.console") is not None:
        console = importlib.import_module("roost.hub.console")
        install = getattr(console, "install", None)
        if callable(install):
            install(app)
    return app


def _install_metrics(app: FastAPI, store: Store) -> None:
    """/metrics, /metrics/fleet, Prometheus service discovery and snapshots (roost.hub.api.metrics)."""
    from roost.hub.api import metrics as metrics_api

    app.state.hub_metrics = HubMetrics(store)
    app.include_router(metrics_api.device_router)
    app.include_router(metrics_api.router)
    app.include_router(metrics_api.scrape_router)


def _kubernetes(config: HubConfig | None, signer: TokenSigner) -> KubernetesBackend | None:
    """The Kubernetes backend when ``config`` asks for it (``--backend kubernetes``)."""
    if config is None or config.cluster_backend == "agents":
        return None
    if config.cluster_backend != "kubernetes":
        raise InvalidInputError(f"cluster backend {config.cluster_backend!r}: use agents or kubernetes",
                                code="INVALID_ARGUMENT")
    from roost.cluster.kubernetes import KubernetesBackend

    if not config.replica_image:
        raise InvalidInputError("the kubernetes backend needs --replica-image (the image replicas run; "
                                "deploy/docker/Dockerfile builds one)", code="INVALID_ARGUMENT")
    if config.kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return KubernetesBackend.in_cluster(config.kube_namespace, config.replica_image,
                                            hub_public_key=signer.public_key())
    return KubernetesBackend.from_kubeconfig(config.kubeconfig, config.kube_context, config.kube_namespace,
                                             config.replica_image, hub_public_key=signer.public_key())


def _on_stop_signal(callback: Callable[[], None]) -> Callable[[], None]:
    """Also run ``callback`` (in the event loop) on SIGTERM/SIGINT, before the server's own handler.

    The server (uvicorn) stops on those signals by waiting for in-flight requests, then cancelling
    them: a long poll would be cancelled mid-wait (a 500 and a traceback). Chained here, the signal
    first wakes the long polls, which answer 204 at once. Returns what restores the handlers. Only
    in the main thread (a hub run in a thread by tests has no signals of its own).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)
        before = previous.get(signum)
        if callable(before):
            before(signum, frame)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, before)
    return restore


def _document_bearer_auth(app: FastAPI) -> None:
    """Declare the bearer scheme in the OpenAPI document (enforced by :class:`AuthMiddleware`)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = generate()
        if fresh:
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                "type": "http", "scheme": "bearer",
                "description": "An admin API token (rst_admin_...) or a device credential (rst_dev_...)"}
            for path, operations in schema.get("paths", {}).items():
                if path.rstrip("/") == "/v1/enroll":
                    continue
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_env() -> FastAPI:
    """The uvicorn factory for ``roost hub serve`` (configuration from ``ROOST_HUB_*``)."""
    return create_app(HubConfig.from_env())
