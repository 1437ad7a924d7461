"""The root of Roost's exception tree.

Every error Roost raises on purpose derives from :class:`RoostError` and carries a stable
``code`` (an upper-case identifier that scripts can rely on) plus a human message that says
what was wrong. Each package defines its own subtree (``roost.recipe.errors``,
``roost.ipc.errors``, ``roost.agent.errors``); transports map codes to HTTP statuses, IPC error
types or CLI exit codes at the boundary only, always chaining with ``raise ... from err``.

The three mix-ins tell a caller what to do:

* :class:`Retryable` — the same call may succeed later (a timeout, a busy resource).
* :class:`Reauthenticate` — the credentials were refused; get new ones before retrying.
* anything else — give up: the input or the state is wrong and retrying will not help.
"""

from __future__ import annotations


class RoostError(Exception):
    """Base class. ``code`` is stable; ``str(err)`` is the message for people."""

    code: str = "ROOST_ERROR"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class Retryable:
    """Mix-in: the operation may succeed if retried later."""

    retryable = True


class Reauthenticate:
    """Mix-in: credentials were refused; obtain new ones, then retry."""

    reauthenticate = True


class InvalidInputError(RoostError):
    """The caller sent something malformed; fix the input."""

    code = "INVALID_INPUT"


class NotFoundError(RoostError):
    """A named thing (component, deployment, file) does not exist."""

    code = "NOT_FOUND"


class ConflictError(RoostError):
    """The request conflicts with the current state (already running, busy, ...)."""

    code = "CONFLICT"


class UnauthorizedError(Reauthenticate, RoostError):
    """The principal is not allowed to do this."""

    code = "UNAUTHORIZED"


class OperationTimeoutError(Retryable, RoostError):
    """A step did not finish within its timeout."""

    code = "TIMEOUT"
