"""The cluster's records and admission against the store (SQLite file and PostgreSQL): placement into
nodes' replicas deployments, warm slots, offload to the centre, refusals, failures, no over-commit."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from roost.cluster.errors import ClusterFullError, NodeConflictError, ServiceTypeNotFoundError, UnschedulableError
from roost.cluster.service_types import SHIPPED, ServiceType, parse_service_type
from roost.hub import desired
from roost.hub.contract.cluster import NodeCapacity, NodeReport, ReplicaStatus, SessionStatus
from roost.hub.errors import UnprocessableError
from roost.hub.store import Store
from tests.hub.conftest import FakeClock, publish_to_store

GI = 2**30
KEY = "test-public-key"


def _node(store: Store, name: str, machine: str, memory_gi: float, *, tier: str = "edge",
          ports: tuple[int, int] = (31000, 31999)) -> int:
    token = store.create_enroll_token(None, 3600).token
    store.enroll(token, name, {})
    device_id = _device_id(store, name)
    capacity = NodeCapacity(memory_bytes=int(memory_gi * GI), cpu_millis=8000)
    store.report_node(device_id, NodeReport(labels={"machine": machine}, allocatable=capacity, measured=capacity,
                                            tier=tier, address="127.0.0.1", port_min=ports[0], port_max=ports[1]))  # type: ignore[arg-type]
    return device_id


def _device_id(store: Store, name: str) -> int:
    from sqlalchemy import select

    from roost.hub.models import Device

    with store.db.read() as s:
        return int(s.scalar(select(Device.id).where(Device.name == name)))


def _scalar(store: Store, **changes: Any) -> ServiceType:
    if not any(c.name == "com.roost.ClusterScalar" for c in store.list_components()):
        publish_to_store(store, "com.roost.ClusterScalar", "1.0.0", {"model.json": b"{}"})
    spec = parse_service_type({**SHIPPED["scalar"].to_wire(), **changes})
    return store.apply_service_type(spec)


def _counts_agree(store: Store) -> None:
    """Every replica's active_sessions counter equals its ACTIVE session rows."""
    from sqlalchemy import func, select

    from roost.hub.models import ClusterReplica, ClusterSessionRow

    with store.db.read() as s:
        rows = dict(s.execute(select(ClusterSessionRow.replica_id, func.count(ClusterSessionRow.id))
                              .where(ClusterSessionRow.status == "ACTIVE")
                              .group_by(ClusterSessionRow.replica_id)).all())
        for replica_id, counter in s.execute(select(ClusterReplica.id, ClusterReplica.active_sessions)):
            assert counter == rows.get(replica_id, 0), replica_id


def _desired(store: Store, name: str) -> dict[str, Any]:
    device_id = _device_id(store, name)
    with store.db.write() as s:
        refs = desired.device_refs(s, [device_id])
        state = desired.compute_many(s, list(refs.values()), store.clock(), deliver=False)[device_id]
    return {n: c for n, c in state.components.items()}


def test_nodes_report_capacity_labels_and_tier(store: Store) -> None:
    _node(store, "xavier-1", "xavier", 8)
    _node(store, "hub-centre", "server", 64, tier="centre")
    nodes = {n.name: n for n in store.list_nodes()}
    assert nodes["xavier-1"].tier == "edge" and nodes["xavier-1"].labels["machine"] == "xavier"
    assert nodes["xavier-1"].allocatable.memory_bytes == 8 * GI and nodes["xavier-1"].online
    assert nodes["hub-centre"].tier == "centre"


def test_a_service_type_needs_its_component_published(store: Store) -> None:
    with pytest.raises(UnprocessableError) as err:
        store.apply_service_type(SHIPPED["scalar"])
    assert err.value.code == "UNKNOWN_COMPONENT"
    with pytest.raises(ServiceTypeNotFoundError):
        store.admit("scalar", "c1", None, KEY)


@pytest.mark.parametrize("name", ["sc\x00alar", "\udb46\udf13", "Scalar", "x" * 64, ""])
def test_a_name_no_service_type_can_have_is_not_found(store: Store, name: str) -> None:
    """Not looked up at all: PostgreSQL refuses NUL in text (a fuzzed admission once got a 500 for it)."""
    with pytest.raises(ServiceTypeNotFoundError, match="no service type"):
        store.get_service_type(name)
    with pytest.raises(ServiceTypeNotFoundError):
        store.admit(name, "client-1", None, "")


