"""The hub's exception tree.

Every error the hub raises on purpose is a :class:`HubError` with a stable ``code``. The classes
say what kind of problem it is (bad input, unknown thing, conflict, refused credentials, ...);
the REST layer maps the *class* to an HTTP status in :mod:`roost.hub.api.errors` and nowhere else.

* :class:`InvalidNameError` — a name with ``/``, ``..``, NUL or other forbidden characters (400).
* :class:`AuthenticationError` — no, unknown, revoked or expired credentials; get new ones (401).
* :class:`ForbiddenError` — the credentials are valid but may not do this (403).

  * :class:`ReportForbiddenError` — ``DEPLOYMENT_NOT_FOR_DEVICE``: a device reported on a
    deployment that was never made for it (no row of that deployment for this device).
* :class:`HubNotFoundError` — an unknown device, component, deployment or artifact (404).
* :class:`HubConflictError` — the request conflicts with stored state, e.g. ``VERSION_EXISTS`` (409).

  * :class:`RevisionNotGivenError` — ``REVISION_NOT_GIVEN``: a device reported a revision newer than
    any the hub has given it.
* :class:`GoneError` — a one-time thing that was already used (``ENROLL_TOKEN_USED``, 410).
* :class:`PayloadTooLargeError` — an upload over the size cap (413).
* :class:`UnprocessableError` — well-formed but unusable input: a malformed recipe, a deployment
  naming an unknown component version, a request body that fails validation (422).
* :class:`DesiredStateConflictError` — two deployments want different versions of one component
  on one device; reported on that device's row as FAILED / ``DESIRED_STATE_CONFLICT``.
"""

from __future__ import annotations

from roost.errors import ConflictError, InvalidInputError, NotFoundError, Retryable, RoostError, UnauthorizedError


class HubError(RoostError):
    """Base class of every error the hub raises on purpose, and of what the hub client
    (:mod:`roost.hub.client`) raises for the hub's answers (then ``status`` is the HTTP status)."""

    code = "HUB_ERROR"
    status: int | None = None


class HubInvalidInputError(HubError, InvalidInputError):
    """The request is malformed (400); fix it."""

    code = "INVALID_INPUT"


class InvalidNameError(HubInvalidInputError):
    """A name (device, group, component, version, artifact file) is not allowed; fix it."""

    code = "INVALID_NAME"


class AuthenticationError(HubError, UnauthorizedError):
    """No credentials, unknown ones, or revoked/expired ones: obtain valid credentials."""

    code = "UNAUTHORIZED"


class ForbiddenError(HubError, UnauthorizedError):
    """The caller is authenticated but may not do this (a device calling an admin endpoint)."""

    code = "FORBIDDEN"


class ReportForbiddenError(ForbiddenError):
    """A device report names a deployment that was not made for this device: it may report only on
    deployments whose desired state it was given. Nothing of the request is applied; do not resend it."""

    code = "DEPLOYMENT_NOT_FOR_DEVICE"


class HubNotFoundError(HubError, NotFoundError):
    """A named thing does not exist."""

    code = "NOT_FOUND"


class HubConflictError(HubError, ConflictError):
    """The request conflicts with stored state (a published version, a taken device name)."""

    code = "CONFLICT"


class RevisionNotGivenError(HubConflictError):
    """A device report claims a revision newer than the newest the hub has given this device (its
    ``desired_revision``). Nothing of the request is applied; the report cannot become valid."""

    code = "REVISION_NOT_GIVEN"


class GoneError(HubError, ConflictError):
    """A one-time thing was already used up."""

    code = "GONE"


class PayloadTooLargeError(HubError, InvalidInputError):
    """An upload is larger than the hub accepts."""

    code = "PAYLOAD_TOO_LARGE"


class UnprocessableError(HubError, InvalidInputError):
    """The input is well-formed but cannot be used (bad recipe, unknown component version, ...)."""

    code = "UNPROCESSABLE"


class DesiredStateConflictError(UnprocessableError):
    """Two deployments that apply to one device name different versions of one component."""

    code = "DESIRED_STATE_CONFLICT"

    def __init__(self, component: str, first: tuple[str, str], second: tuple[str, str]) -> None:
        self.component = component
        self.first_deployment, self.first_version = first
        self.second_deployment, self.second_version = second
        super().__init__(
            f"component {component} is wanted at version {self.first_version} by deployment "
            f"{self.first_deployment} and at version {self.second_version} by deployment {self.second_deployment}"
        )


class HubServerError(Retryable, HubError):
    """5xx: the hub failed (its database is down, a bug); the same call may succeed later."""

    code = "HUB_SERVER_ERROR"
