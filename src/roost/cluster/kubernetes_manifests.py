"""The Kubernetes backend's manifests: what a service type becomes in a cluster (pure; no I/O).

A Deployment ``roost-<type>`` whose pods run ``roost cluster replica`` with the type's requests, limits
and node affinity, and a NodePort Service of the same name. :mod:`roost.cluster.kubernetes` applies them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from roost.cluster.affinity import Affinity, Expression
from roost.cluster.service_types import ServiceType

#: The replica's port in the container (the original's 5700), the Service's port too.
REPLICA_PORT = 5700
#: The label naming the service type of a Roost Deployment, its pods and its Service.
TYPE_LABEL = "roost.io/service-type"
MANAGED_BY = {"app.kubernetes.io/managed-by": "roost"}


def deployment_name(service: ServiceType) -> str:
    return f"roost-{service.name}"


def labels(service: ServiceType) -> dict[str, str]:
    """The labels of a type's Deployment, pods and Service (the selector is all of them)."""
    return {"app.kubernetes.io/name": "roost-replica", "app.kubernetes.io/instance": deployment_name(service),
            "app.kubernetes.io/component": "replica", **MANAGED_BY, TYPE_LABEL: service.name}


#: Where the image keeps each service component's model (deploy/docker/Dockerfile bakes the samples'):
#: ``MODELS/<component>/<version>/`` holding ``model.json`` (tabular; the samples' is ``wine-quality.json``)
#: or ``model.onnx`` + ``labels.json`` (image).
MODELS = "/opt/roost/models"


def model_path(service: ServiceType) -> str:
    """The replica's ``--model`` inside the image."""
    folder = f"{MODELS}/{service.component}/{service.version or 'latest'}"
    if service.kind == "image":
        return folder
    return f"{folder}/{'wine-quality.json' if service.component == 'com.roost.ClusterScalar' else 'model.json'}"


def replica_command(service: ServiceType, hub_public_key: str) -> list[str]:
    """The replica container's command line (``roost cluster replica ...``, the options of
    :mod:`roost.cli.replica`)."""
    return ["roost", "cluster", "replica", "--kind", service.kind, "--model", model_path(service),
            "--window", str(service.window), "--port", str(REPLICA_PORT), "--host", "0.0.0.0",
            "--replica-id", deployment_name(service), "--public-key", hub_public_key,
            "--sessions", str(service.sessions_per_replica), "--idle-timeout", f"{service.idle_timeout_seconds:g}",
            "--engine", "xgboost", "--cache-dir", "/tmp/roost-cache"]


def _expressions(expressions: Iterable[Expression]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for e in expressions:
        item: dict[str, Any] = {"key": e.key, "operator": e.operator}
        if e.values:
            item["values"] = list(e.values)
        out.append(item)
    return out


def node_affinity(affinity: Affinity) -> dict[str, Any]:
    """``affinity.nodeAffinity`` of a pod spec: one required term, the weighted preferred terms ({} if none)."""
    out: dict[str, Any] = {}
    if affinity.required:
        out["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [{"matchExpressions": _expressions(affinity.required)}]}
    if affinity.preferred:
        out["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {"weight": p.weight, "preference": {"matchExpressions": _expressions(p.match)}}
            for p in affinity.preferred]
    return out


def affinity_from_node_affinity(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """:func:`node_affinity` read back (the ``Affinity`` fields as a dict); several required terms (an OR
    Roost never writes) are left out rather than read as an AND."""
    if not spec:
        return {}

    def exprs(items: Any) -> list[dict[str, Any]]:
        return [{"key": e.get("key"), "operator": e.get("operator"), "values": list(e.get("values") or [])}
                for e in items or []]

    out: dict[str, Any] = {}
    terms = (spec.get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []
    if len(terms) == 1:
        out["required"] = exprs(terms[0].get("matchExpressions"))
    out["preferred"] = [{"weight": p.get("weight"), "match": exprs((p.get("preference") or {}).get("matchExpressions"))}
                        for p in spec.get("preferredDuringSchedulingIgnoredDuringExecution") or []
                        if (p.get("preference") or {}).get("matchExpressions")]
    return out


def _resource_map(memory: str | None, cpu: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if memory is not None:
        out["memory"] = memory
    if cpu is not None:
        out["cpu"] = cpu
    return out


def build_manifests(service: ServiceType, namespace: str, image: str,
                    hub_public_key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Deployment and the NodePort Service of ``service``. Pure."""
    name = deployment_name(service)
    meta = {"name": name, "namespace": namespace, "labels": labels(service)}
    resources: dict[str, Any] = {}
    requests = _resource_map(service.resources.requests.memory, service.resources.requests.cpu)
    limits = _resource_map(service.resources.limits.memory, service.resources.limits.cpu)
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    pod_spec: dict[str, Any] = {
        # The replica never talks to the API server: no token in the pod.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": 30,
        "containers": [{
            "name": "replica",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": replica_command(service, hub_public_key),
            "ports": [{"name": "stream", "containerPort": REPLICA_PORT, "protocol": "TCP"}],
            "env": [{"name": "ROOST_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "ROOST_NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "HOME", "value": "/tmp"}],
            "resources": resources,
            # 200 only once the replica's model answered its self-test.
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": REPLICA_PORT}, "initialDelaySeconds": 1,
                               "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 3},
            "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False, "privileged": False,
                                "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
            # The only writable place (model caches, the interpreter's temp files), bounded.
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    affinity = node_affinity(service.affinity)
    if affinity:
        pod_spec["affinity"] = {"nodeAffinity": affinity}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {**meta, "annotations": {"roost.io/component": service.component,
                                             "roost.io/sessions-per-replica": str(service.sessions_per_replica)}},
        "spec": {
            "replicas": service.min_replicas,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": labels(service)},
            "template": {"metadata": {"labels": labels(service)}, "spec": pod_spec},
        },
    }
    svc = {
        "apiVersion": "v1", "kind": "Service", "metadata": meta,
        "spec": {
            "type": "NodePort",
            "selector": labels(service),
            "ports": [{"name": "stream", "port": REPLICA_PORT, "targetPort": "stream", "protocol": "TCP"}],
            # The endpoint's node reaches the pods on that node only (and keeps the client's address).
            "externalTrafficPolicy": "Local",
            # A client's reconnections land on the pod it had.
            "sessionAffinity": "ClientIP",
        },
    }
    return deployment, svc
