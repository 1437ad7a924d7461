"""Joint inference: a small model on the edge answers what it is sure of; the big model in the centre
answers the hard examples (KubeEdge Sedna's JointInferenceService, on Roost's cluster).

For each batch of rows (one row, as Sedna does per sample, or more):

1. the **edge model** (in this process, e.g. a shallow XGBoost classifier) predicts every row with its
   class probabilities;
2. a **hard-example filter** (:mod:`roost.learn.hard_examples`: threshold, cross-entropy, margin,
   random) picks the rows it is unsure of;
3. those rows go, as one binary window, to the **centre model**: a replica session of the cluster's
   centre tier (``roost cluster replica`` serving the big model; admitted by the hub with
   ``tier="centre"``, or given directly as an endpoint and session token); its per-row classes replace
   the edge's answers for them.

Every answer says which model gave it, and every batch its edge time, its centre round trip (and
the replica's own ``server_ms``) and the bytes sent and received on the centre's socket.

**The centre unreachable** (refused, dropped, no reply in time): by default the edge keeps
answering, the hard rows keep the edge's answer, and the batch carries ``centre_error``
(``CENTRE_UNREACHABLE`` with why), so a device that lost its uplink still answers; a new session is
asked for (through the hub) at most every ``retry_seconds``. With ``require_centre=True`` the batch
raises :class:`~roost.learn.errors.CentreUnreachableError` instead. A session token connects once,
so a directly given centre stays down once lost.

The two models must take the same features (by name; the centre's order is used on its window);
different ones are ``FEATURES_MISMATCH``, and so is a batch of another width.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from roost.cluster.replica_session import ReplicaSession, ReplicaTarget
from roost.errors import RoostError
from roost.learn.errors import CentreUnreachableError, FeatureMismatchError, FilterError
from roost.learn.hard_examples import HardExampleFilter

__all__ = ["CentreSource", "EdgeModel", "HubCentre", "JointAnswer", "JointBatch", "JointInference", "JointReport",
           "XGBoostEdgeModel", "direct_centre", "hub_centre", "run_joint"]

log = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float32]
AnsweredBy = Literal["edge", "centre"]
#: Gives a centre session to connect to (a new one each call, e.g. from the hub's admission).
CentreSource = Callable[[], Awaitable[ReplicaTarget]]


class EdgeModel(Protocol):
    """What joint inference needs of the edge model."""

    features: list[str]

    def predict(self, matrix: Matrix) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
        """Per-row predictions (class index) and class probabilities ``(rows, classes)`` (``None`` when the
        model gives none)."""
        ...


class XGBoostEdgeModel:
    """An XGBoost model file as the edge model (classes are the argmax of its probabilities)."""

    def __init__(self, path: Path) -> None:
        from roost.cluster.served_model import task_of
        from roost.serve.backends import XGBoostBackend

        self.backend = XGBoostBackend(Path(path), nthread=1)
        objective = str(json.loads(self.backend.booster.save_config())["learner"]["objective"]["name"])
        self.task = task_of(objective)
        self.features: list[str] = list(self.backend.feature_names)
        self.description = f"{Path(path).name} ({objective})"

    def predict(self, matrix: Matrix) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
        out = np.asarray(self.backend.predict(matrix), dtype=np.float64)
        if self.task in ("regressor", "classes"):
            return out.reshape(len(matrix)), None
        if self.task == "margins":
            out = 1.0 / (1.0 + np.exp(-out))
        probs = np.stack([1.0 - out, out], axis=1) if out.ndim == 1 else out
        return probs.argmax(axis=1).astype(np.float64), probs


@dataclass(frozen=True)
class JointAnswer:
    """One row's answer."""

    prediction: float
    answered_by: AnsweredBy
    edge_prediction: float
    #: The filter's score of the edge's answer (how sure it was; NaN for invalid probabilities).
    score: float | None
    hard: bool
    centre_prediction: float | None = None

    def to_json(self) -> dict[str, Any]:
        score = None if self.score is None or not np.isfinite(self.score) else round(float(self.score), 6)
        return {"prediction": self.prediction, "answered_by": self.answered_by, "hard": self.hard,
                "edge_prediction": self.edge_prediction, "centre_prediction": self.centre_prediction,
                "score": score}


