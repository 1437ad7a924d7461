"""Devices registered over SSH: registration runs with their steps, and pinned host keys.

A registration is written when it starts and after every step (status, timing, message), so that
``GET /v1/devices/ssh/{id}``, the CLI and the console see its progress from any hub replica. A run
whose hub process died mid-way stops being updated: once it has been silent for longer than any
step may take (:data:`STALE_AFTER`) it reads as FAILED / ``PROVISION_INTERRUPTED``, and running
``roost device add`` again resumes it.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from roost.hub.contract.provision import (
    ENDED_REGISTRATION,
    PinnedHostKey,
    Registration,
    RegistrationStatus,
    Step,
)
from roost.hub.errors import HubConflictError, HubNotFoundError
from roost.hub.models import Device, ProvisionRegistration, SshHostKey
from roost.hub.names import check_name
from roost.hub.store.base import StoreBase
from roost.provision.target import parse_target

#: Longer than the longest step timeout (roost.provision.registration): a RUNNING registration silent
#: for this long belongs to a hub process that is gone.
STALE_AFTER = timedelta(minutes=45)

_UNSET: Any = object()


class ProvisionStore(StoreBase):
    """Registration runs and pinned SSH host keys."""

    def _registration(self, row: ProvisionRegistration) -> Registration:
        status, code, message = RegistrationStatus(row.status), row.error_code, row.message
        if status not in ENDED_REGISTRATION and self.clock() - row.updated_at > STALE_AFTER:
            status, code = RegistrationStatus.FAILED, "PROVISION_INTERRUPTED"
            message = ("the hub process running this registration stopped before it ended; run the same "
                       "`roost device add` again to resume it")
        return Registration(id=row.id, device=row.device_name, kind=row.kind, target=row.target, become=row.become,
                            status=status, steps=[Step.model_validate(s) for s in row.steps],
                            host_key_fingerprint=row.host_key_fingerprint, labels=dict(row.labels or {}),
                            error_code=code, message=message, created_at=row.created_at, updated_at=row.updated_at,
                            finished_at=row.finished_at)

    def create_registration(self, device: str, kind: str, target: str, become: bool, steps: list[Step],
                            labels: dict[str, str] | None = None) -> Registration:
        """A new PENDING run. Refused while another run of ``device`` is under way (REGISTRATION_RUNNING),
        and for ``add`` when the device is enrolled and its last registration did not fail (DEVICE_EXISTS)."""
        check_name(device, "device name")
        now = self.clock()

        def run(s: Session) -> Registration:
            last = s.scalars(select(ProvisionRegistration).where(ProvisionRegistration.device_name == device)
                             .order_by(ProvisionRegistration.created_at.desc()).limit(1).with_for_update()).first()
            if last is not None:
                shown = self._registration(last)
                if shown.status not in ENDED_REGISTRATION:
                    raise HubConflictError(f"device {device} has a {last.kind} run under way ({last.id}); wait for "
                                           "it to end", code="REGISTRATION_RUNNING")
            enrolled = s.scalar(select(Device.id).where(Device.name == device)) is not None
            if kind == "add" and enrolled and (last is None or last.status == RegistrationStatus.SUCCEEDED):
                raise HubConflictError(f"a device named {device} is already enrolled"
                                       + ("; use `roost device upgrade` to re-provision it" if last else ""),
                                       code="DEVICE_EXISTS")
            row = ProvisionRegistration(id=str(uuid.uuid4()), device_name=device, kind=kind, target=target,
                                        become=become, status=RegistrationStatus.PENDING,
                                        steps=[st.model_dump(mode="json") for st in steps], labels=dict(labels or {}),
                                        created_at=now, updated_at=now)
            s.add(row)
            s.flush()
            return self._registration(row)
        return self._write(run)

    def update_registration(self, registration_id: str, *, status: RegistrationStatus | None = None,
                            steps: list[Step] | None = None, error_code: str | None = _UNSET,
                            message: str | None = _UNSET, labels: dict[str, str] | None = None,
                            host_key_fingerprint: str | None = None) -> Registration:
        now = self.clock()

        def run(s: Session) -> Registration:
            row = s.get(ProvisionRegistration, registration_id, with_for_update=True)
            if row is None:
                raise HubNotFoundError(f"no registration {registration_id}", code="REGISTRATION_NOT_FOUND")
            if status is not None:
                row.status = status
                if status in ENDED_REGISTRATION:
                    row.finished_at = now
            if steps is not None:
                row.steps = [st.model_dump(mode="json") for st in steps]
            if error_code is not _UNSET:
                row.error_code = error_code
            if message is not _UNSET:
                row.message = None if message is None else message[:4000]
            if labels is not None:
                row.labels = dict(labels)
            if host_key_fingerprint is not None:
                row.host_key_fingerprint = host_key_fingerprint
            row.updated_at = now
            return self._registration(row)
        return self._write(run)

    def get_registration(self, registration_id: str) -> Registration:
        def run(s: Session) -> Registration:
            row = s.get(ProvisionRegistration, registration_id)
            if row is None:
                raise HubNotFoundError(f"no registration {registration_id}", code="REGISTRATION_NOT_FOUND")
            return self._registration(row)
        return self._read(run)

    def list_registrations(self, device: str | None = None, limit: int = 100) -> list[Registration]:
        """Newest first (at most ``limit``, capped at 1000)."""
        def run(s: Session) -> list[Registration]:
            query = select(ProvisionRegistration)
            if device is not None:
                query = query.where(ProvisionRegistration.device_name == check_name(device, "device name"))
            rows = s.scalars(query.order_by(ProvisionRegistration.created_at.desc()).limit(min(limit, 1000)))
            return [self._registration(r) for r in rows]
        return self._read(run)

    def last_registration(self, device: str) -> Registration:
        """The newest run of ``device`` (REGISTRATION_NOT_FOUND for a device never registered over SSH)."""
        found = self.list_registrations(device, limit=1)
        if not found:
            raise HubNotFoundError(f"device {device} was not registered over SSH (roost device add --ssh)",
                                   code="REGISTRATION_NOT_FOUND")
        return found[0]

    # -- host keys ---------------------------------------------------------------------------------

    def pinned_host_key(self, host: str, port: int) -> str | None:
        return self._read(lambda s: s.scalar(select(SshHostKey.key).where(SshHostKey.host == host,
                                                                          SshHostKey.port == port)))

    def pin_host_key(self, host: str, port: int, key: str, fingerprint: str) -> PinnedHostKey:
        """Pin (or re-pin) ``key`` for ``host:port``."""
        now = self.clock()

        def run(s: Session) -> PinnedHostKey:
            row = s.get(SshHostKey, (host, port), with_for_update=True)
            if row is None:
                row = SshHostKey(host=host, port=port, key=key, fingerprint=fingerprint, pinned_at=now)
                s.add(row)
            else:
                row.key, row.fingerprint, row.pinned_at = key, fingerprint, now
            s.flush()
            return PinnedHostKey(host=host, port=port, key=key, fingerprint=fingerprint, pinned_at=now)
        return self._write(run)

    def list_host_keys(self) -> list[PinnedHostKey]:
        return self._read(lambda s: [
            PinnedHostKey(host=r.host, port=r.port, key=r.key, fingerprint=r.fingerprint, pinned_at=r.pinned_at)
            for r in s.scalars(select(SshHostKey).order_by(SshHostKey.host, SshHostKey.port))])

    def ssh_endpoints(self) -> dict[str, tuple[str, str | None]]:
        """Each device registered over SSH: the ``user@host:port`` of its newest run and the host key pinned
        for it (None when none is). A device whose newest run uninstalled Roost is left out."""
        def run(s: Session) -> dict[str, tuple[str, str | None]]:
            newest: dict[str, ProvisionRegistration] = {}
            for row in s.scalars(select(ProvisionRegistration).order_by(ProvisionRegistration.created_at)):
                newest[row.device_name] = row
            keys = {(k.host, k.port): k.key for k in s.scalars(select(SshHostKey))}
            out: dict[str, tuple[str, str | None]] = {}
            for name, row in newest.items():
                if row.kind == "uninstall" and row.status == RegistrationStatus.SUCCEEDED:
                    continue
                target = parse_target(row.target)
                out[name] = (row.target, keys.get((target.host, target.port)))
            return out
        return self._read(run)
