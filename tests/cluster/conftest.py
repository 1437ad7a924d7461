"""The Kubernetes backend's fixtures: the fake API server (tests/cluster/fake_kube.py says why it is a
fake) and a backend pointed at it through a real ``kubernetes.client.Configuration``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from roost.cluster.kubernetes import KubernetesBackend
from tests.cluster.fake_kube import FakeKube

#: A well-formed hub public key (base64url of 32 bytes).
HUB_KEY = "A" * 43
NAMESPACE = "roost"
IMAGE = "registry.example/roost:0.1.0"


def backend_at(host: str, namespace: str = NAMESPACE) -> KubernetesBackend:
    from kubernetes import client

    configuration = client.Configuration(host=host)
    configuration.retries = 0  # a refused connection fails at once (the test of an unreachable API)
    return KubernetesBackend(client.ApiClient(configuration), namespace, IMAGE, hub_public_key=HUB_KEY,
                             request_timeout=5.0)


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    server = FakeKube().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def backend(fake: FakeKube) -> Iterator[KubernetesBackend]:
    b = backend_at(fake.url)
    try:
        yield b
    finally:
        b.close()
