"""The replica monitor: one loop per hub process that keeps replica and session records true.

Every ``interval`` seconds, for each live replica:

- a STARTING replica older than ``start_timeout`` that never became ready, or whose component the node
  reports ERRORED/BROKEN, becomes FAILED (taken out of its node's deployment; its sessions end);
- a READY replica is asked for its sessions (``GET /status`` with a ``status`` token): sessions it
  reports connected get their last activity; sessions it reports ended (the client disconnected, or
  the replica's idle timeout closed them) end with the replica's reason; a session that never
  connected within ``connect_grace`` ends (``never connected``). A READY replica that does not
  answer ``unreachable_after`` polls in a row, or whose component the node reports ERRORED/BROKEN,
  is FAILED with its sessions (``replica lost``), so new admissions place elsewhere;
- a replica without sessions for its type's ``idleTimeoutSeconds`` is scaled down (STOPPING: taken
  out of its node's deployment) while its type keeps at least ``minReplicas`` replicas; a type with
  fewer than ``minReplicas`` at the edge gets one more placed per round (warm slots for the next clients).

Stopped and failed replica rows are forgotten once their node no longer reports their component (every
few rounds), else after an hour; ended sessions beyond the newest
:data:`~roost.hub.store.cluster.ENDED_KEPT` are pruned.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from roost.cluster.addresses import url_host
from roost.cluster.admission import DEAD_STATES
from roost.cluster.tokens import TokenSigner
from roost.hub.contract.cluster import ReplicaStatus

if TYPE_CHECKING:
    import httpx

    from roost.hub.store import Store
    from roost.hub.store.cluster import ReplicaProbe

logger = logging.getLogger(__name__)


class ReplicaMonitor:
    def __init__(self, store: Store, signer: TokenSigner, http: httpx.AsyncClient, *,
                 wake: Callable[[], Awaitable[None]] | None = None, interval: float = 1.0,
                 start_timeout: float = 180.0, connect_grace: float = 60.0, unreachable_after: int = 3) -> None:
        self.store = store
        self.signer = signer
        self.public_key = signer.public_key()
        self.http = http
        self.wake = wake
        self.interval = interval
        self.start_timeout = timedelta(seconds=start_timeout)
        self.connect_grace = timedelta(seconds=connect_grace)
        self.unreachable_after = unreachable_after
        self._misses: Counter[str] = Counter()
        self._rounds = 0

    async def run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:  # the loop must outlive a bad round (database away, ...)
                logger.exception("replica monitor round failed")
            await asyncio.sleep(self.interval)

    async def check_once(self) -> None:
        probes = await asyncio.to_thread(self.store.probes)
        types = {t.name: t for t in await asyncio.to_thread(self.store.list_service_types)}
        now = self.store.clock()
        live = Counter(p.service_type for p in probes)
        for probe in probes:
            await self._check(probe, now, types, live)
        for spec in types.values():
            if spec.min_replicas and live[spec.name] < spec.min_replicas:
                placed = await asyncio.to_thread(self.store.keep_minimum, spec.name, self.public_key)
                if placed is not None and self.wake is not None:
                    await self.wake()
        self._rounds += 1
        if self._rounds % 5 == 1:
            await asyncio.to_thread(self.store.forget_stopped_replicas)
        if self._rounds % 600 == 1:
            await asyncio.to_thread(self.store.forget_replicas, timedelta(hours=1))

    async def _check(self, probe: ReplicaProbe, now: datetime, types: dict[str, Any], live: Counter[str]) -> None:
        if probe.reported_state in DEAD_STATES and probe.status == ReplicaStatus.READY:
            await self._fail(probe, f"replica lost: its component is {probe.reported_state} on node {probe.node}")
            return
        if probe.status == ReplicaStatus.STARTING:
            if now - probe.created_at > self.start_timeout:
                await self._fail(probe, f"replica never became ready within {self.start_timeout.total_seconds():.0f} s")
            return
        status = await self._status(probe)
        if status is None:
            self._misses[probe.id] += 1
            if self._misses[probe.id] >= self.unreachable_after:
                await self._fail(probe, f"replica lost: its endpoint {probe.address}:{probe.port} stopped answering")
            return
        self._misses.pop(probe.id, None)
        connected, ended = _parse_status(status, probe)
        for sid, (was_connected, created) in probe.sessions.items():
            if sid not in connected and sid not in ended and not was_connected and now - created > self.connect_grace:
                ended[sid] = f"never connected within {self.connect_grace.total_seconds():.0f} s"
            elif sid not in connected and sid not in ended and was_connected:
                ended[sid] = "disconnected"
        if connected or ended:
            await asyncio.to_thread(self.store.observe_sessions, probe.id, connected, ended)
        spec = types.get(probe.service_type)
        active = len(set(probe.sessions) - set(ended))
        if spec is not None and active == 0 and probe.idle_since is not None \
                and now - probe.idle_since > timedelta(seconds=spec.idle_timeout_seconds) \
                and live[probe.service_type] > spec.min_replicas:
            live[probe.service_type] -= 1
            await asyncio.to_thread(self.store.stop_replica, probe.id, ReplicaStatus.STOPPING,
                                    f"idle for {spec.idle_timeout_seconds:g} s: scaled down", self.public_key)

    async def _status(self, probe: ReplicaProbe) -> dict[str, Any] | None:
        import httpx

        token = self.signer.sign("status", "-", probe.id, 60.0)
        try:
            answer = await self.http.get(f"http://{url_host(probe.address)}:{probe.port}/status",
                                         headers={"Authorization": f"Bearer {token}"}, timeout=2.0)
            if answer.status_code != 200:
                return None
            body = answer.json()
        except (httpx.HTTPError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    async def _fail(self, probe: ReplicaProbe, reason: str) -> None:
        self._misses.pop(probe.id, None)
        await asyncio.to_thread(self.store.stop_replica, probe.id, ReplicaStatus.FAILED, reason, self.public_key)


def _parse_status(status: dict[str, Any], probe: ReplicaProbe) -> tuple[dict[str, datetime], dict[str, str]]:
    """The sessions a replica's ``/status`` reports connected (last activity) and ended (reason),
    among the hub's active sessions of that replica."""
    connected: dict[str, datetime] = {}
    ended: dict[str, str] = {}
    for item in status.get("sessions") or []:
        if isinstance(item, dict) and item.get("id") in probe.sessions:
            connected[str(item["id"])] = _when(item.get("last_activity"))
    for item in status.get("ended") or []:
        if isinstance(item, dict) and item.get("id") in probe.sessions and item.get("id") not in connected:
            ended[str(item["id"])] = str(item.get("reason") or "ended")[:500]
    return connected, ended


def _when(value: Any) -> datetime:
    from datetime import UTC

    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
        except ValueError:
            pass
    return datetime.now(UTC)


__all__ = ["ReplicaMonitor"]