def test_admission_places_by_affinity_and_capacity_then_offloads_then_refuses(store: Store) -> None:
    _scalar(store)
    _node(store, "nano-1", "nano", 64)
    _node(store, "tx2-1", "tx2", 4)
    _node(store, "xavier-1", "xavier", 8)
    _node(store, "centre-1", "server", 8, tier="centre")
    placed = [store.admit("scalar", f"client-{i}", None, KEY) for i in range(5)]
    assert [a.session.node for a in placed] == ["xavier-1", "xavier-1", "tx2-1", "centre-1", "centre-1"]
    assert [a.session.offloaded for a in placed] == [False, False, False, True, True]
    assert all(not a.warm for a in placed)
    assert placed[0].port != placed[1].port  # two replicas on one node: two ports
    with pytest.raises(ClusterFullError) as err:
        store.admit("scalar", "client-6", None, KEY)
    assert err.value.code == "CLUSTER_FULL"
    # the node's replicas deployment lists both replicas, as aliases with their configuration
    xavier = _desired(store, "xavier-1")
    assert set(xavier) == {"com.roost.ClusterScalar.r1", "com.roost.ClusterScalar.r2"}
    config = xavier["com.roost.ClusterScalar.r1"].configuration["MERGE"]
    assert config["port"] == placed[0].port and config["publicKey"] == KEY and config["replicaId"] == placed[0].replica
    assert xavier["com.roost.ClusterScalar.r1"].recipe["ComponentName"] == "com.roost.ClusterScalar.r1"
    assert [a.file for a in xavier["com.roost.ClusterScalar.r1"].artifacts or []] == ["model.json"]
    assert store.artifacts.path("com.roost.ClusterScalar.r2", "1.0.0", "model.json").read_bytes() == b"{}"
    assert _desired(store, "nano-1") == {}
    nodes = {n.name: n for n in store.list_nodes()}
    assert nodes["xavier-1"].replicas == 2 and nodes["xavier-1"].sessions == 2
    assert nodes["xavier-1"].requested.memory_bytes == 2 * SHIPPED["scalar"].memory_request


def test_the_edge_tier_alone_answers_full_for_the_compatibility_route(store: Store) -> None:
    _scalar(store)
    _node(store, "tx2-1", "tx2", 4)
    _node(store, "centre-1", "server", 64, tier="centre")
    assert store.admit("scalar", "a", "edge", KEY).session.node == "tx2-1"
    with pytest.raises(ClusterFullError):
        store.admit("scalar", "b", "edge", KEY)
    assert store.admit("scalar", "b", "centre", KEY).session.tier == "centre"


def test_impossible_requests_are_refused_not_offloaded(store: Store) -> None:
    _scalar(store, resources={"requests": {"memory": "100Gi"}})
    _node(store, "xavier-1", "xavier", 8)
    with pytest.raises(UnschedulableError, match="more than any node allocates"):
        store.admit("scalar", "a", None, KEY)
    _scalar(store)
    store.apply_service_type(parse_service_type({**SHIPPED["scalar"].to_wire(), "affinity": {
        "required": [{"key": "machine", "operator": "In", "values": ["orin"]}]}}))
    with pytest.raises(UnschedulableError, match="required affinity"):
        store.admit("scalar", "a", None, KEY)


def test_ended_sessions_free_their_slot_for_a_warm_admission(store: Store) -> None:
    _scalar(store)
    _node(store, "tx2-1", "tx2", 4)
    first = store.admit("scalar", "a", None, KEY)
    store.replica_ready(first.replica)
    store.end_session(first.session.id, "ended by the client")
    assert store.get_session(first.session.id).status == SessionStatus.ENDED
    again = store.admit("scalar", "b", None, KEY)
    assert again.warm and again.replica == first.replica and again.replica_status == ReplicaStatus.READY
    assert store.end_session(again.session.id, "x").end_reason == "x"
    assert store.end_session(again.session.id, "y").end_reason == "x"  # idempotent: the first reason stays
    _counts_agree(store)


def test_a_failed_replica_ends_its_sessions_and_leaves_the_node(store: Store) -> None:
    _scalar(store, sessionsPerReplica=2)
    _node(store, "xavier-1", "xavier", 8)
    one = store.admit("scalar", "a", None, KEY)
    two = store.admit("scalar", "b", None, KEY)
    assert two.warm and two.replica == one.replica  # two sessions per replica
    ended = store.stop_replica(one.replica, ReplicaStatus.FAILED, "replica lost: test", KEY)
    assert sorted(ended) == sorted([one.session.id, two.session.id])
    assert store.get_session(one.session.id).end_reason == "replica lost: test"
    assert _desired(store, "xavier-1") == {}
    fresh = store.admit("scalar", "c", None, KEY)
    assert fresh.replica != one.replica and not fresh.warm
    _counts_agree(store)


