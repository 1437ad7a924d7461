"""Micro-batching of concurrent inference requests on the asyncio event loop.

Dispatch rule (adaptive, no fixed linger):

* When no batch is in flight, a request is dispatched **at once**, alone: at low load a request
  never waits for company.
* While a batch is in flight, new requests queue. When the batch finishes, everything queued is
  dispatched as the next batch (up to ``max_batch`` rows; a single request larger than
  ``max_batch`` runs alone). Under load batches therefore grow by themselves to match the model's
  speed, and no request waits longer than one model call plus its own.
* ``max_in_flight`` (default 1) batches may run at once. With more than one (and an executor with
  as many threads), a queued request that has waited ``max_wait_s`` — or a queue holding
  ``max_batch`` rows — starts another batch while the others run. With the default of one,
  ``max_wait_s`` has no effect: waiting for the running batch is always cheaper than contending
  with it.

Model calls run in ``executor`` (default: a private one-thread ``ThreadPoolExecutor``) so the
event loop stays free. An exception in ``predict`` fails exactly the requests of that batch.
:meth:`MicroBatcher.swap` replaces the predict function: batches already dispatched finish on the
old one, the next batch uses the new one, no request is dropped (hot model swap).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from roost.serve.errors import ModelError, ServeError

__all__ = ["BatcherClosedError", "MicroBatcher", "PredictFn"]

log = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float32]
PredictFn = Callable[[Matrix], npt.NDArray[np.float32]]


class BatcherClosedError(ServeError):
    """The batcher was closed; the request was not run. Retry against the new server."""

    code = "BATCHER_CLOSED"


@dataclass(slots=True)
class _Pending:
    x: Matrix
    future: asyncio.Future[npt.NDArray[np.float32]]
    queued_at: float


class MicroBatcher:
    """Coalesces concurrent :meth:`submit` calls into batched ``predict`` calls."""

    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.002,
        executor: Executor | None = None,
        max_in_flight: int = 1,
        inline_max_rows: int = 0,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_in_flight must be >= 1 and max_wait_s >= 0")
        self._predict = predict
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_in_flight = max_in_flight
        #: When the model thread is idle, the requests that arrived in the same event-loop iteration
        #: (one socket read often carries many) are predicted together on the event loop itself if
        #: they have at most this many rows: for a model that answers in microseconds the hop to
        #: the model thread costs more than the model. Larger batches go to the model thread.
        self.inline_max_rows = inline_max_rows
        self._flush_scheduled = False
        self._own_executor = executor is None
        self._executor: Executor = executor or ThreadPoolExecutor(1, thread_name_prefix="roost-predict")
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._in_flight = 0
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._idle: asyncio.Event | None = None
        #: Counters for metrics: predict calls made, rows predicted, largest batch seen.
        self.batches = 0
        self.rows = 0
        self.largest_batch = 0

    @property
    def predict(self) -> PredictFn:
        """The predict function the next batch will use."""
        return self._predict

    def swap(self, predict: PredictFn) -> PredictFn:
        """Use ``predict`` from the next batch on; return the previous function.

        Batches already dispatched finish on the previous function; queued requests run on the new
        one. Safe to call from the event loop at any time.
        """
        old, self._predict = self._predict, predict
        log.info("micro-batcher predict function swapped")
        return old

    async def submit(self, x: Matrix) -> npt.NDArray[np.float32]:
        """Predict the rows ``x`` (one request, shape (k, features)); returns their k predictions."""
        if self._closed:
            raise BatcherClosedError("the model server is shutting down")
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"submit() takes a non-empty (rows, features) matrix, got shape {x.shape}")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[npt.NDArray[np.float32]] = loop.create_future()
        self._queue.append(_Pending(x, future, loop.time()))
        self._queued_rows += x.shape[0]
        if self.inline_max_rows and self._in_flight == 0:
            if not self._flush_scheduled:  # collect what else arrives in this loop iteration
                self._flush_scheduled = True
                loop.call_soon(self._flush_soon, loop)
        else:
            self._pump(loop)
        return await future

    def _flush_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush_scheduled = False
        if self._in_flight == 0 and self._queue and self._queued_rows <= self.inline_max_rows:
            batch = [p for p in self._take() if not p.future.done()]
            if batch:
                x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch])
                self._count(x)
                try:
                    result = self._predict(x)
                except Exception as err:
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(err)
                else:
                    self._deliver(batch, result)
        self._pump(loop)

    def _count(self, x: Matrix) -> None:
        self.batches += 1
        self.rows += x.shape[0]
        self.largest_batch = max(self.largest_batch, x.shape[0])

    # ---- dispatch

    def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        """Dispatch what the rule allows now; arm the overflow timer when needed."""
        while self._queue and self._in_flight < self.max_in_flight:
            if self._in_flight == 0 or self._queued_rows >= self.max_batch:
                self._dispatch(loop)
                continue
            waited = loop.time() - self._queue[0].queued_at
            if waited >= self.max_wait_s:
                self._dispatch(loop)
                continue
            if self._timer is None:
                self._timer = loop.call_later(self.max_wait_s - waited, self._on_timer, loop)
            return
        self._check_idle()

    def _check_idle(self) -> None:
        if self._idle is not None and not self._queue and self._in_flight == 0:
            self._idle.set()

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._pump(loop)

    def _take(self) -> list[_Pending]:
        first = self._queue.popleft()
        batch = [first]
        rows = first.x.shape[0]
        width = first.x.shape[1]
        while self._queue:
            nxt = self._queue[0]
            k = nxt.x.shape[0]
            if rows + k > self.max_batch or nxt.x.shape[1] != width:
                break
            batch.append(self._queue.popleft())
            rows += k
        self._queued_rows -= rows
        return batch

    def _dispatch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = [p for p in self._take() if not p.future.done()]  # drop cancelled requests
        if not batch:
            return
        x = batch[0].x if len(batch) == 1 else np.concatenate([p.x for p in batch])
        predict = self._predict  # bound now: a later swap() does not affect this batch
        self._in_flight += 1
        self._count(x)
        if self._idle is not None:
            self._idle.clear()
        cfut = loop.run_in_executor(self._executor, predict, x)
        cfut.add_done_callback(lambda f: self._complete(loop, batch, f))

    def _complete(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Pending], done: asyncio.Future[npt.NDArray[np.float32]]
    ) -> None:
        self._in_flight -= 1
        try:
            exc = done.exception()
        except asyncio.CancelledError:
            exc = asyncio.CancelledError()
        if exc is None:
            self._deliver(batch, done.result())
        else:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
        self._pump(loop)

    @staticmethod
    def _deliver(batch: list[_Pending], result: npt.NDArray[np.float32]) -> None:
        total = sum(p.x.shape[0] for p in batch)
        out = np.asarray(result)
        if out.shape[:1] != (total,):
            err = ModelError(f"predict returned {out.shape[:1]} predictions for {total} rows")
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(err)
            return
        offset = 0
        for p in batch:
            k = p.x.shape[0]
            if not p.future.done():
                p.future.set_result(out[offset : offset + k])
            offset += k

    # ---- shutdown

    async def close(self) -> None:
        """Refuse new requests, let queued and running ones finish, release the own executor."""
        self._closed = True
        if self._queue or self._in_flight:
            self._idle = asyncio.Event()
            self._pump(asyncio.get_running_loop())
            await self._idle.wait()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._own_executor:
            self._executor.shutdown(wait=False)

    @property
    def in_flight(self) -> int:
        """Batches running now."""
        return self._in_flight

    @property
    def queued(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)
