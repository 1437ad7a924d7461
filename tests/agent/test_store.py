from __future__ import annotations

from pathlib import Path

import pytest

from roost.agent.store import ComponentRecord, Store
from roost.errors import NotFoundError


def test_components_survive_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.replace_components({"a": ComponentRecord("a", "1.0.0", True, {"k": 1}),
                              "b": ComponentRecord("b", "2.0.0", False, {})})
    store.intend("t1", "a", "install")
    store.intend("t2", "a", "run")
    store.spawned("t2", 1234, 99.5)
    store.close()
    again = Store(tmp_path / "state.db")
    comps = again.components()
    assert comps["a"].configuration == {"k": 1} and comps["a"].is_root and not comps["b"].is_root
    assert [(e.tag, e.component, e.step, e.pgid, e.create_time) for e in again.journal()] == [
        ("t1", "a", "install", None, None), ("t2", "a", "run", 1234, 99.5)]
    again.ended("t1")
    assert [e.tag for e in again.journal()] == ["t2"]
    again.replace_components({"b": ComponentRecord("b", "2.1.0", True, {})})
    assert list(again.components()) == ["b"] and again.component("b").version == "2.1.0"
    with pytest.raises(NotFoundError):
        again.component("a")


def test_deployments_keep_order_and_status(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    first = store.add_deployment("d1", {"x": 1})
    store.add_deployment("d2", {})
    store.update_deployment("d1", "FAILED", "FAILED_ROLLBACK_COMPLETE", ["boom"], "COMPONENT_FAILED")
    assert [d.id for d in store.deployments()] == ["d1", "d2"] and first.status == "QUEUED"
    d1 = store.deployment("d1").to_ipc()
    assert d1["status"] == "FAILED"
    assert d1["deploymentStatusDetails"]["deploymentErrorStack"] == ["boom"]
    assert [d.id for d in store.deployments("QUEUED")] == ["d2"]
    with pytest.raises(NotFoundError):
        store.deployment("nope")


def test_state_file_is_private_and_run_with_survives(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    assert (tmp_path / "state.db").stat().st_mode & 0o777 == 0o600
    store.replace_components({"a": ComponentRecord("a", "1.0.0", True, {}, run_with={"posixUser": "nobody"})})
    store.close()
    assert Store(tmp_path / "state.db").component("a").run_with == {"posixUser": "nobody"}
