"""Federated learning jobs at the hub: their checked spec, their target's devices, state and rounds.

A job is created PENDING against ``group:NAME`` (the group must exist; its devices now are the job's
devices); its spec is checked as :class:`roost.learn.federated_job.JobSpec` checks it, so each bad
value has its ``LEARN_*`` code. The runner moves it through the job state machine and records its
rounds and metrics (:meth:`LearnJobStore.update_learn_job`); while it runs, each round is stored as it lands
(:meth:`LearnJobStore.record_learn_round`), so the API, the console and ``/metrics`` show the rounds so far.
The process running a job is recorded in its result (``runner``): a hub that starts again finds the jobs
its previous process left unfinished (:meth:`LearnJobStore.unfinished_learn_jobs`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from roost.hub.contract import DeploymentStatus
from roost.hub.contract.federated import SERVING_COMPONENT, LearnJob, LearnJobIn, LearnRound
from roost.hub.errors import HubNotFoundError
from roost.hub.models import Deployment, Device, Group, GroupMember, LearnJobRow
from roost.hub.store.base import StoreBase
from roost.learn.errors import ParticipantsInvalidError
from roost.learn.federated_job import JobSpec, JobState

__all__ = ["LIST_LIMIT", "LearnGauges", "LearnJobStore", "UnfinishedJob"]

logger = logging.getLogger(__name__)

LIST_LIMIT = 100
#: States a job may be left in by a hub process that stopped.
UNFINISHED: Final = (str(JobState.PENDING), str(JobState.STARTING), str(JobState.RUNNING))
#: Jobs whose per-job series ``/metrics`` shows: the unfinished ones and those ended within RECENT, newest
#: first, at most METRIC_JOBS (so the label set stays bounded).
METRIC_JOBS: Final = 20
RECENT: Final = timedelta(hours=1)
#: Rounds kept per job (the spec's bound).
MAX_ROUNDS: Final = 100


@dataclass(frozen=True)
class UnfinishedJob:
    """A job in PENDING, STARTING or RUNNING, and the process that ran it (``{}`` if none was recorded)."""

    job: LearnJob
    runner: dict[str, Any]


@dataclass(frozen=True)
class JobSeries:
    job: str
    status: str
    round: int
    participants: int
    metric: float | None
    bytes: int
    rejected: int


@dataclass
class LearnGauges:
    jobs: dict[str, int] = field(default_factory=dict)
    series: list[JobSeries] = field(default_factory=list)


def _job(row: LearnJobRow) -> LearnJob:
    spec, result = row.spec, row.result or {}
    return LearnJob(job=row.id, target=row.target, task=spec["task"], strategy=spec["strategy"],
                    rounds_planned=spec["rounds"], min_participants=spec["min_participants"], devices=list(row.devices),
                    status=row.status, rounds=[LearnRound.model_validate(r) for r in result.get("rounds", [])],
                    final_metric=result.get("final_metric"), centralised_metric=result.get("centralised_metric"),
                    reason=result.get("reason"), serving_component=spec.get("component", SERVING_COMPONENT),
                    component=result.get("component"), created_at=row.created_at, updated_at=row.updated_at)


class LearnJobStore(StoreBase):
    def create_learn_job(self, body: LearnJobIn) -> LearnJob:
        group = body.target.removeprefix("group:")
        now = self.clock()

        def run(s: Session) -> LearnJob:
            if s.get(Group, group) is None:
                raise HubNotFoundError(f"group {group} does not exist", code="GROUP_NOT_FOUND")
            devices = list(s.scalars(select(Device.name).join(GroupMember, GroupMember.device_id == Device.id)
                                     .where(GroupMember.group_name == group, Device.revoked_at.is_(None))
                                     .order_by(Device.name)))
            spec = JobSpec(body.task, body.strategy, body.rounds,
                           len(devices) if body.min_participants is None else body.min_participants)
            spec.check(len(devices))
            unknown = sorted(set(body.data_paths) - set(devices))
            if unknown:
                raise ParticipantsInvalidError(f"data_paths names devices outside {body.target}: {', '.join(unknown)}")
            row = LearnJobRow(id=f"fl-{uuid.uuid4().hex[:12]}", target=body.target,
                              spec={"task": spec.task, "strategy": spec.strategy, "rounds": spec.rounds,
                                    "min_participants": spec.min_participants, "component": body.component,
                                    "data_paths": {d: body.data_paths.get(d, body.data_path) for d in devices}},
                              devices=devices, status=str(JobState.PENDING), result={}, created_at=now, updated_at=now)
            s.add(row)
            s.flush()
            return _job(row)
        job = self._write(run)
        logger.info("learn job %s: %s on %s (%d devices)", job.job, job.strategy, job.target, len(job.devices))
        return job

    def learn_job(self, job: str) -> LearnJob:
        def run(s: Session) -> LearnJob:
            row = s.get(LearnJobRow, job)
            if row is None:
                raise HubNotFoundError(f"learn job {job} does not exist", code="LEARN_JOB_NOT_FOUND")
            return _job(row)
        return self._read(run)

    def learn_job_data_paths(self, job: str) -> dict[str, str]:
        """Each device's data path of a job (its per-device SuperNode configuration)."""
        def run(s: Session) -> dict[str, str]:
            row = s.get(LearnJobRow, job)
            if row is None:
                raise HubNotFoundError(f"learn job {job} does not exist", code="LEARN_JOB_NOT_FOUND")
            return dict(row.spec.get("data_paths", {}))
        return self._read(run)

    def device_components(self, device: str) -> dict[str, str]:
        """The root components of the current (ACTIVE or COMPLETED) ``device:NAME`` deployment ({} without
        one): the runner adds the SuperNode to them and restores them after the job, so a job never drops a
        device's own components."""
        def run(s: Session) -> dict[str, str]:
            row = s.scalars(select(Deployment).where(Deployment.target_type == "device",
                                                     Deployment.target_name == device,
                                                     Deployment.status.in_((DeploymentStatus.ACTIVE,
                                                                            DeploymentStatus.COMPLETED)))
                            .order_by(Deployment.seq.desc()).limit(1)).first()
            return {str(k): str(v) for k, v in (row.components if row is not None else {}).items()}
        return self._read(run)

    def learn_jobs(self) -> list[LearnJob]:
        return self._read(lambda s: [_job(r) for r in s.scalars(
            select(LearnJobRow).order_by(LearnJobRow.created_at.desc()).limit(LIST_LIMIT))])

    def update_learn_job(self, job: str, status: JobState, result: dict[str, Any] | None = None) -> LearnJob:
        """The runner's record of a job's state (and, when given, its rounds, metrics and reason: the keys
        given replace those stored, the others stay)."""
        now = self.clock()

        def run(s: Session) -> LearnJob:
            row = self._locked(s, job)
            row.status, row.updated_at = str(status), now
            if result is not None:
                row.result = {**(row.result or {}), **result}
            return _job(row)
        return self._write(run)

    def record_learn_round(self, job: str, round_doc: dict[str, Any]) -> LearnJob:
        """Store one round of a running job as it lands (a round recorded again replaces its record); at
        most MAX_ROUNDS rounds are kept."""
        now = self.clock()
        number = int(round_doc["round"])

        def run(s: Session) -> LearnJob:
            row = self._locked(s, job)
            result = dict(row.result or {})
            rounds = [r for r in result.get("rounds", []) if int(r["round"]) != number] + [round_doc]
            result["rounds"] = sorted(rounds, key=lambda r: int(r["round"]))[-MAX_ROUNDS:]
            row.result, row.updated_at = result, now
            return _job(row)
        return self._write(run)

    def claim_learn_job(self, job: str, runner: dict[str, Any]) -> None:
        """Record the hub process that runs ``job`` (its host, pid and runner id)."""
        def run(s: Session) -> None:
            row = self._locked(s, job)
            row.result = {**(row.result or {}), "runner": runner}
        self._write(run)

    def unfinished_learn_jobs(self) -> list[UnfinishedJob]:
        """Jobs in PENDING, STARTING or RUNNING with the process recorded as running them."""
        def run(s: Session) -> list[UnfinishedJob]:
            rows = s.scalars(select(LearnJobRow).where(LearnJobRow.status.in_(UNFINISHED))
                             .order_by(LearnJobRow.created_at).limit(LIST_LIMIT))
            return [UnfinishedJob(_job(r), dict((r.result or {}).get("runner") or {})) for r in rows]
        return self._read(run)

    def learn_gauges(self) -> LearnGauges:
        """Jobs by status, and the latest round of the unfinished and recently ended jobs (``/metrics``)."""
        since: datetime = self.clock() - RECENT

        def run(s: Session) -> LearnGauges:
            counts = {str(k): int(n) for k, n in s.execute(
                select(LearnJobRow.status, func.count()).group_by(LearnJobRow.status))}
            rows = s.scalars(select(LearnJobRow).where(or_(LearnJobRow.status.in_(UNFINISHED),
                                                           LearnJobRow.updated_at >= since))
                             .order_by(LearnJobRow.created_at.desc()).limit(METRIC_JOBS))
            series = []
            for row in rows:
                rounds = list((row.result or {}).get("rounds", []))
                last = rounds[-1] if rounds else {}
                series.append(JobSeries(row.id, row.status, int(last.get("round", 0)),
                                        int(last.get("participants", 0)), last.get("metric"),
                                        sum(int(r.get("bytes", 0)) for r in rounds),
                                        sum(len(r.get("rejected", [])) for r in rounds)))
            return LearnGauges(counts, series)
        return self._read(run)

    @staticmethod
    def _locked(s: Session, job: str) -> LearnJobRow:
        row = s.get(LearnJobRow, job, with_for_update=True)
        if row is None:
            raise HubNotFoundError(f"learn job {job} does not exist", code="LEARN_JOB_NOT_FOUND")
        return row
