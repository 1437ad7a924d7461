"""The Kubernetes backend: the hub's admission drives a Kubernetes cluster instead of Roost agents.

Each service type is a Deployment ``roost-<type>`` (its pods run ``roost cluster replica``) behind a
NodePort Service of the same name, in one namespace. :meth:`KubernetesBackend.admit` adds a replica:

1. ensure the Deployment and the Service exist (created when absent; a concurrent creator's 409 is fine);
2. capacity: the nodes' allocatable minus the requests of every non-terminated pod, minus the
   replicas already asked for but not yet placed (``spec.replicas`` beyond the pods bound to a node, of
   every Roost Deployment), checked with :func:`roost.cluster.placement.candidates` on the edge tier
   (nodes labelled ``roost.io/tier=centre`` are the centre tier, which the hub offloads to). No edge node
   has room: ``CLUSTER_FULL``; no node could ever run it: ``SERVICE_UNSCHEDULABLE``; ``maxReplicas``
   reached: ``CLUSTER_FULL``;
3. scale +1 through the scale subresource, carrying the ``resourceVersion`` of the Deployment as read
   before step 2, so that a concurrent writer elsewhere (another hub) makes the update fail with 409 and
   steps 2-3 are done again; admissions through one backend are serialised by an :class:`asyncio.Lock`
   (held for steps 2-3, not while waiting);
4. wait for readiness by *watching* the Deployment (``status.availableReplicas >= desired``), never by
   polling; the pods' readiness probe (``GET /healthz``) answers 200 only once the replica's model answered
   its self-test. A timeout: ``REPLICA_NOT_READY`` (naming why the pods are not ready), and the replica
   asked for is given back;
5. the endpoint ``ws://<node address>:<nodePort>/v1/stream`` of the node of the newest ready pod (the
   Service has ``externalTrafficPolicy: Local``, so that node's port reaches the pods on that node only).

Replicas of one Deployment share one replica id (the Deployment's name): behind a Service the cluster,
not Roost, picks the pod a websocket lands on, so session tokens are issued for the Deployment (see
docs/kubernetes.md for what that means for sessions per replica).

The official client is synchronous: every call runs in a thread (:func:`asyncio.to_thread`). Errors of the
API become Roost errors with specific codes (403 ``KUBERNETES_FORBIDDEN``, 401 ``KUBERNETES_UNAUTHORIZED``,
404 ``KUBERNETES_NOT_FOUND``, unreachable / 429 / 5xx ``KUBERNETES_UNAVAILABLE``, the rest
``KUBERNETES_API_ERROR``). ``kubernetes`` is imported lazily (the agent never loads this module, but the
hub's CLI may import it without a cluster).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from roost.cluster.errors import (
    ClusterFullError,
    KubernetesConfigError,
    KubernetesConflictError,
    KubernetesError,
    KubernetesForbiddenError,
    KubernetesNotFoundError,
    KubernetesUnavailableError,
    QuantityError,
    ReplicaNotReadyError,
    UnschedulableError,
)
from roost.cluster.kubernetes_manifests import (  # the manifests, re-exported: callers import them from here too
    MANAGED_BY,
    REPLICA_PORT,
    TYPE_LABEL,
    affinity_from_node_affinity,
    build_manifests,
    deployment_name,
    labels,
    node_affinity,
    replica_command,
)
from roost.cluster.placement import NodeView, Tier, candidates, choose, explain_unschedulable
from roost.cluster.quantity import cpu_millis, memory_bytes
from roost.cluster.service_types import ServiceType
from roost.errors import InvalidInputError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The node label that puts a node into the centre tier (``roost.io/tier=centre``); others are edge.
TIER_LABEL = "roost.io/tier"
#: Pods in these phases hold no resources (the field selector of the pod listing excludes them).
TERMINATED_PHASES = ("Succeeded", "Failed")
#: Taint effects that keep a pod without a matching toleration (Roost's have none) off a node.
BLOCKING_TAINTS = ("NoSchedule", "NoExecute")
#: A scale update that keeps meeting 409 (another writer) is retried this often, then ``KUBERNETES_CONFLICT``.
MAX_CONFLICT_RETRIES = 5
#: The longest message of the API quoted in an error.
MAX_API_MESSAGE = 300
_UNBOUNDED = 2**31
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")


@dataclass(frozen=True)
class KubeReplica:
    """What an admission got: the Deployment scaled, its replicas now, and where the client streams.

    ``deployment`` is also the replica id session tokens are issued for (every pod of the Deployment
    verifies tokens for it). ``node`` is the node whose address ``endpoint`` uses; ``pod`` the newest ready
    pod (the one most likely just started; the Service may still send a connection to another pod on that
    node).
    """

    deployment: str
    replicas: int
    node_port: int
    endpoint: str
    node: str = ""
    pod: str = ""


def _api_message(body: Any) -> str:
    try:
        parsed = json.loads(body) if isinstance(body, str | bytes) else None
    except ValueError:
        parsed = None
    text = str(parsed.get("message", "")) if isinstance(parsed, dict) else (str(body) if body else "")
    return text[:MAX_API_MESSAGE]


def map_api_error(err: BaseException, what: str) -> KubernetesError:
    """A Roost error for an exception of the client (``what`` names the call)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(err, ApiException):
        status = int(err.status or 0)
        message = _api_message(err.body) or str(err.reason or "")
        text = f"{what}: the Kubernetes API answered {status}: {message}"
        if status == 0:
            return KubernetesUnavailableError(f"{what}: the Kubernetes API did not answer: {message}")
        if status == 403:
            return KubernetesForbiddenError(f"{text} (the hub's service account needs the RBAC of "
                                            "deploy/kubernetes/rbac.yaml)")
        if status == 401:
            return KubernetesForbiddenError(text, code="KUBERNETES_UNAUTHORIZED")
        if status == 404:
            return KubernetesNotFoundError(text)
        if status == 409:
            return KubernetesConflictError(text)
        if status == 429 or status >= 500:
            return KubernetesUnavailableError(text)
        return KubernetesError(text)
    if isinstance(err, HTTPError | OSError):
        return KubernetesUnavailableError(f"{what}: the Kubernetes API server cannot be reached: "
                                          f"{type(err).__name__}: {str(err)[:MAX_API_MESSAGE]}")
    return KubernetesError(f"{what}: {type(err).__name__}: {str(err)[:MAX_API_MESSAGE]}")


