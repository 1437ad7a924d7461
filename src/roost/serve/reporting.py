"""What ``roost serve`` tells the agent about its requests: ``PutComponentMetric`` every second.

Each report carries the requests served and failed since the previous one (``InferenceRequests.<model>``,
``InferenceErrors.<model>``, unit COUNT) and a sample of their latencies (``InferenceLatency.<model>``,
unit SECONDS, at most :data:`MAX_SAMPLES` per report: a uniform reservoir sample when more requests
came). The agent turns them into ``roost_inference_*`` metrics (:mod:`roost.observe.inference`).
``<model>`` is the ``--name`` when the metric name stays within the 32 bytes Greengrass allows, else
the metric has no suffix (the model is then named after the component).

The component needs an ``aws.greengrass.ipc.componentmetric`` policy for ``PutComponentMetric`` (the
sample recipes have one). Refused or failing reports are logged once and reporting stops; serving never
waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Final, Protocol

from roost.errors import RoostError
from roost.ipc.rpc import OP_PUT_COMPONENT_METRIC

log = logging.getLogger(__name__)

MAX_SAMPLES: Final = 64
MAX_NAME: Final = 32


class Caller(Protocol):
    async def call(self, operation: str, request: dict[str, object], timeout: float = ...) -> dict[str, object]: ...


def metric_name(base: str, model: str) -> str:
    name = f"{base}.{model}"
    return name if len(name.encode()) <= MAX_NAME and "." not in model else base


class InferenceReporter:
    def __init__(self, ipc: Caller, model: str, interval: float = 1.0, rand: random.Random | None = None) -> None:
        self.ipc = ipc
        self.model = model
        self.interval = interval
        self._rand = rand or random.Random()
        self._served = 0
        self._failed = 0
        self._seen = 0
        self._sample: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self.stopped = False

    def observe(self, seconds: float) -> None:
        self._served += 1
        self._seen += 1
        if len(self._sample) < MAX_SAMPLES:
            self._sample.append(seconds)
        else:
            slot = self._rand.randrange(self._seen)
            if slot < MAX_SAMPLES:
                self._sample[slot] = seconds

    def error(self) -> None:
        self._failed += 1

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while not self.stopped:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        if self.stopped or (not self._served and not self._failed):
            return
        metrics: list[dict[str, object]] = [
            {"name": metric_name("InferenceRequests", self.model), "unit": "COUNT", "value": self._served},
            {"name": metric_name("InferenceErrors", self.model), "unit": "COUNT", "value": self._failed},
            *({"name": metric_name("InferenceLatency", self.model), "unit": "SECONDS", "value": s}
              for s in self._sample)]
        self._served = self._failed = self._seen = 0
        self._sample = []
        try:
            await self.ipc.call(OP_PUT_COMPONENT_METRIC, {"metrics": metrics}, timeout=5.0)
        except RoostError as err:
            log.warning("inference metrics are not reported (%s: %s); serving goes on", err.code, err.message)
            self.stopped = True


__all__ = ["MAX_SAMPLES", "InferenceReporter", "metric_name"]
