"""The hub's runner of federated learning jobs (``docs/learning.md``).

A job created PENDING (``POST /v1/learn/jobs``) is submitted here; at most :data:`MAX_RUNNING` run at
once (the rest wait in the executor's queue, at most :data:`MAX_QUEUED`). Running one: the SuperLink
starts in this hub process (``run_joined_job``, TLS with the job's CA, on ``host``, an address the
devices reach); then one hub deployment per device (``device:NAME``) adds ``com.roost.FlowerSuperNode``
with the job's ``superlink``, ``caCert`` and ``job`` and that device's own ``dataPath``; the ServerApp
waits for them (``LEARN_JOIN_TIMEOUT``); each round is stored as it lands (the ServerApp's
``rounds.jsonl`` is read every half second), then the metrics and the final state. The job's model is
published as the next version of its serving component, with its validation report
(:mod:`roost.hub.learn_publish`): the job SUCCEEDS with ``component`` = ``NAME=VERSION``, or FAILS with the
reason it could not be published (its rounds kept). At the end the SuperNode component is removed from
the devices again.

A job's SuperLink lives in the hub process that runs it: the job records that process (host, pid, runner
id). When a hub starts, :meth:`LearnRunner.recover` fails each unfinished job whose process is gone
(``LEARN_HUB_RESTARTED``, naming the state and round it was in) and gives its devices back their own
components. Jobs of a hub process still alive (another ``--workers`` process, another host) are left alone.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from roost.errors import RoostError
from roost.hub.contract import DeploymentCreate, LearnRound
from roost.hub.errors import HubConflictError
from roost.hub.learn_publish import publish_job_model
from roost.learn.federated_job import JobSpec, JobState, JoinInfo, run_joined_job
from roost.learn.superlink import kill_leftovers

if TYPE_CHECKING:
    from roost.hub.contract import LearnJob
    from roost.hub.store import Store

__all__ = ["MAX_QUEUED", "MAX_RUNNING", "SUPERNODE", "LearnRunner"]

log = logging.getLogger(__name__)

SUPERNODE: Final = "com.roost.FlowerSuperNode"
SUPERNODE_VERSION: Final = "1.0.0"
MAX_RUNNING: Final = 2
MAX_QUEUED: Final = 16
#: A job with no runner recorded this long after its last change was left by a hub stopped between
#: creating and submitting it.
UNCLAIMED_AGE: Final = timedelta(minutes=1)
#: The runners alive in this process (several in-process hubs in tests share one pid).
_LIVE: set[str] = set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class LearnRunner:
    def __init__(self, store: Store, folder: Path, host: str = "127.0.0.1") -> None:
        self.store, self.folder, self.host = store, folder, host
        self._pool = ThreadPoolExecutor(max_workers=MAX_RUNNING, thread_name_prefix="learn-job")
        self._lock = threading.Lock()
        self._waiting = 0
        self._cancel = threading.Event()
        self.runner_id = uuid.uuid4().hex
        self.identity: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "id": self.runner_id}
        _LIVE.add(self.runner_id)

    def submit(self, job: str) -> None:
        """Queue ``job`` (a blocking call: it records this process as the job's runner)."""
        with self._lock:
            if self._cancel.is_set():
                raise HubConflictError("the hub is stopping", code="LEARN_JOBS_BUSY")
            if self._waiting >= MAX_QUEUED:
                raise HubConflictError(f"{MAX_QUEUED} learn jobs are already waiting or running; try later",
                                       code="LEARN_JOBS_BUSY")
            self._waiting += 1
        try:
            self.store.claim_learn_job(job, self.identity)
        except BaseException:
            with self._lock:
                self._waiting -= 1
            raise
        self._pool.submit(self._guarded, job)

    def close(self) -> None:
        """Cancel the running jobs (they end FAILED, their SuperLink stopped) and wait for their threads."""
        self._cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        _LIVE.discard(self.runner_id)

    def _orphaned(self, job: LearnJob, runner: dict[str, Any]) -> bool:
        """Whether the hub process recorded as running ``job`` is gone."""
        if not runner:
            return self.store.clock() - job.updated_at > UNCLAIMED_AGE
        if runner.get("host") != self.identity["host"]:
            return False  # another host's hub: its own restart recovers it
        pid = int(runner.get("pid", 0))
        if pid == os.getpid():
            return runner.get("id") not in _LIVE
        return pid <= 0 or not _alive(pid)

    def recover(self) -> list[str]:
        """Fail the jobs a stopped hub process left unfinished (``LEARN_HUB_RESTARTED``) and remove the
        SuperNode from their devices, keeping each device's own components; returns those jobs' ids."""
        failed = []
        unfinished = self.store.unfinished_learn_jobs()
        orphans = [found.job for found in unfinished if self._orphaned(found.job, found.runner)]
        busy = {d for found in unfinished if found.job not in orphans and found.job.status != JobState.PENDING
                for d in found.job.devices}  # devices whose SuperNode a live job deployed
        for job in orphans:
            at = f"at round {job.rounds[-1].round}" if job.rounds else "before its first round"
            reason = (f"LEARN_HUB_RESTARTED: the hub restarted while the job was {job.status} {at}; start it again")
            log.warning("learn job %s: %s", job.job, reason)
            kill_leftovers(self.folder / job.job)  # a hub killed outside systemd leaves its SuperLink running
            self.store.update_learn_job(job.job, JobState.FAILED, {"reason": reason})
            failed.append(job.job)
            for device in job.devices:
                current = self.store.device_components(device)
                if SUPERNODE not in current or device in busy:  # busy: a live job's SuperNode
                    continue
                try:
                    self._deploy(device, {k: v for k, v in current.items() if k != SUPERNODE}, None)
                except RoostError as err:
                    log.warning("learn job %s: removing the SuperNode from %s: %s", job.job, device, err)
        return failed

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

        def on_round(doc: dict[str, Any]) -> None:
            self.store.record_learn_round(job_id, doc)

        try:
            status = run_joined_job(job_id, spec, len(job.devices), self.folder / job_id, join, host=self.host,
                                    cancel=self._cancel, on_round=on_round)
            doc = status.as_json()
            result: dict[str, Any] = {"rounds": doc["rounds"], "final_metric": doc["final_metric"],
                                      "centralised_metric": doc["centralised_metric"]}
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
