"""Secret endpoints: put, list and delete (admin API token), and a device's own secrets (device credential).

The admin routes never answer a value. ``GET /v1/device/secrets`` answers the values of the secrets the
calling device's deployments name, with ``Cache-Control: no-store``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from roost.hub.api import auth
from roost.hub.api.admin import StoreDep
from roost.hub.api.errors import COMMON_ERRORS
from roost.hub.contract import ErrorBody
from roost.hub.contract.secrets import DeviceSecrets, Secret, SecretPut

router = APIRouter(prefix="/v1", dependencies=[Depends(auth.admin)], responses=COMMON_ERRORS, tags=["secrets"])
device_router = APIRouter(prefix="/v1", responses=COMMON_ERRORS, tags=["device"])
NOT_FOUND: dict[int | str, dict[str, object]] = {404: {"model": ErrorBody, "description": "SECRET_NOT_FOUND"}}


@router.put("/secrets/{name:path}", response_model=Secret,
            responses={400: {"model": ErrorBody, "description": "INVALID_SECRET_NAME / INVALID_SECRET_VALUE"}})
async def put_secret(name: str, body: SecretPut, s: StoreDep) -> Secret:
    """A new version of the secret (created if new): staged AWSCURRENT; the previous one AWSPREVIOUS.

    The name is a plain name (``db-password``, ``prod/db``) or a secret ARN. The value is
    ``secret_string`` or ``secret_binary`` (base64), at most 64 KiB; it is never answered.
    """
    return await run_in_threadpool(s.put_secret, name, body)


@router.get("/secrets", response_model=list[Secret])
async def list_secrets(s: StoreDep) -> list[Secret]:
    """Every secret with its versions and stages (never a value)."""
    return await run_in_threadpool(s.list_secrets)


@router.delete("/secrets/{name:path}", response_model=Secret, responses=NOT_FOUND)
async def delete_secret(name: str, s: StoreDep) -> Secret:
    """Delete every version of the secret; devices drop it at their next refresh."""
    return await run_in_threadpool(s.delete_secret, name)


@device_router.get("/device/secrets", response_model=DeviceSecrets)
async def device_secrets(request: Request, response: Response, s: StoreDep) -> DeviceSecrets:
    """The secrets this device's deployments name (``cloudSecrets`` of ``aws.greengrass.SecretManager``),
    with their values."""
    me = auth.device(request)
    response.headers["Cache-Control"] = "no-store"
    return await run_in_threadpool(s.device_secrets, me.id)
