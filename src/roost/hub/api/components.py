"""Component registry endpoints and artifact downloads."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from roost.hub.api import auth, device
from roost.hub.api.admin import StoreDep
from roost.hub.api.errors import COMMON_ERRORS
from roost.hub.api.upload import receive_upload
from roost.hub.contract import SHA256_HEADER, Component, ErrorBody

router = APIRouter(prefix="/v1", responses=COMMON_ERRORS)

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["recipe"],
            "properties": {
                "recipe": {"type": "string", "format": "binary", "description": "Greengrass recipe (YAML/JSON)"},
                "artifacts": {"type": "array", "items": {"type": "string", "format": "binary"},
                              "description": "Every file of the version's artifact folder; each part's filename "
                                             "is the file's relative path (hello.py, lib/greet.py). The files "
                                             "the recipe's artifact URIs name (last path segment) must be "
                                             "among them, at the top of the folder"},
            },
        }}},
    }
}


@router.post("/components", status_code=201, tags=["components"], dependencies=[Depends(auth.admin)],
             response_model=Component, openapi_extra=UPLOAD_BODY,
             responses={409: {"model": ErrorBody, "description": "VERSION_EXISTS"},
                        413: {"model": ErrorBody, "description": "ARTIFACT_TOO_LARGE"}})
async def publish_component(request: Request, s: StoreDep) -> Component:
    """Publish a component version: a recipe plus its whole artifact folder (every file, by relative path;
    the files the recipe's URIs name must be there). Versions are immutable."""
    staging = await run_in_threadpool(s.artifacts.staging)
    try:
        upload = await receive_upload(request.headers.get("content-type", ""), request.stream(), staging)
        assert upload.recipe is not None
        return await run_in_threadpool(s.publish_component, bytes(upload.recipe), staging, upload.files,
                                       upload.recipe_name)
    finally:
        await run_in_threadpool(staging.cleanup)


@router.get("/components", tags=["components"], dependencies=[Depends(auth.admin)],
            response_model=list[Component])
async def list_components(s: StoreDep) -> list[Component]:
    return await run_in_threadpool(s.list_components)


@router.get("/components/{name}/{version}", tags=["components"], dependencies=[Depends(auth.admin)],
            response_model=Component,
            responses={404: {"model": ErrorBody, "description": "COMPONENT_NOT_FOUND"}})
async def get_component(name: str, version: str, s: StoreDep) -> Component:
    """One version, with its stored recipe (including the hub-computed digests)."""
    return await run_in_threadpool(s.get_component, name, version)


@router.get("/artifacts/{name}/{version}/{file:path}", tags=["components"],
            response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}},
                             "headers": {SHA256_HEADER: {"description": "hex SHA-256 of the file",
                                                            "schema": {"type": "string"}}}},
                       404: {"model": ErrorBody, "description": "ARTIFACT_NOT_FOUND"}})
async def download_artifact(name: str, version: str, file: str, request: Request, s: StoreDep) -> Response:
    """Stream an artifact file (``file`` is its relative path in the version's folder, like ``lib/greet.py``).
    Devices may read only components in their own desired state."""
    who = auth.principal(request)
    if who.kind == "device":
        where = await device.batches(request).artifacts.submit((who.id, name, version, file))
    else:
        where = await run_in_threadpool(s.artifact, who, name, version, file)
    headers = {SHA256_HEADER: where.sha256}
    base_name = where.file_name.rsplit("/", 1)[-1]
    if where.content is not None:  # small: read with the access check (see store.INLINE_ARTIFACT_BYTES)
        headers["Content-Disposition"] = f"attachment; filename*=utf-8''{quote(base_name)}"
        return Response(where.content, media_type="application/octet-stream", headers=headers)
    return FileResponse(where.path, media_type="application/octet-stream", filename=base_name, headers=headers)
