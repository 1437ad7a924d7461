"""Every Kubernetes manifest Roost ships or writes validates against the Kubernetes OpenAPI schemas,
offline (kubernetes-validate ships them): deploy/kubernetes/*.yaml, the Helm chart as Helm itself renders
it (helm-python-sdk: Helm's Go engine in a shared library), and what ``KubernetesBackend.manifests()``
writes for the shipped types. The RBAC is least privilege and covers every call the backend makes."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from roost.cluster.errors import ReplicaNotReadyError
from roost.cluster.kubernetes import REPLICA_PORT, KubernetesBackend, build_manifests
from roost.cluster.service_types import SHIPPED, ServiceType
from tests.cluster.conftest import HUB_KEY, IMAGE, NAMESPACE
from tests.cluster.fake_kube import FakeKube
from tests.conftest import REPO

#: The Kubernetes version whose schemas the manifests are checked against (kubernetes-validate 1.37.0's newest).
K8S_VERSION = "1.37.0"
DEPLOY = REPO / "deploy"
STATIC = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
CHART = DEPLOY / "helm" / "roost"
#: Value sets the chart is rendered with: the defaults, and every optional branch taken.
CHART_VALUES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything": {"agents": {"enabled": True}, "hub": {"backend": "agents", "extraArgs": ["--workers", "2"],
                                                        "service": {"nodePort": 30080},
                                                        "persistence": {"storageClass": "local-path"}}},
}


def validate(doc: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _load(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def render_chart(values: dict[str, Any], name: str = "edge", namespace: str = "roost") -> list[dict[str, Any]]:
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values, name=name, namespace=namespace)
    return [d for path, text in sorted(rendered.items()) if path.endswith(".yaml") for d in _load(text)]


def test_the_schemas_are_there_and_bite() -> None:
    import kubernetes_validate

    with pytest.raises(kubernetes_validate.ValidationError):
        validate({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": "80"}})
    with pytest.raises(kubernetes_validate.ValidationError):  # strict: an unknown field is refused
        validate({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"portz": []}})


@pytest.mark.parametrize("path", STATIC, ids=lambda p: p.name)
def test_the_static_manifests_validate(path: Path) -> None:
    docs = _load(path.read_text())
    assert docs
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize("values", list(CHART_VALUES), ids=str)
def test_the_rendered_chart_validates(values: str) -> None:
    docs = render_chart(CHART_VALUES[values])
    kinds = sorted(d["kind"] for d in docs)
    expected = ["ClusterRole", "ClusterRoleBinding", "Deployment", "PersistentVolumeClaim", "Role", "RoleBinding",
                "Service", "ServiceAccount"]
    assert kinds == sorted(expected + (["DaemonSet"] if values == "everything" else []))
    for doc in docs:
        validate(doc)
        assert doc["metadata"]["name"].startswith(("edge-", "roost-edge-"))


def test_the_chart_lints_clean() -> None:
    import helm_python as helm

    assert helm.lint(str(CHART))["errors"] == []


def test_the_chart_follows_its_values() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in render_chart(CHART_VALUES["everything"], name="r2",
                                                                          namespace="edge-ml")}
    hub = docs[("Deployment", "r2-hub")]["spec"]["template"]["spec"]["containers"][0]
    assert "--backend" not in hub["command"] and hub["command"][-2:] == ["--workers", "2"]
    assert docs[("Service", "r2-hub")]["spec"]["ports"][0]["nodePort"] == 30080
    assert docs[("PersistentVolumeClaim", "r2-hub-data")]["spec"]["storageClassName"] == "local-path"
    agent = docs[("DaemonSet", "r2-agent")]["spec"]["template"]["spec"]["containers"][0]
    assert "http://r2-hub.edge-ml.svc:8080" in agent["command"][-1]
    default = {(d["kind"], d["metadata"]["name"]): d for d in render_chart({})}
    command = default[("Deployment", "edge-hub")]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--backend") + 1] == "kubernetes"
    assert command[command.index("--kube-namespace") + 1] == "roost"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_backend_manifests_validate(name: str) -> None:
    deployment, service = build_manifests(SHIPPED[name], NAMESPACE, IMAGE, HUB_KEY)
    validate(deployment)
    validate(service)


def test_the_backend_manifests_say_what_the_service_type_says() -> None:
    scalar, image = SHIPPED["scalar"], SHIPPED["image"]
    deployment, service = build_manifests(scalar, NAMESPACE, IMAGE, HUB_KEY)
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == "roost-scalar"
    assert deployment["spec"]["replicas"] == scalar.min_replicas == 0
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == IMAGE
    command = container["command"]
    assert command[:3] == ["roost", "cluster", "replica"]
    assert command[command.index("--kind") + 1] == "tabular" and command[command.index("--port") + 1] == "5700"
    assert command[command.index("--public-key") + 1] == HUB_KEY
    assert command[command.index("--model") + 1] == "/opt/roost/models/com.roost.ClusterScalar/1.0.0/wine-quality.json"
    assert container["ports"] == [{"name": "stream", "containerPort": REPLICA_PORT, "protocol": "TCP"}]
    assert container["resources"] == {"requests": {"memory": "3417969Ki"}, "limits": {"memory": "3906250Ki"}}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 5700}
    assert pod["affinity"]["nodeAffinity"] == {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "machine", "operator": "NotIn", "values": ["nano"]}]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 70, "preference": {"matchExpressions": [{"key": "machine", "operator": "In",
                                                                "values": ["xavier"]}]}},
            {"weight": 30, "preference": {"matchExpressions": [{"key": "machine", "operator": "In",
                                                                "values": ["tx2"]}]}}]}
    security = container["securityContext"]
    assert security["runAsNonRoot"] and not security["allowPrivilegeEscalation"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    assert service["spec"]["type"] == "NodePort" and service["spec"]["externalTrafficPolicy"] == "Local"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == 5700 and "nodePort" not in service["spec"]["ports"][0]

    image_deployment, _ = build_manifests(image, NAMESPACE, IMAGE, HUB_KEY)
    image_container = image_deployment["spec"]["template"]["spec"]["containers"][0]
    assert image_container["resources"]["limits"] == {"memory": "4882812Ki"}
    assert image_container["command"][image_container["command"].index("--kind") + 1] == "image"


def test_a_type_without_affinity_or_limits_still_validates() -> None:
    bare = ServiceType.model_validate({"name": "bare", "component": "com.example.Bare",
                                       "resources": {"requests": {"cpu": "500m"}},
                                       "affinity": {"required": [{"key": "gpu", "operator": "Exists"},
                                                                 {"key": "cores", "operator": "Gt",
                                                                  "values": ["3"]}]}})
    deployment, service = build_manifests(bare, NAMESPACE, IMAGE, HUB_KEY)
    validate(deployment)
    validate(service)
    terms = deployment["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "gpu", "operator": "Exists"},
                                           {"key": "cores", "operator": "Gt", "values": ["3"]}]}]
    no_affinity = ServiceType.model_validate({"name": "plain", "component": "com.example.Plain"})
    plain, _ = build_manifests(no_affinity, NAMESPACE, IMAGE, HUB_KEY)
    validate(plain)
    assert "affinity" not in plain["spec"]["template"]["spec"]


# -- RBAC ---------------------------------------------------------------------------------------------
RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")


def _rbac_sets() -> dict[str, list[dict[str, Any]]]:
    return {"deploy/kubernetes/rbac.yaml": _load((DEPLOY / "kubernetes" / "rbac.yaml").read_text()),
            "chart": [d for d in render_chart({}) if d["kind"] in RBAC_KINDS]}


ROLE = [({"apps"}, {"deployments"}, {"get", "list", "watch", "create", "patch", "update"}),
        ({"apps"}, {"deployments/scale"}, {"get", "patch", "update"}),
        ({""}, {"services"}, {"get", "list", "create"}),
        ({""}, {"pods"}, {"get", "list", "watch"})]
CLUSTER_ROLE = [({""}, {"nodes"}, {"get", "list", "watch"}), ({""}, {"pods"}, {"list"})]


def _rules(doc: dict[str, Any]) -> list[tuple[set[str], set[str], set[str]]]:
    return [(set(r["apiGroups"]), set(r["resources"]), set(r["verbs"])) for r in doc["rules"]]


@pytest.mark.parametrize("where", ["deploy/kubernetes/rbac.yaml", "chart"])
def test_the_rbac_is_least_privilege(where: str) -> None:
    docs = _rbac_sets()[where]
    for doc in docs:
        for rule in doc.get("rules", []):
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"{doc['kind']} {doc['metadata']['name']}: {key} has '*'"
            assert not rule.get("resourceNames") and not rule.get("nonResourceURLs")
        if doc["kind"].endswith("Binding"):
            assert doc["roleRef"]["name"] not in ("cluster-admin", "admin", "edit")
            assert doc["roleRef"]["kind"] == ("Role" if doc["kind"] == "RoleBinding" else "ClusterRole")
    roles = [d for d in docs if d["kind"] == "Role"]
    cluster_roles = [d for d in docs if d["kind"] == "ClusterRole"]
    assert len(roles) == 1 and len(cluster_roles) == 1
    assert _rules(roles[0]) == ROLE
    assert _rules(cluster_roles[0]) == CLUSTER_ROLE
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"]


def _needed(method: str, raw: str) -> tuple[bool, str, str, str]:
    """(namespaced, apiGroup, resource, verb) that one request of the backend needs."""
    url = urlsplit(raw)
    query = parse_qs(url.query)
    m = re.fullmatch(r"/(?:api/v1|apis/(?P<group>[a-z.]+)/v1)(?:/namespaces/(?P<ns>[^/]+))?/(?P<res>[a-z]+)"
                     r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>[a-z]+))?", url.path)
    assert m, raw
    resource = m["res"] + (f"/{m['sub']}" if m["sub"] else "")
    if method == "GET":
        verb = "watch" if query.get("watch") == ["true"] else "get" if m["name"] else "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    return bool(m["ns"]), m["group"] or "", resource, verb


def _allows(rules: list[tuple[set[str], set[str], set[str]]], group: str, resource: str, verb: str) -> bool:
    return any(group in g and resource in r and verb in v for g, r, v in rules)


async def test_the_rbac_allows_every_call_the_backend_makes(fake: FakeKube, backend: KubernetesBackend) -> None:
    fake.add_node("xavier-1", {"machine": "xavier"}, memory="7Gi")
    await backend.admit(SHIPPED["scalar"], wait_seconds=20)
    await backend.release(SHIPPED["scalar"])
    await backend.replicas(SHIPPED["scalar"])
    fake.pods_become_ready = False
    with pytest.raises(ReplicaNotReadyError):
        await backend.admit(SHIPPED["scalar"], wait_seconds=1)
    await asyncio.to_thread(backend.nodes)
    docs = _rbac_sets()["deploy/kubernetes/rbac.yaml"]
    role = _rules(next(d for d in docs if d["kind"] == "Role"))
    cluster_role = _rules(next(d for d in docs if d["kind"] == "ClusterRole"))
    needed = {_needed(method, path) for method, path in fake.requests}
    assert ("watch" in {v for *_, v in needed}) and len(needed) >= 8
    refused = sorted(n for n in needed if not _allows(role if n[0] else cluster_role, *n[1:]))
    assert refused == []


def test_every_roost_container_runs_unprivileged() -> None:
    """Every container of the hub and the replicas: non-root, no escalation, ALL dropped, read-only root."""
    docs = [d for p in STATIC for d in _load(p.read_text())] + render_chart({})
    docs += [build_manifests(SHIPPED[n], NAMESPACE, IMAGE, HUB_KEY)[0] for n in SHIPPED]
    checked = 0
    for doc in docs:
        if doc["kind"] not in ("Deployment", "DaemonSet") or "agent" in doc["metadata"]["name"]:
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"] == {
            "type": "RuntimeDefault"}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["runAsNonRoot"] and security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] and security["capabilities"] == {"drop": ["ALL"]}
            checked += 1
    assert checked == 4  # the static hub, the chart's hub, the two replica Deployments


def test_the_dockerfile_runs_as_the_manifests_user() -> None:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert re.search(r"^USER 10001:10001$", text, re.M)
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for part in source.split():
            assert (REPO / part).exists(), part
    hub = next(d for d in _load((DEPLOY / "kubernetes" / "hub.yaml").read_text()) if d["kind"] == "Deployment")
    assert hub["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001


def test_the_replica_command_is_one_the_replica_cli_takes() -> None:
    """Every option the Deployment passes is an option of `roost cluster replica` (parsed by its real
    command, without running it)."""
    import typer.main

    from roost.cli.cluster import app

    command = typer.main.get_command(app)
    replica = command.commands["replica"]  # type: ignore[attr-defined]
    for spec in SHIPPED.values():
        deployment, _ = build_manifests(spec, NAMESPACE, IMAGE, HUB_KEY)
        args = deployment["spec"]["template"]["spec"]["containers"][0]["command"][3:]
        ctx = replica.make_context("replica", list(args), resilient_parsing=False)
        assert ctx.params["public_key"] == HUB_KEY and ctx.params["kind"] == spec.kind
