"""The crash harness (bench/crash.py): its process counting, its verdicts, and a short real run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crash_bench", REPO / "bench" / "crash.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


crash = _load()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[tuple[Path, list[subprocess.Popen[bytes]]]]:
    """A fake agent root, and the processes started "as its components" (always killed afterwards)."""
    root = tmp_path / "fake-root"
    root.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    yield root, procs
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, 9)
        p.wait(timeout=10)


def _start(root: Path, name: str, script: str, procs: list[subprocess.Popen[bytes]],
           **extra: str) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ["PATH"], "ROOST_ROOT": str(root), "ROOST_COMPONENT_NAME": name, **extra}
    proc = subprocess.Popen(["/bin/sh", "-c", script], env=env, start_new_session=True)
    procs.append(proc)
    return proc


def _wait_scan(root: Path, count: int) -> list:
    deadline = time.monotonic() + 10
    found = crash.scan(root)
    while len(found) != count and time.monotonic() < deadline:
        time.sleep(0.02)
        found = crash.scan(root)
    return found


def test_one_session_with_a_shell_and_its_child_is_one_copy(spawn) -> None:
    root, procs = spawn
    shell = _start(root, "com.x", "sleep 60; true", procs, CRASH_VERSION="1.0.0", CRASH_STEP="run")
    found = _wait_scan(root, 2)  # the shell and its sleep child
    assert sorted(p.pid for p in found) == sorted([shell.pid, *[p.pid for p in found if p.ppid == shell.pid]])
    assert {p.pgid for p in found} == {shell.pid} and {p.sid for p in found} == {shell.pid}
    assert {p.version for p in found} == {"1.0.0"} and {p.step for p in found} == {"run"}
    groups = crash.copies(found)
    assert list(groups) == ["com.x"] and len(groups["com.x"]) == 1


def test_two_sessions_are_two_copies_and_other_roots_do_not_count(spawn, tmp_path: Path) -> None:
    root, procs = spawn
    first = _start(root, "com.x", "exec sleep 60", procs)
    second = _start(root, "com.x", "exec sleep 60", procs)
    other = tmp_path / "other-root"
    _start(other, "com.x", "exec sleep 60", procs)
    found = _wait_scan(root, 2)
    assert sorted(p.pid for p in found) == sorted([first.pid, second.pid])
    groups = crash.copies(found)
    assert sorted(groups["com.x"]) == sorted([first.pid, second.pid])
    verdict = crash.check(found, [{"componentName": "com.x", "version": "1.0.0", "state": "RUNNING"}])
    assert verdict["duplicates"] == {"com.x": 2} and verdict["leftovers"] == []
    # killing what the harness found leaves nothing of this root, and the other root untouched
    assert crash.kill_procs(found) == 2
    assert crash.scan(root) == [] and len(crash.scan(other)) == 1


def test_leftovers_are_processes_the_agent_does_not_run_at_their_version() -> None:
    def proc(pid: int, name: str, version: str) -> object:
        return crash.Proc(pid=pid, ppid=1, pgid=pid, sid=pid, component=name, version=version, step="run",
                          cmdline="sleep 60")

    procs = [proc(10, "a", "1.0.0"), proc(11, "b", "1.0.0"), proc(12, "c", "1.0.0"), proc(13, "d", "1.0.0")]
    view = [{"componentName": "a", "version": "1.0.0", "state": "RUNNING"},
            {"componentName": "b", "version": "1.1.0", "state": "RUNNING"},
            {"componentName": "c", "version": "1.0.0", "state": "FINISHED"},
            {"componentName": "e", "version": "1.0.0", "state": "RUNNING"}]
    verdict = crash.check(procs, view)
    assert {(x["component"], x["reason"]) for x in verdict["leftovers"]} == {
        ("b", "version 1.0.0, listed 1.1.0"), ("c", "listed FINISHED"), ("d", "not listed")}
    assert verdict["duplicates"] == {} and verdict["missing"] == ["e"]
    assert verdict["copies"] == {"a": 1, "b": 1, "c": 1, "d": 1}


@pytest.mark.slow
def test_three_crash_trials_leave_no_leftover_and_no_duplicate(tmp_path: Path) -> None:
    out = tmp_path / "crash.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "crash.py"), "--trials", "3", "--seed", "7",
                           "--calibrate", "2", "--stop-every", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=REPO, check=False)
    result = json.loads(out.read_text())
    summary = result["summary"]
    assert summary["harness_error"] is None, proc.stderr[-3000:]
    assert summary["trials"] == 3 and summary["stop_checks_scheduled"] == 1
    assert len(result["config"]["calibration_deployments_s"]) == 2
    assert {"cpu_model", "nproc", "git_commit", "roost_version", "timestamp"} <= set(result["machine"])
    assert sum(row["trials"] for row in result["kills_by_deployment_status"].values()) == 3
    assert summary["killed_at_final_cleanup"] == 0
    assert (summary["leftover_processes"], summary["duplicate_components"], summary["stop_leftover_processes"],
            summary["unsettled_trials"]) == (0, 0, 0, 0), json.dumps(result["failures"], indent=1)[-4000:]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "crash: 3 trials, 0 with leftovers" in proc.stdout