def _status(err: BaseException) -> int | None:
    from kubernetes.client.exceptions import ApiException

    return int(err.status or 0) if isinstance(err, ApiException) else None


def pod_requests(pod: Mapping[str, Any]) -> tuple[int, int]:
    """A pod's effective (memory bytes, cpu millis) requests, as the scheduler counts them: the larger of
    the containers' sum and any one init container, plus the pod overhead."""
    spec = pod.get("spec") or {}

    def one(container: Mapping[str, Any]) -> tuple[int, int]:
        req = (container.get("resources") or {}).get("requests") or {}
        return (memory_bytes(req["memory"], "pod memory request") if "memory" in req else 0,
                cpu_millis(req["cpu"], "pod cpu request") if "cpu" in req else 0)

    sums = [one(c) for c in spec.get("containers") or []]
    inits = [one(c) for c in spec.get("initContainers") or []]
    memory = max(sum(m for m, _ in sums), max((m for m, _ in inits), default=0))
    cpu = max(sum(c for _, c in sums), max((c for _, c in inits), default=0))
    overhead = spec.get("overhead") or {}
    memory += memory_bytes(overhead["memory"]) if "memory" in overhead else 0
    cpu += cpu_millis(overhead["cpu"]) if "cpu" in overhead else 0
    return memory, cpu


