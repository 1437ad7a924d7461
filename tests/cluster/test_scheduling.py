"""Quantities, affinity, service types and placement: the pure parts of the cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.cluster.affinity import Affinity, Expression
from roost.cluster.errors import QuantityError, ServiceTypeInvalidError
from roost.cluster.placement import NodeView, candidates, choose, explain_unschedulable, least_allocated
from roost.cluster.quantity import cpu_millis, format_memory, memory_bytes, parse_capacity
from roost.cluster.service_types import SHIPPED, load_service_types, parse_service_type

GI = 2**30


def test_quantities_read_as_kubernetes_reads_them() -> None:
    assert memory_bytes("3417969Ki") == 3417969 * 1024
    assert memory_bytes("16Gi") == 16 * GI
    assert memory_bytes("4G") == 4_000_000_000
    assert memory_bytes("1e3") == 1000
    assert memory_bytes(512) == 512
    assert cpu_millis("500m") == 500
    assert cpu_millis("2") == 2000
    assert cpu_millis("0.25") == 250
    assert format_memory(16 * GI) == "16Gi"


@pytest.mark.parametrize("bad", ["", "16 Gi", "Gi", "-1", "1.2.3", "16GiB", "0x10", "1e400", True])
def test_malformed_quantities_are_refused_by_name(bad: object) -> None:
    with pytest.raises(QuantityError) as err:
        memory_bytes(bad, "requests.memory")  # type: ignore[arg-type]
    assert err.value.code == "QUANTITY_INVALID"
    assert "requests.memory" in err.value.message


def test_capacity_option_parses_memory_cpu_and_accelerators() -> None:
    assert parse_capacity("memory=16Gi,cpu=8,nvidia.com/gpu=1") == {"memory": 16 * GI, "cpu": 8000,
                                                                     "nvidia.com/gpu": 1}


@pytest.mark.parametrize(("bad", "words"), [("memory", "KEY=QUANTITY"), ("memory=16Gi,memory=8Gi", "twice"),
                                        ("cpu=lots", "not a quantity"), ("nvidia.com/gpu=0.5", "whole number"),
                                        ("=3", "KEY=QUANTITY")])
def test_bad_capacity_options_say_what_is_wrong(bad: str, words: str) -> None:
    with pytest.raises(QuantityError, match=words):
        parse_capacity(bad)


def test_affinity_operators_follow_kubernetes() -> None:
    labels = {"machine": "xavier", "gpus": "2"}
    assert Expression(key="machine", operator="In", values=("xavier", "tx2")).holds(labels)
    assert not Expression(key="machine", operator="NotIn", values=("xavier",)).holds(labels)
    assert Expression(key="machine", operator="NotIn", values=("nano",)).holds({})  # absent label: NotIn holds
    assert Expression(key="gpus", operator="Gt", values=("1",)).holds(labels)
    assert not Expression(key="gpus", operator="Lt", values=("1",)).holds(labels)
    assert not Expression(key="missing", operator="Gt", values=("1",)).holds(labels)
    assert Expression(key="machine", operator="Exists").holds(labels)
    assert Expression(key="x", operator="DoesNotExist").holds(labels)
    shipped = SHIPPED["scalar"].affinity
    assert shipped.score({"machine": "xavier"}) == 70
    assert shipped.score({"machine": "tx2"}) == 30
    assert not shipped.allows({"machine": "nano"})


@pytest.mark.parametrize(("data", "words"), [
    ({"component": "c"}, "name"),
    ({"name": "Scalar!", "component": "c"}, "name"),
    ({"name": "s", "component": "c", "resources": {"requests": {"memory": "lots"}}}, "not a quantity"),
    ({"name": "s", "component": "c", "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}},
     "below the request"),
    ({"name": "s", "component": "c", "affinity": {"required": [{"key": "m", "operator": "In"}]}}, "at least one"),
    ({"name": "s", "component": "c", "affinity": {"required": [{"key": "m", "operator": "Near", "values": ["x"]}]}},
     "operator"),
    ({"name": "s", "component": "c", "minReplicas": 5, "maxReplicas": 2}, "above maxReplicas"),
    ({"name": "s", "component": "c", "sessionsPerReplica": 0}, "sessionsPerReplica"),
    ({"name": "s", "component": "c", "colour": "red"}, "colour"),
])
def test_bad_service_types_name_the_field(data: dict[str, object], words: str) -> None:
    with pytest.raises(ServiceTypeInvalidError, match=words) as err:
        parse_service_type(data)
    assert err.value.code == "SERVICE_TYPE_INVALID"


def test_service_type_files_read_yaml_documents_and_lists(tmp_path: Path) -> None:
    path = tmp_path / "types.yaml"
    path.write_text("name: a\ncomponent: c.A\n---\n- name: b\n  component: c.B\n  sessionsPerReplica: 4\n")
    assert [(t.name, t.sessions_per_replica) for t in load_service_types(path)] == [("a", 1), ("b", 4)]
    path.write_text("name: a\ncomponent: c.A\n---\nname: a\ncomponent: c.B\n")
    with pytest.raises(ServiceTypeInvalidError, match="defined twice"):
        load_service_types(path)
    path.write_text("name: [unclosed\n")
    with pytest.raises(ServiceTypeInvalidError, match="not valid YAML"):
        load_service_types(path)
    with pytest.raises(ServiceTypeInvalidError, match="cannot be read"):
        load_service_types(tmp_path / "missing.yaml")


def test_shipped_types_carry_the_original_numbers() -> None:
    scalar, image = SHIPPED["scalar"], SHIPPED["image"]
    assert scalar.resources.requests.memory == "3417969Ki" and scalar.resources.limits.memory == "3906250Ki"
    assert image.resources.requests.memory == "4394531Ki" and image.resources.limits.memory == "4882812Ki"
    assert scalar.sessions_per_replica == image.sessions_per_replica == 1
    assert parse_service_type(scalar.to_wire()) == scalar  # the wire form reads back the same


def _node(name: str, machine: str, memory_gi: float, tier: str = "edge", requested_gi: float = 0,
          online: bool = True) -> NodeView:
    return NodeView(name=name, tier=tier, labels={"machine": machine}, memory_bytes=int(memory_gi * GI),  # type: ignore[arg-type]
                    cpu_millis=8000, requested_memory=int(requested_gi * GI), online=online)


def test_placement_prefers_xavier_then_tx2_and_never_nano() -> None:
    scalar = SHIPPED["scalar"]
    nodes = [_node("n-nano", "nano", 64), _node("n-tx2", "tx2", 8), _node("n-xavier", "xavier", 8)]
    assert [n.name for n in candidates(scalar, nodes, "edge")] == ["n-xavier", "n-tx2"]


def test_placement_fills_by_capacity_like_the_original_two_per_xavier_one_per_tx2() -> None:
    scalar = SHIPPED["scalar"]
    nodes = {n.name: n for n in [_node("xavier", "xavier", 8), _node("tx2", "tx2", 4)]}
    placed = []
    while (best := choose(scalar, nodes.values(), "edge")) is not None:
        placed.append(best.name)
        nodes[best.name] = best.with_replica(scalar)
    assert sorted(placed) == ["tx2", "xavier", "xavier"]  # capacity 2 x xavier + tx2


def test_ties_break_by_name_and_least_allocation_spreads() -> None:
    scalar = SHIPPED["scalar"]
    a, b = _node("b-node", "xavier", 16), _node("a-node", "xavier", 16)
    assert choose(scalar, [a, b], "edge") == b  # same score: the name decides
    busy = _node("a-node", "xavier", 16, requested_gi=8)
    assert choose(scalar, [a, busy], "edge") == a  # the emptier node scores higher
    assert least_allocated(a, scalar) > least_allocated(busy, scalar)


def test_offline_nodes_and_other_tiers_are_not_candidates() -> None:
    scalar = SHIPPED["scalar"]
    assert choose(scalar, [_node("x", "xavier", 16, online=False)], "edge") is None
    assert choose(scalar, [_node("c", "xavier", 64, tier="centre")], "edge") is None
    assert choose(scalar, [_node("c", "xavier", 64, tier="centre")], "centre") is not None


def test_unschedulable_is_explained() -> None:
    scalar = SHIPPED["scalar"]
    assert explain_unschedulable(scalar, []) == "no node is enrolled in the cluster"
    why = explain_unschedulable(scalar, [_node("n", "nano", 64)])
    assert why is not None and "required affinity" in why
    why = explain_unschedulable(scalar, [_node("x", "xavier", 2)])
    assert why is not None and "more than any node allocates" in why and "x" in why
    assert explain_unschedulable(scalar, [_node("x", "xavier", 2, requested_gi=2), _node("y", "tx2", 4)]) is None
    custom = Affinity(required=(Expression(key="gpu", operator="Exists"),))
    assert not custom.allows({"machine": "xavier"})
