"""Map hub errors to HTTP at the boundary, with the contract's one table
(:mod:`roost.hub.contract.errors`): every error body is ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from roost.errors import RoostError
from roost.hub.contract import CODE_BY_STATUS, INTERNAL_ERROR, ErrorBody, status_for

logger = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def roost_error_response(err: RoostError) -> JSONResponse:
    status = status_for(err)
    if status >= 500:
        logger.error("unexpected hub error %s: %s", err.code, err.message)
    return error_response(status, err.code, err.message)


def _validation_message(err: RequestValidationError) -> str:
    parts = []
    for item in err.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()))
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    async def on_roost_error(_request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RoostError)
        return roost_error_response(err)

    async def on_validation(_request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, RequestValidationError)
        return error_response(422, "VALIDATION_ERROR", _validation_message(err))

    async def on_http(_request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, StarletteHTTPException)
        return error_response(err.status_code, CODE_BY_STATUS.get(err.status_code, f"HTTP_{err.status_code}"),
                              str(err.detail))

    async def on_unexpected(_request: Request, err: Exception) -> JSONResponse:
        logger.error("unhandled error in the hub", exc_info=err)
        return error_response(500, INTERNAL_ERROR, "internal error; see the hub's log")

    app.add_exception_handler(RoostError, on_roost_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


def _doc(status: int, description: str) -> dict[str, object]:
    return {"model": ErrorBody, "description": description}


#: Error responses documented on every route (OpenAPI).
COMMON_ERRORS: dict[int | str, dict[str, object]] = {
    400: _doc(400, "Invalid name (INVALID_NAME) or input"),
    401: _doc(401, "Missing, unknown or revoked credentials"),
    403: _doc(403, "Not allowed for this principal"),
    422: _doc(422, "Validation error"),
}
