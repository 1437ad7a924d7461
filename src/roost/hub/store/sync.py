"""Device sync: desired-state long-poll checks, reports, presence (each batched across devices)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from roost.hub import desired, reports, rollout
from roost.hub.desired import DesiredState
from roost.hub.errors import AuthenticationError, HubError
from roost.hub.reports import Report, ReportResult
from roost.hub.store.base import StoreBase, _one


class SyncStore(StoreBase):
    """What devices call while they sync: long-poll checks, status reports, last-seen times."""

    # -- device sync -------------------------------------------------------------------------------
    #
    # Each operation takes the requests of many devices and runs them in one transaction (the API
    # coalesces concurrent requests: :mod:`roost.hub.coalesce`), answering each request on its own:
    # a revoked device gets its own AuthenticationError in the result list, the others are unaffected.
    # The single-device forms call the batched ones.

    def desired_states(self, requests: Sequence[tuple[int, int | None]],
                       ) -> list[tuple[DesiredState | None, bool] | HubError]:
        """Long-poll checks of many devices: per ``(device_id, after)``, ``(state, pending)``.

        ``state`` is the device's desired state if its revision is newer than ``after`` (always when
        ``after`` is None), else None. ``pending`` says rows wait for a rollout release (check again
        soon). One read for all; one write only for the devices that need one, which releases due
        rows, records conflicts and marks delivered rows IN_PROGRESS.
        """
        now = self.clock()
        probes = self._read(lambda s: desired.probe(s, [d for d, _ in requests]))
        work = sorted({d for d, after in requests if d in probes
                       and (after is None or probes[d].revision > after or probes[d].pending)})

        def run(s: Session) -> tuple[dict[int, desired.DeviceRef], dict[int, DesiredState], set[int]]:
            released: list[int] = []
            still_pending: set[int] = set()
            for device_id in work:
                if probes[device_id].pending:
                    got, waiting = rollout.release_pending(s, device_id, now)
                    if got:
                        released.append(device_id)
                    if waiting:
                        still_pending.add(device_id)
            desired.mark_changed(s, released)
            refs = desired.device_refs(s, work)
            due = {d: refs[d] for d, after in requests
                   if d in refs and (after is None or refs[d].desired_revision > after)}
            states = desired.compute_many(s, list(due.values()), now)
            return refs, states, still_pending
        refs, states, still_pending = self._write(run) if work else ({}, {}, set())
        out: list[tuple[DesiredState | None, bool] | HubError] = []
        for device_id, after in requests:
            if device_id not in probes or (device_id in work and device_id not in refs):
                out.append(AuthenticationError("this device was revoked; enrol it again", code="DEVICE_REVOKED"))
            elif device_id in states and (after is None or states[device_id].revision > after):
                out.append((states[device_id], device_id in still_pending))
            else:
                out.append((None, device_id in still_pending if device_id in work else probes[device_id].pending))
        return out

    def desired_state(self, device_id: int, after: int | None = None) -> tuple[DesiredState | None, bool]:
        """One long-poll check: see :meth:`desired_states`."""
        return _one(self.desired_states([(device_id, after)]))

    def record_reports_many(self, batch: Sequence[tuple[int, Sequence[Report]]]) -> list[ReportResult | HubError]:
        """Apply the reports of many devices, in order, each exactly once by id (one transaction)."""
        now = self.clock()
        return self._write(lambda s: reports.record(s, batch, now))

    def record_reports(self, device_id: int, items: Sequence[Report]) -> ReportResult:
        """Apply a device's reports in order, each exactly once by id."""
        return _one(self.record_reports_many([(device_id, items)]))

    def touch_devices(self, seen: dict[int, datetime]) -> None:
        """Record when devices were last seen (batched by the API; never moves a time backwards)."""
        if seen:
            self._write(lambda s: reports.touch(s, seen))
