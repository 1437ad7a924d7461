"""Fixtures of the agent tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from roost.agent.supervisor import Supervisor

from .supervisor_helpers import Recorder


@pytest.fixture
async def sup() -> AsyncIterator[tuple[Supervisor, Recorder]]:
    """A supervisor with a short stop grace, and the recorder of its state changes; closed after."""
    recorder = Recorder()
    supervisor = Supervisor(on_state=recorder, stop_grace=1.0)
    try:
        yield supervisor, recorder
    finally:
        await supervisor.close()
