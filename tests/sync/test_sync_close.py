"""Closing the hub sync is bounded: a task whose await chain swallowed a cancellation is cancelled again.

Seen once in CI: ``roost agent stop`` waited 120 s on an agent whose poll task had turned one
cancellation into a result and gone back to long-polling the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import SimpleNamespace

import pytest

from roost.agent import sync
from roost.agent.sync import HubSync


class _Client:
    closed = False

    async def close(self) -> None:
        self.closed = True


async def _swallows_once() -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        pass  # as a deployment step that records "canceled by request" and returns
    await asyncio.sleep(3600)  # back to its loop: a second cancellation ends it


async def _stops_only_when(released: asyncio.Event) -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if released.is_set():
                raise


def test_close_cancels_again_a_task_that_swallowed_one_cancellation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync, "CLOSE_SECONDS", 0.2)

    async def main() -> SimpleNamespace:
        fake = SimpleNamespace(_tasks=[asyncio.create_task(_swallows_once(), name="hub-poll")], client=_Client())
        await asyncio.sleep(0)
        await asyncio.wait_for(HubSync.close(fake), 10)  # type: ignore[arg-type]
        return fake

    fake = asyncio.run(main())
    assert fake._tasks == [] and fake.client.closed


def test_close_gives_up_on_a_task_that_never_stops_and_says_so(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(sync, "CLOSE_SECONDS", 0.05)

    async def main() -> tuple[SimpleNamespace, asyncio.Task[None]]:
        released = asyncio.Event()
        stuck = asyncio.create_task(_stops_only_when(released), name="hub-stuck")
        fake = SimpleNamespace(_tasks=[stuck], client=_Client())
        await asyncio.sleep(0)
        with caplog.at_level(logging.WARNING, logger="roost.agent.sync"):
            await asyncio.wait_for(HubSync.close(fake), 10)  # type: ignore[arg-type]
        assert not stuck.done()  # left behind, and close() returned all the same
        released.set()
        stuck.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stuck
        return fake, stuck

    fake, _stuck = asyncio.run(main())
    assert fake.client.closed
    assert any("hub-stuck did not stop" in r.getMessage() for r in caplog.records)
