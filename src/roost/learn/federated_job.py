"""A federated learning job: its checked spec, its state machine, and running it on Flower.

States: PENDING -> STARTING (SuperLink up, SuperNodes connecting) -> RUNNING (``flwr run``) ->
SUCCEEDED or FAILED; any state may go to FAILED, nothing leaves SUCCEEDED or FAILED, and every state
has a timeout (:data:`STATE_TIMEOUTS`). Bounds: 1..MAX_ROUNDS rounds, at most MAX_PARTICIPANTS
devices, updates of at most MAX_UPDATE_BYTES.

:func:`run_job` runs a job whose devices are given as (name, data path) pairs, each SuperNode a
process of this machine (the bench and the tests; on a fleet the SuperNode is the devices' component).
Each device's data path is checked before it joins (``LEARN_DATA_MISSING``); a round with fewer usable
updates than ``min_participants`` fails the job (``LEARN_TOO_FEW_PARTICIPANTS``, the reason names the
round); rejected updates are recorded per round with their reason. While a job runs, each round the
ServerApp appends to ``rounds.jsonl`` is read as it lands (:class:`RoundTail`) and handed to
``on_round`` (the hub stores it, so ``GET /v1/learn/jobs/{id}`` shows the rounds so far).
"""

from __future__ import annotations

import enum
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from roost.learn.errors import (
    DataMissingError,
    FederatedError,
    FlowerProcessError,
    JobStateError,
    JoinTimeoutError,
    ParticipantsInvalidError,
    RoundsOutOfRangeError,
    StrategyUnknownError,
    TargetEmptyError,
    TaskUnknownError,
    TooFewParticipantsError,
)
from roost.learn.superlink import FlowerProcess, SuperLink, flower_bin, free_port, run_app, start_supernode
from roost.learn.tls import make_job_tls
from roost.learn.wine_task import TASKS, centralised_rmse, write_holdout

__all__ = ["JOIN_TIMEOUT", "MAX_PARTICIPANTS", "MAX_ROUNDS", "STRATEGIES", "Device", "JobSpec", "JobState", "JobStatus",
           "JoinInfo", "RoundTail", "round_doc", "run_job", "run_joined_job"]

log = logging.getLogger(__name__)

STRATEGIES: Final = ("fedxgb-bagging", "fedxgb-cyclic", "fedavg", "fedprox")
MAX_ROUNDS: Final = 100
MAX_PARTICIPANTS: Final = 32
MAX_UPDATE_BYTES: Final = 4 * 1024 * 1024


class JobState(enum.StrEnum):
    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


