"""Registrations over SSH and pinned host keys in the store (SQLite file and PostgreSQL)."""

from __future__ import annotations

import pytest

from roost.hub.contract.provision import RegistrationStatus, Step, StepStatus
from roost.hub.errors import HubConflictError, HubNotFoundError
from roost.hub.store import Store
from tests.hub.conftest import FakeClock


def _steps() -> list[Step]:
    return [Step(name="connect"), Step(name="facts"), Step(name="report")]


def test_a_registration_records_its_steps_and_ends(store: Store, clock: FakeClock) -> None:
    run = store.create_registration("edge-1", "add", "pi@10.0.0.2", False, _steps(), {"site": "lab"})
    assert run.status == RegistrationStatus.PENDING and [s.name for s in run.steps] == ["connect", "facts", "report"]
    steps = _steps()
    steps[0].status, steps[0].message = StepStatus.OK, "pinned"
    clock.advance(seconds=1)
    store.update_registration(run.id, status=RegistrationStatus.RUNNING, steps=steps, host_key_fingerprint="SHA256:x")
    got = store.get_registration(run.id)
    assert got.status == RegistrationStatus.RUNNING and got.steps[0].status == StepStatus.OK
    assert got.host_key_fingerprint == "SHA256:x" and got.labels == {"site": "lab"} and got.updated_at > run.updated_at
    ended = store.update_registration(run.id, status=RegistrationStatus.FAILED, error_code="SSH_UNREACHABLE",
                                      message="x" * 5000)
    assert ended.finished_at is not None and ended.error_code == "SSH_UNREACHABLE" and len(ended.message or "") == 4000
    assert [r.id for r in store.list_registrations("edge-1")] == [run.id]
    assert store.last_registration("edge-1").id == run.id
    with pytest.raises(HubNotFoundError) as err:
        store.get_registration("nope")
    assert err.value.code == "REGISTRATION_NOT_FOUND"
    with pytest.raises(HubNotFoundError):
        store.last_registration("edge-2")


def test_one_run_at_a_time_and_no_second_add_of_an_enrolled_device(store: Store, clock: FakeClock) -> None:
    run = store.create_registration("edge-1", "add", "pi@h", False, _steps())
    with pytest.raises(HubConflictError) as err:
        store.create_registration("edge-1", "add", "pi@h", False, _steps())
    assert err.value.code == "REGISTRATION_RUNNING"
    store.update_registration(run.id, status=RegistrationStatus.FAILED, error_code="X")
    # a failed run may be run again (it resumes), also once the device enrolled half-way
    store.enroll(store.create_enroll_token().token, "edge-1")
    again = store.create_registration("edge-1", "add", "pi@h", False, _steps())
    store.update_registration(again.id, status=RegistrationStatus.SUCCEEDED)
    with pytest.raises(HubConflictError) as err:
        store.create_registration("edge-1", "add", "pi@h", False, _steps())
    assert err.value.code == "DEVICE_EXISTS"
    store.create_registration("edge-1", "upgrade", "pi@h", False, _steps())  # an upgrade is fine
    # a device enrolled by hand (no registration) is not registered over SSH again under its name
    store.enroll(store.create_enroll_token().token, "edge-9")
    with pytest.raises(HubConflictError) as err:
        store.create_registration("edge-9", "add", "pi@h", False, _steps())
    assert err.value.code == "DEVICE_EXISTS"


def test_a_run_whose_hub_went_away_reads_as_interrupted(store: Store, clock: FakeClock) -> None:
    run = store.create_registration("edge-1", "add", "pi@h", False, _steps())
    store.update_registration(run.id, status=RegistrationStatus.RUNNING)
    clock.advance(minutes=46)
    got = store.get_registration(run.id)
    assert got.status == RegistrationStatus.FAILED and got.error_code == "PROVISION_INTERRUPTED"
    store.create_registration("edge-1", "add", "pi@h", False, _steps())  # and may be run again


def test_host_keys_are_pinned_and_re_pinned(store: Store, clock: FakeClock) -> None:
    assert store.pinned_host_key("10.0.0.2", 22) is None
    store.pin_host_key("10.0.0.2", 22, "ssh-ed25519 AAAA1", "SHA256:one")
    store.pin_host_key("10.0.0.2", 2222, "ssh-ed25519 AAAA2", "SHA256:two")
    assert store.pinned_host_key("10.0.0.2", 22) == "ssh-ed25519 AAAA1"
    clock.advance(seconds=5)
    again = store.pin_host_key("10.0.0.2", 22, "ssh-ed25519 AAAA3", "SHA256:three")
    assert store.pinned_host_key("10.0.0.2", 22) == "ssh-ed25519 AAAA3"
    assert [(k.port, k.fingerprint) for k in store.list_host_keys()] == [(22, "SHA256:three"), (2222, "SHA256:two")]
    assert again.pinned_at == clock()
