"""Parallel inference: one batch of rows split into windows across the replicas of a cluster service,
answered concurrently and merged back in row order.

Each replica is a session (:class:`~roost.cluster.replica_session.ReplicaSession`: an endpoint and a
session token, from the hub's admission or given directly). The rows are cut into windows of at most
``window`` rows (default: the smallest window the replicas' hellos name, capped by their ``maxRows``);
every replica takes the next window from one shared queue whenever it has fewer than ``depth``
windows in flight, so a faster replica answers more. Answers are stored by window index and
concatenated in order at the end.

**A replica lost mid-stream** (its socket drops, it closes the session, or no reply comes within
``reply_timeout``): the windows it had in flight go back to the front of the queue and the other
replicas answer them; the report lists the loss (``PARALLEL_REPLICA_LOST``, which windows were
re-queued). A replica that cannot be connected at the start counts as lost the same way. **All
replicas lost** with windows left raises :class:`~roost.learn.errors.ReplicasExhaustedError`
(``PARALLEL_REPLICAS_LOST``) naming each and why. Replicas must take the same features (by name;
each gets its own column order); a replica with others is ``FEATURES_MISMATCH``, and so are rows of
another width.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from roost.cluster.errors import SessionLostError, StreamProtocolError
from roost.cluster.replica_session import ReplicaSession, ReplicaTarget
from roost.errors import InvalidInputError, RoostError
from roost.learn.errors import FeatureMismatchError, ReplicasExhaustedError

__all__ = ["MAX_DEPTH", "MAX_REPLICAS", "ParallelReport", "ReplicaStat", "open_sessions", "parallel_infer"]

log = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float32]
#: Most replicas one run uses, and most windows in flight per replica.
MAX_REPLICAS: Final = 64
MAX_DEPTH: Final = 16


@dataclass
class ReplicaStat:
    name: str
    endpoint: str
    windows: int = 0
    rows: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    lost: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"replica": self.name, "endpoint": self.endpoint, "windows": self.windows, "rows": self.rows,
                "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received, "lost": self.lost}


@dataclass
class ParallelReport:
    predictions: list[float]
    rows: int
    windows: int
    window: int
    depth: int
    wall_s: float
    replicas: list[ReplicaStat] = field(default_factory=list)
    #: One entry per replica lost mid-run: ``{"code": "PARALLEL_REPLICA_LOST", "replica", "message", "requeued"}``.
    retried: list[dict[str, Any]] = field(default_factory=list)

    def summary(self, *, with_predictions: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "rows": self.rows, "windows": self.windows, "window": self.window, "depth": self.depth,
            "wall_s": round(self.wall_s, 4), "rows_per_s": round(self.rows / self.wall_s, 2) if self.wall_s else None,
            "replicas": [r.to_json() for r in self.replicas], "retried": self.retried,
            "bytes_sent": sum(r.bytes_sent for r in self.replicas),
            "bytes_received": sum(r.bytes_received for r in self.replicas)}
        if with_predictions:
            doc["predictions"] = self.predictions
        return doc


class _Run:
    def __init__(self, matrix: Matrix, window: int, depth: int) -> None:
        self.matrix = matrix
        self.window = window
        self.depth = depth
        n_windows = (len(matrix) + window - 1) // window
        self.todo: deque[int] = deque(range(n_windows))
        self.results: list[list[float] | None] = [None] * n_windows
        self.remaining = n_windows
        self.cond = asyncio.Condition()
        self.retried: list[dict[str, Any]] = []
        self.on_window: Callable[[int, str], None] | None = None

    def rows_of(self, index: int) -> Matrix:
        return self.matrix[index * self.window:(index + 1) * self.window]

    async def worker(self, session: ReplicaSession, order: list[int], stat: ReplicaStat) -> None:
        inflight: deque[int] = deque()
        try:
            while True:
                async with self.cond:
                    await self.cond.wait_for(lambda: bool(self.todo) or bool(inflight) or self.remaining == 0)
                    if self.remaining == 0:
                        return
                    batch: list[int] = []
                    while self.todo and len(inflight) + len(batch) < self.depth:
                        batch.append(self.todo.popleft())
                for index in batch:
                    inflight.append(index)
                    await session.send(index, np.ascontiguousarray(self.rows_of(index)[:, order]))
                if not inflight:
                    continue
                reply = await session.receive()
                index = inflight.popleft()
                if reply.seq != index:
                    raise StreamProtocolError(f"replica {stat.name} answered window {reply.seq}, expected {index}")
                rows = len(self.rows_of(index))
                if len(reply.predictions) != rows:
                    raise StreamProtocolError(f"replica {stat.name} answered window {index} with "
                                              f"{len(reply.predictions)} predictions for {rows} rows")
                stat.windows += 1
                stat.rows += rows
                async with self.cond:
                    if self.results[index] is None:
                        self.results[index] = reply.predictions
                        self.remaining -= 1
                    if self.remaining == 0:
                        self.cond.notify_all()
                if self.on_window is not None:
                    self.on_window(index, stat.name)
        except (SessionLostError, StreamProtocolError) as err:
            stat.lost = {"code": err.code, "message": err.message}
            requeued = sorted(i for i in inflight if self.results[i] is None)
            log.warning("parallel inference: replica %s lost (%s); %d window(s) go to the others", stat.name,
                        err.message, len(requeued))
            async with self.cond:
                self.todo.extendleft(reversed(requeued))
                self.retried.append({"code": "PARALLEL_REPLICA_LOST", "replica": stat.name, "message": err.message,
                                     "requeued": requeued})
                self.cond.notify_all()
        finally:
            stat.bytes_sent, stat.bytes_received = session.sent, session.received
            await session.close()


def _order(first: Sequence[str], other: Sequence[str], name: str) -> list[int]:
    if sorted(first) != sorted(other):
        raise FeatureMismatchError(f"replica {name} takes {len(other)} features ({', '.join(other)}), the first "
                                   f"replica {len(first)} ({', '.join(first)}): a parallel run needs one model's "
                                   "features on every replica")
    return [list(first).index(f) for f in other]


async def open_sessions(targets: Sequence[ReplicaTarget], *, connect_timeout: float = 10.0,
                        reply_timeout: float = 30.0) -> tuple[list[ReplicaSession], list[ReplicaStat]]:
    """Connect to every target concurrently; the ones that fail are returned as lost stats."""
    if not targets:
        raise ReplicasExhaustedError("no replica to run on: give at least one", code="PARALLEL_REPLICAS_LOST")
    if len(targets) > MAX_REPLICAS:
        raise InvalidInputError(f"{len(targets)} replicas; a parallel run uses at most {MAX_REPLICAS}",
                                code="INVALID_ARGUMENT")
    sessions = [ReplicaSession(t, connect_timeout=connect_timeout, reply_timeout=reply_timeout) for t in targets]
    outcomes = await asyncio.gather(*(s.open() for s in sessions), return_exceptions=True)
    opened: list[ReplicaSession] = []
    failed: list[ReplicaStat] = []
    for session, outcome in zip(sessions, outcomes, strict=True):
        if isinstance(outcome, RoostError):
            failed.append(ReplicaStat(session.target.label, session.target.endpoint,
                                      lost={"code": outcome.code, "message": outcome.message}))
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            opened.append(session)
    return opened, failed


async def parallel_infer(targets: Sequence[ReplicaTarget], matrix: Matrix | None = None, *,
                         rows: Callable[[list[str]], Matrix] | None = None, window: int | None = None,
                         depth: int = 2, connect_timeout: float = 10.0, reply_timeout: float = 30.0,
                         on_window: Callable[[int, str], None] | None = None) -> ParallelReport:
    """Answer ``matrix`` (columns in the first replica's feature order) across ``targets``; or give
    ``rows``, a function of the first replica's features returning the matrix (read a CSV by name)."""
    if not 1 <= depth <= MAX_DEPTH:
        raise InvalidInputError(f"depth {depth}: 1 to {MAX_DEPTH} windows in flight per replica",
                                code="INVALID_ARGUMENT")
    sessions, failed = await open_sessions(targets, connect_timeout=connect_timeout, reply_timeout=reply_timeout)
    try:
        if not sessions:
            raise _exhausted(failed, None)
        first = sessions[0].features
        orders = [_order(first, s.features, s.target.label) for s in sessions]
        x = matrix if matrix is not None else rows(first) if rows is not None else None
        if x is None:
            raise ValueError("give matrix or rows")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(first):
            raise FeatureMismatchError(f"the rows have {x.shape[1] if x.ndim == 2 else x.shape} values; the "
                                       f"replicas' model takes {len(first)} features ({', '.join(first)})")
        limit = min(s.max_rows for s in sessions)
        size = min(window or min(s.hello.window for s in sessions if s.hello is not None), limit)
        if size < 1:
            raise InvalidInputError(f"window {window}: at least 1 row", code="INVALID_ARGUMENT")
    except BaseException:
        await asyncio.gather(*(s.close() for s in sessions))
        raise
    run = _Run(x, size, depth)
    run.on_window = on_window
    stats = [ReplicaStat(s.target.label, s.target.endpoint) for s in sessions]
    for lost in failed:
        run.retried.append({"code": "PARALLEL_REPLICA_LOST", "replica": lost.name,
                            "message": (lost.lost or {}).get("message", ""), "requeued": []})
    t0 = time.perf_counter()
    await asyncio.gather(*(run.worker(s, o, st) for s, o, st in zip(sessions, orders, stats, strict=True)))
    wall = time.perf_counter() - t0
    if run.remaining:
        raise _exhausted([*failed, *stats], run.remaining)
    predictions = [p for chunk in run.results if chunk is not None for p in chunk]
    return ParallelReport(predictions, len(x), len(run.results), size, depth, wall, [*stats, *failed], run.retried)


def _exhausted(stats: Sequence[ReplicaStat], remaining: int | None) -> ReplicasExhaustedError:
    why = "; ".join(f"{s.name}: {(s.lost or {}).get('code', '?')} {(s.lost or {}).get('message', '')}".strip()
                    for s in stats)
    left = f" with {remaining} window(s) unanswered" if remaining is not None else " before any window was sent"
    return ReplicasExhaustedError(f"every replica was lost{left} ({why})")
