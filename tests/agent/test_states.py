"""The component state table."""

from __future__ import annotations

import itertools

import pytest

from roost.agent.errors import InvalidTransitionError
from roost.agent.states import ALLOWED, ComponentState, can_transition, check_transition

S = ComponentState

EXPECTED = {
    S.NEW: {S.INSTALLED, S.ERRORED},
    S.INSTALLED: {S.STARTING, S.STOPPING, S.NEW},
    S.STARTING: {S.RUNNING, S.ERRORED, S.STOPPING, S.FINISHED},
    S.RUNNING: {S.FINISHED, S.ERRORED, S.STOPPING},
    S.STOPPING: {S.INSTALLED, S.FINISHED, S.ERRORED},
    S.ERRORED: {S.STARTING, S.BROKEN, S.STOPPING, S.INSTALLED, S.NEW},
    S.BROKEN: {S.NEW, S.INSTALLED, S.STARTING},
    S.FINISHED: {S.STARTING, S.STOPPING, S.NEW},
}


def test_every_state_has_a_row() -> None:
    assert set(ALLOWED) == set(ComponentState)
    assert [s.value for s in ComponentState] == [
        "NEW", "INSTALLED", "STARTING", "RUNNING", "STOPPING", "FINISHED", "ERRORED", "BROKEN"]


@pytest.mark.parametrize(("old", "new"), list(itertools.product(ComponentState, ComponentState)))
def test_table_matches_greengrass_semantics(old: ComponentState, new: ComponentState) -> None:
    allowed = new in EXPECTED[old]
    assert can_transition(old, new) is allowed
    if allowed:
        check_transition(old, new)
    else:
        with pytest.raises(InvalidTransitionError) as info:
            check_transition(old, new, "com.example.A")
        assert info.value.code == "INVALID_TRANSITION"
        assert "com.example.A" in str(info.value)
        assert info.value.old == old.value
        assert info.value.new == new.value


def test_no_self_transitions_and_broken_only_left_explicitly() -> None:
    for state in ComponentState:
        assert state not in ALLOWED[state]
    # BROKEN is reached only from ERRORED, and nothing leaves it towards RUNNING directly.
    assert [s for s in ComponentState if S.BROKEN in ALLOWED[s]] == [S.ERRORED]
    assert S.RUNNING not in ALLOWED[S.BROKEN]


def test_every_state_reachable_from_new() -> None:
    seen = {S.NEW}
    frontier = [S.NEW]
    while frontier:
        for nxt in ALLOWED[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(ComponentState)
