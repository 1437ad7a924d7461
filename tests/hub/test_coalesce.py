"""The coalescer that turns concurrent device requests into batched transactions (no database)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from roost.hub.coalesce import Coalescer


class Recorder:
    """A batched function that records its batches; ``gate`` holds the first call until set."""

    def __init__(self, fail_items: Sequence[int] = (), fail_batches: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.fail_items = set(fail_items)
        self.fail_batches = fail_batches
        self.gate = threading.Event()
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int | BaseException]:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            self.gate.wait(5)
            self.batches.append(list(items))
            if self.fail_batches and len(items) > 1:
                raise RuntimeError("the whole batch failed")
            if self.fail_batches and items[0] in self.fail_items:
                raise ValueError(f"item {items[0]} is poison")
            return [ValueError(f"bad {i}") if i in self.fail_items and not self.fail_batches else i * 10
                    for i in items]
        finally:
            with self._lock:
                self.running -= 1


async def test_requests_arriving_while_a_batch_runs_go_together() -> None:
    fn = Recorder()
    c: Coalescer[int, int] = Coalescer(fn, name="t", max_in_flight=1)
    first = asyncio.create_task(c.submit(0))
    await asyncio.sleep(0.05)  # the first batch (alone) is running, held by the gate
    rest = [asyncio.create_task(c.submit(i)) for i in range(1, 50)]
    await asyncio.sleep(0.05)
    fn.gate.set()
    assert await first == 0
    assert await asyncio.gather(*rest) == [i * 10 for i in range(1, 50)]
    assert fn.batches == [[0], list(range(1, 50))]
    assert (c.batches, c.items, c.largest_batch) == (2, 50, 49)


async def test_a_lone_request_is_dispatched_at_once_and_batches_are_capped() -> None:
    fn = Recorder()
    fn.gate.set()
    c: Coalescer[int, int] = Coalescer(fn, name="t", max_batch=10, max_in_flight=1)
    assert await c.submit(3) == 30
    assert await asyncio.gather(*(c.submit(i) for i in range(25))) == [i * 10 for i in range(25)]
    assert max(len(b) for b in fn.batches) == 10


async def test_an_item_error_fails_only_its_request() -> None:
    fn = Recorder(fail_items=[2])
    fn.gate.set()
    c: Coalescer[int, int] = Coalescer(fn, name="t")
    results = await asyncio.gather(*(c.submit(i) for i in range(4)), return_exceptions=True)
    assert results[0] == 0 and results[1] == 10 and results[3] == 30
    assert isinstance(results[2], ValueError) and "bad 2" in str(results[2])


async def test_a_failing_batch_is_retried_item_by_item() -> None:
    fn = Recorder(fail_items=[1], fail_batches=True)
    fn.gate.set()
    c: Coalescer[int, int] = Coalescer(fn, name="t", max_in_flight=1)
    blocker = asyncio.create_task(c.submit(100))
    tasks = [asyncio.create_task(c.submit(i)) for i in range(3)]
    results = await asyncio.gather(blocker, *tasks, return_exceptions=True)
    assert results[0] == 1000 and results[1] == 0 and results[3] == 20
    assert isinstance(results[2], ValueError) and "poison" in str(results[2])


async def test_at_most_max_in_flight_batches_run_at_once() -> None:
    fn = Recorder()
    c: Coalescer[int, int] = Coalescer(fn, name="t", max_batch=1, max_in_flight=3)
    tasks = [asyncio.create_task(c.submit(i)) for i in range(12)]
    await asyncio.sleep(0.1)
    fn.gate.set()
    assert await asyncio.gather(*tasks) == [i * 10 for i in range(12)]
    assert fn.most_running == 3


async def test_a_cancelled_request_is_not_run() -> None:
    fn = Recorder()
    c: Coalescer[int, int] = Coalescer(fn, name="t", max_in_flight=1)
    first = asyncio.create_task(c.submit(0))
    await asyncio.sleep(0.05)
    doomed = asyncio.create_task(c.submit(1))
    kept = asyncio.create_task(c.submit(2))
    await asyncio.sleep(0.01)
    doomed.cancel()
    fn.gate.set()
    assert await first == 0 and await kept == 20
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert fn.batches == [[0], [2]]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Coalescer(Recorder(), name="t", max_batch=0)
