"""The one table between the hub's error classes and HTTP, read in both directions.

The server (:mod:`roost.hub.api.errors`) answers an error with :func:`status_for`; the client
(:mod:`roost.hub.client`) turns an answer back into the same class with :func:`error_for`, so a
``409 REVISION_NOT_GIVEN`` raised by the store is a :class:`~roost.hub.errors.RevisionNotGivenError`
again on the device that receives it. Every error body is ``{"error": {"code", "message"}}``
(:class:`~roost.hub.contract.models.ErrorBody`).
"""

from __future__ import annotations

from roost.cluster.errors import ClusterFullError, ReplicaNotReadyError, UnschedulableError
from roost.errors import ConflictError, InvalidInputError, NotFoundError, RoostError
from roost.hub.errors import (
    AuthenticationError,
    ForbiddenError,
    GoneError,
    HubConflictError,
    HubError,
    HubInvalidInputError,
    HubNotFoundError,
    HubServerError,
    InvalidNameError,
    PayloadTooLargeError,
    ReportForbiddenError,
    RevisionNotGivenError,
    UnprocessableError,
)

#: (class, HTTP status), most specific first. The server answers with the first row the error is an
#: instance of; the client raises, for a status, the row whose class has the answer's code, else the
#: last (most general) row of that status.
STATUS_BY_CLASS: tuple[tuple[type[HubError], int], ...] = (
    (AuthenticationError, 401),
    (ReportForbiddenError, 403),
    (ForbiddenError, 403),
    (PayloadTooLargeError, 413),
    (GoneError, 410),
    (RevisionNotGivenError, 409),
    (HubConflictError, 409),
    (HubNotFoundError, 404),
    (InvalidNameError, 400),
    (HubInvalidInputError, 400),
    (UnprocessableError, 422),
    (HubServerError, 500),
)
#: Errors of other packages that reach the REST layer (a recipe error while publishing, ...).
GENERIC_STATUS: tuple[tuple[type[RoostError], int], ...] = (
    (ClusterFullError, 503),  # retry later: the cluster has no room now
    (ReplicaNotReadyError, 503),
    (UnschedulableError, 422),  # no node could ever run it: not an input the caller can retry
    (NotFoundError, 404),
    (ConflictError, 409),
    (InvalidInputError, 400),
)
#: The code of an error the web framework raises itself (unknown route, wrong method, bad body).
CODE_BY_STATUS = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
                  405: "METHOD_NOT_ALLOWED", 409: "CONFLICT", 413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE",
                  422: "VALIDATION_ERROR"}
#: The code of an unexpected server error (the hub's log has the traceback).
INTERNAL_ERROR = "INTERNAL_ERROR"


def status_for(err: RoostError) -> int:
    """The HTTP status the hub answers ``err`` with (500 for anything unexpected)."""
    for cls, status in (*STATUS_BY_CLASS, *GENERIC_STATUS):
        if isinstance(err, cls):
            return status
    return 500


def class_for(status: int, code: str | None = None) -> type[HubError]:
    """The class a client raises for an error answer with ``status`` and ``code``."""
    if status >= 500:
        return HubServerError
    rows = [cls for cls, row_status in STATUS_BY_CLASS if row_status == status]
    for cls in rows:
        if code is not None and cls.code == code:
            return cls
    return rows[-1] if rows else HubInvalidInputError


def error_for(status: int, code: str | None, message: str) -> HubError:
    """The error a client raises for an answer (``status`` set on it; ``code`` kept, or the class's)."""
    error = class_for(status, code)(message, code=code)
    error.status = status
    return error


__all__ = ["CODE_BY_STATUS", "GENERIC_STATUS", "INTERNAL_ERROR", "STATUS_BY_CLASS", "class_for", "error_for",
           "status_for"]