def node_view(node: Mapping[str, Any], requested: tuple[int, int] = (0, 0)) -> NodeView:
    """A node object of the API as placement sees it (``requested``: its pods' requests)."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    node_labels = dict(meta.get("labels") or {})
    tier: Tier = "centre" if node_labels.get(TIER_LABEL) == "centre" else "edge"
    allocatable = status.get("allocatable") or {}
    online = True
    try:
        memory = memory_bytes(allocatable.get("memory", 0), f"node {meta.get('name')} allocatable memory")
        cpu = cpu_millis(allocatable.get("cpu", 0), f"node {meta.get('name')} allocatable cpu")
    except QuantityError as err:
        log.warning("node %s is counted as offline: %s", meta.get("name"), err)
        memory, cpu, online = 0, 0, False
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    tainted = any(t.get("effect") in BLOCKING_TAINTS for t in spec.get("taints") or [])
    online = online and ready and not spec.get("unschedulable", False) and not tainted
    return NodeView(name=str(meta.get("name", "")), tier=tier, labels=node_labels, memory_bytes=memory,
                    cpu_millis=cpu, requested_memory=requested[0], requested_cpu=requested[1], online=online)


def node_address(node: Mapping[str, Any]) -> str | None:
    """A node's ExternalIP, else InternalIP, else Hostname."""
    addresses = (node.get("status") or {}).get("addresses") or []
    for kind in ("ExternalIP", "InternalIP", "Hostname"):
        for a in addresses:
            if a.get("type") == kind and a.get("address"):
                return str(a["address"])
    return None


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _why_not_ready(pods: list[dict[str, Any]]) -> str:
    reasons: list[str] = []
    for pod in pods[-5:]:
        name = (pod.get("metadata") or {}).get("name", "?")
        status = pod.get("status") or {}
        for c in status.get("conditions") or []:
            if c.get("status") == "False" and c.get("reason"):
                reasons.append(f"{name}: {c.get('reason')}: {str(c.get('message', ''))[:200]}")
                break
        else:
            for cs in status.get("containerStatuses") or []:
                waiting = (cs.get("state") or {}).get("waiting")
                if waiting:
                    reasons.append(f"{name}: {waiting.get('reason')}: {str(waiting.get('message', ''))[:200]}")
                    break
            else:
                reasons.append(f"{name}: {status.get('phase', 'unknown phase')}")
    return "; ".join(reasons) if reasons else "no pod of the Deployment exists yet"


