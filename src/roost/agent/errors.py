"""Errors raised by the device agent (``roost.agent``).

A flat module: every class derives from :class:`AgentError` (itself a
:class:`~roost.errors.RoostError`) and carries a stable ``code``. What a caller should do:

* :class:`LifecycleStepError` (``LIFECYCLE_STEP_FAILED``) — a lifecycle script exited non-zero.
  Fix the component (its recipe or artifacts); retrying the same step usually fails again.
* :class:`LifecycleTimeoutError` (``LIFECYCLE_TIMEOUT``) — a step did not finish within its
  timeout and its processes were killed. Retryable: the device may simply have been busy.
* :class:`InvalidTransitionError` (``INVALID_TRANSITION``) — the operation is not possible in the
  component's current state (starting a component that is not installed, ...).
* :class:`ComponentNotFoundError` (``COMPONENT_NOT_FOUND``) — no component of that name is known.
* :class:`ComponentBusyError` (``COMPONENT_BUSY``) — the component must be stopped first.
* :class:`PolicyChangeRefusedError` (``POLICY_CHANGE_REFUSED``) — an IPC ``UpdateConfiguration``
  touched ``accessControl`` (policy); change policy through a deployment instead.
* :class:`IpcNotAuthenticatedError` (``IPC_NOT_AUTHENTICATED``) — an IPC operation arrived on a
  connection that has not completed CONNECT.
* :class:`DirectChannelUnavailableError` (``DIRECT_CHANNEL_UNAVAILABLE``) — a direct request/reply
  channel cannot be granted (several subscribers, no offer, a policy); the Roost client falls back
  to publishing through the agent.
* :class:`IpcStreamLimitError` (``IPC_STREAM_LIMIT``) — a component has as many open IPC
  streams (subscriptions) as it may; close some before opening more.
* :class:`PosixUserError` (``POSIX_USER_INVALID``, ``POSIX_USER_UNKNOWN``, ``POSIX_GROUP_UNKNOWN``,
  ``POSIX_USER_UNAVAILABLE``) — a component's user cannot be honoured; fix the deployment.
"""

from __future__ import annotations

from collections.abc import Sequence

from roost.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    OperationTimeoutError,
    Retryable,
    RoostError,
    UnauthorizedError,
)


class AgentError(RoostError):
    """Base class of everything the agent raises on purpose."""

    code = "AGENT_ERROR"


class LifecycleStepError(AgentError):
    """A lifecycle step (Install, Startup, Run, Shutdown, Recover) failed.

    ``exit_code`` is the script's exit status (negative: killed by that signal; ``None``: the
    script could not be started at all). ``stderr_tail`` holds the last lines it wrote to stderr.
    """

    code = "LIFECYCLE_STEP_FAILED"

    def __init__(self, component: str, step: str, exit_code: int | None,
                 stderr_tail: Sequence[str] = ()) -> None:
        self.component = component
        self.step = step
        self.exit_code = exit_code
        self.stderr_tail = tuple(stderr_tail)
        if exit_code is None:
            what = "could not be started"
        elif exit_code < 0:
            what = f"was killed by signal {-exit_code}"
        else:
            what = f"failed with exit code {exit_code}"
        message = f"{component}: {step} step {what}"
        if self.stderr_tail:
            message += "; last stderr lines: " + " | ".join(self.stderr_tail)
        super().__init__(message)


class LifecycleTimeoutError(OperationTimeoutError, AgentError):
    """A lifecycle step (or a wait for a state) did not finish within ``seconds``."""

    code = "LIFECYCLE_TIMEOUT"

    def __init__(self, component: str, step: str, seconds: float) -> None:
        self.component = component
        self.step = step
        self.seconds = seconds
        super().__init__(f"{component}: {step} did not finish within {seconds:g} s")


class InvalidTransitionError(AgentError):
    """A state change (or an operation implying one) is not allowed from the current state."""

    code = "INVALID_TRANSITION"

    def __init__(self, old: str, new: str, component: str | None = None, detail: str | None = None) -> None:
        self.old = old
        self.new = new
        self.component = component
        prefix = f"{component}: " if component else ""
        message = f"{prefix}cannot go from {old} to {new}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)


class ComponentNotFoundError(NotFoundError, AgentError):
    """The supervisor knows no component of that name."""

    code = "COMPONENT_NOT_FOUND"

    def __init__(self, name: str) -> None:
        self.component = name
        super().__init__(f"component {name!r} is not known to the supervisor")


class ComponentBusyError(ConflictError, AgentError):
    """The component has running processes or pending work; stop it first."""

    code = "COMPONENT_BUSY"

    def __init__(self, name: str, detail: str) -> None:
        self.component = name
        super().__init__(f"{name}: {detail}")


class ArtifactError(AgentError):
    """An artifact is missing, fails its digest, is an unsafe archive, or cannot run here (docker:)."""

    code = "ARTIFACT_ERROR"


class DeploymentError(AgentError):
    """A deployment cannot be applied (component not deployed, a component failed to start, ...)."""

    code = "DEPLOYMENT_FAILED"


class PosixUserError(InvalidInputError, AgentError):
    """A component's ``posixUser`` cannot be honoured (unknown user or group, malformed, or the
    agent is not root): fix the deployment's ``componentToRunWithInfo`` or the device's users."""

    code = "POSIX_USER_INVALID"


class PolicyChangeRefusedError(UnauthorizedError, AgentError):
    """A component tried to change policy (``accessControl``) through IPC ``UpdateConfiguration``.

    Policy changes only through a deployment; the whole update was refused and nothing changed.
    """

    code = "POLICY_CHANGE_REFUSED"

    def __init__(self, component: str, keys: Sequence[str]) -> None:
        self.component = component
        self.keys = tuple(keys)
        super().__init__(
            f"{component} may not change {', '.join(self.keys)} through UpdateConfiguration: policy changes "
            "only through a deployment; nothing was changed"
        )


class IpcNotAuthenticatedError(UnauthorizedError, AgentError):
    """An IPC operation on a connection that has not completed CONNECT."""

    code = "IPC_NOT_AUTHENTICATED"


class IpcStreamLimitError(Retryable, AgentError):
    """The component already holds as many open IPC streams as it may."""

    code = "IPC_STREAM_LIMIT"


class DirectChannelUnavailableError(ConflictError, AgentError):
    """A direct request/reply channel cannot be granted now (the message says why)."""

    code = "DIRECT_CHANNEL_UNAVAILABLE"