@dataclass
class JointBatch:
    """One batch's answers, in the order of its rows, and what it cost."""

    answers: list[JointAnswer]
    edge_ms: float
    #: The centre round trip of the batch's hard rows (``None`` when none went, or it failed).
    centre_ms: float | None = None
    centre_server_ms: float | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    #: ``{"code": "CENTRE_UNREACHABLE", "message"}`` when hard rows kept the edge's answer.
    centre_error: dict[str, str] | None = None

    @property
    def predictions(self) -> list[float]:
        return [a.prediction for a in self.answers]

    def to_json(self) -> dict[str, Any]:
        return {"answers": [a.to_json() for a in self.answers], "edge_ms": round(self.edge_ms, 4),
                "centre_ms": None if self.centre_ms is None else round(self.centre_ms, 4),
                "centre_server_ms": None if self.centre_server_ms is None else round(self.centre_server_ms, 4),
                "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
                "centre_error": self.centre_error}


def direct_centre(target: ReplicaTarget) -> CentreSource:
    """A centre given as an endpoint and session token: it connects once (a token connects once)."""
    used = False

    async def source() -> ReplicaTarget:
        nonlocal used
        if used:
            raise CentreUnreachableError(f"the centre session at {target.endpoint} was lost and its token "
                                         "connects only once; ask the hub for a new session")
        used = True
        return target

    return source


class HubCentre:
    """A centre admitted by the hub: a session of ``service_type`` in the centre tier, a new one per call
    (after a loss); :meth:`end` ends every session it was given (``DELETE /v1/cluster/sessions/{id}``)."""

    def __init__(self, hub: str, token: str, service_type: str, client_id: str, *, wait: float = 30.0) -> None:
        self.hub, self.token, self.service_type, self.client_id, self.wait = hub, token, service_type, client_id, wait
        self.sessions: list[str] = []

    def _admit(self) -> ReplicaTarget:
        from roost.hub.client import HubClient

        with HubClient(self.hub, self.token) as client:
            session = client.create_cluster_session(self.service_type, self.client_id, self.wait, tier="centre")
        self.sessions.append(session.id)
        return ReplicaTarget(session.endpoint, session.token, name=session.replica)

    async def __call__(self) -> ReplicaTarget:
        import asyncio

        return await asyncio.to_thread(self._admit)

    def end(self, reason: str | None = None) -> None:
        from roost.hub.client import HubClient

        if not self.sessions:
            return
        with HubClient(self.hub, self.token) as client:
            while self.sessions:
                sid = self.sessions.pop()
                try:
                    client.end_cluster_session(sid, reason)
                except RoostError as err:  # already ended by the hub (the replica went away)
                    log.info("joint inference: ending centre session %s: %s", sid, err.message)


def hub_centre(hub: str, token: str, service_type: str, client_id: str, *, wait: float = 30.0) -> HubCentre:
    """A centre admitted by the hub in the centre tier (see :class:`HubCentre`)."""
    return HubCentre(hub, token, service_type, client_id, wait=wait)


@dataclass
class _Centre:
    session: ReplicaSession | None = None
    #: The centre's feature order, as column indices into the edge's.
    order: list[int] | None = None
    down_since: float | None = None
    last_error: str | None = None
    seq: int = 0
    errors: list[str] = field(default_factory=list)