class KubernetesBackend:
    """Admits replicas of service types onto a Kubernetes cluster (see the module's docstring)."""

    def __init__(self, api_client: ApiClient, namespace: str, image: str, *, hub_public_key: str,
                 node_address: Callable[[str], str] | None = None, request_timeout: float = 10.0) -> None:
        from kubernetes import client

        if not _DNS_LABEL.fullmatch(namespace):
            raise KubernetesConfigError(f"namespace {namespace!r} is not a DNS label (lower-case letters, digits, "
                                        "'-', at most 63)")
        if not _IMAGE.fullmatch(image):
            raise KubernetesConfigError(f"image {image!r} is not an image reference (like "
                                        "registry.example/roost:0.1.0)")
        if not re.fullmatch(r"[A-Za-z0-9_-]{43}", hub_public_key):
            raise KubernetesConfigError("hub_public_key is not base64url of a 32-byte Ed25519 key "
                                        "(TokenSigner.public_key())")
        self.api_client = api_client
        self.namespace = namespace
        self.image = image
        self.hub_public_key = hub_public_key
        self._node_address = node_address
        self._timeout = request_timeout
        self._core = client.CoreV1Api(api_client)
        self._apps = client.AppsV1Api(api_client)
        self._lock = asyncio.Lock()

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_kubeconfig(cls, path: str | None, context: str | None, namespace: str, image: str, *,
                        hub_public_key: str, node_address: Callable[[str], str] | None = None) -> KubernetesBackend:
        """A backend on the cluster of a kubeconfig file (``None``: ``$KUBECONFIG`` or ``~/.kube/config``)."""
        from kubernetes import config

        try:
            api = config.new_client_from_config(config_file=path, context=context, persist_config=False)
        except (config.ConfigException, OSError, ValueError, TypeError) as err:
            raise KubernetesConfigError(f"the kubeconfig {path or '(default)'} does not load"
                                        f"{' context ' + context if context else ''}: {err}") from err
        return cls(api, namespace, image, hub_public_key=hub_public_key, node_address=node_address)

    @classmethod
    def in_cluster(cls, namespace: str, image: str, *, hub_public_key: str,
                   node_address: Callable[[str], str] | None = None) -> KubernetesBackend:
        """A backend with the pod's own service account (the hub running in the cluster)."""
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException as err:
            raise KubernetesConfigError(f"not running in a Kubernetes pod with a service account: {err}") from err
        return cls(client.ApiClient(configuration), namespace, image, hub_public_key=hub_public_key,
                   node_address=node_address)

    # -- pure -----------------------------------------------------------------------------------------
    def manifests(self, service: ServiceType) -> tuple[dict[str, Any], dict[str, Any]]:
        """The Deployment and the Service of ``service`` in this backend's namespace. Pure, no I/O."""
        return build_manifests(service, self.namespace, self.image, self.hub_public_key)

    # -- calls ----------------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` with the request timeout; the client's errors mapped (blocking)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=self._timeout, **kwargs)
        except (ApiException, HTTPError, OSError) as err:
            raise map_api_error(err, what) from err

    def _dict(self, obj: Any) -> dict[str, Any]:
        out: Any = self.api_client.sanitize_for_serialization(obj)
        return out if isinstance(out, dict) else {}

    def _list(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return [i for i in self._dict(self._call(what, fn, *args, **kwargs)).get("items") or []
                if isinstance(i, dict)]

    # -- nodes ----------------------------------------------------------------------------------------
    def nodes(self) -> list[NodeView]:
        """Every node with its allocatable minus the requests of its non-terminated pods (blocking)."""
        nodes = self._list("list nodes", self._core.list_node)
        pods = self._list("list pods", self._core.list_pod_for_all_namespaces,
                          field_selector=",".join(f"status.phase!={p}" for p in TERMINATED_PHASES))
        requested: dict[str, list[int]] = {}
        for pod in pods:
            node = (pod.get("spec") or {}).get("nodeName")
            if not node:
                continue
            try:
                memory, cpu = pod_requests(pod)
            except QuantityError as err:
                log.warning("pod %s: its requests are not counted: %s", (pod.get("metadata") or {}).get("name"), err)
                continue
            total = requested.setdefault(str(node), [0, 0])
            total[0] += memory
            total[1] += cpu
        views: list[NodeView] = []
        for n in nodes:
            memory, cpu = requested.get(str((n.get("metadata") or {}).get("name")), [0, 0])
            views.append(node_view(n, (memory, cpu)))
        return views

    def _in_flight(self) -> list[ServiceType]:
        """One probe per replica that Roost's Deployments asked for and no node holds yet: its requests and
        the Deployment's node affinity."""
        selector = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
        deployments = self._list("list deployments", self._apps.list_namespaced_deployment, self.namespace,
                                 label_selector=selector)
        pods = self._list("list pods", self._core.list_namespaced_pod, self.namespace, label_selector=selector,
                          field_selector=",".join(f"status.phase!={p}" for p in TERMINATED_PHASES))
        bound: dict[str, int] = {}
        for pod in pods:
            meta = pod.get("metadata") or {}
            kind = (meta.get("labels") or {}).get(TYPE_LABEL)
            if kind and (pod.get("spec") or {}).get("nodeName") and not meta.get("deletionTimestamp"):
                bound[kind] = bound.get(kind, 0) + 1
        out: list[ServiceType] = []
        for dep in deployments:
            kind = ((dep.get("metadata") or {}).get("labels") or {}).get(TYPE_LABEL)
            missing = int((dep.get("spec") or {}).get("replicas") or 0) - bound.get(str(kind), 0)
            if not kind or missing <= 0:
                continue
            template = ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}
            try:
                memory, cpu = pod_requests({"spec": template})
                probe = ServiceType.model_validate({
                    "name": "in-flight", "component": "in-flight",
                    "resources": {"requests": {"memory": str(memory), "cpu": f"{cpu}m"}},
                    "affinity": affinity_from_node_affinity((template.get("affinity") or {}).get("nodeAffinity"))})
            except (QuantityError, ValueError) as err:
                log.warning("Deployment of %s: its pending replicas are not counted: %s", kind, err)
                continue
            out.extend([probe] * missing)
        return out

    def capacity_view(self) -> list[NodeView]:
        """:meth:`nodes` with the replicas asked for but not yet bound placed where placement would put them
        (so that a second admission does not count the room the first one's pod is about to take)."""
        nodes = self.nodes()
        for probe in self._in_flight():
            best = choose(probe, nodes, "edge") or choose(probe, nodes, "centre")
            if best is not None:
                nodes = [n.with_replica(probe) if n.name == best.name else n for n in nodes]
        return nodes

    # -- objects --------------------------------------------------------------------------------------
    def _ensure(self, service: ServiceType) -> tuple[dict[str, Any], dict[str, Any]]:
        """The type's Deployment and Service, created when absent (blocking)."""
        deployment, svc = self.manifests(service)
        name = deployment_name(service)
        out: list[dict[str, Any]] = []
        for kind, body, read, create in (
                ("Deployment", deployment, self._apps.read_namespaced_deployment,
                 self._apps.create_namespaced_deployment),
                ("Service", svc, self._core.read_namespaced_service, self._core.create_namespaced_service)):
            what = f"{kind} {self.namespace}/{name}"
            try:
                out.append(self._dict(self._call(f"read {what}", read, name, self.namespace)))
                continue
            except KubernetesNotFoundError:
                pass
            try:
                out.append(self._dict(self._call(f"create {what}", create, self.namespace, body)))
                log.info("created %s", what)
            except KubernetesConflictError:  # created meanwhile by another hub
                out.append(self._dict(self._call(f"read {what}", read, name, self.namespace)))
        return out[0], out[1]

    def _scale(self, service: ServiceType, delta: int, floor: int, ceiling: int,
               check: Callable[[], None] | None = None) -> tuple[int, str] | None:
        """Scale the Deployment by ``delta`` within [floor, ceiling], with the resourceVersion read before
        ``check`` ran (it raises when there is no room): a writer in between (another hub's admission) makes
        the update fail with 409, and the read, the check and the update are done again. (replicas now,
        resourceVersion after), or ``None`` when the bound stops it (blocking)."""
        from kubernetes import client

        name = deployment_name(service)
        what = f"scale Deployment {self.namespace}/{name}"
        for _ in range(MAX_CONFLICT_RETRIES):
            dep = self._dict(self._call(f"read Deployment {self.namespace}/{name}",
                                        self._apps.read_namespaced_deployment, name, self.namespace))
            current = int((dep.get("spec") or {}).get("replicas") or 0)
            target = current + delta
            if target > ceiling or target < floor:
                return None
            if check is not None:
                check()
            body = client.V1Scale(
                metadata=client.V1ObjectMeta(name=name, namespace=self.namespace,
                                             resource_version=(dep.get("metadata") or {}).get("resourceVersion")),
                spec=client.V1ScaleSpec(replicas=target))
            try:
                scale = self._dict(self._call(what, self._apps.replace_namespaced_deployment_scale, name,
                                              self.namespace, body))
            except KubernetesConflictError:
                log.info("%s: the Deployment changed meanwhile (409); re-reading", what)
                continue
            log.info("%s: %d -> %d", what, current, target)
            return target, str((scale.get("metadata") or {}).get("resourceVersion") or "")
        raise KubernetesConflictError(f"{what}: the Deployment changed under every one of {MAX_CONFLICT_RETRIES} "
                                      "updates (another writer); retry")

    def _wait_available(self, service: ServiceType, desired: int, deadline: float) -> dict[str, Any]:
        """Watch the Deployment until ``status.availableReplicas >= desired`` (blocking); the last Deployment
        read. ``ReplicaNotReadyError`` at ``deadline``."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        name = deployment_name(service)
        what = f"watch Deployment {self.namespace}/{name}"
        while True:
            dep = self._dict(self._call(f"read Deployment {self.namespace}/{name}",
                                        self._apps.read_namespaced_deployment, name, self.namespace))
            if int((dep.get("status") or {}).get("availableReplicas") or 0) >= desired:
                return dep
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            w = watch.Watch()
            try:
                for event in w.stream(self._apps.list_namespaced_deployment, self.namespace,
                                      field_selector=f"metadata.name={name}",
                                      resource_version=(dep.get("metadata") or {}).get("resourceVersion"),
                                      timeout_seconds=max(1, math.ceil(remaining)),
                                      _request_timeout=(self._timeout, remaining + self._timeout)):
                    raw = event.get("raw_object") or {}
                    if event.get("type") in ("ADDED", "MODIFIED") and int(
                            (raw.get("status") or {}).get("availableReplicas") or 0) >= desired:
                        w.stop()
                        return dict(raw)
                    if time.monotonic() >= deadline:
                        w.stop()
                        break
            except (ApiException, HTTPError, OSError) as err:
                if _status(err) != 410:  # 410 Gone: the resourceVersion is too old; read again and re-watch
                    raise map_api_error(err, what) from err
        pods = self._list(f"list pods of {name}", self._core.list_namespaced_pod, self.namespace,
                          label_selector=",".join(f"{k}={v}" for k, v in labels(service).items()))
        raise ReplicaNotReadyError(f"{name}: {desired} replica(s) asked for, "
                                   f"{int((dep.get('status') or {}).get('availableReplicas') or 0)} available "
                                   f"when the wait ended: {_why_not_ready(pods)}")

    def _endpoint(self, service: ServiceType, svc: Mapping[str, Any]) -> tuple[int, str, str, str]:
        """(nodePort, endpoint URL, node, pod) of the newest ready pod of the type (blocking)."""
        name = deployment_name(service)
        ports = (svc.get("spec") or {}).get("ports") or []
        node_port = int(ports[0].get("nodePort") or 0) if ports else 0
        if not node_port:
            svc = self._dict(self._call(f"read Service {self.namespace}/{name}", self._core.read_namespaced_service,
                                        name, self.namespace))
            ports = (svc.get("spec") or {}).get("ports") or []
            node_port = int(ports[0].get("nodePort") or 0) if ports else 0
        if not node_port:
            raise KubernetesError(f"Service {self.namespace}/{name} has no nodePort (is it of type NodePort?)")
        pods = [p for p in self._list(f"list pods of {name}", self._core.list_namespaced_pod, self.namespace,
                                      label_selector=",".join(f"{k}={v}" for k, v in labels(service).items()))
                if _pod_ready(p) and (p.get("spec") or {}).get("nodeName")]
        if not pods:
            raise ReplicaNotReadyError(f"{name}: the Deployment is available but no ready pod is bound to a node")
        newest = max(pods, key=lambda p: ((p.get("metadata") or {}).get("creationTimestamp") or "",
                                          (p.get("metadata") or {}).get("name") or ""))
        node = str(newest["spec"]["nodeName"])
        if self._node_address is not None:
            address: str | None = self._node_address(node)
        else:
            address = node_address(self._dict(self._call(f"read node {node}", self._core.read_node, node)))
        if not address:
            raise KubernetesError(f"node {node} reports no ExternalIP, InternalIP or Hostname address")
        host = f"[{address}]" if ":" in address else address
        return node_port, f"ws://{host}:{node_port}/v1/stream", node, str(newest["metadata"].get("name", ""))

    # -- admission ------------------------------------------------------------------------------------
    async def admit(self, service: ServiceType, wait_seconds: float) -> KubeReplica:
        """One more replica of ``service``, ready; see the module's docstring for the steps and errors."""
        if not 0 < wait_seconds <= 3600:
            raise InvalidInputError(f"wait_seconds must be in (0, 3600], not {wait_seconds}", code="INVALID_ARGUMENT")
        deadline = time.monotonic() + wait_seconds
        async with self._lock:
            _, svc = await asyncio.to_thread(self._ensure, service)
            scaled = await asyncio.to_thread(self._scale, service, +1, 0, service.max_replicas,
                                             lambda: self._check_room(service))
            if scaled is None:
                raise ClusterFullError(f"service type {service.name}: maxReplicas ({service.max_replicas}) "
                                       "replicas run already")
        desired, _ = scaled
        try:
            await asyncio.to_thread(self._wait_available, service, desired, deadline)
            node_port, endpoint, node, pod = await asyncio.to_thread(self._endpoint, service, svc)
        except BaseException:
            await self._give_back(service)
            raise
        return KubeReplica(deployment_name(service), desired, node_port, endpoint, node, pod)

    def _check_room(self, service: ServiceType) -> None:
        """Raise unless an edge node has room for one more replica of ``service`` now (blocking)."""
        nodes = self.capacity_view()
        why = explain_unschedulable(service, nodes)
        if why is not None:
            raise UnschedulableError(f"service type {service.name}: {why}")
        if not candidates(service, nodes, "edge"):
            raise ClusterFullError(f"service type {service.name}: no edge node of the Kubernetes cluster has "
                                   "room for another replica now")

    async def _give_back(self, service: ServiceType) -> None:
        try:
            await self.release(service)
        except KubernetesError as err:
            log.warning("could not give back the replica of %s that did not become ready: %s", service.name, err)

    async def release(self, service: ServiceType) -> None:
        """One replica fewer of ``service``, never below ``minReplicas`` (the Deployment may not exist)."""
        async with self._lock:
            try:
                await asyncio.to_thread(self._scale, service, -1, service.min_replicas, _UNBOUNDED)
            except KubernetesNotFoundError:
                log.info("release %s: no Deployment %s", service.name, deployment_name(service))

    async def replicas(self, service: ServiceType) -> tuple[int, int]:
        """(desired, available) replicas of ``service`` ((0, 0) without a Deployment)."""
        name = deployment_name(service)
        try:
            dep = await asyncio.to_thread(lambda: self._dict(self._call(
                f"read Deployment {self.namespace}/{name}", self._apps.read_namespaced_deployment, name,
                self.namespace)))
        except KubernetesNotFoundError:
            return 0, 0
        return (int((dep.get("spec") or {}).get("replicas") or 0),
                int((dep.get("status") or {}).get("availableReplicas") or 0))

    def close(self) -> None:
        self.api_client.close()


__all__ = ["MANAGED_BY", "REPLICA_PORT", "TIER_LABEL", "TYPE_LABEL", "KubeReplica", "KubernetesBackend",
           "build_manifests", "deployment_name", "labels", "map_api_error", "node_address", "node_affinity",
           "node_view", "pod_requests", "replica_command"]
