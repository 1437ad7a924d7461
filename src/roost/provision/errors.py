"""The provisioning package's errors: service units (and, as it grows, SSH registration).

:class:`ServiceUnitError` is a failure to install or enable a unit (no root, ``useradd`` or
``systemctl`` failing); bad options are :class:`roost.errors.InvalidInputError` with code
``SERVICE_UNIT_INVALID``.
"""

from __future__ import annotations

from roost.errors import RoostError


class ProvisionError(RoostError):
    """Base class of the provisioning package's errors."""

    code = "PROVISION_ERROR"


class ServiceUnitError(ProvisionError):
    """A service unit could not be written, its user created, or systemd could not enable it."""

    code = "SERVICE_UNIT_FAILED"
