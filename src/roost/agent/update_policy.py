"""A deployment's talk with the running components before it changes anything, as on Greengrass.

Two negotiations run between a deployment's *prepare* and *apply* phases (see
:mod:`roost.agent.deployer`), in this order, both before any component is stopped:

1. **Component update policy** (``componentUpdatePolicy {action, timeoutInSeconds}``). With
   ``NOTIFY_COMPONENTS`` every component subscribed with ``SubscribeToComponentUpdates`` gets a
   ``preUpdateEvent {deploymentId, isGgcRestarting}``: all subscribers, not only the components the
   deployment changes (the nucleus does the same). The deployment then waits until every one of them
   has answered with ``DeferComponentUpdate`` or ``timeoutInSeconds`` has passed. If an answer carries
   ``recheckAfterMs > 0`` the deployment waits the longest such delay and notifies everyone again
   (a component defers for as long as it keeps asking, within the deployment's own timeout); a
   subscriber that does not answer in time does not hold the update (it proceeds). After the apply
   phase (success, failure or rollback), or when the deployment ends before it, every subscriber
   gets ``postUpdateEvent {deploymentId}``. ``SKIP_NOTIFY_COMPONENTS`` sends nothing.

2. **Configuration validation** (``configurationValidationPolicy {timeoutInSeconds}``). A component
   that is deployed now, keeps its version, gets a different configuration and is subscribed with
   ``SubscribeToValidateConfigurationUpdates`` is sent ``validateConfigurationUpdateEvent
   {configuration, deploymentId}`` (its whole new configuration) and must answer with
   ``SendConfigurationValidityReport``. ``REJECTED`` by any component fails the deployment with
   ``CONFIGURATION_REJECTED`` (naming each component and its message); no report within the timeout
   fails it with ``CONFIGURATION_VALIDATION_TIMEOUT`` (the nucleus fails it too, although the
   Greengrass API reference says "proceeds"). Either way nothing was changed
   (``FAILED_NO_STATE_CHANGE``).

:class:`LifecycleEvents` holds the subscriptions and the pending answers; the IPC handlers
(:mod:`roost.agent.ipc.ops_lifecycle`) call it, the deployer drives it. Everything runs on the
agent's event loop. What is held is bounded: subscriptions by the IPC stream limits, pending answers
by one per (component, deployment) and only while a negotiation waits.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from roost.agent.errors import AgentError, DeploymentError
from roost.errors import InvalidInputError

log = logging.getLogger(__name__)

NOTIFY_COMPONENTS: Final = "NOTIFY_COMPONENTS"
SKIP_NOTIFY_COMPONENTS: Final = "SKIP_NOTIFY_COMPONENTS"
ACCEPTED: Final = "ACCEPTED"
REJECTED: Final = "REJECTED"
VALIDITY_STATUSES: Final = (ACCEPTED, REJECTED)
#: Greengrass' defaults for cloud deployments; local deployments (greengrass-cli) skip notification
#: and give validation 20 s.
DEFAULT_UPDATE_TIMEOUT: Final = 60
DEFAULT_VALIDATION_TIMEOUT: Final = 30
LOCAL_VALIDATION_TIMEOUT: Final = 20
#: The longest single deferral honoured (a day); the deployment's own timeout bounds the total.
MAX_RECHECK_MS: Final = 86_400_000

Send = Callable[[dict[str, Any]], None]


class ComponentUpdatePolicy(BaseModel):
    """A deployment's ``componentUpdatePolicy`` (Greengrass' CreateDeployment spelling)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["NOTIFY_COMPONENTS", "SKIP_NOTIFY_COMPONENTS"] = NOTIFY_COMPONENTS
    timeoutInSeconds: int = Field(default=DEFAULT_UPDATE_TIMEOUT, ge=1, le=86400)


class ConfigurationValidationPolicy(BaseModel):
    """A deployment's ``configurationValidationPolicy``."""

    model_config = ConfigDict(extra="forbid")

    timeoutInSeconds: int = Field(default=DEFAULT_VALIDATION_TIMEOUT, ge=1, le=86400)


