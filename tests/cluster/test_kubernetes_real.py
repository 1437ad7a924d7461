"""The Kubernetes backend against a real cluster: only where ``KUBECONFIG`` names one.

No machine of this project (a developer's, CI's) has a Kubernetes cluster, so these tests skip even
under ROOST_REQUIRE_SERVICES=1 (``require_service(..., optional=True)``, allowed for this file alone by
tests/layout/test_skips.py). To run them against a cluster of yours::

    kubectl create namespace roost-test
    KUBECONFIG=~/.kube/config ROOST_TEST_KUBE_IMAGE=registry.example/roost:0.1.0 \\
        .venv/bin/pytest -q tests/cluster/test_kubernetes_real.py

``ROOST_TEST_KUBE_NAMESPACE`` (default ``roost-test``) must exist; ``ROOST_TEST_KUBE_IMAGE`` must be an image
built from deploy/docker/Dockerfile that the nodes can pull. The tests create ``roost-e2e`` (Deployment and
Service) there and scale it back to 0.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from roost.cluster.kubernetes import KubernetesBackend
from roost.cluster.service_types import ServiceType
from tests.cluster.conftest import HUB_KEY
from tests.conftest import require_service

pytestmark = pytest.mark.slow

KUBECONFIG = os.environ.get("KUBECONFIG", "")
require_service("kubernetes cluster", bool(KUBECONFIG), "KUBECONFIG is not set", optional=True)
NAMESPACE = os.environ.get("ROOST_TEST_KUBE_NAMESPACE", "roost-test")
IMAGE = os.environ.get("ROOST_TEST_KUBE_IMAGE", "")
#: Small, no affinity: fits any cluster with a schedulable node.
E2E = ServiceType.model_validate({"name": "e2e", "component": "com.roost.ClusterScalar", "kind": "tabular",
                                  "resources": {"requests": {"memory": "256Mi", "cpu": "100m"},
                                                "limits": {"memory": "1Gi"}},
                                  "maxReplicas": 2})


@pytest.fixture
def real() -> KubernetesBackend:
    return KubernetesBackend.from_kubeconfig(KUBECONFIG.split(os.pathsep)[0], None, NAMESPACE,
                                             IMAGE or "registry.example/roost:0.1.0", hub_public_key=HUB_KEY)


def test_the_nodes_of_the_cluster(real: KubernetesBackend) -> None:
    nodes = real.nodes()
    assert nodes and all(n.memory_bytes > 0 and n.cpu_millis > 0 for n in nodes)
    assert all(n.requested_memory >= 0 for n in nodes)


def test_the_api_server_accepts_the_manifests(real: KubernetesBackend) -> None:
    from kubernetes import client

    deployment: Any
    service: Any
    deployment, service = real.manifests(E2E)  # the client takes dicts as bodies
    client.AppsV1Api(real.api_client).create_namespaced_deployment(NAMESPACE, deployment, dry_run="All")
    client.CoreV1Api(real.api_client).create_namespaced_service(NAMESPACE, service, dry_run="All")


def test_admit_and_release_on_the_cluster(real: KubernetesBackend) -> None:
    require_service("a replica image (ROOST_TEST_KUBE_IMAGE)", bool(IMAGE), "ROOST_TEST_KUBE_IMAGE is not set",
                    optional=True)

    async def run() -> None:
        replica = await real.admit(E2E, wait_seconds=180)
        try:
            assert replica.replicas >= 1 and replica.endpoint.startswith("ws://")
            assert replica.endpoint.endswith(f":{replica.node_port}/v1/stream")
        finally:
            await real.release(E2E)
        desired, _ = await real.replicas(E2E)
        assert desired == replica.replicas - 1

    asyncio.run(run())
