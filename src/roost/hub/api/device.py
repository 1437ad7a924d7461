"""Device endpoints: enrolment, the desired-state long poll, reports."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from roost.hub.api import auth
from roost.hub.api.admin import StoreDep
from roost.hub.api.errors import COMMON_ERRORS
from roost.hub.background import BackgroundLoop
from roost.hub.coalesce import Coalescer
from roost.hub.contract import INT32, Desired, Enrollment, EnrollRequest, ErrorBody, ReportResult, ReportsIn
from roost.hub.reports import Report
from roost.hub.store import ArtifactLocation, Store

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", responses=COMMON_ERRORS)

#: The longest a long poll waits, whatever ``wait`` asks for.
MAX_WAIT = 30.0


class RevisionWatcher:
    """Per process: reads the global revision every ``interval`` and wakes waiting long polls.

    Every change of a device's desired state bumps the global revision in the same transaction
    (:func:`roost.hub.desired.mark_changed`), so while the watcher reads the database a waiter
    needs no check of its own until the revision moves: with 10,000 devices in long polls, a
    per-waiter recheck every few seconds costs thousands of transactions per second for nothing.
    When the watcher cannot read the database, waiters check their own device every ``recheck``
    seconds (the database is the truth); while a rollout release is pending, every ``interval``.
    """

    def __init__(self, store: Store, interval: float = 0.5, recheck: float = 5.0) -> None:
        self.store = store
        self.interval = interval
        self.recheck = recheck
        self.revision = -1
        #: False until the first successful read, and while reads fail.
        self.healthy = False
        #: Set when the process is stopping: long polls answer "no change" (204) at once.
        self.closing = False
        self._changed = asyncio.Event()
        self._loop = BackgroundLoop(self._run)

    def ensure_started(self) -> None:
        self._loop.ensure_started()

    async def stop(self) -> None:
        await self._loop.stop()

    def close_polls(self) -> None:
        """The server is stopping: wake every long poll to answer 204 now, and answer new ones at once
        (the device polls again, elsewhere or later), rather than be cancelled with a 500."""
        if not self.closing:
            self.closing = True
            logger.info("stopping: answering long polls")
        self._wake()

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                revision = await run_in_threadpool(self.store.revision)
                if failing:
                    logger.info("revision watcher reads the database again")
                    failing = False
                self.healthy = True
            except Exception as err:
                if not failing:
                    logger.warning("revision watcher cannot read the database: %s", err)
                    failing = True
                    self.healthy = False
                    self._wake()  # waiters fall back to checking their own device
                revision = self.revision
            if revision != self.revision:
                self.revision = revision
                self._wake()
            await asyncio.sleep(self.interval)

    async def refresh(self) -> None:
        """Read the revision now (one query) and wake the long polls if it moved: a change made by this
        process (a cluster replica placed) reaches its device without waiting for the next interval."""
        try:
            revision = await run_in_threadpool(self.store.revision)
        except Exception as err:
            logger.debug("revision refresh failed: %s", err)
            return
        if revision != self.revision:
            self.revision = revision
            self._wake()

    def _wake(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def wait_change(self, seen: int, timeout: float) -> None:
        """Until the revision differs from ``seen`` (or ``timeout``; at most ``recheck`` when unhealthy)."""
        if self.revision != seen:
            return
        if not self.healthy:
            timeout = min(timeout, self.recheck)
        try:
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        except TimeoutError:
            pass



@router.post("/enroll", status_code=201, tags=["device"], response_model=Enrollment,
             responses={401: {"model": ErrorBody, "description": "ENROLL_TOKEN_INVALID / ENROLL_TOKEN_EXPIRED"},
                        409: {"model": ErrorBody, "description": "DEVICE_EXISTS"},
                        410: {"model": ErrorBody, "description": "ENROLL_TOKEN_USED"}})
async def enroll(body: EnrollRequest, s: StoreDep) -> Enrollment:
    """Redeem a one-time enrolment token (no Authorization header) for a device credential."""
    return await run_in_threadpool(s.enroll, body.token, body.name, dict(body.labels))


class DeviceBatches:
    """Per process: the device endpoints' coalescers (one transaction per batch of requests).

    ``max_in_flight`` batches of one kind may run at once (each holds a pooled connection); on
    SQLite, which has one writer, batches simply queue for the write lock.
    """

    def __init__(self, store: Store, max_in_flight: int = 2) -> None:
        self.desired: Coalescer[tuple[int, int | None], tuple[Desired | None, bool]] = Coalescer(
            store.desired_states, name="desired-state", max_in_flight=max_in_flight)
        self.reports: Coalescer[tuple[int, Sequence[Report]], ReportResult] = Coalescer(
            store.record_reports_many, name="reports", max_in_flight=max_in_flight)
        self.artifacts: Coalescer[tuple[int, str, str, str], ArtifactLocation] = Coalescer(
            store.artifacts_for_devices, name="artifact-access", max_in_flight=max_in_flight)


def batches(request: Request) -> DeviceBatches:
    value: DeviceBatches = request.app.state.device_batches
    return value


# The device routes take no FastAPI dependencies: AuthMiddleware has already admitted only device
# credentials to /v1/device/..., and auth.device(request) reads the principal it left (dependency
# resolution is a large share of a request's cost at fleet scale).
@router.get("/device/desired", tags=["device"], response_model=Desired,
            responses={204: {"description": "No newer revision within the wait"}})
async def desired(request: Request,
                  after: int | None = Query(None, ge=0, le=INT32, description="The revision the device has"),
                  wait: float = Query(0.0, ge=0.0, le=3600.0, description="Seconds to wait (at most 30)"),
                  ) -> Desired | Response:
    """Long poll: the device's desired state as soon as its revision is newer than ``after``."""
    me = auth.device(request)
    watcher: RevisionWatcher = request.app.state.watcher
    watcher.ensure_started()
    check = batches(request).desired
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, MAX_WAIT)
    while True:
        seen = watcher.revision
        state, pending = await check.submit((me.id, after))
        if state is not None:
            return state
        remaining = deadline - loop.time()
        if remaining <= 0 or watcher.closing:
            return Response(status_code=204)
        if pending:
            await asyncio.sleep(min(watcher.interval, remaining))
            continue
        await watcher.wait_change(seen, remaining)
        if loop.time() >= deadline and watcher.healthy and watcher.revision == seen:
            return Response(status_code=204)  # nothing changed anywhere: no need to look again


@router.post("/device/reports", tags=["device"], response_model=ReportResult,
             responses={403: {"model": ErrorBody, "description": "DEPLOYMENT_NOT_FOR_DEVICE (or FORBIDDEN)"},
                        409: {"model": ErrorBody, "description": "REVISION_NOT_GIVEN"}})
async def reports(body: ReportsIn, request: Request) -> ReportResult:
    """Per-deployment and per-component status; idempotent by report id (spooled reports).

    A device reports only on deployments made for it (403 ``DEPLOYMENT_NOT_FOR_DEVICE``) and with
    revisions the hub gave it (409 ``REVISION_NOT_GIVEN``); such a request is refused whole. An
    applied revision older than the recorded one is not applied (``revisions_ignored``).
    """
    me = auth.device(request)
    items = [Report(id=r.id, revision=r.revision, status=r.status, deployment_id=r.deployment_id,
                    reason_code=r.reason_code, message=r.message, components=r.components, at=r.at)
             for r in body.reports]
    return await batches(request).reports.submit((me.id, items))
