"""Federated learning jobs at the hub: their checked spec, their target's devices, state and rounds.

A job is created PENDING against ``group:NAME`` (the group must exist; its devices now are the job's
devices); its spec is checked as :class:`roost.learn.federated_job.JobSpec` checks it, so each bad
value has its ``LEARN_*`` code. The runner moves it through the job state machine and records its
rounds and metrics (:meth:`LearnJobStore.update_learn_job`).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from roost.hub.contract import DeploymentStatus
from roost.hub.contract.federated import SERVING_COMPONENT, LearnJob, LearnJobIn, LearnRound
from roost.hub.errors import HubNotFoundError
from roost.hub.models import Deployment, Device, Group, GroupMember, LearnJobRow
from roost.hub.store.base import StoreBase
from roost.learn.errors import ParticipantsInvalidError
from roost.learn.federated_job import JobSpec, JobState

__all__ = ["LIST_LIMIT", "LearnJobStore"]

logger = logging.getLogger(__name__)

LIST_LIMIT = 100


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
        """The runner's record of a job's state (and, when given, its rounds, metrics and reason)."""
        now = self.clock()

        def run(s: Session) -> LearnJob:
            row = s.get(LearnJobRow, job, with_for_update=True)
            if row is None:
                raise HubNotFoundError(f"learn job {job} does not exist", code="LEARN_JOB_NOT_FOUND")
            row.status, row.updated_at = str(status), now
            if result is not None:
                row.result = result
            return _job(row)
        return self._write(run)
