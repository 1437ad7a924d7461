"""A fake Kubernetes API server, because no Kubernetes API server can run on this machine (no kubelet,
no container runtime for it, no etcd; see DESIGN.md): the Kubernetes backend is tested against this,
against the OpenAPI schemas (tests/cluster/test_kubernetes_manifests.py), and against a real cluster when
``KUBECONFIG`` is set (tests/cluster/test_kubernetes_real.py).

It is a real HTTP/1.1 server (the standard library's, in a thread, on 127.0.0.1) that the official client
reaches through a real ``kubernetes.client.Configuration(host=...)``. It serves the REST paths the backend
uses, with the API's JSON shapes and ``Status`` errors:

- ``GET /api/v1/nodes[/{name}]``; ``GET /api/v1/pods`` and ``/api/v1/namespaces/{ns}/pods`` with
  ``fieldSelector`` (``=``, ``==``, ``!=`` on metadata.name, metadata.namespace, status.phase,
  spec.nodeName) and ``labelSelector`` (``k=v``, ``k!=v``, ``k``);
- ``GET|POST /apis/apps/v1/namespaces/{ns}/deployments`` (list, create: 409 AlreadyExists), ``GET .../{name}``,
  ``GET|PUT .../{name}/scale`` (a PUT carrying a stale ``metadata.resourceVersion`` answers 409 Conflict);
- ``?watch=true`` on the deployment list: chunked JSON event lines (ADDED / MODIFIED / DELETED) after the
  given ``resourceVersion``, until ``timeoutSeconds``; a resourceVersion older than the history kept gets an
  ERROR event with 410 Gone;
- ``GET|POST /api/v1/namespaces/{ns}/services[/{name}]`` (a NodePort is allocated from 30000-32767);
- a namespace that does not exist answers 404; :meth:`FakeKube.forbid` makes a method + path prefix answer
  403 as RBAC would.

It *simulates* the controllers, crudely: when a Deployment wants more pods than it has, a pod is created and
"scheduled" onto a Ready, schedulable, untainted node whose labels satisfy the pod's required node affinity
(In, NotIn, Exists, DoesNotExist, Gt, Lt; several terms ORed) and whose free memory and CPU (allocatable
minus the requests of its non-terminated pods) cover the pod's requests, the node with the highest
preferred-affinity weight then most free memory winning; after ``ready_delay`` seconds the pod turns Ready
and the Deployment's ``status.availableReplicas`` grows (a watch event). A pod nothing fits stays Pending
with ``PodScheduled=False, reason Unschedulable`` (and is scheduled later if room appears). With
``pods_become_ready = False`` scheduled pods never pass their readiness probe. Scaling down deletes the
newest pods at once.

It does NOT simulate: authentication (any or no token is accepted), admission webhooks, quotas or limit
ranges, schema validation of what is created (the tests validate manifests against the OpenAPI schemas
separately), taints with tolerations, pod or node affinity beyond node affinity, rolling updates,
ReplicaSets, kube-proxy or any traffic to NodePorts, PATCH, DELETE, or the API's resourceVersion semantics
beyond one counter for everything.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from roost.cluster.quantity import cpu_millis, memory_bytes

#: Deployment events kept for watches (an older resourceVersion gets 410 Gone).
HISTORY = 1000


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _field(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def _field_match(obj: dict[str, Any], selector: str) -> bool:
    for part in filter(None, selector.split(",")):
        if "!=" in part:
            key, value = part.split("!=", 1)
            if _field(obj, key) == value:
                return False
        else:
            key, value = part.split("==", 1) if "==" in part else part.split("=", 1)
            if _field(obj, key) != value:
                return False
    return True


def _label_match(labels: dict[str, str], selector: str) -> bool:
    for part in filter(None, selector.split(",")):
        if "!=" in part:
            key, value = part.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in part:
            key, value = part.split("==", 1) if "==" in part else part.split("=", 1)
            if labels.get(key) != value:
                return False
        elif part not in labels:
            return False
    return True


def _expression_holds(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], expr.get("values") or []
    present = key in labels
    if op == "In":
        return present and labels[key] in values
    if op == "NotIn":
        return not present or labels[key] not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    try:
        number = int(labels[key]) if present else None
    except ValueError:
        return False
    if number is None:
        return False
    return number > int(values[0]) if op == "Gt" else number < int(values[0])


def _requests(pod_spec: dict[str, Any]) -> tuple[int, int]:
    memory = cpu = 0
    for c in pod_spec.get("containers") or []:
        req = (c.get("resources") or {}).get("requests") or {}
        memory += memory_bytes(req["memory"]) if "memory" in req else 0
        cpu += cpu_millis(req["cpu"]) if "cpu" in req else 0
    return memory, cpu


class FakeKube:
    """The fake API server and its simulated controllers (see the module's docstring)."""

    def __init__(self, *, ready_delay: float = 0.2, namespaces: tuple[str, ...] = ("roost",)) -> None:
        self.ready_delay = ready_delay
        self.pods_become_ready = True
        self.namespaces = set(namespaces)
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.forbidden: list[tuple[str, str]] = []
        self.max_replicas_seen: dict[str, int] = {}
        #: Statuses answered, in order (the tests look for a 409).
        self.statuses: list[int] = []
        #: Scale updates before which another writer touches the Deployment (each then answers 409).
        self.writers_between = 0
        self._events: list[tuple[int, str, dict[str, Any]]] = []
        self._rv = 100
        self._next_node_port = 30500
        self._ready_at: dict[tuple[str, str], float] = {}
        self._cond = threading.Condition()
        self._closing = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._threads = [threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-kube-http",
                                         daemon=True),
                         threading.Thread(target=self._controller, name="fake-kube-controller", daemon=True)]

    # -- life -----------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeKube:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        for t in self._threads:
            t.join(timeout=5)

    # -- the tests' levers ----------------------------------------------------------------------------
    def add_node(self, name: str, labels: dict[str, str] | None = None, memory: str = "8Gi", cpu: str = "4", *,
                 ready: bool = True, unschedulable: bool = False, taints: list[dict[str, str]] | None = None,
                 address: str = "10.0.0.1", external: str | None = None) -> None:
        addresses = [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}]
        if external:
            addresses.append({"type": "ExternalIP", "address": external})
        with self._cond:
            self.nodes[name] = {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})},
                             "resourceVersion": self._bump(), "uid": str(uuid.uuid4()), "creationTimestamp": _now()},
                "spec": {"unschedulable": unschedulable, **({"taints": taints} if taints else {})},
                "status": {"allocatable": {"memory": memory, "cpu": cpu, "pods": "110"},
                           "capacity": {"memory": memory, "cpu": cpu, "pods": "110"},
                           "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                           "addresses": addresses}}
            self._cond.notify_all()

    def add_pod(self, namespace: str, name: str, node: str | None, memory: str = "0", cpu: str = "0", *,
                phase: str = "Running", labels: dict[str, str] | None = None) -> None:
        """A pod of someone else (its requests count on its node unless it is Succeeded or Failed)."""
        with self._cond:
            self.pods[(namespace, name)] = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": labels or {}, "uid": str(uuid.uuid4()),
                             "resourceVersion": self._bump(), "creationTimestamp": _now()},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "other",
                                                            "resources": {"requests": {"memory": memory,
                                                                                       "cpu": cpu}}}]},
                "status": {"phase": phase}}
            self._cond.notify_all()

    def forbid(self, method: str, path_prefix: str) -> None:
        """Answer ``method`` on paths starting ``path_prefix`` with 403, as RBAC without that verb would."""
        self.forbidden.append((method.upper(), path_prefix))

    def concurrent_write(self, namespace: str, name: str) -> None:
        """Another writer touches the Deployment (its resourceVersion moves on)."""
        with self._cond:
            dep = self.deployments[(namespace, name)]
            dep["metadata"].setdefault("annotations", {})["touched-by"] = "someone-else"
            self._changed(dep, "MODIFIED")

    def pods_of(self, namespace: str, deployment: str) -> list[dict[str, Any]]:
        with self._cond:
            return [copy.deepcopy(p) for (ns, _), p in sorted(self.pods.items())
                    if ns == namespace and p["metadata"].get("ownerDeployment") == deployment]

    def watch_requests(self) -> int:
        return sum(1 for m, p in self.requests if m == "GET" and "watch=true" in p)

    # -- state ----------------------------------------------------------------------------------------
    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _changed(self, dep: dict[str, Any], kind: str) -> None:
        dep["metadata"]["resourceVersion"] = self._bump()
        self._events.append((self._rv, kind, copy.deepcopy(dep)))
        del self._events[:-HISTORY]
        self._cond.notify_all()

    def _free(self, node: str) -> tuple[int, int]:
        status = self.nodes[node]["status"]["allocatable"]
        memory, cpu = memory_bytes(status["memory"]), cpu_millis(status["cpu"])
        for pod in self.pods.values():
            if pod["spec"].get("nodeName") == node and pod["status"].get("phase") not in ("Succeeded", "Failed"):
                m, c = _requests(pod["spec"])
                memory, cpu = memory - m, cpu - c
        return memory, cpu

    def _place(self, pod: dict[str, Any]) -> str | None:
        spec = pod["spec"]
        affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
        terms = (affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms")
        preferred = affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or []
        need_memory, need_cpu = _requests(spec)
        best: tuple[int, int, str] | None = None
        for name, node in self.nodes.items():
            labels = node["metadata"]["labels"]
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
            if not ready or node["spec"].get("unschedulable") or node["spec"].get("taints"):
                continue
            if terms and not any(all(_expression_holds(e, labels) for e in t.get("matchExpressions") or [])
                                 for t in terms):
                continue
            memory, cpu = self._free(name)
            if memory < need_memory or cpu < need_cpu:
                continue
            weight = sum(p["weight"] for p in preferred
                         if all(_expression_holds(e, labels) for e in p["preference"]["matchExpressions"]))
            key = (weight, memory, name)
            if best is None or key[:2] > best[:2]:
                best = key
        return best[2] if best else None

    def _controller(self) -> None:
        while True:
            with self._cond:
                if self._closing:
                    return
                self._reconcile()
                self._cond.wait(timeout=0.05)

    def _reconcile(self) -> None:
        now = time.monotonic()
        for (ns, name), dep in self.deployments.items():
            owned = sorted((p for (pns, _), p in self.pods.items()
                            if pns == ns and p["metadata"].get("ownerDeployment") == name),
                           key=lambda p: p["metadata"]["seq"])
            want = int(dep["spec"].get("replicas") or 0)
            self.max_replicas_seen[name] = max(self.max_replicas_seen.get(name, 0), want)
            changed = False
            for pod in owned[want:]:  # scale down: the newest first
                key = (ns, pod["metadata"]["name"])
                del self.pods[key]
                self._ready_at.pop(key, None)
                changed = True
            for _ in range(want - len(owned)):
                seq = self._rv + 1
                pod_name = f"{name}-{uuid.uuid4().hex[:5]}"
                template = copy.deepcopy(dep["spec"]["template"])
                self.pods[(ns, pod_name)] = {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod_name, "namespace": ns, "labels": template["metadata"]["labels"],
                                 "uid": str(uuid.uuid4()), "resourceVersion": self._bump(),
                                 "creationTimestamp": _now(), "ownerDeployment": name, "seq": seq},
                    "spec": template["spec"],
                    "status": {"phase": "Pending", "conditions": []}}
                changed = True
            for (pns, pod_name), pod in self.pods.items():
                if pns != ns or pod["metadata"].get("ownerDeployment") != name:
                    continue
                if not pod["spec"].get("nodeName"):
                    node = self._place(pod)
                    if node is None:
                        pod["status"]["conditions"] = [{
                            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": f"0/{len(self.nodes)} nodes are available: insufficient memory or cpu, "
                                       "or node affinity did not match"}]
                        continue
                    pod["spec"]["nodeName"] = node
                    pod["status"] = {"phase": "Running", "conditions": [
                        {"type": "PodScheduled", "status": "True"},
                        {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                         "message": "containers with unready status: [replica]"}]}
                    self._ready_at[(pns, pod_name)] = now + self.ready_delay
                    changed = True
                ready_at = self._ready_at.get((pns, pod_name))
                if ready_at is not None and ready_at <= now and self.pods_become_ready:
                    pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"},
                                                   {"type": "Ready", "status": "True"}]
                    del self._ready_at[(pns, pod_name)]
                    changed = True
            owned = [p for (pns, _), p in self.pods.items()
                     if pns == ns and p["metadata"].get("ownerDeployment") == name]
            available = sum(1 for p in owned if any(c["type"] == "Ready" and c["status"] == "True"
                                                    for c in p["status"].get("conditions") or []))
            status = {"observedGeneration": dep["metadata"].get("generation", 1), "replicas": len(owned),
                      "readyReplicas": available, "availableReplicas": available,
                      "unavailableReplicas": max(0, len(owned) - available)}
            if changed or status != dep.get("status"):
                dep["status"] = status
                self._changed(dep, "MODIFIED")

    # -- the API --------------------------------------------------------------------------------------
    def _namespace(self, ns: str) -> None:
        if ns not in self.namespaces:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found')

    def _list(self, kind: str, items: Iterator[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
        out = [copy.deepcopy(i) for i in items
               if _field_match(i, query.get("fieldSelector", ""))
               and _label_match(i["metadata"].get("labels") or {}, query.get("labelSelector", ""))]
        return {"kind": kind, "apiVersion": "apps/v1" if kind == "DeploymentList" else "v1",
                "metadata": {"resourceVersion": str(self._rv)}, "items": out}

    def _scale(self, dep: dict[str, Any]) -> dict[str, Any]:
        meta = dep["metadata"]
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                             "resourceVersion": meta["resourceVersion"],
                             "creationTimestamp": meta["creationTimestamp"]},
                "spec": {"replicas": dep["spec"].get("replicas", 0)},
                "status": {"replicas": (dep.get("status") or {}).get("replicas", 0),
                           "selector": ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())}}

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        """(status, JSON body) for one request; raises :class:`ApiError`."""
        for verb, prefix in self.forbidden:
            if verb == method and path.startswith(prefix):
                raise ApiError(403, "Forbidden", f'{path} is forbidden: User "system:serviceaccount:roost:roost-hub" '
                                                 f"cannot {method.lower()} this resource")
        if path == "/api/v1/nodes" and method == "GET":
            return 200, self._list("NodeList", iter(self.nodes.values()), query)
        if m := re.fullmatch(r"/api/v1/nodes/([^/]+)", path):
            if m[1] not in self.nodes:
                raise ApiError(404, "NotFound", f'nodes "{m[1]}" not found')
            return 200, copy.deepcopy(self.nodes[m[1]])
        if path == "/api/v1/pods" and method == "GET":
            return 200, self._list("PodList", iter(self.pods.values()), query)
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", path):
            self._namespace(m[1])
            return 200, self._list("PodList", (p for (ns, _), p in self.pods.items() if ns == m[1]), query)
        if m := re.fullmatch(r"/apis/apps/v1/namespaces/([^/]+)/deployments", path):
            self._namespace(m[1])
            if method == "POST":
                return self._create(self.deployments, m[1], body, "deployments.apps")
            return 200, self._list("DeploymentList", (d for (ns, _), d in self.deployments.items() if ns == m[1]),
                                   query)
        if m := re.fullmatch(r"/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)(/scale)?", path):
            self._namespace(m[1])
            dep = self.deployments.get((m[1], m[2]))
            if dep is None:
                raise ApiError(404, "NotFound", f'deployments.apps "{m[2]}" not found')
            if not m[3]:
                return 200, copy.deepcopy(dep)
            if method == "PUT":
                if self.writers_between > 0:
                    self.writers_between -= 1
                    dep["metadata"].setdefault("annotations", {})["touched-by"] = "someone-else"
                    self._changed(dep, "MODIFIED")
                wanted = (body.get("metadata") or {}).get("resourceVersion")
                if wanted and wanted != dep["metadata"]["resourceVersion"]:
                    raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on deployments.apps "{m[2]}": '
                                                    "the object has been modified; please apply your changes to "
                                                    "the latest version and try again")
                dep["spec"]["replicas"] = int(body["spec"]["replicas"])
                dep["metadata"]["generation"] = dep["metadata"].get("generation", 1) + 1
                self._changed(dep, "MODIFIED")
            return 200, self._scale(dep)
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/services(?:/([^/]+))?", path):
            self._namespace(m[1])
            if m[2]:
                svc = self.services.get((m[1], m[2]))
                if svc is None:
                    raise ApiError(404, "NotFound", f'services "{m[2]}" not found')
                return 200, copy.deepcopy(svc)
            if method == "POST":
                for port in body["spec"]["ports"]:
                    port.setdefault("nodePort", self._next_node_port)
                    self._next_node_port += 1
                body["spec"]["clusterIP"] = "10.96.0.10"
                return self._create(self.services, m[1], body, "services")
            return 200, self._list("ServiceList", (s for (ns, _), s in self.services.items() if ns == m[1]), query)
        raise ApiError(404, "NotFound", f"the fake serves no {method} {path}")

    def _create(self, store: dict[tuple[str, str], dict[str, Any]], ns: str, body: Any,
                what: str) -> tuple[int, Any]:
        name = body["metadata"]["name"]
        if (ns, name) in store:
            raise ApiError(409, "AlreadyExists", f'{what} "{name}" already exists')
        body["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        body.setdefault("status", {})
        store[(ns, name)] = body
        if what == "deployments.apps":
            self._changed(body, "ADDED")
        else:
            body["metadata"]["resourceVersion"] = self._bump()
        return 201, copy.deepcopy(body)

    def watch(self, ns: str, query: dict[str, str]) -> Iterator[dict[str, Any]]:
        """The watch's events (blocking between them) until ``timeoutSeconds``."""
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 60)
        selector = query.get("fieldSelector", "")
        with self._cond:
            if self._events and since and since < self._events[0][0] - 1:
                yield {"type": "ERROR", "object": _status(410, "Expired", f"too old resource version: {since}")}
                return
        while True:
            with self._cond:
                fresh = [(rv, kind, obj) for rv, kind, obj in self._events
                         if rv > since and obj["metadata"]["namespace"] == ns and _field_match(obj, selector)]
                if not fresh:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closing:
                        return
                    self._cond.wait(timeout=min(remaining, 0.5))
                    continue
            for rv, kind, obj in fresh:
                since = rv
                yield {"type": kind, "object": obj}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed ACK

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                fake.statuses.append(code)
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _do(self, method: str) -> None:
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                fake.requests.append((method, self.path))
                try:
                    body = json.loads(raw) if raw else None
                    if method == "GET" and query.get("watch") == "true":
                        m = re.fullmatch(r"/apis/apps/v1/namespaces/([^/]+)/deployments", url.path)
                        if m is None:
                            raise ApiError(404, "NotFound", f"the fake watches no {url.path}")
                        with fake._cond:
                            fake._namespace(m[1])
                        self._stream(fake.watch(m[1], query))
                        return
                    with fake._cond:
                        code, out = fake.handle(method, url.path, query, body)
                    self._answer(code, out)
                except ApiError as err:
                    self._answer(err.code, _status(err.code, err.reason, err.message))

            def _stream(self, events: Iterator[dict[str, Any]]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for event in events:
                        line = json.dumps(event).encode() + b"\n"
                        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def do_GET(self) -> None:
                self._do("GET")

            def do_POST(self) -> None:
                self._do("POST")

            def do_PUT(self) -> None:
                self._do("PUT")

        return Handler


__all__ = ["FakeKube"]
