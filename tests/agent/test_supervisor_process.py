"""Processes: one-shot steps, process groups, strays, left-overs, Skipif, environment, logs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from roost.agent.component_spec import StepSpec
from roost.agent.errors import LifecycleTimeoutError
from roost.agent.logfile import RotatingLog
from roost.agent.process import ManagedProcess, kill_process_group, run_script, run_step, skip_step
from roost.agent.states import ComponentState
from roost.agent.supervisor import Supervisor
from roost.errors import InvalidInputError

from .supervisor_helpers import Recorder, gone, make_spec, read_pid, wait_gone

S = ComponentState
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}



# -- run_script / ManagedProcess ---------------------------------------------------------------

async def test_run_script_returns_exit_code_and_logs_tagged_lines(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "x.log")
    code = await run_script("echo out; echo err >&2; printf 'no newline'; exit 5", env=ENV, cwd=tmp_path,
                            log=log, timeout=5, name="x", step="install")
    assert code == 5
    log.close()
    lines = (tmp_path / "x.log").read_bytes().splitlines()
    tagged = sorted(line.split(b" ", 1)[1] for line in lines)
    assert tagged == [b"[stderr] err", b"[stdout] no newline", b"[stdout] out"]


async def test_run_step_timeout_kills_the_group(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "x.log")
    started = time.monotonic()
    with pytest.raises(LifecycleTimeoutError) as info:
        await run_step("sleep 100 & echo $! > bg.pid; sleep 100", env=ENV, cwd=tmp_path, log=log,
                       timeout=0.3, name="x", step="recover", grace=0.5)
    assert time.monotonic() - started < 3
    assert (info.value.step, info.value.seconds) == ("recover", 0.3)
    assert wait_gone(read_pid(tmp_path / "bg.pid"))
    log.close()


async def test_run_step_stops_what_the_script_left_behind(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "x.log")
    result = await run_step("sleep 100 > /dev/null 2>&1 & echo $! > bg.pid; echo bye >&2", env=ENV,
                            cwd=tmp_path, log=log, timeout=5, name="x", step="install", grace=0.5)
    assert (result.exit_code, result.stderr_tail) == (0, ("bye",))
    assert wait_gone(read_pid(tmp_path / "bg.pid"))
    log.close()


async def test_cancelling_run_script_kills_everything(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "x.log")
    task = asyncio.create_task(run_script("echo $$ > sh.pid; sleep 100", env=ENV, cwd=tmp_path, log=log,
                                          timeout=None, name="x", step="install"))
    shell = await asyncio.to_thread(read_pid, tmp_path / "sh.pid")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wait_gone(shell)
    log.close()


async def test_managed_process_terminate_and_ids(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "x.log")
    proc = await ManagedProcess.spawn("exec sleep 100", env=ENV, cwd=tmp_path, log=log, name="x")
    assert proc.pgid == proc.pid == os.getpgid(proc.pid)
    assert proc.pgid != os.getpgrp()
    assert proc.create_time == pytest.approx(psutil.Process(proc.pid).create_time(), abs=0.01)
    assert proc.returncode is None
    code = await proc.terminate(grace=1.0)
    assert code == -15
    assert proc.returncode == -15
    assert gone(proc.pid)
    log.close()


async def test_spawn_failure_raises_oserror(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "x.log")
    with pytest.raises(OSError):  # FileNotFoundError or NotADirectoryError
        await ManagedProcess.spawn("true", env=ENV, cwd=tmp_path / "missing", log=log, name="x")
    log.close()


# -- strays ------------------------------------------------------------------------------------

async def test_background_grandchild_does_not_survive_stop(sup: tuple[Supervisor, Recorder],
                                                           tmp_path: Path) -> None:
    supervisor, _ = sup
    spec = make_spec(tmp_path, run="sleep 1000 & echo $! > gc.pid; wait")
    supervisor.add(spec)
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    grandchild = read_pid(spec.work_dir / "gc.pid")
    assert not gone(grandchild)
    await supervisor.stop("com.example.A")
    assert wait_gone(grandchild)


async def test_grandchild_that_left_the_group_does_not_survive_stop(sup: tuple[Supervisor, Recorder],
                                                                    tmp_path: Path) -> None:
    supervisor, _ = sup
    # setsid: a new session and group; the intermediate shell exits, so it is re-parented too.
    spec = make_spec(tmp_path, run="(setsid sh -c 'echo $$ > escaped.pid; exec sleep 1000' &) ; "
                                   "exec sleep 1000")
    supervisor.add(spec)
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    escaped = read_pid(spec.work_dir / "escaped.pid")
    ids = supervisor.process_ids("com.example.A")
    assert ids is not None
    assert os.getpgid(escaped) != ids[0]
    await supervisor.stop("com.example.A")
    assert wait_gone(escaped)


async def test_run_exit_stops_its_leftovers(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, _ = sup
    spec = make_spec(tmp_path, run="sleep 1000 > /dev/null 2>&1 & echo $! > gc.pid; exit 0")
    supervisor.add(spec)
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    await supervisor.wait_for("com.example.A", {S.FINISHED}, 5)
    assert wait_gone(read_pid(spec.work_dir / "gc.pid"))


async def test_run_timeout_is_an_error(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, rec = sup
    spec = make_spec(tmp_path, run=StepSpec("echo $$ > sh.pid; exec sleep 100", timeout=0.3), max_errors=1)
    supervisor.add(spec)
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    await supervisor.wait_for("com.example.A", {S.BROKEN}, 5)
    assert "run did not finish within 0.3 s" in (rec.calls[-2][3] or "")
    assert wait_gone(read_pid(spec.work_dir / "sh.pid"))


# -- kill_process_group ------------------------------------------------------------------------

def _spawn_orphan_group(tmp_path: Path) -> tuple[int, list[int]]:
    """A process group started by another process (which then exits), like a dead agent's."""
    code = ("import subprocess, sys;"
            "p = subprocess.Popen(['/bin/sh', '-c', 'sleep 1000 & sleep 1000 & wait'],"
            " start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,"
            " stderr=subprocess.DEVNULL);"
            "print(p.pid)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=10)
    pgid = int(out.stdout)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        members = [p.pid for p in psutil.process_iter() if _pgid(p.pid) == pgid]
        if len(members) >= 3:
            return pgid, members
        time.sleep(0.02)
    raise AssertionError("the group did not start")


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_kill_process_group_checks_create_time(tmp_path: Path) -> None:
    pgid, members = _spawn_orphan_group(tmp_path)
    create_time = psutil.Process(pgid).create_time()
    try:
        assert kill_process_group(pgid, create_time + 100.0) == 0
        assert not any(gone(pid) for pid in members)
        assert kill_process_group(pgid, create_time) == 3
        assert all(wait_gone(pid) for pid in members)
        assert kill_process_group(pgid, create_time) == 0  # nothing left
    finally:
        for pid in members:
            if not gone(pid):
                os.kill(pid, 9)


def test_kill_process_group_without_leader_and_own_group(tmp_path: Path) -> None:
    pgid, members = _spawn_orphan_group(tmp_path)
    create_time = psutil.Process(pgid).create_time()
    os.kill(pgid, 9)  # the leader dies; the two sleeps stay in the group
    try:
        assert wait_gone(pgid)
        assert kill_process_group(pgid, create_time) == 2
        assert all(wait_gone(pid) for pid in members)
    finally:
        for pid in members:
            if not gone(pid):
                os.kill(pid, 9)
    assert kill_process_group(os.getpgrp(), None) == 0


# -- Skipif, Setenv, RequiresPrivilege ---------------------------------------------------------

def test_skip_step(tmp_path: Path) -> None:
    assert skip_step(None, ENV) is False
    assert skip_step("onpath sh", ENV) is True
    assert skip_step("onpath sh", {"PATH": str(tmp_path)}) is False
    assert skip_step("onpath roost-no-such-tool", ENV) is False
    (tmp_path / "marker").touch()
    assert skip_step(f"exists {tmp_path / 'marker'}", ENV) is True
    assert skip_step("exists marker", ENV, cwd=tmp_path) is True
    assert skip_step("exists nothing-here", ENV, cwd=tmp_path) is False
    for bad in ("sometimes x", "onpath", "exists   "):
        with pytest.raises(InvalidInputError) as info:
            skip_step(bad, ENV)
        assert info.value.code == "INVALID_SKIPIF"


async def test_skipif_in_lifecycle(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, rec = sup
    spec = make_spec(tmp_path,
                     install=StepSpec("touch installed", timeout=5, skipif="onpath sh"),
                     run=StepSpec("touch ran", timeout=None, skipif="exists skip-run"))
    supervisor.add(spec)
    await supervisor.install("com.example.A")
    assert not (spec.work_dir / "installed").exists()
    assert rec.calls[-1][3] == "Install skipped (Skipif)"
    (spec.work_dir / "skip-run").touch()
    await supervisor.start("com.example.A")
    assert supervisor.state("com.example.A") is S.FINISHED
    assert not (spec.work_dir / "ran").exists()
    (spec.work_dir / "skip-run").unlink()
    await supervisor.start("com.example.A")
    await supervisor.wait_for("com.example.A", {S.FINISHED}, 5)
    assert (spec.work_dir / "ran").exists()


async def test_setenv_reaches_the_process(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, _ = sup
    spec = make_spec(tmp_path, env={"A": "base", "B": "base"},
                     run=StepSpec('echo "$A $B $C $(pwd)" > out.txt', timeout=None,
                                  setenv={"B": "step", "C": "only-step"}, requires_privilege=True))
    supervisor.add(spec)
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    await supervisor.wait_for("com.example.A", {S.FINISHED}, 5)
    assert (spec.work_dir / "out.txt").read_text() == f"base step only-step {spec.work_dir}\n"


async def test_component_log_has_tagged_lines(sup: tuple[Supervisor, Recorder], tmp_path: Path) -> None:
    supervisor, _ = sup
    spec = make_spec(tmp_path, install="echo installing", run="echo hello; echo warning >&2")
    supervisor.add(spec)
    await supervisor.install("com.example.A")
    await supervisor.start("com.example.A")
    await supervisor.wait_for("com.example.A", {S.FINISHED}, 5)
    text = spec.log_path.read_text()
    assert "[stdout] installing" in text
    assert "[stdout] hello" in text
    assert "[stderr] warning" in text