class JointInference:
    """The joint-inference pattern for any edge model and a centre replica (see the module notes).

    ``await start()`` (connects to the centre), ``await infer(matrix)`` per batch, ``await close()``;
    or ``async with``.
    """

    def __init__(self, edge: EdgeModel, centre: CentreSource | None, hard_filter: HardExampleFilter, *,
                 require_centre: bool = False, retry_seconds: float = 5.0, connect_timeout: float = 10.0,
                 reply_timeout: float = 10.0) -> None:
        self.edge = edge
        self.source = centre
        self.filter = hard_filter
        self.require_centre = require_centre
        self.retry_seconds = retry_seconds
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self._centre = _Centre()

    async def __aenter__(self) -> JointInference:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect to the centre now (a refusal is reported as :meth:`infer` would report it)."""
        if self.source is not None:
            await self._connect()

    async def close(self) -> None:
        if self._centre.session is not None:
            await self._centre.session.close()
            self._centre.session = None

    @property
    def centre_features(self) -> list[str] | None:
        session = self._centre.session
        return session.features if session is not None and session.hello is not None else None

    async def _connect(self) -> ReplicaSession | None:
        """The open centre session, connecting (or reconnecting, at most every ``retry_seconds``)."""
        c = self._centre
        if c.session is not None:
            return c.session
        if self.source is None:
            self._down("no centre is configured")
            return None
        if c.down_since is not None and time.monotonic() - c.down_since < self.retry_seconds:
            return None
        session: ReplicaSession | None = None
        try:
            target = await self.source()
            session = ReplicaSession(target, connect_timeout=self.connect_timeout, reply_timeout=self.reply_timeout)
            await session.open()
        except FeatureMismatchError:
            raise
        except RoostError as err:
            if session is not None:
                await session.close()
            self._down(f"{err.code}: {err.message}")
            return None
        c.order = self._order(session.features)
        c.session = session
        if c.down_since is not None:
            log.info("joint inference: the centre at %s answers again", session.target.label)
        c.down_since, c.last_error = None, None
        return session

    def _order(self, centre: Sequence[str]) -> list[int]:
        edge = self.edge.features
        if sorted(centre) != sorted(edge):
            raise FeatureMismatchError(
                f"the edge model takes {len(edge)} features ({', '.join(edge)}) and the centre model "
                f"{len(centre)} ({', '.join(centre)}): joint inference needs the same features on both")
        return [edge.index(name) for name in centre]

    def _down(self, why: str) -> None:
        c = self._centre
        if c.down_since is None:
            log.warning("joint inference: the centre is unreachable (%s); the edge answers the hard examples", why)
        c.down_since = time.monotonic()
        c.last_error = why

    async def _ask_centre(self, rows: Matrix, batch: JointBatch) -> list[float] | None:
        session = await self._connect()
        if session is None:
            return None
        c = self._centre
        assert c.order is not None
        sent0, received0 = session.sent, session.received
        t0 = time.perf_counter()
        out: list[float] = []
        server = 0.0
        try:
            step = session.max_rows
            for start in range(0, len(rows), step):
                chunk = np.ascontiguousarray(rows[start:start + step][:, c.order])
                reply = await session.predict(c.seq, chunk)
                c.seq += 1
                out.extend(reply.predictions)
                server += reply.server_ms
        except RoostError as err:
            batch.bytes_sent += session.sent - sent0
            batch.bytes_received += session.received - received0
            await session.close()
            c.session = None
            # A lost session, or a replica that answered without predictions: either way this session
            # is done; a new one is asked for after retry_seconds.
            self._down(f"{err.code}: {err.message}")
            return None
        batch.centre_ms = (time.perf_counter() - t0) * 1000.0
        batch.centre_server_ms = server
        batch.bytes_sent += session.sent - sent0
        batch.bytes_received += session.received - received0
        return out

    async def infer(self, matrix: Matrix) -> JointBatch:
        """Answer a batch of rows (``rows x features`` in the edge model's feature order)."""
        x = np.ascontiguousarray(matrix, dtype=np.float32)
        if x.ndim == 2 and len(x) == 0:
            return JointBatch([], edge_ms=0.0)
        if x.ndim != 2 or x.shape[1] != len(self.edge.features):
            width = x.shape[1] if x.ndim == 2 else x.shape
            raise FeatureMismatchError(f"the rows have {width} values; the edge model takes "
                                       f"{len(self.edge.features)} features ({', '.join(self.edge.features)})")
        t0 = time.perf_counter()
        predictions, probs = self.edge.predict(x)
        if probs is None:
            if self.filter.name != "random":
                raise FilterError(f"the {self.filter.name} filter needs the edge model's class probabilities, and "
                                  "this model gives none (a regressor or multi:softmax): use the random filter",
                                  code="FILTER_NEEDS_PROBABILITIES")
            probs = np.full((len(x), 2), 0.5)
        scores = self.filter.scores(probs)
        hard = np.nan_to_num(scores, nan=np.inf) < self.filter.threshold
        batch = JointBatch([], edge_ms=(time.perf_counter() - t0) * 1000.0)
        centre: list[float] | None = None
        if hard.any():
            centre = await self._ask_centre(x[hard], batch)
            if centre is None:
                why = self._centre.last_error or "unknown"
                if self.require_centre:
                    raise CentreUnreachableError(f"the centre model cannot answer {int(hard.sum())} hard "
                                                 f"example(s): {why}")
                batch.centre_error = {"code": CentreUnreachableError.code, "message": why}
        answers: list[JointAnswer] = []
        it = iter(centre) if centre is not None else None
        for i in range(len(x)):
            edge_pred = float(predictions[i])
            if hard[i] and it is not None:
                value = float(next(it))
                answers.append(JointAnswer(value, "centre", edge_pred, float(scores[i]), True, value))
            else:
                answers.append(JointAnswer(edge_pred, "edge", edge_pred, float(scores[i]), bool(hard[i])))
        batch.answers = answers
        return batch


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p99": None}
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(arr.mean()), 4), "p50": round(float(np.percentile(arr, 50)), 4),
            "p99": round(float(np.percentile(arr, 99)), 4)}


