"""The hub's runner of federated learning jobs (``docs/learning.md``).

A job created PENDING (``POST /v1/learn/jobs``) is submitted here; at most :data:`MAX_RUNNING` run at
once (the rest wait in the executor's queue, at most :data:`MAX_QUEUED`). Running one: the SuperLink
starts in this hub process (``run_joined_job``, TLS with the job's CA, on ``host``, an address the
devices reach); then one hub deployment per device (``device:NAME``) adds ``com.roost.FlowerSuperNode``
with the job's ``superlink``, ``caCert`` and ``job`` and that device's own ``dataPath``; the ServerApp
waits for them (``LEARN_JOIN_TIMEOUT``); the rounds, metrics and the final state are stored. The job's
model is published as the next version of its serving component, with its validation report
(:mod:`roost.hub.learn_publish`): the job SUCCEEDS with ``component`` = ``NAME=VERSION``, or FAILS with the
reason it could not be published (its rounds kept). At the end the SuperNode component is removed from
the devices again.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from roost.errors import RoostError
from roost.hub.contract import DeploymentCreate, LearnRound
from roost.hub.errors import HubConflictError
from roost.hub.learn_publish import publish_job_model
from roost.learn.federated_job import JobSpec, JobState, JoinInfo, run_joined_job

if TYPE_CHECKING:
    from roost.hub.store import Store

__all__ = ["MAX_QUEUED", "MAX_RUNNING", "SUPERNODE", "LearnRunner"]

log = logging.getLogger(__name__)

SUPERNODE: Final = "com.roost.FlowerSuperNode"
SUPERNODE_VERSION: Final = "1.0.0"
MAX_RUNNING: Final = 2
MAX_QUEUED: Final = 16


class LearnRunner:
    def __init__(self, store: Store, folder: Path, host: str = "127.0.0.1") -> None:
        self.store, self.folder, self.host = store, folder, host
        self._pool = ThreadPoolExecutor(max_workers=MAX_RUNNING, thread_name_prefix="learn-job")
        self._lock = threading.Lock()
        self._waiting = 0
        self._cancel = threading.Event()

    def submit(self, job: str) -> None:
        with self._lock:
            if self._cancel.is_set():
                raise HubConflictError("the hub is stopping", code="LEARN_JOBS_BUSY")
            if self._waiting >= MAX_QUEUED:
                raise HubConflictError(f"{MAX_QUEUED} learn jobs are already waiting or running; try later",
                                       code="LEARN_JOBS_BUSY")
            self._waiting += 1
        self._pool.submit(self._guarded, job)

    def close(self) -> None:
        """Cancel the running jobs (they end FAILED, their SuperLink stopped) and wait for their threads."""
        self._cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _guarded(self, job: str) -> None:
        try:
            self.run(job)
        except Exception:  # a thread of the hub: log, never die silently
            log.exception("learn job %s: the runner failed", job)
        finally:
            with self._lock:
                self._waiting -= 1

    def _deploy(self, device: str, components: dict[str, str], config: dict[str, Any] | None) -> None:
        configuration = {SUPERNODE: {"MERGE": config}} if config is not None else {}
        self.store.create_deployment(DeploymentCreate.model_validate(
            {"target": f"device:{device}", "components": components, "configuration": configuration}))

    def _publish(self, job_id: str, result: dict[str, Any]) -> tuple[JobState, dict[str, Any]]:
        """The job's final state and record once its rounds ended: SUCCEEDED with ``component`` (the version
        published from its model), or FAILED with the reason it was not published (its rounds kept)."""
        try:
            job = self.store.learn_job(job_id).model_copy(update={
                "rounds": [LearnRound.model_validate(r) for r in result["rounds"]],
                "final_metric": result["final_metric"], "centralised_metric": result["centralised_metric"]})
            return JobState.SUCCEEDED, {**result, "component": publish_job_model(self.store, job,
                                                                                 self.folder / job_id)}
        except RoostError as err:
            log.warning("learn job %s: its model was not published: %s: %s", job_id, err.code, err.message)
            why = f"{err.code}: {err.message}"
        except Exception as err:  # a job must not stay RUNNING: record it
            log.exception("learn job %s: publishing its model failed", job_id)
            why = f"LEARN_JOB_FAILED: {type(err).__name__}: {err}"
        return JobState.FAILED, {**result, "reason": f"the rounds ended but the model was not published: {why}"}

    def run(self, job_id: str) -> None:
        job = self.store.learn_job(job_id)
        paths = self.store.learn_job_data_paths(job_id)
        spec = JobSpec(job.task, job.strategy, job.rounds_planned, job.min_participants)
        joined: dict[str, dict[str, str]] = {}  # device -> its own components before the job

        def join(info: JoinInfo) -> None:
            self.store.update_learn_job(job_id, JobState.STARTING)
            ca = info.ca_cert.read_text() if info.ca_cert else ""
            for device in job.devices:
                own = {k: v for k, v in self.store.device_components(device).items() if k != SUPERNODE}
                self._deploy(device, {**own, SUPERNODE: SUPERNODE_VERSION},
                             {"job": job_id, "superlink": info.superlink, "caCert": ca, "dataPath": paths[device]})
                joined[device] = own
            self.store.update_learn_job(job_id, JobState.RUNNING)

        try:
            status = run_joined_job(job_id, spec, len(job.devices), self.folder / job_id, join, host=self.host,
                                    cancel=self._cancel)
            doc = status.as_json()
            result: dict[str, Any] = {
                "rounds": [{k: r[k] for k in ("round", "participants", "metric", "bytes")} for r in doc["rounds"]],
                "final_metric": doc["final_metric"], "centralised_metric": doc["centralised_metric"]}
            self.store.update_learn_job(job_id, *self._publish(job_id, result))
        except RoostError as err:
            log.warning("learn job %s failed: %s: %s", job_id, err.code, err.message)
            self.store.update_learn_job(job_id, JobState.FAILED, {"reason": f"{err.code}: {err.message}"})
        finally:
            for device, own in joined.items():
                try:
                    self._deploy(device, own, None)
                except RoostError as err:
                    log.warning("learn job %s: removing the SuperNode from %s: %s", job_id, device, err)
