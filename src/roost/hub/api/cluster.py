"""Edge-cluster endpoints: node reports, service types, sessions (admission), replicas, and the
original receive server's compatibility routes (``/app-service``, ``/driver-*``).

Thin: parse, call :class:`~roost.cluster.admission.Admission` or the store, serialise.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from roost.cluster.admission import Admission
from roost.cluster.errors import ClusterFullError, ServiceTypeInvalidError
from roost.cluster.service_types import parse_service_type
from roost.hub.api import auth
from roost.hub.api.admin import StoreDep
from roost.hub.api.errors import COMMON_ERRORS
from roost.hub.contract import ErrorBody
from roost.hub.contract.cluster import (
    AppServiceAnswer,
    ClusterNode,
    ClusterReplica,
    ClusterSession,
    NodeReport,
    SessionCreate,
)

FULL: dict[int | str, dict[str, object]] = {
    503: {"model": ErrorBody, "description": "CLUSTER_FULL / REPLICA_NOT_READY: retry later"},
    422: {"model": ErrorBody, "description": "SERVICE_UNSCHEDULABLE: no node could ever run the type"},
    404: {"model": ErrorBody, "description": "SERVICE_TYPE_NOT_FOUND"}}

device_router = APIRouter(prefix="/v1", responses=COMMON_ERRORS)
router = APIRouter(prefix="/v1/cluster", dependencies=[Depends(auth.admin)], responses=COMMON_ERRORS)
#: The original client's routes: not under /v1, authenticated by AuthMiddleware like /v1 admin routes
#: (a ``token`` query parameter is accepted there, as the original client cannot send a header).
compat_router = APIRouter(dependencies=[Depends(auth.admin)], responses=COMMON_ERRORS)


def admission(request: Request) -> Admission:
    value: Admission = request.app.state.admission
    return value


@device_router.put("/device/node", tags=["device", "cluster"], response_model=ClusterNode)
async def report_node(body: NodeReport, request: Request) -> ClusterNode:
    """An agent's capacity, labels, tier and replica address (sent when its hub sync starts)."""
    me = auth.device(request)
    s = request.app.state.store
    node: ClusterNode = await run_in_threadpool(s.report_node, me.id, body)
    return node


@router.get("/nodes", tags=["cluster"], response_model=list[ClusterNode])
async def list_nodes(s: StoreDep) -> list[ClusterNode]:
    return await run_in_threadpool(s.list_nodes)


@router.get("/service-types", tags=["cluster"])
async def list_service_types(s: StoreDep) -> list[dict[str, Any]]:
    return [t.to_wire() for t in await run_in_threadpool(s.list_service_types)]


@router.get("/service-types/{name}", tags=["cluster"], responses=FULL)
async def get_service_type(name: str, s: StoreDep) -> dict[str, Any]:
    return (await run_in_threadpool(s.get_service_type, name)).to_wire()


@router.put("/service-types/{name}", tags=["cluster"])
async def apply_service_type(name: str, s: StoreDep, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    """Create or replace a service type (camelCase fields, as in a service-type file)."""
    spec = parse_service_type(body, f"service type {name}")
    if spec.name != name:
        raise ServiceTypeInvalidError(f"the body names service type {spec.name!r} but the path {name!r}")
    return (await run_in_threadpool(s.apply_service_type, spec)).to_wire()


@router.delete("/service-types/{name}", tags=["cluster"], status_code=204)
async def delete_service_type(name: str, s: StoreDep) -> None:
    await run_in_threadpool(s.delete_service_type, name)


@router.post("/sessions", tags=["cluster"], status_code=201, response_model=ClusterSession, responses=FULL)
async def create_session(body: SessionCreate, request: Request) -> ClusterSession:
    """Admit a client: a session on a ready replica at the edge, else in the centre (``offloaded``).

    Answers once the replica is ready (its model answered), with the websocket endpoint and the token
    to present there; 503 ``CLUSTER_FULL`` when neither tier has room.
    """
    return await admission(request).admit(body)


@router.get("/sessions", tags=["cluster"], response_model=list[ClusterSession])
async def list_sessions(s: StoreDep, active: bool = Query(False, description="Only live sessions"),
                        limit: int = Query(1000, ge=1, le=10000)) -> list[ClusterSession]:
    return await run_in_threadpool(lambda: s.list_sessions(active_only=active, limit=limit))


@router.get("/sessions/{session_id}", tags=["cluster"], response_model=ClusterSession)
async def get_session(session_id: str, s: StoreDep) -> ClusterSession:
    return await run_in_threadpool(s.get_session, session_id)


@router.delete("/sessions/{session_id}", tags=["cluster"], response_model=ClusterSession)
async def end_session(session_id: str, request: Request,
                      reason: str | None = Query(None, max_length=500, pattern=r"^[^\x00]*$",
                                                 description="Why, when the client lost the session"),
                      ) -> ClusterSession:
    """End a session (the client is done); its replica slot frees at once."""
    return await admission(request).end(session_id, f"ended by the client ({reason})" if reason
                                        else "ended by the client")


@router.get("/replicas", tags=["cluster"], response_model=list[ClusterReplica])
async def list_replicas(s: StoreDep) -> list[ClusterReplica]:
    return await run_in_threadpool(s.list_replicas)


# -- the original receive server's routes -----------------------------------------------------------
@compat_router.get("/app-service", tags=["cluster"], response_model=AppServiceAnswer, operation_id="app_service_get")
@compat_router.post("/app-service", tags=["cluster"], response_model=AppServiceAnswer, operation_id="app_service_post")
async def app_service(request: Request, type: str = Query(..., min_length=1, max_length=63),
                      clientID: str = Query(..., min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$"),
                      clienttime: str | None = Query(None, max_length=64)) -> AppServiceAnswer:
    """The original edge receive server: a replica at the edge (``offloading: 0`` and the replica's real
    port, once it is ready), or ``offloading: 1`` when the edge is full (``service_port`` is then "0":
    the client asks the centre, ``POST /driver-class-predict/{clientID}``)."""
    try:
        ask = SessionCreate(type=type, client_id=clientID, tier="edge", wait_seconds=30.0)
        session = await admission(request).admit(ask, legacy=True)
    except ClusterFullError:
        return AppServiceAnswer(service_port="0", offloading=1)
    return AppServiceAnswer(service_port=str(session.port), offloading=0)


async def _centre(request: Request, type_name: str, client_id: str) -> AppServiceAnswer:
    ask = SessionCreate(type=type_name, client_id=client_id, tier="centre", wait_seconds=30.0)
    session = await admission(request).admit(ask, legacy=True)
    return AppServiceAnswer(service_port=str(session.port), offloading=0)


@compat_router.post("/driver-class-predict/{client_id}", tags=["cluster"], response_model=AppServiceAnswer)
async def driver_class_predict(request: Request, client_id: str = Path(..., max_length=128,
                                                                         pattern=r"^[^\x00-\x1f]+$"),
                               ) -> AppServiceAnswer:
    """The original centre's scalar route: a session on a centre replica of ``scalar``."""
    return await _centre(request, "scalar", client_id)


@compat_router.post("/driver-image-recognition/{client_id}", tags=["cluster"], response_model=AppServiceAnswer)
async def driver_image_recognition(request: Request, client_id: str = Path(..., max_length=128,
                                                                             pattern=r"^[^\x00-\x1f]+$"),
                                   ) -> AppServiceAnswer:
    """The original centre's image route: a session on a centre replica of ``image``."""
    return await _centre(request, "image", client_id)
