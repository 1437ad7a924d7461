"""Coalescing concurrent requests into one batched call (group commit).

During a rollout thousands of devices call the same few endpoints at once. One transaction per
request costs a dozen database round trips per request; one transaction for every request that
arrived meanwhile costs about the same dozen for all of them. A :class:`Coalescer` wraps a batched
operation ``fn(items) -> results`` (one result per item, in order) and gives every request its own
awaitable answer.

Dispatch rule, adaptive, no fixed linger (the rule of :mod:`roost.serve.batching`):

* while fewer than ``max_in_flight`` batches run, a request is dispatched at the next event-loop
  iteration, with whatever else arrived in that iteration: at low load a request never waits for
  company;
* otherwise it queues, and everything queued (up to ``max_batch``) goes as the next batch when a
  running one finishes: under load batches grow by themselves to match the database's speed.

``fn`` runs in a worker thread. It answers an item that failed on its own with an exception object
in that item's place (raised to that request only). If ``fn`` raises, the batch is retried item by
item, so that one bad item cannot fail the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import anyio.to_thread

logger = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 - item
R = TypeVar("R")


class Coalescer(Generic[I, R]):
    """Runs concurrent :meth:`submit` calls as batched ``fn`` calls. See the module docstring."""

    def __init__(self, fn: Callable[[list[I]], Sequence[R | BaseException]], *, name: str,
                 max_batch: int = 500, max_in_flight: int = 2) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self.fn = fn
        self.name = name
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._queue: deque[tuple[I, asyncio.Future[R]]] = deque()
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        #: Counters: batches run, items answered, largest batch.
        self.batches = 0
        self.items = 0
        self.largest_batch = 0

    async def submit(self, item: I) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._queue and self._in_flight < self.max_in_flight and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._dispatch, loop)

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        while self._queue and self._in_flight < self.max_in_flight:
            batch: list[tuple[I, asyncio.Future[R]]] = []
            while self._queue and len(batch) < self.max_batch:
                item, future = self._queue.popleft()
                if not future.done():  # its request was cancelled meanwhile
                    batch.append((item, future))
            if batch:
                self._in_flight += 1
                task = loop.create_task(self._run(batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        try:
            results = await anyio.to_thread.run_sync(self._call, [item for item, _ in batch])
        except BaseException as err:  # the worker thread could not be run (cancelled at shutdown)
            results = [err] * len(batch)
        finally:
            self._in_flight -= 1
        self.batches += 1
        self.items += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        for (_item, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        self._schedule(asyncio.get_running_loop())

    def _call(self, items: list[I]) -> list[R | BaseException]:
        try:
            results = list(self.fn(items))
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(items)} items")
            return results
        except Exception as err:
            if len(items) == 1:
                return [err]
            logger.warning("%s: a batch of %d failed (%s: %s); running its items one by one",
                           self.name, len(items), type(err).__name__, err)
            return [self._call(items[i:i + 1])[0] for i in range(len(items))]
