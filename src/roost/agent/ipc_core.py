"""What the IPC server needs from the agent: the :class:`IpcCore` protocol.

The IPC server (:mod:`roost.agent.ipc`) only parses, authorises, calls these methods
and serialises; the agent implements them. Methods raise Roost errors, which the server maps
to Greengrass IPC error shapes at the boundary:

=====================================  =========================================
raised by the core                      sent to the component
=====================================  =========================================
``roost.errors.InvalidInputError``      ``aws.greengrass#InvalidArgumentsError``
``roost.errors.NotFoundError``          ``aws.greengrass#ResourceNotFoundError``
                                        (``ComponentNotFoundError`` for Restart/StopComponent)
``roost.errors.ConflictError``          ``aws.greengrass#ConflictError``
``roost.errors.UnauthorizedError``      ``aws.greengrass#UnauthorizedError``
any other ``RoostError``                ``aws.greengrass#ServiceError`` (its message and code)
any other exception                     ``aws.greengrass#ServiceError`` (generic message; logged)
=====================================  =========================================

Threading: every method is called on the agent's event loop thread. ``subscribe_configuration``
callbacks may be invoked from any thread (the server hops back to its loop).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

if TYPE_CHECKING:
    from roost.agent.secrets import DeviceSecretStore

#: The principal name the Roost CLI authenticates as; :meth:`IpcCore.is_privileged` is true for it.
CLI_PRINCIPAL: Final = "aws.greengrass.Cli"


@runtime_checkable
class IpcCore(Protocol):
    def authenticate(self, token: str) -> str | None:
        """The component name (or :data:`CLI_PRINCIPAL`) a SVCUID belongs to, or None."""
        ...

    def access_control(self, principal: str) -> Mapping[str, Any]:
        """That component's ``accessControl`` configuration; ``{}`` if it has none.

        Return the same object for as long as it is unchanged: the server caches authorisation
        decisions per connection while ``access_control`` keeps returning the identical object,
        and starts afresh when it gets a different one.
        """
        ...

    def is_privileged(self, principal: str) -> bool:
        """True for the CLI principal: allowed every operation without a policy."""
        ...

    async def get_configuration(self, principal: str, component: str, key_path: list[str]) -> Any:
        """The configuration value at ``key_path`` of ``component``; raises NotFoundError."""
        ...

    async def update_configuration(
        self, principal: str, key_path: list[str], value_to_merge: Any, timestamp: float
    ) -> None:
        """Merge ``value_to_merge`` at ``key_path`` of the principal's own configuration.

        ``timestamp`` is seconds since the epoch; raise ConflictError if the stored value is newer.
        """
        ...

    def subscribe_configuration(
        self,
        principal: str,
        component: str,
        key_path: list[str],
        callback: Callable[[str, list[str]], None],
    ) -> Callable[[], None]:
        """Call ``callback(component, changed_key_path)`` on every change under ``key_path``.

        Returns the function that cancels the subscription.
        """
        ...

    async def update_state(self, principal: str, state: str) -> None:
        """The component reports ``RUNNING`` or ``ERRORED``."""
        ...

    async def cli_operation(self, principal: str, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        """Run a CLI operation (short name: ``ListComponents``, ``GetComponentDetails``,
        ``RestartComponent``, ``StopComponent``, ``CreateLocalDeployment``,
        ``GetLocalDeploymentStatus``, ``ListLocalDeployments``) with the request document as
        received (camelCase keys); return the response document (camelCase keys)."""
        ...

    def secret_store(self) -> DeviceSecretStore:
        """The device's secrets (``GetSecretValue``; the handler authorises, the store answers)."""
        ...
