"""Metrics routes: the hub's ``/metrics``, ``/metrics/fleet``, Prometheus service discovery, devices'
snapshots (``PUT /v1/device/metrics``), a device's last hour (``GET /v1/devices/{name}/metrics``) and
metrics tokens. The work is in :mod:`roost.observe` and :mod:`roost.hub.store.metrics`; see docs/metrics.md.

``AuthMiddleware`` admits admin tokens and metrics tokens to the three scrape routes, device
credentials to ``/v1/device/metrics`` and admin tokens to the rest.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from roost.hub.api import auth
from roost.hub.api.admin import StoreDep
from roost.hub.api.errors import COMMON_ERRORS
from roost.hub.contract import ErrorBody
from roost.hub.contract.metrics import (
    MAX_SNAPSHOT_BYTES,
    DeviceMetrics,
    MetricsToken,
    MetricsTokenCreate,
    SnapshotAccepted,
)
from roost.hub.errors import PayloadTooLargeError
from roost.observe.discovery import targets
from roost.observe.fleet import render_fleet
from roost.observe.hub_metrics import HubMetrics
from roost.observe.snapshot import parse_snapshot

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

scrape_router = APIRouter(responses=COMMON_ERRORS)
device_router = APIRouter(prefix="/v1", responses=COMMON_ERRORS)
router = APIRouter(prefix="/v1", dependencies=[Depends(auth.admin)], responses=COMMON_ERRORS)


def _hub_metrics(request: Request) -> HubMetrics:
    value: HubMetrics = request.app.state.hub_metrics
    return value


@scrape_router.get("/metrics", tags=["metrics"], response_class=Response,
                   responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}})
async def hub_metrics(request: Request) -> Response:
    """The hub's metrics: devices by status, deployments by state, rollouts, cluster, API latency."""
    body = await run_in_threadpool(_hub_metrics(request).render)
    return Response(body, media_type=PROMETHEUS_TEXT)


@scrape_router.get("/metrics/fleet", tags=["metrics"], response_class=Response,
                   responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}})
async def fleet_metrics(s: StoreDep) -> Response:
    """The latest snapshot of every device (for devices Prometheus cannot reach)."""
    rows = await run_in_threadpool(s.fleet_rows)
    body = await run_in_threadpool(render_fleet, rows)
    return Response(body, media_type=PROMETHEUS_TEXT)


@device_router.get("/prometheus/targets", tags=["metrics"])
async def prometheus_targets(s: StoreDep) -> list[dict[str, Any]]:
    """Prometheus HTTP service discovery: every device's metrics endpoint, with device/group/label metadata."""
    return targets(await run_in_threadpool(s.scrape_targets))


@device_router.put("/device/metrics", tags=["device"], response_model=SnapshotAccepted,
                   responses={413: {"model": ErrorBody, "description": "METRICS_SNAPSHOT_TOO_LARGE"},
                              422: {"model": ErrorBody, "description": "METRICS_SNAPSHOT_INVALID"}})
async def put_snapshot(request: Request, s: StoreDep) -> SnapshotAccepted:
    """A device's metrics snapshot (sent with its heartbeat); the hub keeps the latest and an hour of history."""
    me = auth.device(request)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SNAPSHOT_BYTES:
            raise PayloadTooLargeError(f"the metrics snapshot is over {MAX_SNAPSHOT_BYTES} bytes",
                                       code="METRICS_SNAPSHOT_TOO_LARGE")
    snapshot = parse_snapshot(bytes(body))
    received = await run_in_threadpool(s.record_snapshot, me.id, snapshot)
    return SnapshotAccepted(received_at=received)


@router.get("/devices/{name}/metrics", tags=["metrics"], response_model=DeviceMetrics,
            responses={404: {"model": ErrorBody, "description": "DEVICE_NOT_FOUND"}})
async def device_metrics(name: str, s: StoreDep) -> DeviceMetrics:
    """A device's latest snapshot and its samples of the last hour (one a minute), oldest first."""
    return await run_in_threadpool(s.device_metrics, name)


@router.post("/metrics-tokens", status_code=201, tags=["metrics"], response_model=MetricsToken)
async def create_metrics_token(body: MetricsTokenCreate, s: StoreDep) -> MetricsToken:
    """A token that reads /metrics, /metrics/fleet and /v1/prometheus/targets only (shown once)."""
    return MetricsToken(name=body.name, token=await run_in_threadpool(s.create_metrics_token, body.name))
