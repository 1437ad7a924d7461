"""The component supervisor: an explicit state machine with a timeout on every step.

One :class:`Supervisor` runs the lifecycle of every component on the device, Greengrass style:

* ``install()`` runs Install (``NEW -> INSTALLED``, or ``ERRORED`` on failure);
* ``start()`` spawns Run (``STARTING -> RUNNING``; ``FINISHED`` when it exits 0) or runs Startup
  as a one-shot step (``RUNNING`` when it exits 0); neither means ``FINISHED`` at once;
* ``stop()`` runs Shutdown, then SIGTERMs the process group and SIGKILLs it after a grace
  (``STOPPING -> INSTALLED``, or ``FINISHED`` if it had finished).

**Error policy.** Every error (Run or Startup exiting non-zero or timing out, a failed Recover,
ERRORED reported by the component over IPC, a failed Install) is timestamped with ``clock``.
When ``max_errors`` of them fall within ``error_reset_time`` seconds the component goes
``BROKEN`` and stays there until :meth:`Supervisor.restart` or :meth:`Supervisor.install`.
Otherwise (except for Install failures, which the deployer handles) the processes still running
are stopped, Recover runs (with its timeout) and the component is started again after a backoff
that doubles with each error in the window (``restart_backoff = (initial, max)``; "equal jitter":
half the delay is random). A failed Recover counts as one more error; the restart still follows
unless that made the component BROKEN.

**Timeouts.** Install, Startup, Shutdown and Recover have the step's ``Timeout`` or the Greengrass
default (:meth:`StepSpec.effective_timeout <roost.agent.component_spec.StepSpec.effective_timeout>`);
Run has none unless the recipe sets one (then running longer counts as an error). SIGTERM is
followed by SIGKILL after ``stop_grace`` s. Cancelling any supervisor call or task kills the
processes it owns.

**Steps.** A step runs in ``spec.work_dir`` with :meth:`~roost.agent.component_spec.ComponentSpec.step_env`,
as :meth:`~roost.agent.component_spec.ComponentSpec.step_user`, its output in ``spec.log_path``;
``prepare(spec)`` readies the folders first (the agent chowns the work folder and creates the
Python environment). A privileged step of an agent that is not root runs unprivileged, with a
warning once per component. Every process goes to ``journal`` before it is spawned (see
:mod:`roost.agent.process`), so a restarted agent finds a crashed one's leftovers.

Every state change goes through :func:`~roost.agent.states.check_transition`, is logged once at
INFO with its reason and is passed to ``on_state(name, old, new, reason)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from roost.agent.component_spec import ComponentSpec, StepSpec, make_work_dir
from roost.agent.errors import (
    ComponentBusyError,
    ComponentNotFoundError,
    InvalidTransitionError,
    LifecycleStepError,
    LifecycleTimeoutError,
)
from roost.agent.logfile import RotatingLog
from roost.agent.process import (
    DEFAULT_GRACE,
    KILL_WAIT,
    ManagedProcess,
    ProcessJournal,
    StepResult,
    run_step,
)
from roost.agent.states import ComponentState, check_transition
from roost.errors import InvalidInputError, RoostError

logger = logging.getLogger(__name__)

S = ComponentState

#: After Startup exits, how long to wait for its output: daemons it started keep the pipes open.
STARTUP_DRAIN = 0.1

StateCallback = Callable[[str, ComponentState, ComponentState, "str | None"], None]


_Waiter = tuple[frozenset[ComponentState], "asyncio.Future[ComponentState]"]


def _state(comp: _Component) -> ComponentState:
    """The current state (a function, so that type narrowing does not survive an await)."""
    return comp.state


@dataclass(eq=False)
class _Component:
    spec: ComponentSpec
    state: ComponentState
    log: RotatingLog
    installed: bool
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    proc: ManagedProcess | None = None          # the Run process, or the Startup process group
    monitor: asyncio.Task[None] | None = None   # waits for the Run process
    recovery: asyncio.Task[None] | None = None  # Recover + backoff + restart
    errors: deque[float] = field(default_factory=deque)
    # Bumped whenever the ownership of the component's processes changes hands (start, stop,
    # error, install): a task that finds another epoch than its own leaves the component alone.
    epoch: int = 0
    waiters: list[_Waiter] = field(default_factory=list)
    privilege_warned: bool = False


class Supervisor:
    """Runs the lifecycle of the components added to it (see the module docstring)."""

    def __init__(self, on_state: StateCallback | None = None, clock: Callable[[], float] = time.monotonic,
                 *, stop_grace: float = DEFAULT_GRACE, journal: ProcessJournal | None = None,
                 prepare: Callable[[ComponentSpec], None] = make_work_dir) -> None:
        self._on_state = on_state
        self._clock = clock
        self.stop_grace = stop_grace
        self._journal = journal
        self._prepare = prepare
        self._components: dict[str, _Component] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- registry -------------------------------------------------------------------------------

    def add(self, spec: ComponentSpec, state: ComponentState = ComponentState.NEW) -> None:
        """Add a component, or replace the spec of a stopped one.

        A new component takes ``state`` as is (restored from the store; nothing is reported).
        Replacing a spec moves an existing component to ``state`` through a checked, reported
        transition (typically ``-> NEW``: the new version must be installed) and forgets its
        error history. Raises :class:`ComponentBusyError` while it runs or an operation is in
        progress; a pending restart after an error is cancelled.
        """
        comp = self._components.get(spec.name)
        if comp is None:
            self._components[spec.name] = _Component(
                spec=spec, state=state, log=RotatingLog(spec.log_path),
                installed=state not in (S.NEW, S.ERRORED, S.BROKEN))
            return
        self._check_idle(comp, "replace its spec")
        if state != comp.state:
            check_transition(comp.state, state, spec.name)
        self._cancel_recovery_nowait(comp)
        comp.epoch += 1
        if spec.log_path != comp.spec.log_path:
            comp.log.close()
            comp.log = RotatingLog(spec.log_path)
        old_version = comp.spec.version
        comp.spec = spec
        comp.errors.clear()
        comp.privilege_warned = False
        if state != comp.state:
            self._transition(comp, state, f"spec replaced ({old_version} -> {spec.version})")
        if state in (S.NEW, S.ERRORED, S.BROKEN):
            comp.installed = False

    def remove(self, name: str) -> None:
        """Forget a stopped component (pending restarts are cancelled, its log closed)."""
        comp = self._get(name)
        self._check_idle(comp, "remove it")
        self._cancel_recovery_nowait(comp)
        comp.epoch += 1
        comp.log.close()
        del self._components[name]
        for _, fut in comp.waiters:
            if not fut.done():
                fut.set_exception(ComponentNotFoundError(name))
        comp.waiters.clear()

    def state(self, name: str) -> ComponentState:
        return self._get(name).state

    def states(self) -> dict[str, ComponentState]:
        return {name: comp.state for name, comp in self._components.items()}

    def spec(self, name: str) -> ComponentSpec:
        return self._get(name).spec

    def process_ids(self, name: str) -> tuple[int, float] | None:
        """``(pgid, create_time)`` of the component's Run (or Startup) process group, if any."""
        proc = self._get(name).proc
        return (proc.pgid, proc.create_time) if proc is not None else None

    def process(self, name: str) -> ManagedProcess | None:
        """The component's Run (or Startup) process group, if any (pausing freezes its members)."""
        return self._get(name).proc

    # -- operations -----------------------------------------------------------------------------

    async def install(self, name: str) -> None:
        """Run Install: ``-> NEW -> INSTALLED``; failure: ``ERRORED`` (or ``BROKEN``) and raise.

        Allowed from NEW, INSTALLED, FINISHED, ERRORED and BROKEN (a reinstall; from BROKEN it
        also clears the error history). Raises :class:`LifecycleStepError`,
        :class:`LifecycleTimeoutError` or :class:`InvalidTransitionError`.
        """
        comp = self._get(name)
        await self._cancel_recovery(comp)
        async with comp.lock:
            await self._install_locked(comp)

    async def start(self, name: str) -> None:
        """Start an installed component: ``-> STARTING -> RUNNING`` (or ``FINISHED``).

        Allowed from INSTALLED, FINISHED and ERRORED (a pending restart is replaced by this one);
        a no-op when it is STARTING or RUNNING. BROKEN needs :meth:`restart`, NEW needs
        :meth:`install`. With Run it returns once Run is spawned; with Startup once Startup has
        exited: non-zero raises :class:`LifecycleStepError` (a timeout
        :class:`LifecycleTimeoutError`) after the component went ERRORED, and the usual
        recovery follows.
        """
        comp = self._get(name)
        await self._cancel_recovery(comp)
        async with comp.lock:
            await self._start_locked(comp, "start requested")

    async def stop(self, name: str, timeout: float | None = None) -> None:
        """Stop: Shutdown, then SIGTERM the processes, SIGKILL after ``timeout`` s of grace.

        ``timeout`` defaults to the supervisor's ``stop_grace``. The component ends INSTALLED
        (FINISHED if it had finished). Cancels a pending restart. A no-op for components that
        are not installed, not running or BROKEN. A failing Shutdown is logged, not raised.
        """
        comp = self._get(name)
        await self._cancel_recovery(comp)
        async with comp.lock:
            await self._stop_locked(comp, self.stop_grace if timeout is None else timeout)

    async def restart(self, name: str) -> None:
        """Stop (if needed), forget the error history (so BROKEN is cleared) and start again.

        A component that is not installed (NEW, or BROKEN after failed installs) is installed
        first.
        """
        comp = self._get(name)
        await self._cancel_recovery(comp)
        async with comp.lock:
            await self._stop_locked(comp, self.stop_grace)
            comp.errors.clear()
            if not comp.installed:
                await self._install_locked(comp)
            await self._start_locked(comp, "restart requested", allow_broken=True)

    def report_state(self, name: str, state: ComponentState) -> None:
        """The component reported its own state over IPC (UpdateState).

        RUNNING moves a STARTING component to RUNNING; ERRORED from STARTING/RUNNING is handled
        like a failed Run (stop, Recover, restart after backoff, or BROKEN). Reporting the state
        it is already in is a no-op; anything else raises :class:`InvalidTransitionError`
        (or :class:`~roost.errors.InvalidInputError` for states other than RUNNING/ERRORED).
        """
        comp = self._get(name)
        if state is S.RUNNING:
            if comp.state is S.STARTING:
                self._transition(comp, S.RUNNING, "reported RUNNING by the component")
            elif comp.state is not S.RUNNING:
                raise InvalidTransitionError(comp.state.value, state.value, name, "reported by the component")
        elif state is S.ERRORED:
            if comp.state in (S.STARTING, S.RUNNING):
                self._record_error(comp, "reported ERRORED by the component")
            elif comp.state is not S.ERRORED:
                raise InvalidTransitionError(comp.state.value, state.value, name, "reported by the component")
        else:
            raise InvalidInputError(f"a component can report RUNNING or ERRORED, not {state}",
                                    code="INVALID_STATE")

    async def wait_for(self, name: str, states: set[ComponentState], timeout: float) -> ComponentState:
        """Wait until the component is (or passes through) one of ``states``; return it.

        Raises :class:`LifecycleTimeoutError` after ``timeout`` seconds and
        :class:`ComponentNotFoundError` if the component is removed meanwhile.
        """
        comp = self._get(name)
        if comp.state in states:
            return comp.state
        fut: asyncio.Future[ComponentState] = asyncio.get_running_loop().create_future()
        entry = (frozenset(states), fut)
        comp.waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            wanted = "/".join(sorted(s.value for s in states))
            raise LifecycleTimeoutError(name, f"waiting for {wanted} (now {comp.state})", timeout) from None
        finally:
            with contextlib.suppress(ValueError):
                comp.waiters.remove(entry)

    async def stop_all(self, order: list[str]) -> None:
        """Stop the components in ``order`` (then any others, newest first), one at a time.

        A component that fails to stop is logged and does not keep the others running.
        """
        names = [n for n in order if n in self._components]
        names += [n for n in reversed(self._components) if n not in names]
        for name in names:
            if name not in self._components:
                continue
            try:
                await self.stop(name)
            except RoostError as err:
                logger.error("%s: could not be stopped: %s", name, err)

    async def close(self) -> None:
        """Stop everything and cancel every task; no process is left behind."""
        self._closed = True
        await self.stop_all([])
        for comp in self._components.values():
            comp.recovery = None
            comp.monitor = None
            comp.epoch += 1
        tasks = [t for t in self._tasks if not t.done() and t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=KILL_WAIT)
        for comp in self._components.values():
            proc, comp.proc = comp.proc, None
            if proc is not None:
                await proc.terminate(self.stop_grace)
            comp.log.close()

    # -- the steps ------------------------------------------------------------------------------

    async def _install_locked(self, comp: _Component) -> None:
        spec = comp.spec
        if comp.state in (S.STARTING, S.RUNNING, S.STOPPING):
            raise InvalidTransitionError(comp.state.value, S.INSTALLED.value, spec.name, "stop it first")
        await self._reap_leftover(comp)
        comp.epoch += 1
        if comp.state is S.BROKEN:
            comp.errors.clear()
        if comp.state is not S.NEW:
            self._transition(comp, S.NEW, "reinstall requested")
        comp.installed = False
        step = spec.install
        reason = "no Install step"
        try:
            self._prepare(spec)
        except (OSError, RoostError) as err:
            error = LifecycleStepError(spec.name, "install", None, [f"cannot prepare {spec.work_dir}: {err}"])
            self._record_error(comp, str(error), schedule=False)
            raise error from err
        if step is not None:
            try:
                result = await self._run_oneshot(comp, "install", step)
            except RoostError as err:
                self._record_error(comp, f"Install failed: {err}", schedule=False)
                raise
            if result is None:
                reason = "Install skipped (Skipif)"
            elif result.exit_code != 0:
                error = LifecycleStepError(spec.name, "install", result.exit_code, result.stderr_tail)
                self._record_error(comp, str(error), schedule=False)
                raise error
            else:
                reason = "Install exited with code 0"
        comp.installed = True
        self._transition(comp, S.INSTALLED, reason)

    async def _start_locked(self, comp: _Component, reason: str, *, allow_broken: bool = False) -> None:
        spec = comp.spec
        if comp.state in (S.STARTING, S.RUNNING):
            return
        if comp.state is S.BROKEN and not allow_broken:
            raise InvalidTransitionError(comp.state.value, S.STARTING.value, spec.name,
                                         "the component is BROKEN: restart or reinstall it")
        if not comp.installed:
            raise InvalidTransitionError(comp.state.value, S.STARTING.value, spec.name,
                                         "the component is not installed")
        check_transition(comp.state, S.STARTING, spec.name)
        await self._reap_leftover(comp)
        comp.epoch += 1
        epoch = comp.epoch
        self._transition(comp, S.STARTING, reason)
        try:
            run = self._runnable(comp, "run", spec.run)
            startup = None if run is not None else self._runnable(comp, "startup", spec.startup)
        except RoostError as err:
            self._record_error(comp, f"cannot start: {err}", schedule=False)
            raise
        if run is None and startup is None:
            what = "Run/Startup skipped (Skipif)" if spec.run or spec.startup else "no Run or Startup step"
            self._transition(comp, S.FINISHED, what)
            return
        step_name, step = ("run", run) if run is not None else ("startup", startup)
        assert step is not None
        try:
            self._prepare(spec)
            proc = await ManagedProcess.spawn(step.script, env=self._env(comp, step_name, step),
                                              cwd=spec.work_dir, log=comp.log, name=spec.name, step=step_name,
                                              run_as=comp.spec.step_user(step), journal=self._journal)
        except (OSError, RoostError) as err:
            error = LifecycleStepError(spec.name, step_name, None, [str(err)])
            self._record_error(comp, str(error))
            raise error from err
        comp.proc = proc
        if run is not None:
            self._transition(comp, S.RUNNING, f"Run started (pid {proc.pid})")
            comp.monitor = self._spawn_task(self._monitor_run(comp, proc, epoch, run.timeout),
                                            f"roost-run-{spec.name}")
            return
        timeout = step.effective_timeout("startup")
        try:
            async with asyncio.timeout(timeout):
                code = await proc.wait(drain=STARTUP_DRAIN)
        except TimeoutError:
            if comp.epoch != epoch:  # taken over (reported ERRORED, ...)
                return
            comp.proc = None
            await proc.terminate(self.stop_grace)
            timeout_error = LifecycleTimeoutError(spec.name, "startup", timeout)
            self._record_error(comp, str(timeout_error))
            raise timeout_error from None
        except asyncio.CancelledError:
            if comp.proc is proc:
                comp.proc = None
                proc.kill()
            if comp.epoch == epoch and _state(comp) is S.STARTING:
                self._transition(comp, S.ERRORED, "start cancelled")
            raise
        if comp.epoch != epoch or comp.proc is not proc:
            return
        if code == 0:
            # The group stays recorded: daemons started by Startup live in it until stop().
            if _state(comp) is S.STARTING:  # (already RUNNING if the component said so)
                self._transition(comp, S.RUNNING, "Startup exited with code 0")
            return
        comp.proc = None
        error = LifecycleStepError(spec.name, "startup", code, proc.stderr_tail)
        self._record_error(comp, str(error))
        await proc.terminate(self.stop_grace)
        raise error

    async def _monitor_run(self, comp: _Component, proc: ManagedProcess, epoch: int,
                           timeout: float | None) -> None:
        name = comp.spec.name
        try:
            try:
                async with asyncio.timeout(timeout):
                    code: int | None = await proc.wait()
            except TimeoutError:
                code = None
            if comp.epoch != epoch or comp.proc is not proc:
                return
            comp.proc = None
            if code is None:
                assert timeout is not None
                self._record_error(comp, str(LifecycleTimeoutError(name, "run", timeout)))
            elif code == 0:
                self._transition(comp, S.FINISHED, "Run exited with code 0")
            else:
                self._record_error(comp, str(LifecycleStepError(name, "run", code, proc.stderr_tail)))
            # Stop whatever Run left behind (or Run itself, after its timeout).
            await proc.terminate(self.stop_grace)
        except asyncio.CancelledError:
            if comp.epoch == epoch and comp.proc is proc:  # not handed over: nobody else will kill it
                comp.proc = None
                proc.kill()
            raise
        except Exception:
            logger.exception("%s: the Run monitor failed", name)
            proc.kill()

    async def _stop_locked(self, comp: _Component, grace: float) -> None:
        spec = comp.spec
        comp.epoch += 1
        proc = comp.proc
        await self._cancel_task(comp.monitor)
        comp.monitor = None
        if comp.state in (S.NEW, S.INSTALLED, S.BROKEN) or not comp.installed:
            await self._reap_leftover(comp, grace)
            return
        final = S.FINISHED if comp.state is S.FINISHED else S.INSTALLED
        self._transition(comp, S.STOPPING, "stop requested")
        try:
            if spec.shutdown is not None:
                try:
                    result = await self._run_oneshot(comp, "shutdown", spec.shutdown)
                except RoostError as err:
                    logger.warning("%s: Shutdown failed: %s", spec.name, err)
                else:
                    if result is not None and result.exit_code != 0:
                        logger.warning("%s", LifecycleStepError(spec.name, "shutdown", result.exit_code,
                                                                result.stderr_tail))
            reason = "stopped"
            if proc is not None:
                code = await proc.terminate(grace)
                reason = f"stopped (exit code {code})"
        except asyncio.CancelledError:
            if proc is not None:
                proc.kill()
            comp.proc = None
            self._transition(comp, final, "stop cancelled: processes killed")
            raise
        comp.proc = None
        self._transition(comp, final, reason)

    async def _recover(self, comp: _Component, epoch: int) -> None:
        """After an error: stop leftovers, run Recover, back off, start again."""
        spec = comp.spec
        try:
            proc, comp.proc = comp.proc, None
            if proc is not None:
                await self._cancel_task(comp.monitor)
                comp.monitor = None
                await proc.terminate(self.stop_grace)
            if spec.recover is not None:
                failure: str | None = None
                try:
                    result = await self._run_oneshot(comp, "recover", spec.recover)
                except RoostError as err:
                    failure = f"Recover failed: {err}"
                else:
                    if result is not None and result.exit_code != 0:
                        failure = str(LifecycleStepError(spec.name, "recover", result.exit_code,
                                                         result.stderr_tail))
                if failure is not None:
                    if comp.epoch != epoch:
                        return
                    self._record_error(comp, failure, schedule=False)
                    epoch = comp.epoch
                    if comp.state is S.BROKEN:
                        return
            delay = spec.restart_delay(len(comp.errors))
            logger.info("%s: restarting in %.2f s (%d error(s) within %g s)", spec.name, delay,
                        len(comp.errors), spec.error_reset_time)
            await asyncio.sleep(delay)
            async with comp.lock:
                if comp.epoch != epoch or comp.state is not S.ERRORED:
                    return
                if comp.recovery is asyncio.current_task():
                    comp.recovery = None  # a failing start schedules the next recovery itself
                with contextlib.suppress(LifecycleStepError, LifecycleTimeoutError):
                    await self._start_locked(comp, "restart after error")
        except RoostError as err:
            logger.error("%s: recovery failed: %s", spec.name, err)
        finally:
            if comp.recovery is asyncio.current_task():
                comp.recovery = None

    # -- helpers --------------------------------------------------------------------------------

    def _transition(self, comp: _Component, new: ComponentState, reason: str | None) -> None:
        old = comp.state
        name = comp.spec.name
        check_transition(old, new, name)
        comp.state = new
        logger.info("%s: %s -> %s (%s)", name, old, new, reason or "no reason given")
        for states, fut in comp.waiters:
            if new in states and not fut.done():
                fut.set_result(new)
        if self._on_state is not None:
            try:
                self._on_state(name, old, new, reason)
            except Exception:
                logger.exception("%s: state callback failed for %s -> %s", name, old, new)

    def _record_error(self, comp: _Component, reason: str, *, schedule: bool = True) -> None:
        """Count one error; go ERRORED, then BROKEN or (if ``schedule``) start the recovery."""
        spec = comp.spec
        now = self._clock()
        comp.errors.append(now)
        while comp.errors and now - comp.errors[0] > spec.error_reset_time:
            comp.errors.popleft()
        comp.epoch += 1
        if comp.state is S.ERRORED:
            logger.warning("%s: another error while ERRORED: %s", spec.name, reason)
        else:
            self._transition(comp, S.ERRORED, reason)
        if len(comp.errors) >= spec.max_errors:
            self._transition(comp, S.BROKEN, f"{len(comp.errors)} errors within {spec.error_reset_time:g} s; "
                                             f"last: {reason}")
            return
        if schedule and not self._closed and (comp.recovery is None or comp.recovery.done()):
            comp.recovery = self._spawn_task(self._recover(comp, comp.epoch), f"roost-recover-{spec.name}")

    def _env(self, comp: _Component, step_name: str, step: StepSpec) -> dict[str, str]:
        if step.requires_privilege and not comp.privilege_warned and os.geteuid() != 0:
            comp.privilege_warned = True
            logger.warning("%s: the %s step requires privilege but the agent is not root; "
                           "running it as the agent's user", comp.spec.name, step_name)
        return comp.spec.step_env(step)

    @staticmethod
    def _runnable(comp: _Component, step_name: str, step: StepSpec | None) -> StepSpec | None:
        """``step`` unless it is absent or its Skipif says to skip it."""
        if step is not None and comp.spec.skips(step):
            logger.info("%s: %s step skipped (%s)", comp.spec.name, step_name, step.skipif)
            return None
        return step

    async def _run_oneshot(self, comp: _Component, step_name: str, step: StepSpec) -> StepResult | None:
        """Run a one-shot step; None if skipped. Raises LifecycleTimeoutError/LifecycleStepError."""
        spec = comp.spec
        if self._runnable(comp, step_name, step) is None:
            return None
        timeout = step.effective_timeout(step_name)
        try:
            self._prepare(spec)
        except (OSError, RoostError) as err:
            raise LifecycleStepError(spec.name, step_name, None, [f"cannot prepare {spec.work_dir}: {err}"]) from err
        try:
            result = await run_step(step.script, env=self._env(comp, step_name, step), cwd=spec.work_dir,
                                    log=comp.log, timeout=timeout, name=spec.name, step=step_name,
                                    grace=self.stop_grace, run_as=comp.spec.step_user(step), journal=self._journal)
        except OSError as err:
            raise LifecycleStepError(spec.name, step_name, None, [str(err)]) from err
        logger.info("%s: %s step exited with code %d", spec.name, step_name, result.exit_code)
        return result

    def _get(self, name: str) -> _Component:
        comp = self._components.get(name)
        if comp is None:
            raise ComponentNotFoundError(name)
        return comp

    def _check_idle(self, comp: _Component, what: str) -> None:
        if comp.state in (S.STARTING, S.RUNNING, S.STOPPING) or comp.proc is not None or comp.lock.locked():
            raise ComponentBusyError(comp.spec.name,
                                     f"is {comp.state} or busy; stop it before trying to {what}")

    def _spawn_task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _reap_leftover(self, comp: _Component, grace: float | None = None) -> None:
        """Terminate a process group still attached to a component that is not running."""
        proc, comp.proc = comp.proc, None
        if proc is not None:
            await self._cancel_task(comp.monitor)
            comp.monitor = None
            await proc.terminate(self.stop_grace if grace is None else grace)

    @staticmethod
    async def _cancel_task(task: asyncio.Task[None] | None) -> None:
        if task is None or task.done() or task is asyncio.current_task():
            return
        task.cancel()
        await asyncio.wait([task], timeout=KILL_WAIT)

    async def _cancel_recovery(self, comp: _Component) -> None:
        task, comp.recovery = comp.recovery, None
        await self._cancel_task(task)

    @staticmethod
    def _cancel_recovery_nowait(comp: _Component) -> None:
        task, comp.recovery = comp.recovery, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
