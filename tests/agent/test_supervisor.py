"""The supervisor: lifecycle steps and the state machine, with real processes and short timeouts.

The helpers at the top are shared with ``test_supervisor_process.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import psutil
import pytest

from roost.agent.component_spec import StepSpec
from roost.agent.errors import (
    ComponentBusyError,
    ComponentNotFoundError,
    InvalidTransitionError,
    LifecycleStepError,
    LifecycleTimeoutError,
)
from roost.agent.states import ComponentState
from roost.agent.supervisor import Supervisor
from roost.errors import InvalidInputError

from .supervisor_helpers import Recorder, gone, make_spec, read_pid, wait_gone

S = ComponentState


# -- Run ---------------------------------------------------------------------------------------

async def test_run_exit_0_finishes(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, rec = sup
    supervisor.add(make_spec(tmp_path, run="exit 0"))
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    assert await supervisor.wait_for("com.example.A", {S.FINISHED}, 5) is S.FINISHED
    assert rec.path("com.example.A") == [S.INSTALLED, S.STARTING, S.RUNNING, S.FINISHED]
    assert supervisor.process_ids("com.example.A") is None
    reasons = [r for *_, r in rec.calls]
    assert reasons[-1] == "Run exited with code 0"


async def test_run_failing_three_times_goes_broken_with_recover_between(
        sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, rec = sup
    supervisor.add(make_spec(tmp_path, run="echo boom >&2; exit 1",
                             recover="echo recovered >> recover.count"))
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    assert await supervisor.wait_for("com.example.A", {S.BROKEN}, 10) is S.BROKEN
    assert rec.path("com.example.A") == [
        S.INSTALLED,
        S.STARTING, S.RUNNING, S.ERRORED,
        S.STARTING, S.RUNNING, S.ERRORED,
        S.STARTING, S.RUNNING, S.ERRORED, S.BROKEN]
    work = tmp_path / "work" / "com.example.A"
    assert (work / "recover.count").read_text().splitlines() == ["recovered", "recovered"]
    errored_reasons = [r for _, _, new, r in rec.calls if new is S.ERRORED]
    assert all(r is not None and "exit code 1" in r and "boom" in r for r in errored_reasons)
    # BROKEN stays BROKEN: no restart is scheduled, start() refuses.
    await asyncio.sleep(0.4)
    assert supervisor.state("com.example.A") is S.BROKEN
    with pytest.raises(InvalidTransitionError, match="BROKEN"):
        await supervisor.start("com.example.A")


async def test_restart_clears_broken(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, _ = sup
    supervisor.add(make_spec(tmp_path, run="if [ -f ok ]; then exec sleep 100; else exit 3; fi"))
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    await supervisor.wait_for("com.example.A", {S.BROKEN}, 10)
    (tmp_path / "work" / "com.example.A" / "ok").touch()
    await supervisor.restart("com.example.A")
    assert supervisor.state("com.example.A") is S.RUNNING
    ids = supervisor.process_ids("com.example.A")
    assert ids is not None
    pgid, create_time = ids
    assert psutil.Process(pgid).create_time() == pytest.approx(create_time, abs=0.01)
    await asyncio.sleep(0.2)
    assert supervisor.state("com.example.A") is S.RUNNING
    await supervisor.stop("com.example.A")
    assert supervisor.state("com.example.A") is S.INSTALLED
    assert wait_gone(pgid)


async def test_errors_outside_the_reset_window_do_not_break(tmp_path: Path) -> None:
    now = [0.0]
    rec = Recorder()
    supervisor = Supervisor(on_state=rec, clock=lambda: now[0], stop_grace=1.0)
    try:
        supervisor.add(make_spec(tmp_path, run="exit 1", error_reset_time=10.0, max_errors=2))
        await supervisor.install("com.example.A")
        for _ in range(3):
            await supervisor.start("com.example.A")
            await supervisor.wait_for("com.example.A", {S.ERRORED}, 5)
            await supervisor.stop("com.example.A")
            now[0] += 11.0  # the previous error falls out of the window
        assert S.BROKEN not in rec.path("com.example.A")
        await supervisor.start("com.example.A")
        await supervisor.wait_for("com.example.A", {S.ERRORED}, 5)
        # The second error within the window breaks it (max_errors=2), after one restart.
        assert await supervisor.wait_for("com.example.A", {S.BROKEN}, 5) is S.BROKEN
    finally:
        await supervisor.close()


async def test_recover_failure_counts_as_an_error(sup: tuple[Supervisor, Recorder], tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    supervisor, rec = sup
    supervisor.add(make_spec(tmp_path, run="exit 1", recover="exit 7"))
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    await supervisor.wait_for("com.example.A", {S.BROKEN}, 10)
    # Run fails (1), Recover fails (2), restart, Run fails (3) -> BROKEN.
    assert rec.path("com.example.A").count(S.STARTING) == 2
    assert "com.example.A: recover step failed with exit code 7" in caplog.text


# -- Install -----------------------------------------------------------------------------------

async def test_install_that_hangs_is_killed_at_its_timeout(sup: tuple[Supervisor, Recorder],
                                                            tmp_path: Path) -> None:
    supervisor, rec = sup
    spec = make_spec(tmp_path, install=StepSpec("sleep 100 & echo $! > sleep.pid; echo $$ > sh.pid; wait",
                                                timeout=1.0))
    supervisor.add(spec)
    started = time.monotonic()
    with pytest.raises(LifecycleTimeoutError) as info:
        await supervisor.install("com.example.A")
    assert 0.9 < time.monotonic() - started < 4
    assert info.value.code == "LIFECYCLE_TIMEOUT"
    assert (info.value.component, info.value.step, info.value.seconds) == ("com.example.A", "install", 1.0)
    assert supervisor.state("com.example.A") is S.ERRORED
    assert rec.path("com.example.A") == [S.ERRORED]
    assert wait_gone(read_pid(spec.work_dir / "sleep.pid"))
    assert wait_gone(read_pid(spec.work_dir / "sh.pid"))


async def test_install_failure_raises_with_stderr_and_reinstall_works(
        sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, rec = sup
    supervisor.add(make_spec(tmp_path, install="[ -f ok ] || { echo 'missing ok' >&2; exit 4; }"))
    with pytest.raises(LifecycleStepError) as info:
        await supervisor.install("com.example.A")
    err = info.value
    assert (err.code, err.component, err.step, err.exit_code) == (
        "LIFECYCLE_STEP_FAILED", "com.example.A", "install", 4)
    assert err.stderr_tail == ("missing ok",)
    assert "missing ok" in str(err)
    assert supervisor.state("com.example.A") is S.ERRORED
    with pytest.raises(InvalidTransitionError, match="not installed"):
        await supervisor.start("com.example.A")
    (tmp_path / "work" / "com.example.A" / "ok").touch()
    await supervisor.install("com.example.A")
    assert rec.path("com.example.A") == [S.ERRORED, S.NEW, S.INSTALLED]


async def test_repeated_install_failures_break_and_install_clears(
        sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, _ = sup
    supervisor.add(make_spec(tmp_path, install="exit 1", max_errors=2))
    for _ in range(2):
        with pytest.raises(LifecycleStepError):
            await supervisor.install("com.example.A")
    assert supervisor.state("com.example.A") is S.BROKEN
    with pytest.raises(LifecycleStepError):  # a reinstall from BROKEN starts a fresh history
        await supervisor.install("com.example.A")
    assert supervisor.state("com.example.A") is S.ERRORED


# -- Startup -----------------------------------------------------------------------------------

async def test_startup_exit_0_is_running_and_its_daemon_is_stopped(
        sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, rec = sup
    spec = make_spec(tmp_path, startup="sleep 100 > /dev/null 2>&1 & echo $! > daemon.pid; exit 0")
    supervisor.add(spec)
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    assert supervisor.state("com.example.A") is S.RUNNING
    assert rec.calls[-1][3] == "Startup exited with code 0"
    daemon = read_pid(spec.work_dir / "daemon.pid")
    assert not gone(daemon)
    assert supervisor.process_ids("com.example.A") is not None
    await supervisor.stop("com.example.A")
    assert supervisor.state("com.example.A") is S.INSTALLED
    assert wait_gone(daemon)


async def test_startup_daemon_keeping_stdout_open_does_not_block(
        sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, _ = sup
    spec = make_spec(tmp_path,
                     startup="(sleep 0.3; echo from-daemon; sleep 100) & echo $! > daemon.pid; exit 0")
    supervisor.add(spec)
    await supervisor.install("com.example.A")
    await asyncio.wait_for(supervisor.start("com.example.A"), 3)
    assert supervisor.state("com.example.A") is S.RUNNING
    await asyncio.sleep(0.6)
    assert b"[stdout] from-daemon" in spec.log_path.read_bytes()
    await supervisor.stop("com.example.A")
    assert wait_gone(read_pid(spec.work_dir / "daemon.pid"))


async def test_startup_non_zero_is_errored(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, rec = sup
    supervisor.add(make_spec(tmp_path, startup="echo nope >&2; exit 2", max_errors=1))
    await supervisor.install("com.example.A")
    with pytest.raises(LifecycleStepError) as info:
        await supervisor.start("com.example.A")
    assert (info.value.step, info.value.exit_code, info.value.stderr_tail) == ("startup", 2, ("nope",))
    assert rec.path("com.example.A") == [S.INSTALLED, S.STARTING, S.ERRORED, S.BROKEN]


async def test_startup_non_zero_recovers_then_runs(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, rec = sup
    supervisor.add(make_spec(tmp_path, startup="[ -f fixed ]", recover="touch fixed"))
    await supervisor.install("com.example.A")
    with pytest.raises(LifecycleStepError):
        await supervisor.start("com.example.A")
    assert supervisor.state("com.example.A") is S.ERRORED
    assert await supervisor.wait_for("com.example.A", {S.RUNNING}, 5) is S.RUNNING
    assert rec.path("com.example.A") == [S.INSTALLED, S.STARTING, S.ERRORED, S.STARTING, S.RUNNING]


async def test_startup_timeout(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, _ = sup
    spec = make_spec(tmp_path, startup=StepSpec("echo $$ > sh.pid; sleep 100", timeout=0.5), max_errors=1)
    supervisor.add(spec)
    await supervisor.install("com.example.A")
    with pytest.raises(LifecycleTimeoutError):
        await supervisor.start("com.example.A")
    assert supervisor.state("com.example.A") is S.BROKEN
    assert wait_gone(read_pid(spec.work_dir / "sh.pid"))


async def test_no_run_and_no_startup_finishes(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, rec = sup
    supervisor.add(make_spec(tmp_path, install="true"))
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    assert supervisor.state("com.example.A") is S.FINISHED
    assert rec.calls[-1][3] == "no Run or Startup step"
    await supervisor.stop("com.example.A")
    assert supervisor.state("com.example.A") is S.FINISHED
    await supervisor.start("com.example.A")  # FINISHED -> STARTING -> FINISHED
    assert rec.path("com.example.A")[-2:] == [S.STARTING, S.FINISHED]


# -- stop --------------------------------------------------------------------------------------

async def test_stop_runs_shutdown_then_sigterm(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, rec = sup
    spec = make_spec(tmp_path,
                     run="trap 'echo term >> events; exit 0' TERM; echo started >> events; "
                         "while true; do sleep 0.05; done",
                     shutdown="echo shutdown >> events")
    supervisor.add(spec)
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    events = spec.work_dir / "events"
    deadline = time.monotonic() + 5
    while not events.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    pgid = supervisor.process_ids("com.example.A")
    assert pgid is not None
    await supervisor.stop("com.example.A")
    assert events.read_text().splitlines() == ["started", "shutdown", "term"]
    assert rec.path("com.example.A")[-2:] == [S.STOPPING, S.INSTALLED]
    assert rec.calls[-1][3] == "stopped (exit code 0)"
    assert supervisor.process_ids("com.example.A") is None
    assert wait_gone(pgid[0])


async def test_sigterm_ignored_gets_sigkill_after_grace(sup: tuple[Supervisor, Recorder],
                                                        tmp_path: Path) -> None:
    supervisor, _ = sup
    spec = make_spec(tmp_path, run="trap '' TERM; sleep 100 & echo $! > sleep.pid; wait")
    supervisor.add(spec)
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    sleeper = read_pid(spec.work_dir / "sleep.pid")
    ids = supervisor.process_ids("com.example.A")
    assert ids is not None
    started = time.monotonic()
    await supervisor.stop("com.example.A", timeout=0.5)
    elapsed = time.monotonic() - started
    assert 0.45 < elapsed < 4
    assert supervisor.state("com.example.A") is S.INSTALLED
    assert wait_gone(sleeper)
    assert wait_gone(ids[0])


async def test_stop_cancels_a_pending_restart(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, rec = sup
    supervisor.add(make_spec(tmp_path, run="exit 1", restart_backoff=(2.0, 2.0)))
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    await supervisor.wait_for("com.example.A", {S.ERRORED}, 5)
    await supervisor.stop("com.example.A")
    assert supervisor.state("com.example.A") is S.INSTALLED
    await asyncio.sleep(0.3)
    assert rec.path("com.example.A")[-3:] == [S.ERRORED, S.STOPPING, S.INSTALLED]


async def test_stop_all_in_order_and_close(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, rec = sup
    for name in ("a", "b", "c"):
        supervisor.add(make_spec(tmp_path, name, run="exec sleep 100"))
        await supervisor.install(name)
        await supervisor.start(name)
    pgids = [supervisor.process_ids(n) for n in ("a", "b", "c")]
    await supervisor.stop_all(["b", "a"])
    stopping = [n for n, _, new, _ in rec.calls if new is S.STOPPING]
    assert stopping == ["b", "a", "c"]
    assert supervisor.states() == {"a": S.INSTALLED, "b": S.INSTALLED, "c": S.INSTALLED}
    assert all(ids is not None and wait_gone(ids[0]) for ids in pgids)


async def test_close_leaves_no_process(tmp_path: Path) -> None:
    supervisor = Supervisor(stop_grace=0.5)
    spec = make_spec(tmp_path, run="sleep 100 & echo $! > sleep.pid; wait")
    supervisor.add(spec)
    supervisor.add(make_spec(tmp_path, "b", run="exit 1", recover="sleep 100", restart_backoff=(5.0, 5.0)))
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    await supervisor.install("b")
    await supervisor.start("b")
    await supervisor.wait_for("b", {S.ERRORED}, 5)
    await asyncio.sleep(0.2)  # Recover (sleep 100) is running now
    sleeper = read_pid(spec.work_dir / "sleep.pid")
    children_before = {p.pid for p in psutil.Process().children(recursive=True)}
    assert children_before
    await supervisor.close()
    assert wait_gone(sleeper)
    assert all(wait_gone(pid) for pid in children_before)


async def test_cancelling_start_leaves_no_process(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, _ = sup
    spec = make_spec(tmp_path, startup="echo $$ > sh.pid; sleep 100")
    supervisor.add(spec)
    await supervisor.install("com.example.A")
    task = asyncio.create_task(supervisor.start("com.example.A"))
    shell = await asyncio.to_thread(read_pid, spec.work_dir / "sh.pid")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wait_gone(shell)
    assert supervisor.state("com.example.A") is S.ERRORED
    await supervisor.stop("com.example.A")
    assert supervisor.state("com.example.A") is S.INSTALLED


# -- report_state, wait_for, registry ----------------------------------------------------------

async def test_reported_states(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, rec = sup
    spec = make_spec(tmp_path, run="echo $$ >> pids; exec sleep 100", recover="echo r >> recovered")
    supervisor.add(spec)
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    supervisor.report_state("com.example.A", S.RUNNING)  # already RUNNING: no-op
    first = read_pid(spec.work_dir / "pids")
    supervisor.report_state("com.example.A", S.ERRORED)
    assert supervisor.state("com.example.A") is S.ERRORED
    assert await supervisor.wait_for("com.example.A", {S.RUNNING}, 5) is S.RUNNING
    assert wait_gone(first)
    assert (spec.work_dir / "recovered").read_text() == "r\n"
    assert rec.path("com.example.A")[-3:] == [S.ERRORED, S.STARTING, S.RUNNING]
    assert "reported ERRORED by the component" in [r for *_, r in rec.calls]
    with pytest.raises(InvalidInputError):
        supervisor.report_state("com.example.A", S.FINISHED)
    await supervisor.stop("com.example.A")
    with pytest.raises(InvalidTransitionError):
        supervisor.report_state("com.example.A", S.RUNNING)


async def test_startup_reported_running_early(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, rec = sup
    spec = make_spec(tmp_path, startup="while [ ! -f go ]; do sleep 0.02; done; exit 0")
    supervisor.add(spec)
    await supervisor.install("com.example.A")
    task = asyncio.create_task(supervisor.start("com.example.A"))
    await supervisor.wait_for("com.example.A", {S.STARTING}, 5)
    supervisor.report_state("com.example.A", S.RUNNING)
    assert supervisor.state("com.example.A") is S.RUNNING
    (spec.work_dir / "go").touch()
    await asyncio.wait_for(task, 5)
    assert rec.path("com.example.A") == [S.INSTALLED, S.STARTING, S.RUNNING]


async def test_wait_for_times_out(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, _ = sup
    supervisor.add(make_spec(tmp_path))
    with pytest.raises(LifecycleTimeoutError, match="waiting for RUNNING"):
        await supervisor.wait_for("com.example.A", {S.RUNNING}, 0.1)
    assert await supervisor.wait_for("com.example.A", {S.NEW}, 0.1) is S.NEW


async def test_registry(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, rec = sup
    with pytest.raises(ComponentNotFoundError) as info:
        supervisor.state("nope")
    assert info.value.code == "COMPONENT_NOT_FOUND"
    supervisor.add(make_spec(tmp_path, run="exec sleep 100"))
    with pytest.raises(InvalidTransitionError, match="not installed"):
        await supervisor.start("com.example.A")
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    await supervisor.start("com.example.A")  # already running: no-op
    with pytest.raises(ComponentBusyError):
        supervisor.add(make_spec(tmp_path, run="true"))
    with pytest.raises(ComponentBusyError):
        supervisor.remove("com.example.A")
    await supervisor.stop("com.example.A")
    new_spec = make_spec(tmp_path, run="true")
    new_spec = dataclasses.replace(new_spec, version="2.0.0")
    supervisor.add(new_spec)
    assert supervisor.state("com.example.A") is S.NEW
    assert rec.calls[-1][3] == "spec replaced (1.0.0 -> 2.0.0)"
    assert supervisor.spec("com.example.A").version == "2.0.0"
    supervisor.remove("com.example.A")
    assert supervisor.states() == {}
    supervisor.add(make_spec(tmp_path, "restored"), S.INSTALLED)
    assert supervisor.state("restored") is S.INSTALLED
    await supervisor.start("restored")
    assert supervisor.state("restored") is S.FINISHED


async def test_on_state_callback_errors_do_not_break_the_supervisor(tmp_path: Path) -> None:
    def bad(*_: object) -> None:
        raise RuntimeError("callback bug")

    supervisor = Supervisor(on_state=bad)
    try:
        supervisor.add(make_spec(tmp_path, run="exit 0"))
        await supervisor.install("com.example.A")
        await supervisor.start("com.example.A")
        assert await supervisor.wait_for("com.example.A", {S.FINISHED}, 5) is S.FINISHED
    finally:
        await supervisor.close()
