"""Micro-batching: coalescing, result mapping, failure isolation, hot swap, shutdown."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from roost.serve.batching import BatcherClosedError, MicroBatcher
from roost.serve.errors import ModelError


class Model:
    """predict = row sum (+ offset); records batch sizes; can be gated to hold a batch in flight."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.fail_on: float | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(x.shape[0])
        self.started.set()
        self.gate.wait(5)
        if self.fail_on is not None and (x[:, 0] == self.fail_on).any():
            raise RuntimeError("boom")
        out: np.ndarray = (x.sum(axis=1) + self.offset).astype(np.float32)
        return out


def rows(*values: float, width: int = 3) -> np.ndarray:
    return np.array([[v] * width for v in values], dtype=np.float32)


async def wait_started(model: Model) -> None:
    for _ in range(500):
        if model.started.is_set():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the model was never called")


async def test_lone_request_is_dispatched_at_once() -> None:
    model = Model()
    batcher = MicroBatcher(model, max_wait_s=10.0)  # a linger would time the test out
    out = await asyncio.wait_for(batcher.submit(rows(1, 2)), 2)
    np.testing.assert_array_equal(out, [3, 6])
    assert model.calls == [2]
    await batcher.close()


async def test_concurrent_submits_coalesce_and_map_back() -> None:
    model = Model()
    model.gate.clear()
    batcher = MicroBatcher(model, max_batch=64)
    first = asyncio.create_task(batcher.submit(rows(100)))
    await wait_started(model)  # batch 1 is in flight; the next ones queue behind it
    requests = [rows(*range(i * 10, i * 10 + 1 + i % 3)) for i in range(20)]
    tasks = [asyncio.create_task(batcher.submit(r)) for r in requests]
    await asyncio.sleep(0.01)
    assert batcher.queued == 20
    model.gate.set()
    results = await asyncio.gather(first, *tasks)
    np.testing.assert_array_equal(results[0], [300])
    for req, res in zip(requests, results[1:], strict=True):
        np.testing.assert_array_equal(res, req.sum(axis=1))
    assert model.calls == [1, sum(r.shape[0] for r in requests)]
    assert batcher.batches == 2 and batcher.largest_batch == model.calls[1] == batcher.rows - 1
    await batcher.close()


async def test_max_batch_splits_and_oversized_runs_alone() -> None:
    model = Model()
    model.gate.clear()
    batcher = MicroBatcher(model, max_batch=4)
    first = asyncio.create_task(batcher.submit(rows(0)))
    await wait_started(model)
    tasks = [asyncio.create_task(batcher.submit(rows(*[i] * k))) for i, k in enumerate([3, 2, 9, 1, 1])]
    await asyncio.sleep(0.01)
    model.gate.set()
    await asyncio.gather(first, *tasks)
    assert model.calls == [1, 3, 2, 9, 2]
    await batcher.close()


async def test_exception_fails_only_its_batch() -> None:
    model = Model()
    model.gate.clear()
    model.fail_on = 7.0
    batcher = MicroBatcher(model, max_batch=2)
    first = asyncio.create_task(batcher.submit(rows(1)))
    await wait_started(model)
    bad_batch = [asyncio.create_task(batcher.submit(rows(v))) for v in (7, 2)]  # one batch of 2
    good_batch = [asyncio.create_task(batcher.submit(rows(v))) for v in (3, 4)]  # the next one
    await asyncio.sleep(0.01)
    model.gate.set()
    results = await asyncio.gather(first, *bad_batch, *good_batch, return_exceptions=True)
    assert model.calls == [1, 2, 2]
    assert isinstance(results[1], RuntimeError) and isinstance(results[2], RuntimeError)
    np.testing.assert_array_equal(results[0], [3])
    np.testing.assert_array_equal(results[3], [9])
    np.testing.assert_array_equal(results[4], [12])
    np.testing.assert_array_equal(await batcher.submit(rows(5)), [15])  # still serving
    await batcher.close()


async def test_wrong_result_length_is_a_model_error() -> None:
    batcher = MicroBatcher(lambda x: np.zeros(1, np.float32))
    with pytest.raises(ModelError, match="1"):
        await batcher.submit(rows(1, 2))
    await batcher.close()


