"""The shared storage suite: every test runs against a SQLite file and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from roost.hub.contract import DeploymentCreate
from roost.hub.errors import (
    AuthenticationError,
    ForbiddenError,
    GoneError,
    HubConflictError,
    HubInvalidInputError,
    HubNotFoundError,
    InvalidNameError,
    ReportForbiddenError,
    RevisionNotGivenError,
    UnprocessableError,
)
from roost.hub.store import Report, Store
from tests.hub.conftest import FakeClock, make_recipe, publish_to_store


def enrol(store: Store, name: str, group: str | None = None) -> int:
    token = store.create_enroll_token(group).token
    credential = store.enroll(token, name, {"arch": "x86_64"}).credential
    return store.authenticate(credential).id


def rows(store: Store, deployment_id: str) -> dict[str, tuple[str, str | None]]:
    info = store.get_deployment(deployment_id)
    assert info.devices is not None
    return {d.device: (d.status, d.reason_code) for d in info.devices}


# -- tokens and enrolment -------------------------------------------------------------------------


def test_admin_token_is_stored_hashed_and_authenticates(store: Store) -> None:
    token = store.create_admin_token("ops")
    assert token.startswith("rst_admin_")
    assert store.authenticate(token).kind == "admin"
    with pytest.raises(AuthenticationError) as err:
        store.authenticate(token + "x")
    assert err.value.code == "INVALID_TOKEN"
    from sqlalchemy import text
    with store.db.read() as s:
        hashes = [r[0] for r in s.execute(text("SELECT token_hash FROM api_tokens"))]
    assert token not in hashes and len(hashes[0]) == 64


def test_enrolment_token_once_expiry_and_revocation(store: Store, clock: FakeClock) -> None:
    info = store.create_enroll_token(ttl_seconds=60)
    enrolment = store.enroll(info.token, "dev-1", {"machine": "xavier"})
    principal = store.authenticate(enrolment.credential)
    assert principal.kind == "device" and principal.name == "dev-1"
    with pytest.raises(GoneError) as used:
        store.enroll(info.token, "dev-2")
    assert used.value.code == "ENROLL_TOKEN_USED"
    expiring = store.create_enroll_token(ttl_seconds=60)
    clock.advance(seconds=61)
    with pytest.raises(AuthenticationError) as expired:
        store.enroll(expiring.token, "dev-3")
    assert expired.value.code == "ENROLL_TOKEN_EXPIRED"
    with pytest.raises(AuthenticationError):
        store.enroll("rst_enroll_nope", "dev-4")
    # Taken names are refused and do not burn the token.
    again = store.create_enroll_token()
    with pytest.raises(HubConflictError) as taken:
        store.enroll(again.token, "dev-1")
    assert taken.value.code == "DEVICE_EXISTS"
    store.enroll(again.token, "dev-5")
    # Revocation cuts the device off at once.
    store.revoke_device("dev-1")
    with pytest.raises(AuthenticationError) as revoked:
        store.authenticate(enrolment.credential)
    assert revoked.value.code == "DEVICE_REVOKED"
    assert {d.name: d.status for d in store.list_devices()}["dev-1"] == "REVOKED"


def test_enrolment_token_redeemed_exactly_once_under_concurrency(store: Store) -> None:
    for attempt in range(3):
        token = store.create_enroll_token().token
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def redeem(name: str, token: str = token, barrier: threading.Barrier = barrier,
                   outcomes: list[str] = outcomes) -> None:
            barrier.wait()
            try:
                store.enroll(token, name)
                outcomes.append("ok")
            except GoneError as err:
                outcomes.append(err.code)

        threads = [threading.Thread(target=redeem, args=(f"race-{attempt}-{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["ENROLL_TOKEN_USED", "ok"]
    assert len(store.list_devices()) == 3


# -- devices and groups ---------------------------------------------------------------------------


def test_devices_labels_groups(store: Store) -> None:
    enrol(store, "a", group="edge")
    enrol(store, "b")
    assert store.set_labels("b", {"machine": "tx2", "memory": 8}).labels == {"machine": "tx2", "memory": 8}
    group = store.add_group_members("edge", ["b"])
    assert group.devices == ["a", "b"]
    store.add_group_members("lab", ["a"])
    assert {g.name: g.devices for g in store.list_groups()} == {"edge": ["a", "b"], "lab": ["a"]}
    assert store.get_device("a").groups == ["edge", "lab"]
    assert store.remove_group_member("edge", "a").devices == ["b"]
    with pytest.raises(HubNotFoundError):
        store.remove_group_member("edge", "a")
    with pytest.raises(HubNotFoundError) as missing:
        store.add_group_members("edge", ["ghost"])
    assert missing.value.code == "DEVICE_NOT_FOUND"
    with pytest.raises(InvalidNameError):
        store.get_device("../etc")


# -- components -----------------------------------------------------------------------------------


def test_component_versions_are_immutable_and_digests_stored(store: Store) -> None:
    info = publish_to_store(store, files={"hello.py": b"print(1)\n"})
    assert [a.file for a in info.artifacts] == ["hello.py"]
    component = store.get_component("com.example.Hello", "1.0.0")
    artifact = component.recipe["Manifests"][0]["Artifacts"][0]
    import base64
    import hashlib
    assert artifact["Digest"] == base64.b64encode(hashlib.sha256(b"print(1)\n").digest()).decode()
    assert artifact["Algorithm"] == "SHA-256"
    with pytest.raises(HubConflictError) as exists:
        publish_to_store(store, files={"hello.py": b"print(2)\n"})
    assert exists.value.code == "VERSION_EXISTS"
    publish_to_store(store, version="1.1.0")
    assert [(c.name, c.version) for c in store.list_components()] == [
        ("com.example.Hello", "1.0.0"), ("com.example.Hello", "1.1.0")]
    assert store.artifacts.path("com.example.Hello", "1.0.0", "hello.py").read_bytes() == b"print(1)\n"


def test_component_recipe_errors(store: Store) -> None:
    staging = store.artifacts.staging()
    try:
        with pytest.raises(UnprocessableError) as bad:
            store.publish_component(b"ComponentName: [", staging, [])
        assert bad.value.code == "RECIPE_INVALID"
        with pytest.raises(UnprocessableError) as missing:
            store.publish_component(make_recipe(files=("a.bin",)), staging, [])
        assert missing.value.code == "ARTIFACT_MISSING" and "a.bin" in missing.value.message
    finally:
        staging.cleanup()
    with pytest.raises(HubNotFoundError):
        store.get_component("com.example.Nope", "1.0.0")


# -- deployments and desired state ----------------------------------------------------------------


def test_deployment_desired_state_and_superseding(store: Store) -> None:
    dev = enrol(store, "d1", group="fleet")
    publish_to_store(store, "com.example.A", "1.0.0")
    publish_to_store(store, "com.example.A", "2.0.0")
    publish_to_store(store, "com.example.B", "1.0.0")
    state, _ = store.desired_state(dev, None)
    assert state is not None and state.components == {}
    assert store.desired_state(dev, state.revision) == (None, False)

    first = store.create_deployment(DeploymentCreate(target="group:fleet", components={"com.example.A": "1.0.0"},
                                                      configuration={"com.example.A": {"MERGE": {"x": 1}}}))
    state, _ = store.desired_state(dev, state.revision)
    assert state is not None and state.deployments == [first.id]
    assert state.components["com.example.A"].version == "1.0.0"
    assert state.components["com.example.A"].configuration == {"MERGE": {"x": 1}}
    assert state.components["com.example.A"].recipe["ComponentName"] == "com.example.A"
    assert rows(store, first.id) == {"d1": ("IN_PROGRESS", None)}

    # The device's own deployment is unioned with the group's.
    own = store.create_deployment(DeploymentCreate(target="device:d1", components={"com.example.B": "1.0.0"}))
    state2, _ = store.desired_state(dev, state.revision)
    assert state2 is not None and state2.revision > state.revision
    assert {n: c.version for n, c in state2.components.items()} == {"com.example.A": "1.0.0",
                                                                   "com.example.B": "1.0.0"}
    assert state2.deployments == [first.id, own.id]

    # A new group deployment supersedes the previous one; omitted components are removed.
    second = store.create_deployment(DeploymentCreate(target="group:fleet", components={"com.example.A": "2.0.0"}))
    assert store.get_deployment(first.id).status == "SUPERSEDED"
    assert rows(store, first.id) == {"d1": ("CANCELED", "SUPERSEDED")}
    state3, _ = store.desired_state(dev, state2.revision)
    assert state3 is not None
    assert {n: c.version for n, c in state3.components.items()} == {"com.example.A": "2.0.0",
                                                                   "com.example.B": "1.0.0"}
    store.create_deployment(DeploymentCreate(target="device:d1", components={}))
    state4, _ = store.desired_state(dev, state3.revision)
    assert state4 is not None and set(state4.components) == {"com.example.A"}
    assert second.id in state4.deployments

    with pytest.raises(UnprocessableError) as unknown:
        store.create_deployment(DeploymentCreate(target="device:d1", components={"com.example.A": "9.9.9"}))
    assert unknown.value.code == "UNKNOWN_COMPONENT" and "9.9.9" in unknown.value.message
    with pytest.raises(UnprocessableError):
        store.create_deployment(DeploymentCreate(target="device:d1", components={"com.example.Zzz": "1.0.0"}))
    with pytest.raises(HubNotFoundError):
        store.create_deployment(DeploymentCreate(target="device:ghost", components={}))
    with pytest.raises(UnprocessableError):
        store.create_deployment(DeploymentCreate(target="cluster:x", components={}))


def test_desired_state_conflict_is_reported_on_the_device(store: Store) -> None:
    dev = enrol(store, "c1", group="g")
    publish_to_store(store, "com.example.A", "1.0.0")
    publish_to_store(store, "com.example.A", "2.0.0")
    group_dep = store.create_deployment(DeploymentCreate(target="group:g", components={"com.example.A": "1.0.0"}))
    device_dep = store.create_deployment(DeploymentCreate(target="device:c1",
                                                           components={"com.example.A": "2.0.0"}))
    state, _ = store.desired_state(dev, None)
    assert state is not None
    assert state.components["com.example.A"].version == "1.0.0"
    assert state.deployments == [group_dep.id]
    info = store.get_deployment(device_dep.id)
    assert info.devices is not None
    row = info.devices[0]
    assert (row.status, row.reason_code) == ("FAILED", "DESIRED_STATE_CONFLICT")
    assert row.message is not None and group_dep.id in row.message and device_dep.id in row.message
    assert info.status == "COMPLETED"


def test_reports_are_idempotent_and_complete_deployments(store: Store) -> None:
    dev = enrol(store, "r1")
    publish_to_store(store, "com.example.A", "1.0.0")
    dep = store.create_deployment(DeploymentCreate(target="device:r1", components={"com.example.A": "1.0.0"}))
    state, _ = store.desired_state(dev, None)
    assert state is not None
    report = Report(id="rep-1", deployment_id=dep.id, revision=state.revision, status="SUCCEEDED",
                    components={"com.example.A": {"version": "1.0.0", "state": "RUNNING"}})
    assert store.record_reports(dev, [report, report]).duplicates == ["rep-1"]
    assert store.record_reports(dev, [report]).accepted == []
    assert rows(store, dep.id) == {"r1": ("SUCCEEDED", None)}
    assert store.get_deployment(dep.id).status == "COMPLETED"
    device = store.get_device("r1")
    assert device.applied_revision == state.revision
    assert device.components["com.example.A"].state == "RUNNING" and device.health == "HEALTHY"
    # A late report for a finished row does not change it.
    store.record_reports(dev, [Report(id="rep-2", deployment_id=dep.id, status="FAILED")])
    assert rows(store, dep.id) == {"r1": ("SUCCEEDED", None)}


def test_concurrent_duplicate_reports_apply_once(store: Store) -> None:
    dev = enrol(store, "r2")
    barrier = threading.Barrier(4)
    results: list[tuple[list[str], list[str]]] = []

    def send() -> None:
        barrier.wait()
        r = store.record_reports(dev, [Report(id="same", revision=1)])
        results.append((r.accepted, r.duplicates))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [([], ["same"])] * 3 + [(["same"], [])]


# -- rollout --------------------------------------------------------------------------------------


def test_rate_limited_rollout_releases_gradually(store: Store, clock: FakeClock) -> None:
    ids = {f"n{i}": enrol(store, f"n{i}", group="wave") for i in range(5)}
    publish_to_store(store, "com.example.A", "1.0.0")
    publish_to_store(store, "com.example.A", "2.0.0")
    base = store.create_deployment(DeploymentCreate(target="group:wave", components={"com.example.A": "1.0.0"}))
    for dev in ids.values():
        store.desired_state(dev, None)
    dep = store.create_deployment(DeploymentCreate(target="group:wave", components={"com.example.A": "2.0.0"},
                                                    max_per_minute=2))
    released = [d for d in store.get_deployment(dep.id).devices or [] if d.released_at is not None]
    assert len(released) == 2
    versions = {}
    pending = {}
    for name, dev in ids.items():
        state, pending[name] = store.desired_state(dev, None)
        assert state is not None
        versions[name] = state.components["com.example.A"].version
    assert sorted(versions.values()) == ["1.0.0", "1.0.0", "1.0.0", "2.0.0", "2.0.0"]
    waiting = [n for n, v in versions.items() if v == "1.0.0"]
    assert all(pending[n] for n in waiting)
    # Unreleased devices keep the previous deployment as their desired state.
    assert base.id in store.desired_state(ids[waiting[0]], None)[0].deployments  # type: ignore[union-attr]
    clock.advance(seconds=61)
    now_versions = [store.desired_state(ids[n], None)[0].components["com.example.A"].version  # type: ignore[union-attr]
                    for n in waiting]
    assert sorted(now_versions) == ["1.0.0", "2.0.0", "2.0.0"]
    clock.advance(seconds=61)
    for n in waiting:
        store.desired_state(ids[n], None)
    info = store.get_deployment(dep.id)
    assert all(d.released_at is not None for d in info.devices or [])


def test_abort_rule_cancels_the_rest(store: Store) -> None:
    ids = {f"a{i}": enrol(store, f"a{i}", group="ab") for i in range(6)}
    publish_to_store(store, "com.example.A", "1.0.0")
    dep = store.create_deployment(DeploymentCreate(target="group:ab", components={"com.example.A": "1.0.0"},
                                                    max_per_minute=3, abort_failure_percent=50,
                                                    abort_min_devices=2))
    started = [n for n, d in (rows(store, dep.id)).items()]
    assert len(started) == 6
    released = [d.device for d in store.get_deployment(dep.id).devices or [] if d.released_at is not None]
    assert len(released) == 3
    for n in released:
        store.desired_state(ids[n], None)
    store.record_reports(ids[released[0]], [Report(id="f1", deployment_id=dep.id, status="FAILED",
                                                   reason_code="INSTALL_FAILED")])
    assert store.get_deployment(dep.id).status == "ACTIVE"  # 1 finished < abort_min_devices
    store.record_reports(ids[released[1]], [Report(id="f2", deployment_id=dep.id, status="ROLLED_BACK")])
    info = store.get_deployment(dep.id)
    assert info.status == "ABORTED" and info.status_reason is not None
    states = rows(store, dep.id)
    assert [states[n][0] for n in released] == ["FAILED", "ROLLED_BACK", "IN_PROGRESS"]
    unreleased = [n for n in ids if n not in released]
    assert all(states[n] == ("CANCELED", "ABORTED") for n in unreleased)
    # Canceled devices keep their previous (empty) desired state.
    state, pending = store.desired_state(ids[unreleased[0]], None)
    assert state is not None and state.components == {} and not pending


def test_timeouts_are_computed_on_read(store: Store, clock: FakeClock) -> None:
    dev = enrol(store, "t1")
    enrol(store, "t2")
    store.add_group_members("tg", ["t1", "t2"])
    publish_to_store(store, "com.example.A", "1.0.0")
    dep = store.create_deployment(DeploymentCreate(target="group:tg", components={"com.example.A": "1.0.0"},
                                                    timeout_minutes=5))
    store.desired_state(dev, None)
    clock.advance(minutes=4)
    assert rows(store, dep.id) == {"t1": ("IN_PROGRESS", None), "t2": ("QUEUED", None)}
    clock.advance(minutes=2)
    assert rows(store, dep.id) == {"t1": ("TIMED_OUT", "TIMEOUT"), "t2": ("TIMED_OUT", "TIMEOUT")}
    assert store.get_deployment(dep.id).status == "COMPLETED"
    assert [d.status for d in store.list_deployments()] == ["COMPLETED"]


def test_cancel_keeps_previous_state_for_devices_not_started(store: Store) -> None:
    a = enrol(store, "k1", group="kg")
    b = enrol(store, "k2", group="kg")
    publish_to_store(store, "com.example.A", "1.0.0")
    dep = store.create_deployment(DeploymentCreate(target="group:kg", components={"com.example.A": "1.0.0"}))
    store.desired_state(a, None)  # k1 picks it up (IN_PROGRESS); k2 has not polled yet
    info = store.cancel_deployment(dep.id)
    assert info.status == "CANCELED"
    assert rows(store, dep.id) == {"k1": ("IN_PROGRESS", None), "k2": ("CANCELED", "CANCELED")}
    state_b, _ = store.desired_state(b, None)
    assert state_b is not None and state_b.components == {}
    state_a, _ = store.desired_state(a, None)
    assert state_a is not None and set(state_a.components) == {"com.example.A"}
    assert store.cancel_deployment(dep.id).status == "CANCELED"  # idempotent
    with pytest.raises(HubNotFoundError):
        store.cancel_deployment("00000000-0000-0000-0000-000000000000")


def test_group_join_gets_current_deployment_and_leave_removes_it(store: Store) -> None:
    publish_to_store(store, "com.example.A", "1.0.0")
    enrol(store, "j0", group="jg")
    dep = store.create_deployment(DeploymentCreate(target="group:jg", components={"com.example.A": "1.0.0"}))
    late = enrol(store, "j1")
    store.add_group_members("jg", ["j1"])
    state, _ = store.desired_state(late, None)
    assert state is not None and state.deployments == [dep.id]
    store.remove_group_member("jg", "j1")
    state2, _ = store.desired_state(late, state.revision)
    assert state2 is not None and state2.components == {}


def test_device_artifact_access_is_limited_to_desired_state(store: Store) -> None:
    a = enrol(store, "x1")
    b = enrol(store, "x2")
    publish_to_store(store, "com.example.A", "1.0.0")
    store.create_deployment(DeploymentCreate(target="device:x1", components={"com.example.A": "1.0.0"}))
    pa = store.authenticate(store.create_admin_token())
    assert store.artifact(pa, "com.example.A", "1.0.0", "hello.py").size > 0
    from roost.hub.store import Principal
    assert store.artifact(Principal("device", a, "x1"), "com.example.A", "1.0.0", "hello.py").sha256
    with pytest.raises(ForbiddenError):
        store.artifact(Principal("device", b, "x2"), "com.example.A", "1.0.0", "hello.py")
    with pytest.raises(InvalidNameError):
        store.artifact(pa, "com.example.A", "1.0.0", "..")


# -- batched device operations (one transaction answers many devices' requests) ---------------------


def test_batched_desired_states_answer_each_request(store: Store) -> None:
    ids = {n: enrol(store, n, group="b") for n in ("b1", "b2", "b3")}
    publish_to_store(store, "com.example.A", "1.0.0")
    store.revoke_device("b3")
    dep = store.create_deployment(DeploymentCreate(target="group:b", components={"com.example.A": "1.0.0"}))
    first = store.desired_states([(ids["b1"], None), (ids["b2"], 0), (ids["b3"], None), (ids["b1"], 10**6)])
    s1, s2, revoked, stale = first
    assert isinstance(s1, tuple) and s1[0] is not None and s1[0].deployments == [dep.id]
    assert isinstance(s2, tuple) and s2[0] is not None and s2[0].components["com.example.A"].version == "1.0.0"
    assert isinstance(revoked, AuthenticationError) and revoked.code == "DEVICE_REVOKED"
    assert stale == (None, False)  # the same device asking with a newer revision: nothing newer
    assert rows(store, dep.id) == {"b1": ("IN_PROGRESS", None), "b2": ("IN_PROGRESS", None)}
    revision = s1[0].revision
    assert store.desired_states([(ids["b1"], revision), (ids["b2"], revision)]) == [(None, False), (None, False)]
    with pytest.raises(AuthenticationError):
        store.desired_state(ids["b3"])


def test_batched_reports_apply_each_device_once_in_order(store: Store) -> None:
    a, b, gone = enrol(store, "ra", group="r"), enrol(store, "rb", group="r"), enrol(store, "rc", group="r")
    publish_to_store(store, "com.example.A", "1.0.0")
    dep = store.create_deployment(DeploymentCreate(target="group:r", components={"com.example.A": "1.0.0"}))
    served = {}
    for device_id in (a, b, gone):
        state, _ = store.desired_state(device_id)
        assert state is not None
        served[device_id] = state.revision
    store.revoke_device("rc")
    running = {"com.example.A": {"version": "1.0.0", "state": "RUNNING"}}
    results = store.record_reports_many([
        (a, [Report(id="1", deployment_id=dep.id, status="IN_PROGRESS"),
             Report(id="2", deployment_id=dep.id, status="SUCCEEDED", revision=served[a], components=running)]),
        (gone, [Report(id="1", deployment_id=dep.id, status="SUCCEEDED")]),
        (b, [Report(id="1", deployment_id=dep.id, status="FAILED", reason_code="INSTALL_FAILED")]),
        (a, [Report(id="2", deployment_id=dep.id, status="FAILED")]),  # the same id again in the batch
        (b, [Report(id="x", deployment_id="not-a-uuid", status="SUCCEEDED")]),  # no deployment of b's
    ])
    assert [getattr(r, "accepted", None) for r in results] == [["1", "2"], None, ["1"], [], None]
    assert isinstance(results[1], AuthenticationError) and results[1].code == "DEVICE_REVOKED"
    assert getattr(results[3], "duplicates", None) == ["2"]
    assert isinstance(results[4], ReportForbiddenError) and results[4].code == "DEPLOYMENT_NOT_FOR_DEVICE"
    assert rows(store, dep.id) == {"ra": ("SUCCEEDED", None), "rb": ("FAILED", "INSTALL_FAILED"),
                                   "rc": ("CANCELED", "DEVICE_REVOKED")}
    device = store.get_device("ra")
    assert device.applied_revision == served[a] and device.components["com.example.A"].state == "RUNNING"
    assert store.get_deployment(dep.id).status == "COMPLETED"
    # Sent again (a spooled retry): all duplicates, nothing changes.
    again = store.record_reports_many([(a, [Report(id="1", status="QUEUED", deployment_id=dep.id)])])
    assert getattr(again[0], "duplicates", None) == ["1"]
    # The refused report's id was not recorded: the same id with valid content is a new report.
    assert store.record_reports(b, [Report(id="x", revision=served[b])]).accepted == ["x"]


# -- what a device may report (only on itself) -----------------------------------------------------


def test_a_device_reports_only_on_deployments_made_for_it(store: Store) -> None:
    """Deployments to the device, to a group it is in, was in, or joined later: yes; any other: 403."""
    publish_to_store(store, "com.example.A", "1.0.0")
    own, member, leaver = enrol(store, "own"), enrol(store, "member", group="g"), enrol(store, "leaver", group="g")
    outsider = enrol(store, "outsider")
    to_own = store.create_deployment(DeploymentCreate(target="device:own", components={"com.example.A": "1.0.0"}))
    to_group = store.create_deployment(DeploymentCreate(target="group:g", components={"com.example.A": "1.0.0"}))
    joiner = enrol(store, "joiner")
    store.add_group_members("g", ["joiner"])  # joins after the deployment: receives it
    revision = {}
    for device_id in (own, member, leaver, joiner, outsider):
        state, _ = store.desired_state(device_id)
        assert state is not None
        revision[device_id] = state.revision
    store.remove_group_member("g", "leaver")  # its row stays (CANCELED): it was given the deployment

    before = store.get_device("outsider")
    running = {"com.example.A": {"version": "1.0.0", "state": "RUNNING"}}
    for forged in (to_own.id, to_group.id, "00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        with pytest.raises(ReportForbiddenError) as refused:
            store.record_reports(outsider, [Report(id=f"f-{forged}", deployment_id=forged, status="SUCCEEDED",
                                                   revision=revision[outsider], components=running)])
        assert refused.value.code == "DEPLOYMENT_NOT_FOR_DEVICE" and forged in refused.value.message
    # A forged report among honest ones in the same request: the whole request is refused.
    with pytest.raises(ReportForbiddenError):
        store.record_reports(own, [Report(id="ok-first", revision=revision[own], components=running),
                                   Report(id="forged", deployment_id=to_group.id, status="FAILED")])
    # Nothing of the refused requests was applied: rows, reported state, applied revision, last seen.
    assert rows(store, to_own.id) == {"own": ("IN_PROGRESS", None)}
    assert rows(store, to_group.id) == {"member": ("IN_PROGRESS", None), "leaver": ("CANCELED", "REMOVED_FROM_GROUP"),
                                        "joiner": ("IN_PROGRESS", None)}
    after = store.get_device("outsider")
    assert (after.applied_revision, after.components, after.last_seen_at) == (
        before.applied_revision, before.components, before.last_seen_at)
    assert store.get_device("own").applied_revision is None and store.get_device("own").components == {}

    # Each device on its own deployments: accepted and applied.
    store.record_reports(own, [Report(id="ok-first", revision=revision[own], components=running),
                               Report(id="own-done", deployment_id=to_own.id, status="SUCCEEDED")])
    for device_id in (member, joiner):
        result = store.record_reports(device_id, [Report(id="done", deployment_id=to_group.id, status="SUCCEEDED",
                                                         revision=revision[device_id])])
        assert result.accepted == ["done"]
    late = store.record_reports(leaver, [Report(id="late", deployment_id=to_group.id, status="SUCCEEDED",
                                                revision=revision[leaver])])
    assert late.accepted == ["late"]  # its own (closed) row: accepted, the row stays as it is
    assert rows(store, to_own.id) == {"own": ("SUCCEEDED", None)}
    assert rows(store, to_group.id) == {"member": ("SUCCEEDED", None), "leaver": ("CANCELED", "REMOVED_FROM_GROUP"),
                                        "joiner": ("SUCCEEDED", None)}
    assert store.get_device("own").applied_revision == revision[own]
    assert store.get_device("leaver").applied_revision == revision[leaver]


def test_applied_revision_moves_only_to_revisions_given_and_never_backwards(store: Store) -> None:
    publish_to_store(store, "com.example.A", "1.0.0")
    dev, other = enrol(store, "rv1"), enrol(store, "rv2")
    dep = store.create_deployment(DeploymentCreate(target="device:rv1", components={"com.example.A": "1.0.0"}))
    state, _ = store.desired_state(dev)
    other_state, _ = store.desired_state(other)
    assert state is not None and other_state is not None and other_state.revision < state.revision
    given = state.revision

    # Newer than anything the hub gave this device: refused, nothing applied.
    for claimed in (given + 1, 2**31 - 1):
        with pytest.raises(RevisionNotGivenError) as refused:
            store.record_reports(dev, [Report(id=f"future-{claimed}", deployment_id=dep.id, status="SUCCEEDED",
                                              revision=claimed)])
        assert refused.value.code == "REVISION_NOT_GIVEN" and str(given) in refused.value.message
    # Another device's (newer) revision is not this device's either.
    with pytest.raises(RevisionNotGivenError):
        store.record_reports(other, [Report(id="borrowed", revision=given)])
    assert rows(store, dep.id) == {"rv1": ("IN_PROGRESS", None)}
    assert store.get_device("rv1").applied_revision is None and store.get_device("rv2").applied_revision is None

    # The revision given: applied.
    result = store.record_reports(dev, [Report(id="applied", deployment_id=dep.id, status="SUCCEEDED",
                                               revision=given)])
    assert (result.accepted, result.revisions_ignored) == (["applied"], [])
    assert store.get_device("rv1").applied_revision == given
    # Older (an agent whose local state was reset reports 0): the rest of the report is recorded,
    # the revision is not applied and the answer says so.
    running = {"com.example.A": {"version": "1.0.0", "state": "RUNNING"}}
    older = store.record_reports(dev, [Report(id="reset", revision=0, components=running),
                                       Report(id="same", revision=given)])
    assert (older.accepted, older.revisions_ignored) == (["reset", "same"], ["reset"])
    device = store.get_device("rv1")
    assert device.applied_revision == given and device.components["com.example.A"].state == "RUNNING"
    # In one request, the newest wins whatever the order.
    store.create_deployment(DeploymentCreate(target="device:rv1", components={}))
    newer, _ = store.desired_state(dev, given)
    assert newer is not None and newer.revision > given
    batch = store.record_reports_many([(dev, [Report(id="n1", revision=newer.revision)]),
                                       (dev, [Report(id="n2", revision=given)])])
    assert [getattr(r, "revisions_ignored", None) for r in batch] == [[], ["n2"]]
    assert store.get_device("rv1").applied_revision == newer.revision


def test_a_forged_report_in_a_batch_is_refused_and_the_others_apply(store: Store) -> None:
    publish_to_store(store, "com.example.A", "1.0.0")
    ids = {n: enrol(store, n, group="fleet") for n in ("fa", "fb", "fc")}
    intruder = enrol(store, "intruder")
    dep = store.create_deployment(DeploymentCreate(target="group:fleet", components={"com.example.A": "1.0.0"}))
    given = {}
    for name, device_id in [*ids.items(), ("intruder", intruder)]:
        state, _ = store.desired_state(device_id)
        assert state is not None
        given[name] = state.revision
    ok = [(ids[n], [Report(id=f"{n}-1", deployment_id=dep.id, status="SUCCEEDED", revision=given[n])])
          for n in ("fa", "fb")]
    results = store.record_reports_many([
        ok[0],
        (intruder, [Report(id="i-1", deployment_id=dep.id, status="FAILED", revision=given["intruder"])]),
        (ids["fc"], [Report(id="fc-1", deployment_id=dep.id, status="SUCCEEDED", revision=given["fc"] + 1)]),
        ok[1],
    ])
    assert getattr(results[0], "accepted", None) == ["fa-1"] and getattr(results[3], "accepted", None) == ["fb-1"]
    assert isinstance(results[1], ReportForbiddenError) and results[1].code == "DEPLOYMENT_NOT_FOR_DEVICE"
    assert isinstance(results[2], RevisionNotGivenError) and results[2].code == "REVISION_NOT_GIVEN"
    assert rows(store, dep.id) == {"fa": ("SUCCEEDED", None), "fb": ("SUCCEEDED", None), "fc": ("IN_PROGRESS", None)}
    assert store.get_device("fa").applied_revision == given["fa"]
    assert store.get_device("fc").applied_revision is None and store.get_device("intruder").applied_revision is None


def test_batched_artifact_access(store: Store) -> None:
    a, b, gone = enrol(store, "aa"), enrol(store, "ab"), enrol(store, "ac")
    publish_to_store(store, "com.example.A", "1.0.0")
    for name in ("aa", "ac"):
        store.create_deployment(DeploymentCreate(target=f"device:{name}", components={"com.example.A": "1.0.0"}))
    store.revoke_device("ac")
    got = store.artifacts_for_devices([
        (a, "com.example.A", "1.0.0", "hello.py"),
        (b, "com.example.A", "1.0.0", "hello.py"),
        (gone, "com.example.A", "1.0.0", "hello.py"),
        (a, "com.example.A", "1.0.0", "missing.bin"),
        (a, "com.example.A", "1.0.0", "../../etc/passwd"),
        (a, "com.example.A", "2.0.0", "hello.py"),
    ])
    ok, forbidden, revoked, missing, traversal, other_version = got
    assert getattr(ok, "file_name", None) == "hello.py" and getattr(ok, "size", 0) > 0
    assert isinstance(forbidden, ForbiddenError) and forbidden.code == "ARTIFACT_FORBIDDEN"
    assert isinstance(revoked, AuthenticationError) and revoked.code == "DEVICE_REVOKED"
    assert isinstance(missing, HubNotFoundError) and missing.code == "ARTIFACT_NOT_FOUND"
    assert isinstance(traversal, InvalidNameError)
    assert isinstance(other_version, ForbiddenError)


def test_touch_devices_never_moves_last_seen_backwards(store: Store, clock: FakeClock) -> None:
    dev = enrol(store, "t1")
    seen = store.get_device("t1").last_seen_at
    assert seen is not None
    clock.advance(seconds=30)
    store.touch_devices({dev: clock()})
    assert store.get_device("t1").last_seen_at == clock()
    store.touch_devices({dev: clock() - timedelta(seconds=20)})  # an older sighting from another process
    assert store.get_device("t1").last_seen_at == clock()


# -- component dependencies ------------------------------------------------------------------------


def _publish_with(store: Store, name: str, version: str, extra: str = "") -> None:
    staging = store.artifacts.staging()
    writer = staging.open("hello.py")
    writer.write(b"print('hi')\n")
    try:
        store.publish_component(make_recipe(name, version, ("hello.py",), extra), staging, [writer.finish()])
    finally:
        staging.cleanup()


def _needs(*deps: tuple[str, str]) -> str:
    return "ComponentDependencies:\n" + "".join(f"  {d}:\n    VersionRequirement: '{r}'\n" for d, r in deps)


def test_deployments_resolve_component_dependencies(store: Store) -> None:
    dev = enrol(store, "dep-1")
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        _publish_with(store, "com.example.Base", version)
    _publish_with(store, "com.example.Mid", "1.0.0", _needs(("com.example.Base", ">=1.0.0 <2.0.0")))
    _publish_with(store, "com.example.App", "1.0.0", _needs(("com.example.Mid", "^1.0.0")))
    dep = store.create_deployment(DeploymentCreate(target="device:dep-1", components={"com.example.App": "1.0.0"}))
    assert dep.components == {"com.example.App": "1.0.0"}
    assert dep.dependencies == {"com.example.Base": "1.1.0", "com.example.Mid": "1.0.0"}  # transitively
    state, _ = store.desired_state(dev)
    assert state is not None
    assert {n: (c.version, c.root) for n, c in state.components.items()} == {
        "com.example.App": ("1.0.0", True), "com.example.Base": ("1.1.0", False), "com.example.Mid": ("1.0.0", False)}
    assert state.components["com.example.Base"].recipe["ComponentVersion"] == "1.1.0"
    from roost.hub.store import Principal
    me = Principal("device", dev, "dep-1")
    assert store.artifact(me, "com.example.Base", "1.1.0", "hello.py").size > 0  # a dependency's artifacts
    with pytest.raises(ForbiddenError):
        store.artifact(me, "com.example.Base", "2.0.0", "hello.py")
    # A root that names the dependency itself pins it; nothing else is resolved for it.
    pinned = store.create_deployment(DeploymentCreate(
        target="device:dep-1", components={"com.example.App": "1.0.0", "com.example.Base": "1.0.0"}))
    assert pinned.dependencies == {"com.example.Mid": "1.0.0"}


def test_unresolvable_dependencies_are_refused_with_their_code(store: Store) -> None:
    enrol(store, "dep-2")
    _publish_with(store, "com.example.Base", "1.0.0")
    _publish_with(store, "com.example.Lonely", "1.0.0", _needs(("com.example.Nowhere", "*")))
    _publish_with(store, "com.example.Old", "1.0.0", _needs(("com.example.Base", "^1.0.0")))
    _publish_with(store, "com.example.New", "1.0.0", _needs(("com.example.Base", "^2.0.0")))
    with pytest.raises(UnprocessableError) as missing:
        store.create_deployment(DeploymentCreate(target="device:dep-2", components={"com.example.Lonely": "1.0.0"}))
    assert missing.value.code == "DEPENDENCY_MISSING" and "com.example.Nowhere" in missing.value.message
    with pytest.raises(UnprocessableError) as conflict:
        store.create_deployment(DeploymentCreate(target="device:dep-2", components={
            "com.example.Old": "1.0.0", "com.example.New": "1.0.0"}))
    assert conflict.value.code == "DEPENDENCY_CONFLICT"
    assert "com.example.Old" in conflict.value.message and "com.example.New" in conflict.value.message
    assert store.list_deployments() == []  # nothing was created


def test_enrolment_answers_the_first_poll_at_once_without_moving_the_revision(store: Store) -> None:
    first = enrol(store, "e-1", group="quiet")
    state, _ = store.desired_state(first, 0)  # the agent's first poll: after=0
    assert state is not None and state.components == {} and state.revision >= 1
    before = store.revision()
    second = enrol(store, "e-2", group="quiet")  # no deployment for the group: nothing changes
    assert store.revision() == before
    state2, _ = store.desired_state(second, 0)
    assert state2 is not None and state2.revision == before
    assert store.desired_state(first, state.revision) == (None, False)  # nobody else sees a change
    publish_to_store(store, "com.example.A", "1.0.0")
    store.create_deployment(DeploymentCreate(target="group:quiet", components={"com.example.A": "1.0.0"}))
    third = enrol(store, "e-3", group="quiet")  # joins a group with a deployment: its state changes
    assert store.revision() > before + 1
    state3, _ = store.desired_state(third, before)
    assert state3 is not None and set(state3.components) == {"com.example.A"}


# -- ids by unique prefix; unknown groups (issue 9) -----------------------------------------------


def test_deployments_are_found_and_canceled_by_unique_id_prefix(store: Store, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    import uuid

    from roost.hub.store import deployments as deployments_module

    enrol(store, "px1", group="px")
    publish_to_store(store, "com.example.A", "1.0.0")
    ids = iter([uuid.UUID("4a72266b-0000-4000-8000-000000000001"), uuid.UUID("4a72266b-0000-4000-8000-000000000002"),
                uuid.UUID("5b000000-0000-4000-8000-000000000003")])
    monkeypatch.setattr(deployments_module.uuid, "uuid4", lambda: next(ids))
    first = store.create_deployment(DeploymentCreate(target="group:px", components={"com.example.A": "1.0.0"}))
    second = store.create_deployment(DeploymentCreate(target="device:px1", components={"com.example.A": "1.0.0"}))
    third = store.create_deployment(DeploymentCreate(target="group:px", components={}))

    assert store.get_deployment("5b000000").id == third.id
    assert store.get_deployment("5B00").id == third.id  # case-insensitive, 4 characters are enough
    assert store.get_deployment(first.id).id == first.id
    assert store.get_deployment("4a72266b-0000-4000-8000-000000000002").id == second.id
    with pytest.raises(HubInvalidInputError) as ambiguous:
        store.get_deployment("4a72266b")
    assert ambiguous.value.code == "DEPLOYMENT_ID_AMBIGUOUS"
    assert first.id in ambiguous.value.message and second.id in ambiguous.value.message
    assert third.id not in ambiguous.value.message
    with pytest.raises(HubInvalidInputError):
        store.cancel_deployment("4a72")
    for unknown in ("ffff", "4a7", "not-a-uuid", "4a72266b%", "4a72_"):
        with pytest.raises(HubNotFoundError) as missing:
            store.get_deployment(unknown)
        assert missing.value.code == "DEPLOYMENT_NOT_FOUND", unknown
    assert store.cancel_deployment(third.id[:8]).status == "CANCELED"


def test_an_unknown_group_is_refused_unless_asked_to_create_it(store: Store) -> None:
    enrol(store, "g1", group="fleet")
    publish_to_store(store, "com.example.A", "1.0.0")
    with pytest.raises(HubNotFoundError) as typo:
        store.create_deployment(DeploymentCreate(target="group:nogroup", components={"com.example.A": "1.0.0"}))
    assert typo.value.code == "GROUP_NOT_FOUND"
    assert "nogroup" in typo.value.message and "fleet" in typo.value.message and "create" in typo.value.message
    assert [g.name for g in store.list_groups()] == ["fleet"]  # nothing was created
    assert store.list_deployments() == []

    made = store.create_deployment(DeploymentCreate(target="group:new", components={"com.example.A": "1.0.0"},
                                                    create_group=True))
    assert made.target == "group:new" and made.status == "COMPLETED" and made.counts["total"] == 0
    assert [g.name for g in store.list_groups()] == ["fleet", "new"]
    assert store.create_deployment(DeploymentCreate(target="group:fleet", components={})).counts["total"] == 1


def test_a_rolled_back_deployment_is_not_retried_when_another_target_changes(store: Store) -> None:
    dev = enrol(store, "rb1", group="g")
    publish_to_store(store, "com.example.A", "1.0.0")
    publish_to_store(store, "com.example.A", "2.0.0")
    publish_to_store(store, "com.example.B", "1.0.0")
    good = store.create_deployment(DeploymentCreate(target="group:g", components={"com.example.A": "1.0.0"}))
    store.desired_state(dev, None)
    store.record_reports(dev, [Report(id="ok", deployment_id=good.id, status="SUCCEEDED")])
    bad = store.create_deployment(DeploymentCreate(target="group:g", components={"com.example.A": "2.0.0"}))
    state, _ = store.desired_state(dev, None)
    assert state is not None and state.components["com.example.A"].version == "2.0.0"
    store.record_reports(dev, [Report(id="rb", deployment_id=bad.id, status="ROLLED_BACK",
                                      reason_code="COMPONENT_BROKEN")])
    assert rows(store, bad.id) == {"rb1": ("ROLLED_BACK", "COMPONENT_BROKEN")}
    # The device's own deployment changes its desired state: the group's part is the version it rolled back to.
    own = store.create_deployment(DeploymentCreate(target="device:rb1", components={"com.example.B": "1.0.0"}))
    state2, _ = store.desired_state(dev, state.revision)
    assert state2 is not None
    assert {n: c.version for n, c in state2.components.items()} == {"com.example.A": "1.0.0",
                                                                   "com.example.B": "1.0.0"}
    assert state2.deployments == [good.id, own.id]