@dataclass
class JointReport:
    """Batches of one run, summed up (``roost joint --json``, ``bench/learn_joint.py``)."""

    filter: HardExampleFilter
    batches: list[JointBatch] = field(default_factory=list)
    #: Seconds from the first batch handed to :meth:`JointInference.infer` to the last answer.
    wall_s: float = 0.0
    #: Milliseconds per batch end to end (edge, filter, centre).
    batch_ms: list[float] = field(default_factory=list)

    @property
    def answers(self) -> list[JointAnswer]:
        return [a for b in self.batches for a in b.answers]

    def summary(self, labels: npt.NDArray[np.floating] | None = None) -> dict[str, Any]:
        answers = self.answers
        n = len(answers)
        by_centre = sum(a.answered_by == "centre" for a in answers)
        hard = sum(a.hard for a in answers)
        sent = sum(b.bytes_sent for b in self.batches)
        received = sum(b.bytes_received for b in self.batches)
        errors = [b.centre_error for b in self.batches if b.centre_error is not None]
        doc: dict[str, Any] = {
            "filter": self.filter.describe(), "rows": n, "batches": len(self.batches), "hard": hard,
            "answered_by": {"edge": n - by_centre, "centre": by_centre},
            "share_sent": round(by_centre / n, 6) if n else None,
            "accuracy": None, "edge_accuracy": None,
            "latency_ms": {"batch": _stats(self.batch_ms), "edge": _stats([b.edge_ms for b in self.batches]),
                           "centre": _stats([b.centre_ms for b in self.batches if b.centre_ms is not None]),
                           "centre_server": _stats([b.centre_server_ms for b in self.batches
                                                    if b.centre_server_ms is not None])},
            "bytes": {"sent": sent, "received": received, "sent_per_row": round(sent / n, 3) if n else None,
                      "received_per_row": round(received / n, 3) if n else None},
            "rows_per_s": round(n / self.wall_s, 2) if self.wall_s > 0 else None,
            "centre_errors": len(errors), "centre_error": errors[0] if errors else None,
        }
        if labels is not None and n:
            y = np.asarray(labels, dtype=np.float64)[:n]
            doc["accuracy"] = round(float(np.mean(np.asarray([a.prediction for a in answers]) == y)), 6)
            doc["edge_accuracy"] = round(float(np.mean(np.asarray([a.edge_prediction for a in answers]) == y)), 6)
        return doc


async def run_joint(joint: JointInference, matrix: Matrix, *, batch: int = 1,
                    on_batch: Callable[[JointBatch], None] | None = None) -> JointReport:
    """Answer every row of ``matrix`` in batches of ``batch`` rows, in order."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    report = JointReport(joint.filter)
    t_start = time.perf_counter()
    for start in range(0, len(matrix), batch):
        t0 = time.perf_counter()
        result = await joint.infer(matrix[start:start + batch])
        report.batch_ms.append((time.perf_counter() - t0) * 1000.0)
        report.batches.append(result)
        if on_batch is not None:
            on_batch(result)
    report.wall_s = time.perf_counter() - t_start
    return report