async def test_swap_keeps_in_flight_on_the_old_model() -> None:
    old, new = Model(0.0), Model(1000.0)
    old.gate.clear()
    batcher = MicroBatcher(old)
    in_flight = asyncio.create_task(batcher.submit(rows(1)))
    await wait_started(old)
    queued = asyncio.create_task(batcher.submit(rows(2)))
    await asyncio.sleep(0.01)
    assert batcher.swap(new) is old and batcher.predict is new
    old.gate.set()
    np.testing.assert_array_equal(await in_flight, [3])  # finished on the old model
    np.testing.assert_array_equal(await queued, [1006])  # dispatched after the swap
    np.testing.assert_array_equal(await batcher.submit(rows(3)), [1009])
    assert old.calls == [1] and new.calls == [1, 1]
    await batcher.close()


async def test_cancelled_request_is_dropped() -> None:
    model = Model()
    model.gate.clear()
    batcher = MicroBatcher(model)
    first = asyncio.create_task(batcher.submit(rows(1)))
    await wait_started(model)
    doomed = asyncio.create_task(batcher.submit(rows(50)))
    kept = asyncio.create_task(batcher.submit(rows(2)))
    await asyncio.sleep(0.01)
    doomed.cancel()
    model.gate.set()
    await first
    np.testing.assert_array_equal(await kept, [6])
    assert model.calls == [1, 1]
    await batcher.close()


async def test_close_drains_then_refuses() -> None:
    model = Model()
    model.gate.clear()
    batcher = MicroBatcher(model)
    tasks = [asyncio.create_task(batcher.submit(rows(v))) for v in (1, 2, 3)]
    await wait_started(model)
    closing = asyncio.create_task(batcher.close())
    await asyncio.sleep(0.01)
    assert not closing.done()
    model.gate.set()
    await closing
    assert [float(t.result()[0]) for t in tasks] == [3, 6, 9]
    with pytest.raises(BatcherClosedError):
        await batcher.submit(rows(1))


async def test_overflow_batches_with_several_workers() -> None:
    model = Model()
    model.gate.clear()
    pool = ThreadPoolExecutor(2)
    batcher = MicroBatcher(model, max_wait_s=0.005, executor=pool, max_in_flight=2)
    first = asyncio.create_task(batcher.submit(rows(1)))
    await wait_started(model)
    second = asyncio.create_task(batcher.submit(rows(2)))
    await asyncio.sleep(0.05)  # waited past max_wait_s: dispatched beside the first
    assert batcher.in_flight == 2 and batcher.queued == 0
    model.gate.set()
    await asyncio.gather(first, second)
    assert model.calls == [1, 1]
    await batcher.close()
    pool.shutdown()


async def test_event_loop_stays_free_during_predict() -> None:
    model = Model()
    model.gate.clear()
    batcher = MicroBatcher(model)
    task = asyncio.create_task(batcher.submit(rows(1)))
    await wait_started(model)
    ticks = 0
    for _ in range(5):
        await asyncio.sleep(0.001)
        ticks += 1
    assert ticks == 5 and not task.done()
    model.gate.set()
    await task
    await batcher.close()


async def test_small_request_runs_inline_when_idle_and_queues_when_busy() -> None:
    model = Model()
    calls_on: list[str] = []
    main_thread = threading.current_thread().name

    def traced(x: np.ndarray) -> np.ndarray:
        calls_on.append("loop" if threading.current_thread().name == main_thread else "worker")
        return model(x)

    batcher = MicroBatcher(traced, inline_max_rows=2)
    np.testing.assert_array_equal(await batcher.submit(rows(1)), [3])  # idle, 1 row: inline
    np.testing.assert_array_equal(await batcher.submit(rows(1, 2, 3)), [3, 6, 9])  # 3 rows: model thread
    assert calls_on == ["loop", "worker"]
    model.gate.clear()
    model.started.clear()
    busy = asyncio.ensure_future(batcher.submit(rows(5, 5, 5)))
    await wait_started(model)
    queued = asyncio.ensure_future(batcher.submit(rows(1)))  # a batch is in flight: no inline
    await asyncio.sleep(0.01)
    assert not queued.done()
    model.gate.set()
    np.testing.assert_array_equal(await queued, [3])
    await busy
    assert calls_on[2:] == ["worker", "worker"], calls_on
    # Requests arriving in the same loop iteration are predicted together, inline.
    both = await asyncio.gather(batcher.submit(rows(1)), batcher.submit(rows(2)))
    assert [list(b) for b in both] == [[3], [6]]
    assert calls_on[4:] == ["loop"] and model.calls[-1] == 2
    await batcher.close()
