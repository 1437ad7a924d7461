"""The errors of registering and provisioning devices over SSH, and of service units (:mod:`roost.provision`).

Each says which part failed and what to do: a malformed target or key is the caller's input
(fix it); an unreachable host may work later (retry); a refused key or a changed host key needs a
person (authorise the hub's key, or re-pin the host key after checking it); a failed step names the
step, the host and Ansible's message (fix the device, then run ``roost device add`` again: it
resumes idempotently). :class:`ServiceUnitError` is a failure to install or enable a systemd unit
(no root, ``useradd`` or ``systemctl`` failing); bad install-service options are
:class:`roost.errors.InvalidInputError` with code ``SERVICE_UNIT_INVALID``.
"""

from __future__ import annotations

from roost.errors import ConflictError, InvalidInputError, NotFoundError, Retryable, RoostError, UnauthorizedError


class ProvisionError(RoostError):
    """Base class: a registration or a provisioning run failed."""

    code = "PROVISION_FAILED"


class SshTargetError(ProvisionError, InvalidInputError):
    """``user@host[:port]`` (or a host key given up front) is malformed: fix the input."""

    code = "SSH_TARGET_INVALID"


class SshUnreachableError(Retryable, ProvisionError):
    """The host does not answer on its SSH port (refused, no route, DNS, timeout): retry later."""

    code = "SSH_UNREACHABLE"


class SshAuthError(ProvisionError, UnauthorizedError):
    """The device refused the hub's key: put ``roost hub ssh-key`` in the account's authorized_keys."""

    code = "SSH_AUTH_REFUSED"


class HostKeyError(ProvisionError, ConflictError):
    """The device's host key is not the pinned one (or not the one given with ``--host-key``):
    check it on the device, then re-pin it explicitly."""

    code = "HOST_KEY_MISMATCH"


class ProvisionStepError(ProvisionError):
    """One step of the provisioning playbook failed; the message names the step, the host and
    Ansible's message."""

    code = "PROVISION_STEP_FAILED"


class BecomeError(ProvisionError, UnauthorizedError):
    """``--become`` was refused: wrong password, or the account may not use sudo."""

    code = "BECOME_FAILED"


class DistNotFoundError(ProvisionError, NotFoundError):
    """The hub serves no such file under ``/v1/dist`` (or the name is not a plain wheel file name)."""

    code = "DIST_NOT_FOUND"


class ServiceUnitError(ProvisionError):
    """A service unit could not be written, its user created, or systemd could not enable it."""

    code = "SERVICE_UNIT_FAILED"