def test_idle_replicas_and_the_replica_monitor_records(store: Store, clock: FakeClock) -> None:
    _scalar(store)
    _node(store, "tx2-1", "tx2", 4)
    admitted = store.admit("scalar", "a", None, KEY)
    store.replica_ready(admitted.replica)
    (probe,) = store.probes()
    assert probe.sessions and probe.status == ReplicaStatus.READY and probe.idle_since is None
    store.observe_sessions(admitted.replica, {}, {admitted.session.id: "idle timeout"})
    assert store.get_session(admitted.session.id).end_reason == "idle timeout"
    (probe,) = store.probes()
    assert probe.idle_since is not None and not probe.sessions
    store.stop_replica(admitted.replica, ReplicaStatus.STOPPING, "idle", KEY)
    assert store.forget_stopped_replicas() == 1  # the node does not report the component (any more)
    admitted = store.admit("scalar", "b", None, KEY)
    store.stop_replica(admitted.replica, ReplicaStatus.STOPPING, "idle", KEY)
    clock.advance(hours=2)
    assert store.forget_replicas(timedelta(hours=1)) == 1
    assert store.list_replicas() == []


def test_max_replicas_bounds_each_tier(store: Store) -> None:
    _scalar(store, maxReplicas=1)
    _node(store, "xavier-1", "xavier", 32)
    _node(store, "centre-1", "server", 64, tier="centre")
    assert store.admit("scalar", "a", None, KEY).session.tier == "edge"
    assert store.admit("scalar", "b", None, KEY).session.tier == "centre"
    with pytest.raises(ClusterFullError, match="maxReplicas"):
        store.admit("scalar", "c", None, KEY)


def test_offline_and_revoked_nodes_get_no_replica(store: Store, clock: FakeClock) -> None:
    _scalar(store)
    _node(store, "xavier-1", "xavier", 8)
    clock.advance(minutes=10)  # never seen since
    with pytest.raises(ClusterFullError):
        store.admit("scalar", "a", None, KEY)


def test_a_node_runs_out_of_ports(store: Store) -> None:
    _scalar(store, resources={"requests": {"memory": "1Gi"}})
    _node(store, "xavier-1", "xavier", 64, ports=(32000, 32001))
    store.admit("scalar", "a", None, KEY)
    store.admit("scalar", "b", None, KEY)
    with pytest.raises(ClusterFullError):
        store.admit("scalar", "c", None, KEY)


def test_service_types_with_live_replicas_cannot_be_deleted(store: Store) -> None:
    _scalar(store)
    _node(store, "tx2-1", "tx2", 4)
    admitted = store.admit("scalar", "a", None, KEY)
    with pytest.raises(NodeConflictError):
        store.delete_service_type("scalar")
    store.stop_replica(admitted.replica, ReplicaStatus.STOPPING, "idle", KEY)
    store.delete_service_type("scalar")
    assert store.list_service_types() == []


def test_concurrent_admissions_never_over_commit_a_node(store: Store) -> None:
    _scalar(store)
    _node(store, "xavier-1", "xavier", 8)  # room for two
    _node(store, "tx2-1", "tx2", 4)  # room for one
    results: list[Any] = []
    lock = threading.Lock()

    def admit(i: int) -> None:
        try:
            out: Any = store.admit("scalar", f"c{i}", "edge", KEY)
        except ClusterFullError as err:
            out = err
        with lock:
            results.append(out)

    threads = [threading.Thread(target=admit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    admitted = [r for r in results if not isinstance(r, Exception)]
    assert len(admitted) == 3 and len(results) == 8
    assert sorted(a.session.node for a in admitted) == ["tx2-1", "xavier-1", "xavier-1"]
    for node in store.list_nodes():
        assert node.requested.memory_bytes <= node.allocatable.memory_bytes
    _counts_agree(store)


def test_concurrent_admissions_and_endings_keep_the_slot_counts_true(store: Store) -> None:
    _scalar(store, sessionsPerReplica=4)
    _node(store, "xavier-1", "xavier", 8)
    first = [store.admit("scalar", f"c{i}", None, KEY) for i in range(4)]
    errors: list[BaseException] = []

    def churn(i: int) -> None:
        try:
            store.end_session(first[i].session.id, "done")
            store.admit("scalar", f"again-{i}", None, KEY)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    _counts_agree(store)
    assert sum(r.sessions for r in store.list_replicas()) == 4


def test_min_replicas_are_kept_warm_at_the_edge(store: Store) -> None:
    _scalar(store, minReplicas=2)
    _node(store, "xavier-1", "xavier", 8)
    first = store.keep_minimum("scalar", KEY)
    second = store.keep_minimum("scalar", KEY)
    assert first and second and first != second
    assert store.keep_minimum("scalar", KEY) is None  # two live: enough
    admitted = store.admit("scalar", "a", None, KEY)
    assert admitted.warm and admitted.replica in (first, second)
