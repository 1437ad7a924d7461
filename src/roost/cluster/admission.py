"""Admission: a client's request for a service type becomes a session on a *ready* replica, or an error.

:meth:`Admission.admit` books the session in one store transaction (a free slot, or a new replica on
the best node of the edge, else of the centre: :meth:`roost.hub.store.ClusterStore.admit`), wakes
the hub's long polls so the chosen node receives its new replicas deployment at once, and then waits
until the replica is **ready**: its ``/healthz`` answers 200, which the replica does only after its
model answered a self-test prediction. A replica whose component fails on the node, or whose node's
deployment fails, ends the wait early; so does the deadline. Either way the replica is taken back
out of the node's deployment and the caller gets :class:`~roost.cluster.errors.ReplicaNotReadyError`
(retryable: a new admission places elsewhere). The session's token is signed only for a ready replica.

Sessions admitted for clients of the original protocol (``legacy``) also get a *claim* sent to the
replica, which then accepts one connection without a token for that session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from roost.cluster.addresses import url_host
from roost.cluster.errors import ClusterError, ClusterFullError, ReplicaNotReadyError, UnschedulableError
from roost.cluster.tokens import TokenSigner
from roost.hub.contract.cluster import ClusterSession, ReplicaStatus, SessionCreate

if TYPE_CHECKING:
    import httpx

    from roost.cluster.kubernetes import KubernetesBackend
    from roost.hub.store import Store
    from roost.hub.store.cluster import Admitted

logger = logging.getLogger(__name__)

#: How long a session token is valid (a session may stream for a day).
SESSION_TTL = 86400.0
#: The ``node`` of a session on the Kubernetes backend starts with this.
KUBE_NODE_PREFIX = "kubernetes:"
#: Component states that mean the replica will not become ready.
DEAD_STATES = ("ERRORED", "BROKEN", "FINISHED")


class Admission:
    def __init__(self, store: Store, signer: TokenSigner, *, wake: Callable[[], Awaitable[None]] | None = None,
                 poll: float = 0.02, health_every: float = 0.25, kube: KubernetesBackend | None = None) -> None:
        self.store = store
        #: With the Kubernetes backend, edge replicas run there (the centre tier stays on agents).
        self.kube = kube
        self.signer = signer
        self.public_key = signer.public_key()
        self.wake = wake
        self.poll = poll
        self.health_every = health_every
        self._http: httpx.AsyncClient | None = None

    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(timeout=httpx.Timeout(2.0, connect=1.0),
                                           limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def admit(self, req: SessionCreate, *, legacy: bool = False) -> ClusterSession:
        started = time.monotonic()
        offloading_from_kubernetes = False
        if self.kube is not None and req.tier in (None, "edge"):
            try:
                return await self._admit_kubernetes(req, legacy, started)
            except ClusterFullError:
                if req.tier == "edge":
                    raise
                req = req.model_copy(update={"tier": "centre"})
                offloading_from_kubernetes = True
        deadline = started + req.wait_seconds
        while True:
            try:
                admitted = await asyncio.to_thread(self.store.admit, req.type, req.client_id, req.tier,
                                                   self.public_key, legacy=legacy)
            except UnschedulableError as err:
                if not offloading_from_kubernetes:
                    raise
                # The Kubernetes edge can run the type, it is only full now; the centre cannot take it.
                raise ClusterFullError(f"the Kubernetes edge has no room for {req.type} now and the centre cannot "
                                       f"take it ({err.message}); retry later") from err
            if not admitted.warm and self.wake is not None:
                await self.wake()
            try:
                # A warm slot's endpoint is checked too: its process may have died since it was last seen.
                await self._wait_ready(admitted, deadline)
                break
            except ReplicaNotReadyError:
                # That replica is taken back; a warm slot that failed is worth one more try (placed anew).
                if not admitted.warm or time.monotonic() >= deadline:
                    raise
        session = admitted.session
        if legacy:
            await self._claim(admitted)
        token = self.signer.sign("session", session.id, admitted.replica, SESSION_TTL)
        return session.model_copy(update={"token": token, "ready_ms": round((time.monotonic() - started) * 1000, 3),
                                          "warm": admitted.warm})

    async def _admit_kubernetes(self, req: SessionCreate, legacy: bool, started: float) -> ClusterSession:
        """A session on the Kubernetes backend's Deployment of the type (one replica more, ready)."""
        assert self.kube is not None
        spec = await asyncio.to_thread(self.store.get_service_type, req.type)
        replica = await self.kube.admit(spec, req.wait_seconds)
        session = await asyncio.to_thread(self.store.record_session, spec.name, req.client_id, "edge",
                                          f"{KUBE_NODE_PREFIX}{replica.node or replica.deployment}", replica.endpoint,
                                          replica.node_port, legacy)
        token = self.signer.sign("session", session.id, replica.deployment, SESSION_TTL)
        return session.model_copy(update={"token": token, "ready_ms": round((time.monotonic() - started) * 1000, 3),
                                          "warm": False})

    async def end(self, session_id: str, reason: str) -> ClusterSession:
        """End a session; on the Kubernetes backend its Deployment scales down by one."""
        before = await asyncio.to_thread(self.store.get_session, session_id)
        session = await asyncio.to_thread(self.store.end_session, session_id, reason)
        if self.kube is not None and before.status == "ACTIVE" and before.node.startswith(KUBE_NODE_PREFIX):
            spec = await asyncio.to_thread(self.store.get_service_type, before.type)
            await self.kube.release(spec)
        return session

    async def _wait_ready(self, admitted: Admitted, deadline: float) -> None:
        url = f"http://{url_host(admitted.address)}:{admitted.port}/healthz"
        next_health = time.monotonic() + self.health_every
        problem = "its endpoint did not answer ready in time"
        while True:
            if await self._answers_ready(url):
                await asyncio.to_thread(self.store.replica_ready, admitted.replica)
                return
            now = time.monotonic()
            if now >= next_health:
                next_health = now + self.health_every
                status, state, failure = await asyncio.to_thread(self.store.replica_health, admitted.replica)
                if status is None or status not in (ReplicaStatus.STARTING, ReplicaStatus.READY):
                    problem = "it was stopped while starting"
                    break
                if state in DEAD_STATES:
                    problem = f"its component {state} on node {admitted.session.node}"
                    break
                if failure is not None:
                    problem = failure
                    break
            if now >= deadline:
                break
            await asyncio.sleep(self.poll)
        reason = f"replica {admitted.replica} on {admitted.session.node} did not become ready: {problem}"
        await asyncio.to_thread(self.store.stop_replica, admitted.replica, ReplicaStatus.FAILED, reason,
                                self.public_key)
        await asyncio.to_thread(self.store.end_session, admitted.session.id, reason)
        raise ReplicaNotReadyError(f"{reason}; ask again (a new admission places elsewhere)")

    async def _answers_ready(self, url: str) -> bool:
        import httpx

        try:
            answer = await self.http().get(url, timeout=1.0)
        except httpx.HTTPError:
            return False
        if answer.status_code != 200:
            return False
        try:
            return bool(answer.json().get("ready"))
        except ValueError:
            return False

    async def _claim(self, admitted: Admitted) -> None:
        """Tell the replica a client of the original protocol will connect for this session."""
        import httpx

        token = self.signer.sign("claim", admitted.session.id, admitted.replica, 120.0)
        url = f"http://{url_host(admitted.address)}:{admitted.port}/claim"
        try:
            answer = await self.http().get(url, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as err:
            raise ClusterError(f"replica {admitted.replica} did not take the claim for legacy session "
                               f"{admitted.session.id}: {err}", code="REPLICA_NOT_READY") from err
        if answer.status_code >= 300:
            raise ClusterError(f"replica {admitted.replica} refused the claim for legacy session "
                               f"{admitted.session.id}: HTTP {answer.status_code} {answer.text[:200]}",
                               code="REPLICA_NOT_READY")



__all__ = ["DEAD_STATES", "KUBE_NODE_PREFIX", "SESSION_TTL", "Admission"]