_NEXT: Final[dict[JobState, frozenset[JobState]]] = {
    JobState.PENDING: frozenset({JobState.STARTING, JobState.FAILED}),
    JobState.STARTING: frozenset({JobState.RUNNING, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
}
#: Seconds a job may stay in a state (RUNNING: per round, times the rounds).
STATE_TIMEOUTS: Final[dict[JobState, float]] = {JobState.PENDING: 300.0, JobState.STARTING: 120.0,
                                                 JobState.RUNNING: 120.0}


@dataclass(frozen=True)
class JobSpec:
    task: str
    strategy: str
    rounds: int
    min_participants: int
    local_rounds: int = 4

    def check(self, devices: int) -> None:
        """Raise the specific error of the first bad value (devices: the target's device count)."""
        if self.task not in TASKS:
            raise TaskUnknownError(f"unknown task {self.task!r}; known: {', '.join(TASKS)}")
        if self.strategy not in STRATEGIES:
            raise StrategyUnknownError(f"unknown strategy {self.strategy!r}; known: {', '.join(STRATEGIES)}")
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise RoundsOutOfRangeError(f"--rounds {self.rounds} is outside 1..{MAX_ROUNDS}")
        if devices == 0:
            raise TargetEmptyError("the target has no device to train on")
        if devices > MAX_PARTICIPANTS:
            raise ParticipantsInvalidError(f"the target has {devices} devices; at most {MAX_PARTICIPANTS} take part")
        if not 1 <= self.min_participants <= devices:
            raise ParticipantsInvalidError(f"--min-participants {self.min_participants} is outside 1..{devices} "
                                           "(the target's devices)")


@dataclass
class JobStatus:
    """What the API and ``roost learn status`` show of a job."""

    job: str
    spec: JobSpec
    status: JobState = JobState.PENDING
    rounds: list[dict[str, Any]] = field(default_factory=list)
    final_metric: float | None = None
    centralised_metric: float | None = None
    reason: str | None = None
    since: float = field(default_factory=time.monotonic)

    def move(self, to: JobState, reason: str | None = None) -> None:
        if to not in _NEXT[self.status]:
            raise JobStateError(f"job {self.job}: {self.status} cannot become {to}")
        log.info("job %s: %s -> %s%s", self.job, self.status, to, f" ({reason})" if reason else "")
        self.status, self.since = to, time.monotonic()
        if reason:
            self.reason = reason

    def overdue(self, now: float | None = None) -> bool:
        limit = STATE_TIMEOUTS.get(self.status)
        if limit is None:
            return False
        if self.status is JobState.RUNNING:
            limit *= self.spec.rounds
        return ((now if now is not None else time.monotonic()) - self.since) > limit

    def as_json(self) -> dict[str, Any]:
        return {"job": self.job, "status": str(self.status), "spec": asdict(self.spec),
                "rounds": [round_doc(r) for r in self.rounds],
                "final_metric": self.final_metric, "centralised_metric": self.centralised_metric,
                "reason": self.reason}


@dataclass(frozen=True)
class Device:
    name: str
    data_path: Path


def _check_data(device: Device) -> None:
    path = Path(device.data_path)
    if not path.is_file():
        raise DataMissingError(f"device {device.name}: its data path {path} does not exist or is not a file")


def _read_rounds(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


#: Longest reason of a rejected update kept in a round's record.
MAX_REASON: Final = 300


def round_doc(line: dict[str, Any]) -> dict[str, Any]:
    """A ServerApp round line as the API and the CLI show it: participants, RMSE, bytes (both ways),
    seconds, and the rejected updates with their reasons (at most MAX_PARTICIPANTS, reasons cut)."""
    rejected = [{"node": int(r.get("node", 0)), "reason": str(r.get("reason", ""))[:MAX_REASON]}
                for r in list(line.get("rejected", []))[:MAX_PARTICIPANTS]]
    return {"round": int(line["round"]), "participants": int(line["participants"]), "metric": line.get("metric"),
            "bytes": int(line.get("bytes_up", 0)) + int(line.get("bytes_down", 0)), "seconds": line.get("seconds"),
            "rejected": rejected}


class RoundTail:
    """Reads the rounds a running ServerApp appends to ``rounds.jsonl``, each once, as they land.

    Bounded: at most MAX_ROUNDS rounds (one line each, plus a failed round's line) and lines of at most
    MAX_LINE bytes are read; a partial last line waits for its newline. :meth:`poll` hands each new round
    (:func:`round_doc`) to ``on_round``; an exception there is logged and the job goes on."""

    MAX_LINE: Final = 64 * 1024

    def __init__(self, path: Path, on_round: Callable[[dict[str, Any]], None]) -> None:
        self.path, self.on_round = path, on_round
        self.offset, self.seen = 0, 0

    def poll(self) -> None:
        if self.seen > MAX_ROUNDS:
            return
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read(self.MAX_LINE * 4)
        except FileNotFoundError:
            return
        while self.seen <= MAX_ROUNDS:
            end = chunk.find(b"\n")
            if end < 0:
                if len(chunk) >= self.MAX_LINE * 4:  # no newline in the window: a broken file, stop reading it
                    log.warning("%s: a line over %d bytes; no more rounds read from it", self.path, self.MAX_LINE)
                    self.seen = MAX_ROUNDS + 1
                return
            line, chunk = chunk[:end], chunk[end + 1:]
            self.offset += end + 1
            if not line.strip() or len(line) > self.MAX_LINE:
                continue
            self.seen += 1
            try:
                self.on_round(round_doc(json.loads(line)))
            except Exception:  # the record of a round must never end the job
                log.exception("%s: recording a round failed", self.path)


@dataclass(frozen=True)
class JoinInfo:
    """What SuperNodes started elsewhere need to join a job: the SuperLink's address and its CA."""

    job: str
    superlink: str
    ca_cert: Path | None


#: Seconds the ServerApp waits for the expected SuperNodes to join before ``LEARN_JOIN_TIMEOUT``.
JOIN_TIMEOUT: Final = 120.0


def run_job(job: str, spec: JobSpec, devices: Sequence[Device], folder: Path, *, host: str = "127.0.0.1",
            tls: bool = True, capture: bool = False,
            on_supernodes: Callable[[list[FlowerProcess]], None] | None = None,
            on_round: Callable[[dict[str, Any]], None] | None = None) -> JobStatus:
    """Run ``spec`` on ``devices`` (local SuperNodes) and return the final status; raises FederatedError.
    ``on_supernodes`` gets the SuperNode processes once started; ``on_round`` each round as it lands."""
    spec.check(len(devices))
    for device in devices:
        _check_data(device)

    def local(info: JoinInfo, bin_dir: Path) -> list[FlowerProcess]:
        nodes = [start_supernode(bin_dir, info.superlink, Path(device.data_path).resolve(),
                                 folder / f"supernode-{device.name}.log", runtime_port=free_port(),
                                 ca_cert=info.ca_cert) for device in devices]
        if on_supernodes is not None:
            on_supernodes(nodes)
        return nodes

    return _run(job, spec, len(devices), folder, local, host=host, tls=tls, capture=capture, on_round=on_round)


def run_joined_job(job: str, spec: JobSpec, participants: int, folder: Path, join: Callable[[JoinInfo], None], *,
                   host: str = "127.0.0.1", tls: bool = True, capture: bool = False,
                   join_timeout: float = JOIN_TIMEOUT, cancel: threading.Event | None = None,
                   on_round: Callable[[dict[str, Any]], None] | None = None) -> JobStatus:
    """Run ``spec`` on ``participants`` SuperNodes started elsewhere (the devices' SuperNode components).

    The SuperLink comes up first; ``join(info)`` then starts the SuperNodes (e.g. deploys the component
    with ``info.superlink`` and ``info.ca_cert``); the ServerApp waits up to ``join_timeout`` seconds for
    all of them (``LEARN_JOIN_TIMEOUT`` naming how many joined) before the first round."""
    spec.check(participants)

    def remote(info: JoinInfo, bin_dir: Path) -> list[FlowerProcess]:
        join(info)
        return []

    return _run(job, spec, participants, folder, remote, host=host, tls=tls, capture=capture,
                join_timeout=join_timeout, cancel=cancel, on_round=on_round)


def _run(job: str, spec: JobSpec, participants: int, folder: Path,
         start_nodes: Callable[[JoinInfo, Path], list[FlowerProcess]], *, host: str, tls: bool, capture: bool,
         join_timeout: float = JOIN_TIMEOUT, cancel: threading.Event | None = None,
         on_round: Callable[[dict[str, Any]], None] | None = None) -> JobStatus:
    status = JobStatus(job, spec)
    bin_dir = flower_bin()
    folder.mkdir(parents=True, exist_ok=True)
    holdout = write_holdout(folder / "holdout.csv")
    job_tls = make_job_tls(folder / "tls", host) if tls else None
    link = SuperLink(bin_dir, folder, host, free_port(host), job_tls)
    nodes: list[FlowerProcess] = []
    status.move(JobState.STARTING)
    try:
        link.start(timeout=STATE_TIMEOUTS[JobState.STARTING])
        nodes = start_nodes(JoinInfo(job, link.address, job_tls.ca_cert if job_tls else None), bin_dir)
        status.move(JobState.RUNNING)
        out = folder / "out"
        config: dict[str, str | int | float | bool] = {
            "strategy": spec.strategy, "num-server-rounds": spec.rounds, "min-participants": spec.min_participants,
            "expected-participants": participants, "local-rounds": spec.local_rounds, "out-dir": str(out),
            "holdout-path": str(holdout), "max-update-bytes": MAX_UPDATE_BYTES,
            "round-timeout": STATE_TIMEOUTS[JobState.RUNNING], "join-timeout": join_timeout,
            "capture-messages": capture}
        tail = RoundTail(out / "rounds.jsonl", on_round) if on_round is not None else None
        done = run_app(link, config, timeout=STATE_TIMEOUTS[JobState.RUNNING] * spec.rounds + join_timeout + 60,
                       cancel=cancel, on_poll=tail.poll if tail is not None else None)
        if tail is not None:
            tail.poll()  # the rounds written since the last poll
        (folder / "flwr-run.log").write_text(done.stdout + done.stderr)
        joined = out / "join.json"
        if joined.is_file():
            doc = json.loads(joined.read_text())
            raise JoinTimeoutError(f"job {job}: {doc['joined']} of {doc['expected']} SuperNodes joined the SuperLink "
                                   f"within {doc['timeout']:.0f} s")
        status.rounds = _read_rounds(out / "rounds.jsonl")
        failed = next((r["failed"] for r in status.rounds if "failed" in r), None)
        if failed:
            raise TooFewParticipantsError(f"job {job}: {failed}")
        if done.returncode != 0 or not (out / "done.json").is_file():
            raise FlowerProcessError(f"job {job}: flwr run exited {done.returncode} without a final model: "
                                     f"{(done.stdout + done.stderr)[-1500:]}")
        status.final_metric = status.rounds[-1].get("metric") if status.rounds else None
        status.centralised_metric = centralised_rmse(spec.strategy, spec.rounds, spec.local_rounds, participants)
        status.move(JobState.SUCCEEDED)
        return status
    except FederatedError as err:
        status.move(JobState.FAILED, f"{err.code}: {err}")
        raise
    finally:
        for node in nodes:
            node.stop()
        link.stop()
