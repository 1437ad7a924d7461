"""The deployment side of component updates and configuration validation (roost.agent.update_policy),
on a real event loop with subscribers that record what they are sent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from roost.agent.errors import AgentError, DeploymentError
from roost.agent.update_policy import (
    ComponentUpdatePolicy,
    ConfigurationValidationPolicy,
    LifecycleEvents,
    UpdatePhase,
    _Negotiation,
    proposals_to_validate,
)
from roost.errors import InvalidInputError

NOTIFY = ComponentUpdatePolicy(action="NOTIFY_COMPONENTS", timeoutInSeconds=5)


def test_skip_and_no_subscribers_send_nothing() -> None:
    async def main() -> None:
        events = LifecycleEvents()
        sent: list[Any] = []
        assert await events.negotiate_update("d", NOTIFY) == (False, [])
        events.subscribe_updates("A", sent.append)
        assert await events.negotiate_update("d", ComponentUpdatePolicy(action="SKIP_NOTIFY_COMPONENTS")) == (False, [])
        events.finished("d")
        assert sent == []

    asyncio.run(main())


def test_deferral_rechecks_and_post_event_follows() -> None:
    async def main() -> None:
        events = LifecycleEvents()
        sent: list[dict[str, Any]] = []
        events.subscribe_updates("A", sent.append)

        async def answer() -> None:
            for recheck in (20, 0):
                while not any("preUpdateEvent" in e for e in sent[len(answered):]):
                    await asyncio.sleep(0)
                answered.append(recheck)
                events.defer("A", "d", "later" if recheck else "", recheck)

        answered: list[int] = []
        task = asyncio.create_task(answer())
        notified, notes = await events.negotiate_update("d", NOTIFY)
        await task
        assert notified and notes == ["A deferred the update for 20 ms: later"]
        assert [e["preUpdateEvent"]["deploymentId"] for e in sent] == ["d", "d"]
        events.finished("d")
        assert sent[-1] == {"postUpdateEvent": {"deploymentId": "d"}}
        events.finished("d")  # once only
        assert len(sent) == 3

    asyncio.run(main())


def test_a_subscriber_that_leaves_does_not_hold_the_update() -> None:
    async def main() -> None:
        events = LifecycleEvents()
        unsubscribe = events.subscribe_updates("A", lambda e: None)
        task = asyncio.create_task(events.negotiate_update("d", ComponentUpdatePolicy(timeoutInSeconds=3600)))
        await asyncio.sleep(0)
        unsubscribe()
        assert await asyncio.wait_for(task, 10) == (True, [])

    asyncio.run(main())


def test_defer_errors() -> None:
    async def main() -> None:
        events = LifecycleEvents()
        with pytest.raises(InvalidInputError, match="not subscribed") as err:
            events.defer("A", "d", "", 0)
        assert err.value.code == "NOT_SUBSCRIBED"
        events.subscribe_updates("A", lambda e: None)
        with pytest.raises(AgentError) as pending:
            events.defer("A", "d", "", 0)
        assert pending.value.code == "UPDATE_NOT_PENDING"
        with pytest.raises(InvalidInputError) as big:
            events.defer("A", "d", "", 10**12)
        assert big.value.code == "INVALID_REQUEST"

    asyncio.run(main())


def test_validation_outcomes() -> None:
    async def main() -> None:
        events = LifecycleEvents()
        sent: list[dict[str, Any]] = []
        events.subscribe_validation("A", sent.append)
        policy = ConfigurationValidationPolicy(timeoutInSeconds=1)
        assert await events.validate("d0", {"B": {"x": 1}}, policy) == []  # B is not subscribed
        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: events.report_validity("A", "d1", "ACCEPTED", ""))
        assert await events.validate("d1", {"A": {"x": 1}}, policy) == ["A"]
        assert sent[0] == {"validateConfigurationUpdateEvent": {"configuration": {"x": 1}, "deploymentId": "d1"}}
        loop.call_soon(lambda: events.report_validity("A", "d2", "REJECTED", "x too big"))
        with pytest.raises(DeploymentError, match="A rejected its new configuration: x too big") as rejected:
            await events.validate("d2", {"A": {"x": 9}}, policy)
        assert rejected.value.code == "CONFIGURATION_REJECTED"
        with pytest.raises(DeploymentError, match="no configuration validity report within 1 s from A") as silent:
            await events.validate("d3", {"A": {"x": 2}}, policy)
        assert silent.value.code == "CONFIGURATION_VALIDATION_TIMEOUT"
        with pytest.raises(InvalidInputError) as late:
            events.report_validity("A", "d3", "ACCEPTED", "")
        assert late.value.code == "VALIDATION_NOT_PENDING"

    asyncio.run(main())


def test_only_unchanged_versions_with_changed_configuration_are_validated() -> None:
    current = {"A": ("1.0.0", {"x": 1}), "B": ("1.0.0", {"x": 1}), "C": ("1.0.0", {"x": 1})}
    target = {"A": ("1.0.0", {"x": 2}), "B": ("2.0.0", {"x": 2}), "C": ("1.0.0", {"x": 1}), "D": ("1.0.0", {})}
    assert proposals_to_validate(current, target) == {"A": {"x": 2}}


def test_the_negotiation_refuses_transitions_outside_its_table() -> None:
    state = _Negotiation("d")
    state.to(UpdatePhase.WAITING, "asked")
    with pytest.raises(RuntimeError, match="WAITING -> NOTIFYING"):
        state.to(UpdatePhase.NOTIFYING, "skipping DEFERRED")
