"""The Kubernetes backend against the fake API server (a real HTTP server; fake_kube.py says what it
simulates): create + scale + watch, capacity from allocatable minus pod requests, offload when full,
unschedulable types, concurrent admissions, release, and the API's errors as Roost errors."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from roost.cluster.errors import (
    ClusterFullError,
    KubernetesConfigError,
    KubernetesConflictError,
    KubernetesError,
    KubernetesForbiddenError,
    KubernetesNotFoundError,
    KubernetesUnavailableError,
    ReplicaNotReadyError,
    UnschedulableError,
)
from roost.cluster.kubernetes import KubernetesBackend, map_api_error, pod_requests
from roost.cluster.quantity import memory_bytes
from roost.cluster.service_types import SHIPPED, ServiceType
from tests.cluster.conftest import HUB_KEY, IMAGE, NAMESPACE, backend_at
from tests.cluster.fake_kube import FakeKube

SCALAR = SHIPPED["scalar"]
IMAGE_TYPE = SHIPPED["image"]
GI = 2**30


def _type(base: ServiceType, **changes: Any) -> ServiceType:
    return ServiceType.model_validate({**base.to_wire(), **changes})


def _pods(fake: FakeKube, deployment: str = "roost-scalar") -> list[dict[str, Any]]:
    return fake.pods_of(NAMESPACE, deployment)


async def test_admit_creates_scales_and_watches_until_ready(fake: FakeKube, backend: KubernetesBackend) -> None:
    fake.add_node("tx2-1", {"machine": "tx2"}, memory="7Gi", address="10.0.0.2")
    fake.add_node("xavier-1", {"machine": "xavier"}, memory="7Gi", address="10.0.0.1", external="203.0.113.7")
    replica = await backend.admit(SCALAR, wait_seconds=20)
    assert replica.deployment == "roost-scalar" and replica.replicas == 1
    assert replica.node == "xavier-1"  # preferred weight 70 over tx2's 30 (the fake's scheduler)
    assert replica.node_port == fake.services[(NAMESPACE, "roost-scalar")]["spec"]["ports"][0]["nodePort"]
    assert replica.endpoint == f"ws://203.0.113.7:{replica.node_port}/v1/stream"  # ExternalIP first
    dep = fake.deployments[(NAMESPACE, "roost-scalar")]
    assert dep["spec"]["replicas"] == 1 and dep["status"]["availableReplicas"] == 1
    assert fake.watch_requests() >= 1  # readiness came from a watch ...
    reads = [p for m, p in fake.requests if m == "GET" and p.startswith(
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/roost-scalar") and not p.endswith("/scale")]
    assert len(reads) <= 4  # ... not from polling the Deployment
    assert [p["metadata"]["name"] for p in _pods(fake)] == [replica.pod]

    second = await backend.admit(SCALAR, wait_seconds=20)
    assert second.replicas == 2 and fake.deployments[(NAMESPACE, "roost-scalar")]["spec"]["replicas"] == 2
    assert len(fake.services) == 1  # the Service was reused, not created again


async def test_an_existing_deployment_and_service_are_adopted(fake: FakeKube, backend: KubernetesBackend) -> None:
    fake.add_node("xavier-1", {"machine": "xavier"}, memory="7Gi")
    other = backend_at(fake.url)
    try:
        await other.admit(SCALAR, wait_seconds=20)  # another hub created them
        replica = await backend.admit(SCALAR, wait_seconds=20)
    finally:
        other.close()
    assert replica.replicas == 2
    assert 409 not in fake.statuses  # read first: nothing was created twice


async def test_capacity_is_allocatable_minus_the_requests_of_live_pods(fake: FakeKube,
                                                                       backend: KubernetesBackend) -> None:
    fake.add_node("xavier-1", {"machine": "xavier"}, memory="7Gi", cpu="4")
    fake.add_pod("kube-system", "other", "xavier-1", memory="2Gi", cpu="500m")
    fake.add_pod("batch", "finished", "xavier-1", memory="5Gi", phase="Succeeded")  # holds nothing
    fake.add_pod("batch", "crashed", "xavier-1", memory="5Gi", phase="Failed")
    (node,) = await asyncio.to_thread(backend.nodes)
    assert (node.memory_bytes, node.requested_memory) == (7 * GI, 2 * GI)
    assert (node.cpu_millis, node.requested_cpu) == (4000, 500)
    assert node.tier == "edge" and node.online
    await backend.admit(SCALAR, wait_seconds=20)  # 5Gi free: one scalar (3417969Ki) fits ...
    with pytest.raises(ClusterFullError, match="no edge node"):
        await backend.admit(SCALAR, wait_seconds=20)  # ... not two
    assert fake.deployments[(NAMESPACE, "roost-scalar")]["spec"]["replicas"] == 1


async def test_a_full_edge_offloads_and_the_centre_is_not_counted_as_edge(fake: FakeKube,
                                                                          backend: KubernetesBackend) -> None:
    fake.add_node("tx2-1", {"machine": "tx2"}, memory="4Gi")
    fake.add_node("centre-1", {"roost.io/tier": "centre"}, memory="64Gi")
    views = {n.name: n for n in await asyncio.to_thread(backend.nodes)}
    assert views["centre-1"].tier == "centre" and views["tx2-1"].tier == "edge"
    await backend.admit(SCALAR, wait_seconds=20)
    with pytest.raises(ClusterFullError) as caught:
        await backend.admit(SCALAR, wait_seconds=20)
    assert caught.value.code == "CLUSTER_FULL" and getattr(caught.value, "retryable", False)
    assert [p["spec"]["nodeName"] for p in _pods(fake)] == ["tx2-1"]


async def test_a_type_no_node_could_ever_run_is_unschedulable(fake: FakeKube, backend: KubernetesBackend) -> None:
    fake.add_node("nano-1", {"machine": "nano"}, memory="64Gi")
    with pytest.raises(UnschedulableError, match="required affinity"):
        await backend.admit(SCALAR, wait_seconds=5)
    fake.add_node("tx2-1", {"machine": "tx2"}, memory="2Gi")
    with pytest.raises(UnschedulableError, match="more than any node allocates"):
        await backend.admit(IMAGE_TYPE, wait_seconds=5)
    assert fake.deployments[(NAMESPACE, "roost-image")]["spec"]["replicas"] == 0


async def test_offline_nodes_give_no_room(fake: FakeKube, backend: KubernetesBackend) -> None:
    fake.add_node("cordoned", {"machine": "xavier"}, memory="16Gi", unschedulable=True)
    fake.add_node("notready", {"machine": "xavier"}, memory="16Gi", ready=False)
    fake.add_node("tainted", {"machine": "xavier"}, memory="16Gi",
                  taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])
    views = await asyncio.to_thread(backend.nodes)
    assert [n.online for n in views] == [False, False, False]
    with pytest.raises(ClusterFullError):
        await backend.admit(SCALAR, wait_seconds=5)


async def test_concurrent_admissions_never_exceed_capacity(fake: FakeKube, backend: KubernetesBackend) -> None:
    fake.add_node("xavier-1", {"machine": "xavier"}, memory="7Gi")  # two scalars
    fake.add_node("tx2-1", {"machine": "tx2"}, memory="4Gi")  # one
    fake.add_node("nano-1", {"machine": "nano"}, memory="16Gi")  # none (affinity)
    results = await asyncio.gather(*(backend.admit(SCALAR, wait_seconds=20) for _ in range(5)),
                                   return_exceptions=True)
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(admitted) == 3 and all(isinstance(r, ClusterFullError) for r in refused), results
    assert fake.max_replicas_seen["roost-scalar"] == 3
    pods = _pods(fake)
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["tx2-1", "xavier-1", "xavier-1"]
    assert all(p["status"]["phase"] == "Running" for p in pods)


async def test_two_backends_at_once_never_exceed_capacity(fake: FakeKube) -> None:
    """Two hubs (two backends, two locks) admitting the same type: the replicas one asked for count for the
    other, and a scale-up that raced another is re-checked (409 on the resourceVersion)."""
    fake.add_node("xavier-1", {"machine": "xavier"}, memory="7Gi")
    first, second = backend_at(fake.url), backend_at(fake.url)
    try:
        results = await asyncio.gather(*(b.admit(SCALAR, wait_seconds=20) for b in (first, second, first, second)),
                                       return_exceptions=True)
    finally:
        first.close()
        second.close()
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(admitted) == 2 and all(isinstance(r, ClusterFullError) for r in refused), results
    assert fake.max_replicas_seen["roost-scalar"] == 2
    assert [p["spec"].get("nodeName") for p in _pods(fake)] == ["xavier-1", "xavier-1"]


async def test_a_concurrent_writer_makes_the_scale_update_retry(fake: FakeKube, backend: KubernetesBackend) -> None:
    fake.add_node("xavier-1", {"machine": "xavier"}, memory="7Gi")
    fake.writers_between = 2
    replica = await backend.admit(SCALAR, wait_seconds=20)
    assert replica.replicas == 1 and fake.statuses.count(409) == 2
    fake.writers_between = 100
    with pytest.raises(KubernetesConflictError) as caught:
        await backend.admit(SCALAR, wait_seconds=20)
    assert caught.value.code == "KUBERNETES_CONFLICT"
    assert fake.deployments[(NAMESPACE, "roost-scalar")]["spec"]["replicas"] == 1


async def test_max_replicas_is_respected(fake: FakeKube, backend: KubernetesBackend) -> None:
    fake.add_node("xavier-1", {"machine": "xavier"}, memory="64Gi")
    one = _type(SCALAR, maxReplicas=1)
    await backend.admit(one, wait_seconds=20)
    with pytest.raises(ClusterFullError, match="maxReplicas"):
        await backend.admit(one, wait_seconds=20)


async def test_release_scales_down_but_not_below_min(fake: FakeKube, backend: KubernetesBackend) -> None:
    fake.add_node("xavier-1", {"machine": "xavier"}, memory="64Gi")
    kept = _type(SCALAR, minReplicas=1)
    replica = await backend.admit(kept, wait_seconds=20)
    assert replica.replicas == 2  # created with minReplicas (1), then one more
    assert await backend.replicas(kept) == (2, 2)
    await backend.release(kept)
    assert fake.deployments[(NAMESPACE, "roost-scalar")]["spec"]["replicas"] == 1
    await backend.release(kept)
    assert fake.deployments[(NAMESPACE, "roost-scalar")]["spec"]["replicas"] == 1
    await backend.release(IMAGE_TYPE)  # no Deployment: nothing to do
    assert await backend.replicas(IMAGE_TYPE) == (0, 0)


async def test_a_replica_that_never_gets_ready_times_out_and_is_given_back(fake: FakeKube,
                                                                           backend: KubernetesBackend) -> None:
    fake.add_node("xavier-1", {"machine": "xavier"}, memory="7Gi")
    fake.pods_become_ready = False
    with pytest.raises(ReplicaNotReadyError, match="ContainersNotReady") as caught:
        await backend.admit(SCALAR, wait_seconds=1.5)
    assert caught.value.code == "REPLICA_NOT_READY"
    assert fake.deployments[(NAMESPACE, "roost-scalar")]["spec"]["replicas"] == 0


async def test_the_endpoint_uses_the_node_address_callback(fake: FakeKube) -> None:
    from kubernetes import client

    fake.add_node("xavier-1", {"machine": "xavier"}, memory="7Gi")
    backend = KubernetesBackend(client.ApiClient(client.Configuration(host=fake.url)), NAMESPACE, IMAGE,
                                hub_public_key=HUB_KEY, node_address=lambda node: f"{node}.edge.example")
    try:
        replica = await backend.admit(SCALAR, wait_seconds=20)
    finally:
        backend.close()
    assert replica.endpoint == f"ws://xavier-1.edge.example:{replica.node_port}/v1/stream"


async def test_rbac_refusals_are_kubernetes_forbidden(fake: FakeKube, backend: KubernetesBackend) -> None:
    fake.add_node("xavier-1", {"machine": "xavier"}, memory="7Gi")
    fake.forbid("PUT", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/roost-scalar/scale")
    with pytest.raises(KubernetesForbiddenError, match=r"403.*rbac\.yaml") as caught:
        await backend.admit(SCALAR, wait_seconds=5)
    assert caught.value.code == "KUBERNETES_FORBIDDEN"
    fake.forbid("GET", "/api/v1/nodes")
    with pytest.raises(KubernetesForbiddenError, match="list nodes"):
        await asyncio.to_thread(backend.nodes)


async def test_a_missing_namespace_is_kubernetes_not_found(fake: FakeKube) -> None:
    backend = backend_at(fake.url, namespace="absent")
    try:
        with pytest.raises(KubernetesNotFoundError, match='namespaces "absent" not found') as caught:
            await backend.admit(SCALAR, wait_seconds=5)
    finally:
        backend.close()
    assert caught.value.code == "KUBERNETES_NOT_FOUND"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_api_is_kubernetes_unavailable() -> None:
    backend = backend_at(f"http://127.0.0.1:{_closed_port()}")
    try:
        with pytest.raises(KubernetesUnavailableError, match="cannot be reached") as caught:
            await backend.admit(SCALAR, wait_seconds=5)
        with pytest.raises(KubernetesUnavailableError):
            await asyncio.to_thread(backend.nodes)
    finally:
        backend.close()
    assert caught.value.code == "KUBERNETES_UNAVAILABLE" and getattr(caught.value, "retryable", False)


def test_api_statuses_map_to_specific_codes() -> None:
    from kubernetes.client.exceptions import ApiException

    def code(status: int) -> str:
        err = ApiException(status=status, reason="r")
        err.body = '{"kind": "Status", "message": "the API said so"}'
        mapped = map_api_error(err, "call")
        assert "the API said so" in mapped.message
        return mapped.code

    assert [code(s) for s in (401, 403, 404, 409, 429, 500, 503, 422)] == [
        "KUBERNETES_UNAUTHORIZED", "KUBERNETES_FORBIDDEN", "KUBERNETES_NOT_FOUND", "KUBERNETES_CONFLICT",
        "KUBERNETES_UNAVAILABLE", "KUBERNETES_UNAVAILABLE", "KUBERNETES_UNAVAILABLE", "KUBERNETES_API_ERROR"]
    assert isinstance(map_api_error(ValueError("x"), "call"), KubernetesError)


def test_pod_requests_count_init_containers_and_overhead() -> None:
    pod = {"spec": {"containers": [{"resources": {"requests": {"memory": "1Gi", "cpu": "250m"}}},
                                   {"resources": {"requests": {"memory": "1Gi"}}}, {}],
                    "initContainers": [{"resources": {"requests": {"memory": "3Gi", "cpu": "100m"}}}],
                    "overhead": {"memory": "128Mi"}}}
    assert pod_requests(pod) == (3 * GI + 128 * 2**20, 250)
    assert pod_requests({"spec": {}}) == (0, 0)


@pytest.mark.parametrize(("namespace", "image", "key", "match"), [
    ("Roost", IMAGE, HUB_KEY, "namespace 'Roost' is not a DNS label"),
    ("roost", "has space", HUB_KEY, "image 'has space'"),
    ("roost", IMAGE, "short", "hub_public_key"),
])
def test_bad_configuration_is_refused(namespace: str, image: str, key: str, match: str) -> None:
    from kubernetes import client

    with pytest.raises(KubernetesConfigError, match=match) as caught:
        KubernetesBackend(client.ApiClient(client.Configuration(host="http://127.0.0.1:1")), namespace, image,
                          hub_public_key=key)
    assert caught.value.code == "KUBERNETES_CONFIG_INVALID"


def test_a_kubeconfig_that_does_not_load_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KubernetesConfigError, match="does not load"):
        KubernetesBackend.from_kubeconfig(str(tmp_path / "absent"), None, NAMESPACE, IMAGE, hub_public_key=HUB_KEY)
    broken = tmp_path / "config"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    with pytest.raises(KubernetesConfigError, match="does not load"):
        KubernetesBackend.from_kubeconfig(str(broken), "nope", NAMESPACE, IMAGE, hub_public_key=HUB_KEY)


def test_a_kubeconfig_reaches_its_cluster(fake: FakeKube, tmp_path: Path) -> None:
    fake.add_node("xavier-1", {"machine": "xavier"})
    config = tmp_path / "config"
    config.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{fake.url}"}}}}]
users: [{{name: hub, user: {{token: not-a-real-token}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: hub}}}}]
current-context: fake
""")
    backend = KubernetesBackend.from_kubeconfig(str(config), "fake", NAMESPACE, IMAGE, hub_public_key=HUB_KEY)
    try:
        assert [n.name for n in backend.nodes()] == ["xavier-1"]
    finally:
        backend.close()
    assert config.read_text().count("not-a-real-token") == 1  # not rewritten (persist_config=False)


def test_in_cluster_outside_a_pod_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubernetesConfigError, match="not running in a Kubernetes pod"):
        KubernetesBackend.in_cluster(NAMESPACE, IMAGE, hub_public_key=HUB_KEY)


def test_the_shipped_requests_are_the_originals() -> None:
    assert SCALAR.memory_request == memory_bytes("3417969Ki") and IMAGE_TYPE.memory_request == memory_bytes("4394531Ki")


@pytest.mark.parametrize("wait", [0, -1, float("nan"), 1e9])
async def test_a_bad_wait_is_refused(backend: KubernetesBackend, wait: float) -> None:
    from roost.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="wait_seconds") as caught:
        await backend.admit(SCALAR, wait_seconds=wait)
    assert caught.value.code == "INVALID_ARGUMENT"
