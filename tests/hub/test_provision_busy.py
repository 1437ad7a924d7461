"""The hub process's bound on provisioning runs: past it a run is refused (PROVISION_BUSY) and the runs it
holds go on. The device is a real TCP listener that accepts and never answers, so the runs stay in their
connect step."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from roost.hub.contract.provision import RegistrationCreate, RegistrationStatus
from roost.hub.errors import HubConflictError
from roost.hub.store import Store
from roost.provision import registration
from roost.provision.registration import Provisioner


def _body(name: str, port: int) -> RegistrationCreate:
    return RegistrationCreate(name=name, ssh=f"pi@127.0.0.1:{port}", hub_url="http://127.0.0.1:9")


def test_runs_past_the_bound_are_refused_and_the_held_ones_go_on(store: Store, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registration, "MAX_QUEUED", 2)
    silent = socket.create_server(("127.0.0.1", 0))  # accepts into its backlog, never sends an SSH banner
    port = silent.getsockname()[1]

    async def scenario() -> tuple[list[str], HubConflictError]:
        prov = Provisioner(store, tmp_path / "hub", max_concurrent=1)
        held = [await prov.add(_body(f"edge-{i}", port)) for i in range(2)]
        with pytest.raises(HubConflictError) as busy:
            await prov.add(_body("edge-2", port))
        await asyncio.sleep(0.2)
        states = [store.get_registration(r.id).status for r in held]
        assert states == [RegistrationStatus.RUNNING, RegistrationStatus.PENDING]  # one slot: one runs, one waits
        await prov.stop()
        return [r.id for r in held], busy.value

    try:
        ids, busy = asyncio.run(scenario())
    finally:
        silent.close()
    assert busy.code == "PROVISION_BUSY" and "2 provisioning runs" in busy.message
    assert store.list_registrations("edge-2") == []  # the refused run left no record
    for run_id in ids:  # the held runs end as the hub stopping ends them, not lost
        ended = store.get_registration(run_id)
        assert ended.status == RegistrationStatus.FAILED and ended.error_code == "PROVISION_INTERRUPTED"
