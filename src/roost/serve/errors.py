"""Errors of ``roost.serve``.

:class:`RequestError` (an :class:`~roost.errors.InvalidInputError`) is what a bad inference request
gets: its ``code`` goes back to the requester in ``{"error": {"code", "message"}}`` and the server
keeps serving. :class:`ModelError` is a model that cannot be loaded or whose engines disagree:
fix the model or the engine choice.
"""

from __future__ import annotations

from roost.errors import InvalidInputError, RoostError

# Stable codes of bad requests (sent back to the requester).
INVALID_JSON = "INVALID_JSON"
INVALID_BASE64 = "INVALID_BASE64"
FEATURE_MISMATCH = "FEATURE_MISMATCH"
NON_FINITE = "NON_FINITE"
WRONG_TYPE = "WRONG_TYPE"
UNREADABLE_IMAGE = "UNREADABLE_IMAGE"
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
PATH_NOT_ALLOWED = "PATH_NOT_ALLOWED"
EMPTY_REQUEST = "EMPTY_REQUEST"
HANDLER_ERROR = "HANDLER_ERROR"
HANDLER_TIMEOUT = "HANDLER_TIMEOUT"


class ServeError(RoostError):
    """Base class of ``roost.serve`` errors."""

    code = "SERVE_ERROR"


class RequestError(InvalidInputError, ServeError):
    """The request is malformed; the message names what was wrong. Fix the request."""

    code = "INVALID_REQUEST"


class ModelError(ServeError):
    """The model cannot be loaded or compiled, or an engine disagrees with the reference."""

    code = "MODEL_ERROR"
