"""One registration (or upgrade, or uninstall) of a device over SSH: a state machine of steps.

Steps, each with a timeout, each persisted with its status, time and message when it changes:

* ``connect`` — fetch the device's host key and check it (given up front, pinned, or pinned now);
* ``facts`` — log in with the hub's key and read arch, OS, memory, CPUs, accelerators, Python;
* ``wheel`` — the wheel of the hub's Roost (built once; :mod:`roost.provision.dist`);
* the playbook's tasks (:mod:`roost.provision.runner`): ``become``, ``create venv``, ``fetch wheel``,
  ``install roost``, ``agent root``, ``start agent`` (enrols on the first run), ``service unit`` (the
  systemd unit, :mod:`roost.provision.service_unit`; where systemd runs the agent is handed over to it)
  (``stop agent`` first on an upgrade; ``remove service unit`` and ``uninstall`` to remove);
* ``report`` — wait until the agent has reported to the hub (device ONLINE); ``revoke`` on uninstall.

Registrations run as tasks of the hub process (at most :data:`MAX_CONCURRENT` at once; the playbook in
a worker thread). The hub creates the one-time enrolment token itself and hands it to the playbook's
prompt; it is never stored, logged or shown. A failure ends the run FAILED with the step, the host and
the message; the same ``roost device add`` again resumes (every task is idempotent, an enrolled device
is started without a new token).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from roost.errors import RoostError
from roost.hub.contract import DeviceStatus
from roost.hub.contract.provision import (
    PIP_KEYS,
    PinnedHostKey,
    ProvisionRun,
    Registration,
    RegistrationCreate,
    RegistrationStatus,
    Step,
    StepStatus,
)
from roost.hub.errors import HubConflictError, HubInvalidInputError, HubNotFoundError
from roost.hub.names import check_name
from roost.hub.store import Store
from roost.provision import dist, facts, runner
from roost.provision.errors import ProvisionError
from roost.provision.host_keys import HostKey, check_host_key, parse_host_key
from roost.provision.identity import HubIdentity, ensure_identity
from roost.provision.target import SshTarget, parse_target

logger = logging.getLogger(__name__)

MAX_CONCURRENT = 2
#: Runs a hub process holds (running or waiting for a slot); more are refused (PROVISION_BUSY).
MAX_QUEUED = 32
TIMEOUTS = {"connect": 30.0, "facts": 60.0, "wheel": 900.0, "report": 120.0, "revoke": 30.0}
MIN_PYTHON = (3, 11)
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,62}")


@dataclass
class _Job:
    registration: str
    kind: str
    device: str
    target: SshTarget
    hub_url: str
    host_key: HostKey | None
    group: str | None
    labels: dict[str, str]
    become: bool
    become_password: str | None
    pip: dict[str, str]
    wheelhouse: bool


class _Progress:
    """The steps of one run, persisted on every change (from the event loop or the runner's thread)."""

    def __init__(self, store: Store, registration: str, steps: list[Step]) -> None:
        self.store, self.registration, self.steps = store, registration, steps
        self._lock = threading.Lock()
        self._started: dict[str, float] = {}

    def set(self, name: str, status: StepStatus, message: str | None = None) -> None:
        with self._lock:
            step = next((s for s in self.steps if s.name == name), None)
            if step is None:
                if status in (StepStatus.RUNNING, StepStatus.SKIPPED):
                    if status == StepStatus.RUNNING:
                        self._started[name] = time.monotonic()
                    return  # a task of another kind of run (skipped), or not known to end yet
                step = Step(name=name)
                self.steps.insert(len(self.steps) - 1, step)
            now = self.store.clock()
            if status == StepStatus.RUNNING:
                step.started_at, step.ended_at, step.seconds, step.message = now, None, None, None
                self._started[name] = time.monotonic()
            else:
                step.ended_at = now
                if name in self._started:
                    step.seconds = round(time.monotonic() - self._started[name], 3)
                if step.started_at is None:
                    step.started_at = now
            step.status = status
            if message is not None:
                step.message = message[:2000]
            steps = [s.model_copy() for s in self.steps]
        self.store.update_registration(self.registration, steps=steps)

    def running(self) -> str | None:
        with self._lock:
            return next((s.name for s in self.steps if s.status == StepStatus.RUNNING), None)


def _steps(kind: str, become: bool) -> list[Step]:
    tasks = runner.playbook_tasks()
    if kind == "uninstall":
        names = ["connect", *(["become"] if become else []), "stop agent", "uninstall", "revoke"]
    else:
        skip = {"uninstall"} | ({"stop agent"} if kind == "add" else set()) | (set() if become else {"become"})
        names = ["connect", "facts", "wheel", *(t for t in tasks if t not in skip), "report"]
    return [Step(name=n) for n in names]


class Provisioner:
    """Starts registrations and runs them in the background; one per hub process."""

    def __init__(self, store: Store, root: Path, *, max_concurrent: int = MAX_CONCURRENT) -> None:
        self.store, self.root = store, root
        self._max = max_concurrent
        self._slots: asyncio.Semaphore | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel = threading.Event()

    def identity(self) -> HubIdentity:
        return ensure_identity(self.root)

    # -- starting runs ---------------------------------------------------------------------------

    async def add(self, body: RegistrationCreate) -> Registration:
        check_name(body.name, "device name")
        if body.group is not None:
            check_name(body.group, "group name")
        target = parse_target(body.ssh)
        expected = parse_host_key(body.host_key) if body.host_key else None
        labels = _check_labels(body.labels)
        job = _Job("", "add", body.name, target, _check_url(body.hub_url), expected, body.group, labels, body.become,
                   body.become_password.get_secret_value() if body.become_password else None,
                   _check_pip(body.pip), body.wheelhouse)
        return await self._start(job)

    async def again(self, name: str, kind: str, body: ProvisionRun) -> Registration:
        """An ``upgrade`` or ``uninstall`` run of a device registered over SSH (its last target and become)."""
        last = await asyncio.to_thread(self.store.last_registration, name)
        await asyncio.to_thread(self.store.get_device, name)  # DEVICE_NOT_FOUND
        hub_url = body.hub_url
        if kind == "upgrade" and not hub_url:
            raise HubInvalidInputError("give the hub's URL as the device reaches it (hub_url)",
                                       code="INVALID_ARGUMENT")
        job = _Job("", kind, name, parse_target(last.target), _check_url(hub_url) if hub_url else "", None, None,
                   dict(last.labels), last.become,
                   body.become_password.get_secret_value() if body.become_password else None,
                   _check_pip(body.pip), body.wheelhouse)
        return await self._start(job)

    async def _start(self, job: _Job) -> Registration:
        if len(self._tasks) >= MAX_QUEUED:
            raise HubConflictError(f"this hub process already runs or queues {len(self._tasks)} provisioning runs; "
                                   "retry when some have ended", code="PROVISION_BUSY")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max)
        registration = await asyncio.to_thread(self.store.create_registration, job.device, job.kind, str(job.target),
                                               job.become, _steps(job.kind, job.become), job.labels)
        job.registration = registration.id
        task = asyncio.get_running_loop().create_task(self._run(job, registration.steps))
        self._tasks[registration.id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(registration.id, None))
        return registration

    async def stop(self) -> None:
        """Cancel the runs of this process (the hub is stopping); they end FAILED / PROVISION_INTERRUPTED."""
        self._cancel.set()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def pin(self, host: str, port: int, key_text: str) -> PinnedHostKey:
        key = parse_host_key(key_text)
        return await asyncio.to_thread(self.store.pin_host_key, host.lower(), port, key.line, key.fingerprint)

    # -- one run ---------------------------------------------------------------------------------

    async def _run(self, job: _Job, steps: list[Step]) -> None:
        progress = _Progress(self.store, job.registration, steps)
        assert self._slots is not None
        try:
            async with self._slots:
                await asyncio.to_thread(self.store.update_registration, job.registration,
                                        status=RegistrationStatus.RUNNING)
                await self._steps(job, progress)
            await asyncio.to_thread(self.store.update_registration, job.registration,
                                    status=RegistrationStatus.SUCCEEDED, error_code=None, message=None)
            logger.info("%s of device %s on %s succeeded", job.kind, job.device, job.target)
        except asyncio.CancelledError:
            await asyncio.to_thread(self._fail, job, progress, ProvisionError(
                "the hub stopped during this run; run it again to resume", code="PROVISION_INTERRUPTED"))
            raise
        except RoostError as err:
            await asyncio.to_thread(self._fail, job, progress, err)
        except Exception as err:
            logger.exception("%s of device %s failed unexpectedly", job.kind, job.device)
            await asyncio.to_thread(self._fail, job, progress,
                                    ProvisionError(f"unexpected error: {type(err).__name__}: {err}"))

    def _fail(self, job: _Job, progress: _Progress, err: RoostError) -> None:
        step = progress.running()
        if step is not None:
            progress.set(step, StepStatus.FAILED, err.message)
        logger.warning("%s of device %s on %s failed (%s): %s", job.kind, job.device, job.target, err.code,
                       err.message)
        self.store.update_registration(job.registration, status=RegistrationStatus.FAILED, error_code=err.code,
                                       message=err.message)

    async def _step(self, progress: _Progress, name: str, work: Any) -> Any:
        progress_set = asyncio.to_thread
        await progress_set(progress.set, name, StepStatus.RUNNING)
        try:
            async with asyncio.timeout(TIMEOUTS[name]):
                result = await work
        except TimeoutError as err:
            raise ProvisionError(f"step {name} did not end within {TIMEOUTS[name]:g} s",
                                 code="PROVISION_STEP_TIMEOUT") from err
        await progress_set(progress.set, name, StepStatus.OK)
        return result

    async def _steps(self, job: _Job, progress: _Progress) -> None:
        identity = await asyncio.to_thread(self.identity)
        key = await self._step(progress, "connect", self._connect(job))
        labels = dict(job.labels)
        python = "/usr/bin/python3"
        if job.kind != "uninstall":
            found: facts.Facts = await self._step(progress, "facts", self._facts(job, identity, key))
            labels = {**found.labels(), **job.labels}
            python = found.values["python"]
            await asyncio.to_thread(self.store.update_registration, job.registration, labels=labels)
        extravars: dict[str, Any] = {"roost_state": {"add": "present", "upgrade": "upgrade"}.get(job.kind, "absent"),
                                     "roost_home": f"/home/{job.target.user}", "roost_become": job.become,
                                     "roost_device_name": job.device, "roost_hub_url": job.hub_url,
                                     "roost_labels": [f"{k}={v}" for k, v in labels.items()],
                                     "roost_pip_env": dict(job.pip), "roost_wheel_url": "", "roost_wheel_name": "",
                                     "roost_wheel_sha256": ""}
        if job.kind != "uninstall":
            extravars["roost_home"] = found.values.get("home") or extravars["roost_home"]
            wheel = await self._step(progress, "wheel", asyncio.to_thread(
                dist.ensure_wheel, self.root, rebuild=job.kind == "upgrade"))
            extravars.update(roost_wheel_url=f"{job.hub_url}/v1/dist/{wheel.name}", roost_wheel_name=wheel.name,
                             roost_wheel_sha256=wheel.sha256)
            if job.wheelhouse:
                if not dist.has_wheelhouse(self.root):
                    raise ProvisionError("the hub has no wheelhouse: run `roost hub wheelhouse build` first",
                                         code="WHEELHOUSE_MISSING")
                extravars["roost_pip_env"] = {"PIP_NO_INDEX": "1",
                                              "PIP_FIND_LINKS": f"{job.hub_url}/v1/dist/wheelhouse/"}
        token = None
        if job.kind == "add" and not await asyncio.to_thread(self._enrolled, job.device):
            token = (await asyncio.to_thread(self.store.create_enroll_token, job.group, 3600)).token
        run = runner.PlaybookRun(ident=job.registration, target=job.target, host_key=key, identity=identity,
                                 python=python, extravars=extravars, runs_dir=self.root / "provision" / "runs",
                                 enroll_token=token, become_password=job.become_password, on_step=progress.set,
                                 cancel=self._cancel)
        started = self.store.clock()
        await asyncio.to_thread(runner.run_playbook, run)
        if job.kind == "uninstall":
            await self._step(progress, "revoke", asyncio.to_thread(self._revoke, job.device))
        else:
            await self._step(progress, "report", self._reported(job.device, started))

    async def _connect(self, job: _Job) -> HostKey:
        seen = await facts.fetch_host_key(job.target)
        pinned_line = await asyncio.to_thread(self.store.pinned_host_key, job.target.host, job.target.port)
        pinned = parse_host_key(pinned_line) if pinned_line else None
        check_host_key(job.target, seen, pinned, job.host_key)
        if pinned is None or pinned.line != seen.line:
            await asyncio.to_thread(self.store.pin_host_key, job.target.host, job.target.port, seen.line,
                                    seen.fingerprint)
            logger.info("pinned the host key of %s: %s", job.target.known_hosts_name, seen.fingerprint)
        await asyncio.to_thread(self.store.update_registration, job.registration,
                                host_key_fingerprint=seen.fingerprint)
        return seen

    async def _facts(self, job: _Job, identity: HubIdentity, key: HostKey) -> facts.Facts:
        found = await facts.gather(job.target, identity, key)
        python = found.values.get("python", "")
        version = found.python_version
        if not python or version is None or version < MIN_PYTHON or "python_venv" not in found.values:
            raise ProvisionError(
                f"{job.target} has no usable Python: Roost needs python3 >= {'.'.join(map(str, MIN_PYTHON))} "
                f"with its venv module (found {python or 'none'} {found.values.get('python_version', '')}"
                f"{'' if 'python_venv' in found.values else '; no venv/ensurepip: apt install python3-venv'})",
                code="PYTHON_UNSUITABLE")
        return found

    def _enrolled(self, name: str) -> bool:
        try:
            self.store.get_device(name)
        except HubNotFoundError:
            return False
        return True

    def _revoke(self, name: str) -> None:
        try:
            self.store.revoke_device(name)
        except HubNotFoundError:
            pass

    async def _reported(self, name: str, since: datetime) -> None:
        """Until the device's agent has called the hub since the playbook started it."""
        from roost.hub.store import SEEN_THROTTLE

        while True:
            try:
                device = await asyncio.to_thread(self.store.get_device, name)
            except HubNotFoundError:
                device = None
            if device is not None and device.status == DeviceStatus.ONLINE and device.last_seen_at is not None \
                    and device.last_seen_at >= since - SEEN_THROTTLE:
                return
            await asyncio.sleep(0.5)


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not _LABEL.fullmatch(key):
            raise HubInvalidInputError(f"label key {key!r}: letters, digits and _.:/- (at most 63)",
                                       code="INVALID_ARGUMENT")
        if len(value) > 200 or any(c in value for c in "\n\r\0"):
            raise HubInvalidInputError(f"label {key}: the value is too long or has a line break",
                                       code="INVALID_ARGUMENT")
    return dict(labels)


def _check_pip(pip: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(pip) - set(PIP_KEYS))
    if unknown:
        raise HubInvalidInputError(f"pip settings {', '.join(unknown)} are not accepted (use {', '.join(PIP_KEYS)})",
                                   code="INVALID_ARGUMENT")
    return {k: str(v)[:2000] for k, v in pip.items()}


def _check_url(url: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
        raise HubInvalidInputError(f"hub URL {url!r}: expected http(s)://host[:port]", code="INVALID_ARGUMENT")
    return url.rstrip("/")
