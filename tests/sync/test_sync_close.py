"""Stopping the hub sync: a cancelled hub request is a cancellation, and closing is bounded all the same.

Seen once in CI: ``roost agent stop`` waited 120 s on an agent whose poll task had turned one
cancellation into a result and gone back to long-polling the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import SimpleNamespace

import httpx
import pytest

from roost.agent import sync
from roost.agent.sync import HubSync
from roost.hub.client import HubError
from roost.hub.device_client import DeviceClient


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


class _TimeoutOnCancel(httpx.AsyncBaseTransport):
    """A transport that turns its caller's cancellation into a read timeout, as httpcore's anyio timeout
    scope did in the CI run (the state the dump of that agent's tasks showed: hub-poll "cancelling",
    back in its backoff after a HubError). The real race cannot be timed in a test; this is its outcome."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise httpx.ReadTimeout("timed out", request=request) from None
        raise AssertionError("unreachable")


def test_a_cancelled_request_is_a_cancellation_not_a_hub_error() -> None:
    async def main() -> BaseException | None:
        client = DeviceClient("http://127.0.0.1:9", "rst_dev_x", transport=_TimeoutOnCancel())
        task = asyncio.create_task(client.desired(0, 30))
        await asyncio.sleep(0.05)
        task.cancel()
        try:
            await task
        except BaseException as err:
            return err
        finally:
            await client.close()
        return None

    assert isinstance(asyncio.run(main()), asyncio.CancelledError)


def test_a_timeout_without_cancellation_is_still_a_hub_error() -> None:
    class _Timeout(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("timed out", request=request)

    async def main() -> None:
        client = DeviceClient("http://127.0.0.1:9", "rst_dev_x", transport=_Timeout())
        try:
            await client.desired(0, 1)
        finally:
            await client.close()

    with pytest.raises(HubError):
        asyncio.run(main())
