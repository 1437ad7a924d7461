"""Fixtures of the agent tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from roost.agent.supervisor import Supervisor
from tests.conftest import Cli, running_agent

from .iotcore_helpers import require_machine_broker
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


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test's own on the shared broker."""
    return f"roost-test/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def broker_agent(cli: Cli) -> Iterator[Cli]:
    """A running agent whose IoT Core broker is the machine's Mosquitto (127.0.0.1:1883)."""
    require_machine_broker()
    with running_agent(cli.root, "iot-thing", "--mqtt-broker", "mqtt://127.0.0.1:1883") as running:
        yield running
