"""The write-ahead process journal: no live component process is ever unknown to the agent.

bench/crash.py is the statistical proof (SIGKILL at random moments of deployments, 1,000 trials);
these tests pin the mechanisms: a row is written before the spawn and removed once nothing of the
process is alive, and a restarted agent stops processes found by tag alone (the crash fell between
the intent and the spawn record) and processes that left their process group.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import psutil

from roost.agent.logfile import RotatingLog
from roost.agent.process import TAG_ENV, ManagedProcess
from roost.agent.store import Store
from tests.agent.helpers import Workspace, wait_until
from tests.conftest import Cli


async def test_a_row_is_written_before_the_spawn_and_removed_when_nothing_is_left(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    seen: list[tuple[str, int]] = []

    class Spy:
        def intend(self, tag: str, component: str, step: str) -> None:
            store.intend(tag, component, step)
            seen.append(("intend", len(store.journal())))

        def spawned(self, tag: str, pgid: int, create_time: float) -> None:
            # The process exists already and its row is there, without its group yet.
            assert [e.pgid for e in store.journal()] == [None]
            store.spawned(tag, pgid, create_time)

        def ended(self, tag: str) -> None:
            store.ended(tag)

    log = RotatingLog(tmp_path / "c.log")
    proc = await ManagedProcess.spawn("sleep 600 & sleep 600", env={"PATH": os.defpath}, cwd=tmp_path, log=log,
                                      name="com.test.C", journal=Spy())
    assert seen == [("intend", 1)]
    (entry,) = store.journal()
    assert entry.component == "com.test.C" and entry.step == "run" and entry.pgid == proc.pgid
    assert entry.create_time is not None and abs(entry.create_time - psutil.Process(proc.pid).create_time()) < 0.5
    await proc.terminate(grace=1.0)
    assert store.journal() == []
    log.close()


def test_a_restarted_agent_stops_a_process_known_only_by_its_tag(cli: Cli) -> None:
    """The agent died after writing the intent and before writing the process group."""
    cli.root.mkdir(parents=True)
    store = Store(cli.root / "state.db")
    tag = uuid.uuid4().hex
    store.intend(tag, "com.test.Ghost", "run")
    store.close()
    ghost = subprocess.Popen(["sleep", "600"], env={"PATH": os.defpath, TAG_ENV: tag}, start_new_session=True)
    try:
        assert cli.run("agent", "start", "--detach").returncode == 0
        assert ghost.wait(timeout=15) == -signal.SIGKILL
        log = (cli.root / "logs" / "agent.log").read_text()
        assert "stopped 1 leftover process(es) of com.test.Ghost" in log
        assert Store(cli.root / "state.db").journal() == []
    finally:
        if ghost.poll() is None:
            ghost.kill()
        cli.run("agent", "stop")


def test_processes_that_left_their_group_are_stopped_after_an_agent_crash(agent: Cli, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    marker = f"escape-{uuid.uuid4().hex[:8]}"
    # Run starts a daemon in a session of its own (outside the group the agent signals) and stays.
    ws.component("com.test.Escape", "1.0.0",
                 {"Install": "true",
                  "Run": f"setsid {sys.executable} -c 'import time; time.sleep(600)' {marker} & exec sleep 600"})
    out = agent.run("deployment", "create", *ws.deploy_args(), "--merge", "com.test.Escape=1.0.0", "--wait")
    assert out.returncode == 0, out.stdout

    def escaped() -> list[psutil.Process]:
        return [p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]

    (daemon,) = wait_until(escaped, what="the escaped daemon")
    assert os.getpgid(daemon.pid) == daemon.pid  # really outside the component's process group
    agent_proc = psutil.Process(int((agent.root / "agent.pid").read_text()))
    agent_proc.send_signal(signal.SIGKILL)
    wait_until(lambda: not agent_proc.is_running() or agent_proc.status() == psutil.STATUS_ZOMBIE, what="agent gone")
    assert agent.run("agent", "start", "--detach").returncode == 0
    # The old daemon was stopped; the component runs again with exactly one new daemon.
    wait_until(lambda: not daemon.is_running() or daemon.status() == psutil.STATUS_ZOMBIE, timeout=15,
               what="the old daemon to be stopped")
    wait_until(lambda: len(escaped()) == 1, timeout=15, what="one daemon of the restarted component")
    assert agent.run("agent", "stop").returncode == 0
    wait_until(lambda: not escaped(), timeout=15, what="no daemon after agent stop")
    assert agent.run("agent", "start", "--detach").returncode == 0
