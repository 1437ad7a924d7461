"""The model gate's storage on every backend (SQLite, PostgreSQL): reports, the gate, benchmarks, recommendation."""

from __future__ import annotations

import pytest

from roost.hub.contract import BenchmarkIn, DeploymentCreate, Measurement, ModelValidation
from roost.hub.errors import HubConflictError, HubNotFoundError, UnprocessableError
from roost.hub.store import Store
from tests.hub.conftest import publish_to_store
from tests.hub.test_store import enrol


def _report(value: float) -> ModelValidation:
    return ModelValidation(metric="accuracy", value=value, rows=50, data="h.csv", data_sha256="d" * 64,
                           size_bytes=10)


def test_gate_benchmarks_and_recommendation(store: Store) -> None:
    device_id = enrol(store, "dev", "g")
    for version, value in (("1.0.0", 0.90), ("1.1.0", 0.80), ("1.2.0", 0.899)):
        publish_to_store(store, "com.example.C", version)
        store.set_validation("com.example.C", version, _report(value))
    assert store.get_component("com.example.C", "1.1.0").validation == store.get_validation("com.example.C", "1.1.0")
    store.create_deployment(DeploymentCreate(target="group:g", components={"com.example.C": "1.0.0"}))
    with pytest.raises(HubConflictError) as refused:  # accuracy 0.90 -> 0.80: 11 % worse
        store.create_deployment(DeploymentCreate(target="group:g", components={"com.example.C": "1.1.0"}))
    assert refused.value.code == "DEPLOYMENT_GATE_FAILED"
    passed = store.create_deployment(DeploymentCreate(target="group:g", components={"com.example.C": "1.2.0"}))
    assert passed.gate[0].baseline_version == "1.0.0" and passed.gate[0].regression == pytest.approx(0.001 / 0.9)
    with pytest.raises(UnprocessableError) as no_reason:
        store.create_deployment(DeploymentCreate(target="group:g", components={"com.example.C": "1.1.0"},
                                                 override_gate=True, override_reason="  "))
    assert no_reason.value.code == "GATE_OVERRIDE_REASON_MISSING"

    records = store.record_benchmarks(device_id, BenchmarkIn(measurements=[
        Measurement(component="com.example.C", version=v, latency_us=lat, calls=10) for v, lat in
        (("1.0.0", 50.0), ("1.2.0", 20.0))]))
    again = store.record_benchmarks(device_id, BenchmarkIn(measurements=[
        Measurement(component="com.example.C", version="1.0.0", latency_us=40.0, calls=10)]))  # replaces
    assert len(store.list_benchmarks(records[0].device_class)) == 2 and again[0].latency_us == 40.0
    rec = store.recommend("dev", max_latency_ms=0.03)
    assert rec.chosen == "com.example.C=1.2.0"
    assert {c.version: c.meets for c in rec.candidates} == {"1.0.0": False, "1.1.0": False, "1.2.0": True}
    with pytest.raises(HubNotFoundError) as unknown:
        store.recommend("ghost")
    assert unknown.value.code == "DEVICE_NOT_FOUND"
