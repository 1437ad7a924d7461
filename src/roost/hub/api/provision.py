"""Devices registered over SSH: the hub's public key, registrations, upgrades, uninstalls, host keys,
and the Roost wheel the hub serves to the devices it provisions (routes: :mod:`roost.hub.contract.provision`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse
from starlette.concurrency import run_in_threadpool

from roost.hub.api import auth
from roost.hub.api.errors import COMMON_ERRORS
from roost.hub.contract import ErrorBody
from roost.hub.contract.provision import (
    HostKeyPin,
    PinnedHostKey,
    ProvisionRun,
    Registration,
    RegistrationCreate,
    SshKey,
)
from roost.provision import dist
from roost.provision.inventory import SshEndpoint, inventory
from roost.provision.registration import Provisioner
from roost.provision.target import parse_target

router = APIRouter(prefix="/v1", dependencies=[Depends(auth.admin)], responses=COMMON_ERRORS, tags=["provision"])
#: No credentials: Roost's own public code, for devices that are not enrolled yet.
dist_router = APIRouter(prefix="/v1/dist", include_in_schema=False)
NOT_FOUND: dict[int | str, dict[str, object]] = {404: {"model": ErrorBody, "description": "Unknown name"}}
CONFLICT: dict[int | str, dict[str, object]] = {409: {"model": ErrorBody, "description": "A run is under way, "
                                                                                          "or the device exists"}}


def provisioner(request: Request) -> Provisioner:
    value: Provisioner = request.app.state.provisioner
    return value


ProvisionerDep = Annotated[Provisioner, Depends(provisioner)]


@router.get("/ssh-key", response_model=SshKey)
async def ssh_key(p: ProvisionerDep) -> SshKey:
    """The hub's SSH public key: put it in the ``~/.ssh/authorized_keys`` of the account to register."""
    identity = await run_in_threadpool(p.identity)
    return SshKey(public_key=identity.public_key, fingerprint=identity.fingerprint)


@router.post("/devices/ssh", status_code=202, response_model=Registration, responses=CONFLICT)
async def register(body: RegistrationCreate, p: ProvisionerDep) -> Registration:
    """Register and provision a device over SSH; answers at once (PENDING), the run goes on in the hub."""
    return await p.add(body)


@router.get("/devices/ssh/{registration_id}", response_model=Registration, responses=NOT_FOUND)
async def registration(registration_id: str, p: ProvisionerDep) -> Registration:
    """A run with its steps (status, time, message)."""
    return await run_in_threadpool(p.store.get_registration, registration_id)


@router.get("/registrations", response_model=list[Registration])
async def registrations(p: ProvisionerDep, device: str | None = None) -> list[Registration]:
    """Runs, newest first (of one device with ``?device=``)."""
    return await run_in_threadpool(p.store.list_registrations, device)


@router.get("/inventory")
async def ansible_inventory(p: ProvisionerDep) -> dict[str, Any]:
    """The fleet as an Ansible inventory in the JSON ``--list`` form (:mod:`roost.provision.inventory`):
    devices by group, with the SSH address and pinned host key of those registered over SSH."""
    def build() -> dict[str, Any]:
        endpoints = {}
        for name, (text, key) in p.store.ssh_endpoints().items():
            t = parse_target(text)
            endpoints[name] = SshEndpoint(user=t.user, host=t.host, port=t.port, host_key=key)
        return inventory(p.store.list_devices(), p.store.list_groups(), endpoints)
    return await run_in_threadpool(build)


@router.post("/devices/{name}/upgrade", status_code=202, response_model=Registration,
             responses={**NOT_FOUND, **CONFLICT})
async def upgrade(name: str, body: ProvisionRun, p: ProvisionerDep) -> Registration:
    """Re-run the playbook with the hub's Roost (the wheel is rebuilt) and restart the agent."""
    return await p.again(name, "upgrade", body)


@router.post("/devices/{name}/uninstall", status_code=202, response_model=Registration,
             responses={**NOT_FOUND, **CONFLICT})
async def uninstall(name: str, body: ProvisionRun, p: ProvisionerDep) -> Registration:
    """Stop the agent, remove Roost from the device, revoke the device."""
    return await p.again(name, "uninstall", body)


@router.get("/ssh-host-keys", response_model=list[PinnedHostKey])
async def host_keys(p: ProvisionerDep) -> list[PinnedHostKey]:
    return await run_in_threadpool(p.store.list_host_keys)


@router.put("/ssh-host-keys/{host}/{port}", response_model=PinnedHostKey)
async def pin_host_key(host: str, port: int, body: HostKeyPin, p: ProvisionerDep) -> PinnedHostKey:
    """Pin (or re-pin, after checking it on the device) the host key of ``host:port``."""
    return await p.pin(host, port, body.host_key)


@dist_router.get("/wheelhouse/", response_class=HTMLResponse)
async def wheelhouse(p: ProvisionerDep) -> HTMLResponse:
    return HTMLResponse(await run_in_threadpool(dist.wheelhouse_index, p.root))


@dist_router.get("/wheelhouse/{name}")
async def wheelhouse_file(name: str, p: ProvisionerDep) -> FileResponse:
    return FileResponse(dist.dist_file(p.root, name, wheelhouse=True), media_type="application/octet-stream")


@dist_router.get("/{name}")
async def dist_file(name: str, p: ProvisionerDep) -> FileResponse:
    return FileResponse(dist.dist_file(p.root, name), media_type="application/octet-stream")