class UpdatePhase(StrEnum):
    """Where a component-update negotiation is (logged at each change)."""

    NOTIFYING = "NOTIFYING"    # preUpdateEvent sent to every subscriber
    WAITING = "WAITING"        # collecting DeferComponentUpdate answers until all came or the timeout
    DEFERRED = "DEFERRED"      # a subscriber asked to be asked again later: sleeping recheckAfterMs
    PROCEEDING = "PROCEEDING"  # nobody holds the update: apply it
    SKIPPED = "SKIPPED"        # SKIP_NOTIFY_COMPONENTS, or nobody is subscribed


_NEXT_PHASE: Final[dict[UpdatePhase, frozenset[UpdatePhase]]] = {
    UpdatePhase.NOTIFYING: frozenset({UpdatePhase.WAITING, UpdatePhase.SKIPPED}),
    UpdatePhase.WAITING: frozenset({UpdatePhase.DEFERRED, UpdatePhase.PROCEEDING}),
    UpdatePhase.DEFERRED: frozenset({UpdatePhase.NOTIFYING}),
    UpdatePhase.PROCEEDING: frozenset(),
    UpdatePhase.SKIPPED: frozenset(),
}


@dataclass(frozen=True)
class Deferral:
    """One ``DeferComponentUpdate`` answer."""

    component: str
    message: str
    recheck_after_ms: int


@dataclass(frozen=True)
class ValidityReport:
    """One ``SendConfigurationValidityReport``."""

    component: str
    status: str
    message: str


class _Negotiation:
    """The explicit state machine of one deployment's component-update negotiation."""

    def __init__(self, deployment_id: str) -> None:
        self.deployment_id = deployment_id
        self.phase = UpdatePhase.NOTIFYING
        self.rounds = 0

    def to(self, phase: UpdatePhase, why: str) -> None:
        if phase not in _NEXT_PHASE[self.phase]:
            raise RuntimeError(f"update negotiation {self.deployment_id}: {self.phase} -> {phase} is not allowed")
        log.info("deployment %s: component update %s -> %s (%s)", self.deployment_id, self.phase, phase, why)
        self.phase = phase


