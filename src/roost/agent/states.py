"""Component lifecycle states and the table of allowed transitions.

The states and their meaning follow Greengrass V2:

* ``NEW`` — known to the agent, Install not (yet) run for this version.
* ``INSTALLED`` — Install succeeded (or was skipped); nothing is running.
* ``STARTING`` — Startup is running, or Run is being spawned.
* ``RUNNING`` — Run is running, or Startup exited 0 (or the component reported RUNNING).
* ``STOPPING`` — Shutdown is running and the processes are being terminated.
* ``FINISHED`` — Run exited 0, or the component has neither Run nor Startup.
* ``ERRORED`` — a step failed or the component reported ERRORED; recovery is pending.
* ``BROKEN`` — too many errors within the reset window; no automatic restart any more.

Every state change the supervisor makes is checked against :data:`ALLOWED`.
"""

from __future__ import annotations

from enum import StrEnum

from roost.agent.errors import InvalidTransitionError


class ComponentState(StrEnum):
    NEW = "NEW"
    INSTALLED = "INSTALLED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    FINISHED = "FINISHED"
    ERRORED = "ERRORED"
    BROKEN = "BROKEN"


_S = ComponentState

#: ``old -> the states it may change to``. A state never "changes" to itself.
ALLOWED: dict[ComponentState, frozenset[ComponentState]] = {
    # Install succeeded (or was skipped) / Install failed.
    _S.NEW: frozenset({_S.INSTALLED, _S.ERRORED}),
    # Start; stop (a no-op stop is not a transition, but the table allows it); reinstall
    # (a new version of the component replaced the old one).
    _S.INSTALLED: frozenset({_S.STARTING, _S.STOPPING, _S.NEW}),
    # Run spawned / Startup exited 0; Startup failed; stopped while starting; neither Run nor
    # Startup (or both skipped).
    _S.STARTING: frozenset({_S.RUNNING, _S.ERRORED, _S.STOPPING, _S.FINISHED}),
    # Run exited 0; Run exited non-zero or the component reported ERRORED; stop.
    _S.RUNNING: frozenset({_S.FINISHED, _S.ERRORED, _S.STOPPING}),
    # Stopped: back to INSTALLED (ready to start), FINISHED if it had finished, ERRORED if
    # stopping itself went wrong.
    _S.STOPPING: frozenset({_S.INSTALLED, _S.FINISHED, _S.ERRORED}),
    # Restart after Recover; too many errors; stop; reinstall (directly or via NEW).
    _S.ERRORED: frozenset({_S.STARTING, _S.BROKEN, _S.STOPPING, _S.INSTALLED, _S.NEW}),
    # Only by an explicit redeploy (NEW / INSTALLED) or restart (STARTING).
    _S.BROKEN: frozenset({_S.NEW, _S.INSTALLED, _S.STARTING}),
    # Start again; stop; reinstall.
    _S.FINISHED: frozenset({_S.STARTING, _S.STOPPING, _S.NEW}),
}


def can_transition(old: ComponentState, new: ComponentState) -> bool:
    """Whether ``old -> new`` is in :data:`ALLOWED`."""
    return new in ALLOWED[old]


def check_transition(old: ComponentState, new: ComponentState, component: str | None = None) -> None:
    """Raise :class:`InvalidTransitionError` unless ``old -> new`` is allowed."""
    if not can_transition(old, new):
        raise InvalidTransitionError(old.value, new.value, component)
