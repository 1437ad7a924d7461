"""Metrics in the store (SQLite file and PostgreSQL): snapshots, an hour of per-minute history, the fleet
page's rows, scrape targets, the hub's gauges and metrics tokens."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from roost.hub.contract import DeploymentCreate, MetricsSnapshot, ModelSample, PrincipalKind
from roost.hub.errors import HubNotFoundError
from roost.hub.models import DeviceMetricSample
from roost.hub.store import Store
from roost.hub.store.metrics import HISTORY
from tests.hub.conftest import FakeClock, publish_to_store


def _enroll(store: Store, name: str, group: str | None = None, labels: dict[str, str] | None = None) -> int:
    store.enroll(store.create_enroll_token(group, 3600).token, name, dict(labels or {}))
    return _id(store, name)


def _id(store: Store, name: str) -> int:
    from roost.hub.models import Device

    with store.db.read() as s:
        return int(s.scalar(select(Device.id).where(Device.name == name)))


def _snap(cpu: float, endpoint: str | None = "10.0.0.7:9464", **models: float) -> MetricsSnapshot:
    samples = {m: ModelSample(requests_total=r, latency_p95_seconds=0.01) for m, r in models.items()}
    return MetricsSnapshot(endpoint=endpoint, token=True, values={"cpu_ratio": cpu, "memory_ratio": 0.5},
                           models=samples)


def test_snapshots_keep_the_latest_and_one_sample_a_minute_for_an_hour(store: Store, clock: FakeClock) -> None:
    device = _enroll(store, "xavier-1")
    assert store.device_metrics("xavier-1").latest is None and store.device_metrics("xavier-1").samples == []
    for i in range(90):  # 90 minutes, two snapshots a minute
        store.record_snapshot(device, _snap(i / 100, wine=float(i)))
        clock.advance(seconds=20)
        store.record_snapshot(device, _snap(i / 100 + 0.001, wine=float(i) + 0.5))
        clock.advance(seconds=40)
    got = store.device_metrics("xavier-1")
    assert got.window_seconds == int(HISTORY.total_seconds())
    assert got.latest is not None and got.latest.values["cpu_ratio"] == pytest.approx(0.891)
    assert got.received_at == clock() - timedelta(seconds=40)
    minutes = [p.at for p in got.samples]
    assert len(minutes) == 59 and minutes == sorted(minutes)  # 00:31..01:29; now is 01:30:00, nothing yet
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(minutes))
    assert got.samples[-1].values["cpu_ratio"] == pytest.approx(0.891)  # the minute's latest snapshot
    assert got.samples[-1].models["wine"].requests_total == 89.5
    with store.db.read() as s:  # pruned, not only hidden
        assert s.scalar(select(func.count()).select_from(DeviceMetricSample)) <= 61
    with pytest.raises(HubNotFoundError) as err:
        store.device_metrics("nobody")
    assert err.value.code == "DEVICE_NOT_FOUND"


def test_fleet_rows_and_targets_name_devices_groups_and_labels(store: Store) -> None:
    a = _enroll(store, "a-1", "lab", {"machine": "xavier"})
    b = _enroll(store, "b-1")
    _enroll(store, "c-1")  # never sent a snapshot: on neither
    store.add_group_members("zoo", ["a-1"])
    store.record_snapshot(a, _snap(0.25))
    store.record_snapshot(b, _snap(0.5, endpoint=None))
    rows = store.fleet_rows()
    assert [(r.device, r.groups) for r in rows] == [("a-1", ("lab", "zoo")), ("b-1", ())]
    assert "v cpu_ratio 0.25" in rows[0].lines.split("\n")
    targets = store.scrape_targets()
    assert [(t.device, t.endpoint, t.token, t.groups) for t in targets] == [("a-1", "10.0.0.7:9464", True,
                                                                            ("lab", "zoo"))]
    store.revoke_device("a-1")
    assert [r.device for r in store.fleet_rows()] == ["b-1"] and store.scrape_targets() == []


def test_hub_gauges_count_devices_deployments_rollouts_and_the_cluster(store: Store, clock: FakeClock) -> None:
    _enroll(store, "on-1", "lab")
    _enroll(store, "off-1", "lab")
    _enroll(store, "gone-1")
    clock.advance(seconds=300)
    # the devices were last seen at their enrolment: all offline now, but for on-1
    from sqlalchemy import update

    from roost.hub.models import Device

    with store.db.write() as s:
        s.execute(update(Device).where(Device.name == "on-1").values(last_seen_at=clock()))
    store.revoke_device("gone-1")
    publish_to_store(store, "com.example.Hello", "1.0.0")
    store.create_deployment(DeploymentCreate(target="group:lab", components={"com.example.Hello": "1.0.0"}))
    g = store.hub_gauges()
    assert g.devices == {"ONLINE": 1, "OFFLINE": 1, "REVOKED": 1}
    assert g.deployments == {"ACTIVE": 1}
    assert sorted((t, st, s, n) for (_, t, st, s), n in g.rollouts.items()) == [("group:lab", "ACTIVE", "QUEUED", 2)]
    assert g.nodes == {} and g.replicas == {} and g.sessions == {} and g.snapshots == 0


def test_metrics_tokens_authenticate_as_metrics_principals(store: Store) -> None:
    token = store.create_metrics_token("prometheus")
    assert token.startswith("rst_metrics_")
    principal = store.authenticate(token)
    assert principal.kind == PrincipalKind.METRICS and principal.name == "prometheus"
    assert store.admin_token_names() == []  # not an admin token
    assert store.authenticate(store.create_admin_token()).kind == PrincipalKind.ADMIN
