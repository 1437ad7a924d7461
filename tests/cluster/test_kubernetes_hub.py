"""The hub with ``--backend kubernetes``: admission through the REST API drives the Kubernetes backend
(against the fake API server of tests/cluster/fake_kube.py: no API server can run here), the session's
token verifies for the Deployment's replicas, ending it scales back, and a full cluster offloads to
the centre tier of agents."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from roost.cluster.service_types import SHIPPED
from roost.cluster.tokens import TokenSigner, TokenVerifier
from roost.errors import InvalidInputError
from roost.hub.app import HubConfig, create_app
from tests.cluster.conftest import IMAGE, NAMESPACE
from tests.cluster.fake_kube import FakeKube
from tests.hub.conftest import HubServer, _start, enroll_device, publish

GI = 2**30


def _kubeconfig(path: Path, url: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "fake-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u", "namespace": NAMESPACE}}]}))
    return path


def _hub(tmp_path: Path, fake: FakeKube) -> HubServer:
    config = HubConfig(root=tmp_path / "hub", poll_interval=0.1, cluster_backend="kubernetes",
                       kube_namespace=NAMESPACE, replica_image=IMAGE,
                       kubeconfig=str(_kubeconfig(tmp_path / "kubeconfig", fake.url)))
    return _start(config)


def test_admission_on_the_kubernetes_backend(tmp_path: Path, fake: FakeKube) -> None:
    fake.add_node("xavier-1", {"machine": "xavier"}, memory="8Gi", cpu="4")
    hub = _hub(tmp_path, fake)
    stop: Callable[[], None] = hub.stop
    try:
        with hub.client() as c:
            assert publish(c, "com.roost.ClusterScalar", "1.0.0", {"model.json": b"{}"}).status_code == 201
            assert c.put("/v1/cluster/service-types/scalar", json=SHIPPED["scalar"].to_wire()).status_code == 200
            first = c.post("/v1/cluster/sessions", json={"type": "scalar", "client_id": "a", "wait_seconds": 20})
            assert first.status_code == 201, first.text
            session = first.json()
            assert session["node"].startswith("kubernetes:") and session["tier"] == "edge"
            assert session["endpoint"].startswith("ws://") and session["endpoint"].endswith("/v1/stream")
            signer = TokenSigner.from_file(hub.root / "cluster.key")
            claims = TokenVerifier(signer.public_key()).verify(session["token"], "session", "roost-scalar")
            assert claims.session == session["id"]
            assert len(fake.pods_of(NAMESPACE, "roost-scalar")) == 1
            second = c.post("/v1/cluster/sessions", json={"type": "scalar", "client_id": "b", "wait_seconds": 20})
            assert second.status_code == 201, second.text
            # 8Gi holds two scalar replicas: the third has no room at the edge and no centre exists
            third = c.post("/v1/cluster/sessions", json={"type": "scalar", "client_id": "c", "wait_seconds": 20})
            assert third.status_code == 503 and third.json()["error"]["code"] == "CLUSTER_FULL", third.text
            # a centre node (an agent) takes the offload
            credential = enroll_device(hub, "centre-1")
            capacity = {"memory_bytes": 64 * GI, "cpu_millis": 8000}
            put = httpx.put(hub.url + "/v1/device/node", headers={"Authorization": f"Bearer {credential}"},
                            json={"labels": {"machine": "server"}, "allocatable": capacity, "measured": capacity,
                                  "tier": "centre", "address": "127.0.0.1"})
            assert put.status_code == 200
            offload = c.post("/v1/cluster/sessions", json={"type": "scalar", "client_id": "c", "wait_seconds": 0.5})
            # no agent serves the centre node here: the placed replica never gets ready, but it went to the centre
            assert offload.status_code == 503 and offload.json()["error"]["code"] == "REPLICA_NOT_READY"
            assert "centre-1" in offload.json()["error"]["message"]
            ended = c.delete(f"/v1/cluster/sessions/{session['id']}")
            assert ended.status_code == 200 and ended.json()["status"] == "ENDED"
            assert fake.deployments[(NAMESPACE, "roost-scalar")]["spec"]["replicas"] == 1  # scaled back by one
    finally:
        stop()


def test_a_bad_backend_configuration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="replica-image"):
        create_app(HubConfig(root=tmp_path / "a", cluster_backend="kubernetes"))
    with pytest.raises(InvalidInputError, match="agents or kubernetes"):
        create_app(HubConfig(root=tmp_path / "b", cluster_backend="nomad"))
