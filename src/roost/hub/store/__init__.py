"""The hub's storage interface: every operation the API (and the console) needs.

No FastAPI here. :class:`Store` owns a :class:`~roost.hub.db.Database`, an
:class:`~roost.hub.artifacts.ArtifactStore` and a clock (injectable for tests). Each method is
one transaction (retried on a PostgreSQL deadlock or serialisation failure) and returns the
contract's models (:mod:`roost.hub.contract`), which the REST layer serialises as they are.

Concurrency: several hub processes may share one PostgreSQL. Read-modify-writes lock the rows
they depend on (``SELECT ... FOR UPDATE``: the enrolment token, the deployment, the revision
counter); unique constraints are the final guard (device names, component versions, report ids).
On SQLite every write transaction holds the database write lock (``BEGIN IMMEDIATE``).
"""


from roost.hub.reports import Report, ReportResult
from roost.hub.store.auth import SEEN_THROTTLE, AuthStore
from roost.hub.store.base import Clock, StoreBase, utcnow
from roost.hub.store.cluster import ClusterStore
from roost.hub.store.deployments import FAILURE_POLICIES, DeploymentStore, parse_target
from roost.hub.store.fleet import ONLINE_WINDOW, UNHEALTHY_STATES, FleetStore
from roost.hub.store.learn_jobs import LearnJobStore
from roost.hub.store.metrics import MetricsStore
from roost.hub.store.models_gate import ModelGateStore
from roost.hub.store.provision import ProvisionStore
from roost.hub.store.records import ArtifactLocation, Principal
from roost.hub.store.registry import INLINE_ARTIFACT_BYTES, RegistryStore
from roost.hub.store.secrets import SecretStore
from roost.hub.store.sync import SyncStore


class Store(AuthStore, RegistryStore, ClusterStore, SyncStore, SecretStore, MetricsStore, ProvisionStore,
            ModelGateStore, LearnJobStore):
    """Every hub operation, each one transaction. See the module docstring.

    The parts: :mod:`~roost.hub.store.auth` (tokens, enrolment), :mod:`~roost.hub.store.fleet`
    (devices, groups), :mod:`~roost.hub.store.registry` (components, artifacts),
    :mod:`~roost.hub.store.deployments`, :mod:`~roost.hub.store.sync` (what devices call),
    :mod:`~roost.hub.store.secrets` (secrets, sealed with the hub's key), :mod:`~roost.hub.store.cluster`
    (edge-cluster nodes, service types, admission, replicas) with
    :mod:`~roost.hub.store.cluster_sessions` (its sessions), :mod:`~roost.hub.store.metrics`
    (devices' metrics snapshots and history, the hub's gauges),
    :mod:`~roost.hub.store.provision` (devices registered over SSH, pinned host keys),
    :mod:`~roost.hub.store.models_gate` (validation reports, the deployment gate, benchmarks,
    recommendation), over
    :mod:`~roost.hub.store.base` (transactions, clock); results are the contract's models
    (:mod:`roost.hub.contract`), plus :mod:`~roost.hub.store.records` (principal, artifact location).
    """


__all__ = [
    "FAILURE_POLICIES",
    "INLINE_ARTIFACT_BYTES",
    "ONLINE_WINDOW",
    "SEEN_THROTTLE",
    "UNHEALTHY_STATES",
    "ArtifactLocation",
    "AuthStore",
    "Clock",
    "ClusterStore",
    "DeploymentStore",
    "FleetStore",
    "MetricsStore",
    "ModelGateStore",
    "Principal",
    "ProvisionStore",
    "RegistryStore",
    "Report",
    "ReportResult",
    "SecretStore",
    "Store",
    "StoreBase",
    "SyncStore",
    "parse_target",
    "utcnow",
]
