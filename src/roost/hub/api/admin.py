"""Admin endpoints: enrolment tokens, devices, groups, deployments."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from roost.hub import contract
from roost.hub.api import auth
from roost.hub.api.errors import COMMON_ERRORS
from roost.hub.contract import DeploymentCreate, EnrollTokenCreate, ErrorBody, LabelsUpdate, MembersAdd
from roost.hub.store import Store

router = APIRouter(prefix="/v1", dependencies=[Depends(auth.admin)], responses=COMMON_ERRORS)
NOT_FOUND: dict[int | str, dict[str, object]] = {404: {"model": ErrorBody, "description": "Unknown name"}}


def store(request: Request) -> Store:
    value: Store = request.app.state.store
    return value


StoreDep = Annotated[Store, Depends(store)]


@router.post("/enroll-tokens", status_code=201, tags=["devices"], response_model=contract.EnrollToken)
async def create_enroll_token(body: EnrollTokenCreate, s: StoreDep) -> contract.EnrollToken:
    """A one-time enrolment token for one device (optionally joining a group)."""
    return await run_in_threadpool(s.create_enroll_token, body.group, body.ttl_seconds)


@router.get("/devices", tags=["devices"], response_model=list[contract.Device])
async def list_devices(s: StoreDep) -> list[contract.Device]:
    return await run_in_threadpool(s.list_devices)


@router.get("/devices/{name}", tags=["devices"], responses=NOT_FOUND, response_model=contract.Device)
async def get_device(name: str, s: StoreDep) -> contract.Device:
    """A device with its per-deployment results (newest first)."""
    return await run_in_threadpool(s.get_device, name)


@router.post("/devices/{name}/revoke", tags=["devices"], responses=NOT_FOUND, response_model=contract.Device)
async def revoke_device(name: str, s: StoreDep) -> contract.Device:
    """Cut a device off at once: its credential is refused from now on."""
    return await run_in_threadpool(s.revoke_device, name)


@router.put("/devices/{name}/labels", tags=["devices"], responses=NOT_FOUND, response_model=contract.Device)
async def set_labels(name: str, body: LabelsUpdate, s: StoreDep) -> contract.Device:
    return await run_in_threadpool(s.set_labels, name, dict(body.labels))


@router.get("/groups", tags=["groups"], response_model=list[contract.Group])
async def list_groups(s: StoreDep) -> list[contract.Group]:
    return await run_in_threadpool(s.list_groups)


@router.post("/groups/{name}/members", tags=["groups"], responses=NOT_FOUND, response_model=contract.Group)
async def add_members(name: str, body: MembersAdd, s: StoreDep) -> contract.Group:
    """Add devices to a group (created if new); they receive the group's current deployment."""
    return await run_in_threadpool(s.add_group_members, name, list(body.devices))


@router.delete("/groups/{name}/members/{device}", tags=["groups"], responses=NOT_FOUND, response_model=contract.Group)
async def remove_member(name: str, device: str, s: StoreDep) -> contract.Group:
    return await run_in_threadpool(s.remove_group_member, name, device)


@router.post("/deployments", status_code=201, tags=["deployments"], response_model=contract.Deployment,
             responses={**NOT_FOUND, 422: {"model": ErrorBody, "description": "Unknown component version, ..."}})
async def create_deployment(body: DeploymentCreate, s: StoreDep) -> contract.Deployment:
    """A new revision for the target; it supersedes the target's previous deployment."""
    return await run_in_threadpool(s.create_deployment, body)


@router.get("/deployments", tags=["deployments"], response_model=list[contract.Deployment])
async def list_deployments(s: StoreDep) -> list[contract.Deployment]:
    """Deployments, newest first, with per-status counts (no per-device rows)."""
    return await run_in_threadpool(s.list_deployments)


@router.get("/deployments/{deployment_id}", tags=["deployments"], responses=NOT_FOUND,
            response_model=contract.Deployment)
async def get_deployment(deployment_id: str, s: StoreDep) -> contract.Deployment:
    """A deployment with per-device results and counts (timeouts and the abort rule applied)."""
    return await run_in_threadpool(s.get_deployment, deployment_id)


@router.post("/deployments/{deployment_id}/cancel", tags=["deployments"], response_model=contract.Deployment,
             responses={**NOT_FOUND, 409: {"model": ErrorBody, "description": "Already finished"}})
async def cancel_deployment(deployment_id: str, s: StoreDep) -> contract.Deployment:
    """Cancel: devices that have not started it keep their previous state."""
    return await run_in_threadpool(s.cancel_deployment, deployment_id)