class LifecycleEvents:
    """Subscriptions to component updates and configuration validation, and the answers awaited."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._update_subs: dict[str, dict[int, Send]] = {}
        self._validate_subs: dict[str, dict[int, Send]] = {}
        self._deferrals: dict[tuple[str, str], asyncio.Future[Deferral]] = {}
        self._reports: dict[tuple[str, str], asyncio.Future[ValidityReport]] = {}
        #: Deployments whose subscribers got a preUpdateEvent and await the postUpdateEvent.
        self._notified: set[str] = set()

    # -- subscriptions (IPC) -----------------------------------------------------------------------
    def subscribe_updates(self, component: str, send: Send) -> Callable[[], None]:
        """Send ``ComponentUpdatePolicyEvents`` documents to ``send``; returns the unsubscribe function."""
        return self._subscribe(self._update_subs, component, send)

    def subscribe_validation(self, component: str, send: Send) -> Callable[[], None]:
        """Send ``ValidateConfigurationUpdateEvents`` documents to ``send``; returns the unsubscribe function."""
        return self._subscribe(self._validate_subs, component, send)

    def _subscribe(self, table: dict[str, dict[int, Send]], component: str, send: Send) -> Callable[[], None]:
        sub_id = next(self._ids)
        table.setdefault(component, {})[sub_id] = send

        def unsubscribe() -> None:
            subs = table.get(component)
            if subs is not None:
                subs.pop(sub_id, None)
                if not subs:
                    del table[component]
                    if table is self._update_subs:  # gone: it holds no update any more
                        for key in [k for k in self._deferrals if k[0] == component]:
                            self._deferrals.pop(key).cancel()

        return unsubscribe

    def update_subscribers(self) -> list[str]:
        return sorted(self._update_subs)

    def validation_subscribers(self) -> list[str]:
        return sorted(self._validate_subs)

    # -- answers (IPC) -----------------------------------------------------------------------------
    def defer(self, component: str, deployment_id: str, message: str, recheck_after_ms: int) -> None:
        """``DeferComponentUpdate`` from ``component``: its answer to the pending preUpdateEvent."""
        if component not in self._update_subs:
            raise InvalidInputError(f"{component} is not subscribed to component updates "
                                    "(SubscribeToComponentUpdates first)", code="NOT_SUBSCRIBED")
        if not 0 <= recheck_after_ms <= MAX_RECHECK_MS:
            raise InvalidInputError(f"recheckAfterMs must be between 0 and {MAX_RECHECK_MS}, got {recheck_after_ms}",
                                    code="INVALID_REQUEST")
        future = self._deferrals.pop((component, deployment_id), None)
        if future is None or future.done():
            # As the nucleus: a ServiceError (the time to answer passed, or no such update is pending).
            raise AgentError(f"no update of deployment {deployment_id} is waiting for {component}'s answer: "
                             "the time to respond to the preUpdateEvent passed, or no such deployment notified it",
                             code="UPDATE_NOT_PENDING")
        future.set_result(Deferral(component, message, recheck_after_ms))

    def report_validity(self, component: str, deployment_id: str, status: str, message: str) -> None:
        """``SendConfigurationValidityReport`` from ``component``."""
        future = self._reports.get((component, deployment_id))
        if future is None or future.done():
            # As the nucleus: InvalidArguments "either timed out or was never made".
            raise InvalidInputError(f"deployment {deployment_id} is not waiting for a configuration validity report "
                                    f"from {component}: the validation timed out or was never requested",
                                    code="VALIDATION_NOT_PENDING")
        future.set_result(ValidityReport(component, status, message))

    # -- the deployment side ---------------------------------------------------------------------
    async def negotiate_update(self, deployment_id: str, policy: ComponentUpdatePolicy) -> tuple[bool, list[str]]:
        """Notify the subscribers and wait as the policy says; (whether they were notified, notes).

        Returns once the update may proceed. Cancel it (the deployment's timeout or a cancel) to give up.
        """
        state = _Negotiation(deployment_id)
        if policy.action == SKIP_NOTIFY_COMPONENTS:
            state.to(UpdatePhase.SKIPPED, "the deployment's policy is SKIP_NOTIFY_COMPONENTS")
            return False, []
        notes: list[str] = []
        notified = False
        loop = asyncio.get_running_loop()
        while True:
            state.rounds += 1
            subscribers = {c: list(s.values()) for c, s in self._update_subs.items()}
            if not subscribers:
                state.to(UpdatePhase.SKIPPED, "no component is subscribed" + (" any more" if notified else ""))
                return notified, notes
            futures: dict[str, asyncio.Future[Deferral]] = {}
            event = {"preUpdateEvent": {"deploymentId": deployment_id, "isGgcRestarting": False}}
            for component, sends in subscribers.items():
                futures[component] = self._deferrals[(component, deployment_id)] = loop.create_future()
                for send in sends:
                    _send(send, event, component)
            notified = True
            self._notified.add(deployment_id)
            state.to(UpdatePhase.WAITING, f"round {state.rounds}: asked {', '.join(sorted(subscribers))}; "
                                          f"waiting up to {policy.timeoutInSeconds} s")
            try:
                await asyncio.wait(futures.values(), timeout=policy.timeoutInSeconds)
            finally:
                for component, future in futures.items():
                    if self._deferrals.get((component, deployment_id)) is future:
                        del self._deferrals[(component, deployment_id)]
                    future.cancel()
            answers = [f.result() for f in futures.values() if f.done() and not f.cancelled()]
            silent = sorted(c for c, f in futures.items() if not f.done() or f.cancelled())
            deferring = [a for a in answers if a.recheck_after_ms > 0]
            if not deferring:
                why = "every subscriber answered" if not silent else \
                    f"no answer within {policy.timeoutInSeconds} s from {', '.join(silent)} (or it unsubscribed)"
                state.to(UpdatePhase.PROCEEDING, why)
                return notified, notes
            longest = max(deferring, key=lambda a: a.recheck_after_ms)
            note = (f"{longest.component} deferred the update for {longest.recheck_after_ms} ms"
                    + (f": {longest.message}" if longest.message else ""))
            if len(notes) < 20:  # bounded: one note per deferral round, the first 20
                notes.append(note)
            state.to(UpdatePhase.DEFERRED, note)
            await asyncio.sleep(longest.recheck_after_ms / 1000.0)
            state.to(UpdatePhase.NOTIFYING, "recheck")

    def finished(self, deployment_id: str) -> None:
        """The deployment ended: if it notified the subscribers, send them ``postUpdateEvent``."""
        if deployment_id not in self._notified:
            return
        self._notified.discard(deployment_id)
        event = {"postUpdateEvent": {"deploymentId": deployment_id}}
        for component, subs in list(self._update_subs.items()):
            for send in list(subs.values()):
                _send(send, event, component)

    async def validate(self, deployment_id: str, proposals: Mapping[str, Mapping[str, Any]],
                       policy: ConfigurationValidationPolicy) -> list[str]:
        """Ask each subscribed component of ``proposals`` (name -> new configuration) to validate it.

        Returns the components asked. Raises :class:`DeploymentError` with ``CONFIGURATION_REJECTED``
        or ``CONFIGURATION_VALIDATION_TIMEOUT``.
        """
        asked = {c: list(self._validate_subs[c].values()) for c in sorted(proposals) if c in self._validate_subs}
        if not asked:
            return []
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[ValidityReport]] = {}
        for component, sends in asked.items():
            futures[component] = self._reports[(component, deployment_id)] = loop.create_future()
            event = {"validateConfigurationUpdateEvent": {"configuration": dict(proposals[component]),
                                                          "deploymentId": deployment_id}}
            for send in sends:
                _send(send, event, component)
        log.info("deployment %s: asked %s to validate the new configuration (up to %d s)", deployment_id,
                 ", ".join(asked), policy.timeoutInSeconds)
        try:
            await asyncio.wait(futures.values(), timeout=policy.timeoutInSeconds)
        finally:
            for component, future in futures.items():
                if self._reports.get((component, deployment_id)) is future:
                    del self._reports[(component, deployment_id)]
        silent = sorted(c for c, f in futures.items() if not f.done())
        for future in futures.values():
            future.cancel()
        if silent:
            raise DeploymentError(f"no configuration validity report within {policy.timeoutInSeconds} s from "
                                  f"{', '.join(silent)} (subscribed to configuration validation); nothing was changed",
                                  code="CONFIGURATION_VALIDATION_TIMEOUT")
        rejected = [f.result() for f in futures.values() if f.result().status == REJECTED]
        if rejected:
            raise DeploymentError("; ".join(f"{r.component} rejected its new configuration"
                                            + (f": {r.message}" if r.message else "") for r in rejected)
                                  + "; nothing was changed", code="CONFIGURATION_REJECTED")
        return list(asked)


def proposals_to_validate(current: Mapping[str, tuple[str, Mapping[str, Any]]],
                          target: Mapping[str, tuple[str, Mapping[str, Any]]]) -> dict[str, Mapping[str, Any]]:
    """The components whose configuration a deployment changes while keeping their version.

    ``current`` and ``target`` map a name to ``(version, configuration)``. A component that is new, or
    whose version changes, is not asked (as on Greengrass: its new version may not understand the old
    schema, and it restarts with the new configuration anyway).
    """
    out: dict[str, Mapping[str, Any]] = {}
    for name, (version, configuration) in target.items():
        old = current.get(name)
        if old is not None and old[0] == version and dict(old[1]) != dict(configuration):
            out[name] = configuration
    return out


def _send(send: Send, event: dict[str, Any], component: str) -> None:
    try:
        send(event)
    except Exception:  # a broken stream must not stop the deployment or the other subscribers
        log.exception("cannot send a lifecycle event to %s", component)
