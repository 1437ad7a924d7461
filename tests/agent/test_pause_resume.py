"""PauseComponent / ResumeComponent through a real agent, driven by a component written with awsiotsdk.

Pausing freezes every process of the component (its Run process and the child it forked) with the
method the agent detected: the cgroup v2 freezer, the v1 freezer, or SIGSTOP; each is checked here
against the kernel's own view (``cgroup.events``, ``freezer.state``, the process state) and by the
component's output stopping. Authorised with ``aws.greengrass.ipc.lifecycle``; generic components
only; stop and restart of a paused component work; a crashed agent's frozen processes are thawed and
reaped by the next one.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.agent.helpers import Workspace, procs_with, wait_until
from tests.conftest import Cli, require_module, running_agent

pytestmark = pytest.mark.slow

TICKER, CONTROLLER, OTHER = "com.test.Ticker", "com.test.Controller", "com.test.Other"

# Writes a line every 50 ms, and so does the child it forks: a frozen component writes nothing.
TICKER_PY = textwrap.dedent("""
    import subprocess, sys, time
    path = sys.argv[1]
    child = ("import sys, time\\nwhile True:\\n    open(sys.argv[1], 'a').write('child\\\\n')\\n"
             "    time.sleep(0.05)")
    subprocess.Popen([sys.executable, "-c", child, path + ".child"])
    n = 0
    while True:
        n += 1
        with open(path, "a") as f:
            f.write(f"tick {n}\\n")
        time.sleep(0.05)
""")

# Runs "pause NAME" / "resume NAME" commands appended to a file (from its start on), printing each result.
CONTROLLER_PY = textwrap.dedent("""
    import sys, time
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

    commands = sys.argv[1]
    ipc = GreengrassCoreIPCClientV2()
    try:  # a restarted controller does not run the earlier commands again
        done = len(open(commands).read().splitlines())
    except FileNotFoundError:
        done = 0
    print("controller ready", flush=True)
    while True:
        try:
            lines = open(commands).read().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines[done:]:
            verb, name = line.split()
            call = ipc.pause_component if verb == "pause" else ipc.resume_component
            try:
                call(component_name=None if name == "-" else name)
                print(f"result {done} ok", flush=True)
            except Exception as err:
                print(f"result {done} {type(err).__name__} {getattr(err, 'message', err)}", flush=True)
            done += 1
        time.sleep(0.05)
""")

POLICY = {"aws.greengrass.ipc.lifecycle": {"com.test.Controller:lifecycle:1": {
    "operations": ["aws.greengrass#PauseComponent", "aws.greengrass#ResumeComponent"],
    "resources": [TICKER, "aws.greengrass.Nucleus", "com.test.NoSuch", "com.test.Done"]}}}


class Env:
    def __init__(self, agent: Cli, shared: Path) -> None:
        self.agent = agent
        self.ticks = shared / "ticks"
        self.commands = shared / "commands"
        self.sent = 0

    def command(self, line: str) -> str:
        """Have the controller run one command; its result (``ok`` or ``ErrorType message``)."""
        index = self.sent
        self.sent += 1
        with self.commands.open("a") as f:
            f.write(line + "\n")
        prefix = f"result {index} "
        found = wait_until(lambda: [ln for ln in _log(self.agent, CONTROLLER).splitlines() if prefix in ln],
                           what=f"the controller's answer to {line!r}")
        result: str = found[0].split(prefix, 1)[1]
        return result

    def pids(self) -> list[int]:
        procs = procs_with(str(self.ticks)) + procs_with(str(self.ticks) + ".child")
        return sorted(p.pid for p in procs)

    def details(self) -> dict[str, object]:
        out: dict[str, object] = self.agent.json("component", "details", TICKER)
        return out

    def lines(self) -> int:
        return sum(len(p.read_text().splitlines()) for p in (self.ticks, Path(str(self.ticks) + ".child"))
                   if p.exists())


def _log(agent: Cli, name: str) -> str:
    path = agent.root / "logs" / f"{name}.log"
    return path.read_text() if path.exists() else ""


def _mount(fstype: str, option: str | None = None) -> Path:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = right.split(" ")
        if fields[0] == fstype and (option is None or option in fields[-1].split(",")):
            return Path(left.split(" ")[4])
    raise AssertionError(f"no {fstype} mount")


def frozen_by_kernel(pid: int, method: str) -> bool:
    """What the kernel says of ``pid``: frozen (cgroup methods) or stopped (signal)."""
    if method == "signal":
        return bool(psutil.Process(pid).status() == psutil.STATUS_STOPPED)
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        # (The root cgroup has neither file: it cannot be frozen.)
        if method == "cgroup-v2" and hid == "0":
            events = _mount("cgroup2") / path.lstrip("/") / "cgroup.events"
            return events.exists() and "frozen 1" in events.read_text().splitlines()
        if method == "cgroup-v1" and "freezer" in controllers.split(","):
            state = _mount("cgroup", "freezer") / path.lstrip("/") / "freezer.state"
            return state.exists() and state.read_text().strip() == "FROZEN"
    raise AssertionError(f"pid {pid} is in no {method} cgroup")


def _available(method: str) -> bool:
    try:
        _mount("cgroup2") if method == "cgroup-v2" else _mount("cgroup", "freezer")
    except AssertionError:
        return False
    return os.geteuid() == 0


@pytest.fixture
def env(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    require_module("awsiot.greengrasscoreipc.clientv2")
    method: str = getattr(request, "param", "auto")
    if method.startswith("cgroup") and not _available(method):
        from tests.conftest import require_service

        require_service(f"{method} freezer", False, "not mounted here, or the tests do not run as root")
    monkeypatch.setenv("ROOST_PAUSE_METHOD", method)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    ws = Workspace(tmp_path / "ws")
    ticker = f"exec {sys.executable} -u {{artifacts:path}}/t.py {shared / 'ticks'}"
    ws.component(TICKER, "1.0.0", {"Run": ticker}, files={"t.py": TICKER_PY})
    ws.component(OTHER, "1.0.0", {"Run": "exec sleep 100000"})
    ws.component("com.test.Done", "1.0.0", {"Run": "true"})
    ws.component(CONTROLLER, "1.0.0",
                 {"Run": f"exec {sys.executable} -u {{artifacts:path}}/c.py {shared / 'commands'}"},
                 files={"c.py": CONTROLLER_PY}, config={"accessControl": POLICY})
    with running_agent(tmp_path / "root") as agent:
        out = agent.run("deployment", "create", *ws.deploy_args(), *(f"--merge={n}=1.0.0" for n in (
            TICKER, OTHER, "com.test.Done", CONTROLLER)), "--wait", "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        wait_until(lambda: "controller ready" in _log(agent, CONTROLLER), what="the controller")
        env = Env(agent, shared)
        wait_until(lambda: len(env.pids()) == 2, what="the ticker and its child")
        yield env


def _still(env: Env) -> bool:
    """The component wrote nothing over half a second."""
    before = env.lines()
    time.sleep(0.5)
    return env.lines() == before


@pytest.mark.parametrize("env", ["cgroup-v2", "cgroup-v1", "signal"], indirect=True)
def test_pause_freezes_every_process_and_resume_thaws(env: Env) -> None:
    method = os.environ["ROOST_PAUSE_METHOD"]
    pids = env.pids()
    assert env.command(f"pause {TICKER}") == "ok"
    details = env.details()
    assert details["state"] == "RUNNING" and details["paused"] == method, details  # no PAUSED state on Greengrass
    assert all(frozen_by_kernel(pid, method) for pid in pids), pids
    assert _still(env)
    listed = env.agent.run("component", "list")
    assert f"paused: {method}" in listed.stdout, listed.stdout
    # Pausing a paused component is accepted, as on Greengrass (it stays paused).
    assert env.command(f"pause {TICKER}") == "ok"
    assert all(frozen_by_kernel(pid, method) for pid in pids)

    assert env.command(f"resume {TICKER}") == "ok"
    assert "paused" not in env.details()
    assert not any(frozen_by_kernel(pid, method) for pid in pids)
    count = env.lines()
    wait_until(lambda: env.lines() > count + 4, what="the ticker to go on")
    assert env.pids() == pids  # the same processes went on: nothing was restarted
    assert env.command(f"resume {TICKER}") == f"InvalidArgumentsError component {TICKER} is not paused"


@pytest.mark.parametrize("env", ["auto", "signal"], indirect=True)
def test_stop_and_restart_of_a_paused_component(env: Env) -> None:
    assert env.command(f"pause {TICKER}") == "ok"
    restart = env.agent.run("component", "restart", TICKER)
    assert restart.returncode == 0, restart.stdout + restart.stderr
    assert env.details()["state"] == "RUNNING" and "paused" not in env.details()
    wait_until(lambda: len(env.pids()) == 2, what="the restarted ticker")
    count = env.lines()
    wait_until(lambda: env.lines() > count + 4, what="the restarted ticker to tick")

    assert env.command(f"pause {TICKER}") == "ok"
    stop = env.agent.run("component", "stop", TICKER)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert env.pids() == []  # SIGTERM reached the thawed processes
    assert env.details()["state"] == "INSTALLED" and "paused" not in env.details()
    assert env.command(f"pause {TICKER}").startswith(f"InvalidArgumentsError component {TICKER} is not running")


def test_pause_refusals(env: Env) -> None:
    assert env.command("pause -") == "InvalidArgumentsError componentName is required"
    assert env.command(f"pause {OTHER}") == (
        f"UnauthorizedError principal {CONTROLLER} is not authorized to perform "
        f"aws.greengrass.ipc.lifecycle:aws.greengrass#PauseComponent on resource {OTHER}")
    assert env.command(f"resume {OTHER}").startswith("UnauthorizedError ")
    assert env.command("pause com.test.NoSuch").startswith("ResourceNotFoundError ")
    assert env.command("pause aws.greengrass.Nucleus") == (
        "InvalidArgumentsError only generic components can be paused: aws.greengrass.Nucleus is built into the agent")
    wait_until(lambda: env.agent.json("component", "details", "com.test.Done")["state"] == "FINISHED",
               what="com.test.Done to finish")
    assert env.command("pause com.test.Done") == \
        "InvalidArgumentsError component com.test.Done is not running (it is FINISHED)"
    assert env.command(f"resume {TICKER}") == f"InvalidArgumentsError component {TICKER} is not paused"
    assert not _still(env)  # none of that paused anything


def test_the_cli_pauses_and_resumes(env: Env) -> None:
    pids = env.pids()
    paused = env.agent.run("component", "pause", TICKER)
    assert paused.returncode == 0 and f"{TICKER} paused" in paused.stdout, paused.stdout + paused.stderr
    assert env.details()["paused"] in ("cgroup-v2", "cgroup-v1", "signal")
    assert all(frozen_by_kernel(pid, str(env.details()["paused"])) for pid in pids)
    again = env.agent.run("component", "resume", TICKER)
    assert again.returncode == 0 and "paused" not in env.details(), again.stdout + again.stderr
    twice = env.agent.run("component", "resume", TICKER)
    assert twice.returncode == 3 and f"component {TICKER} is not paused" in twice.stderr, twice.stderr
    unknown = env.agent.run("component", "pause", "com.test.NoSuch")
    assert unknown.returncode == 4, unknown.stdout + unknown.stderr


@pytest.mark.parametrize("env", ["cgroup-v1"], indirect=True)
def test_a_crashed_agents_frozen_processes_are_thawed_and_reaped(env: Env) -> None:
    assert env.command(f"pause {TICKER}") == "ok"
    pids = env.pids()
    agent_pid = env.agent.json("agent", "status")["pid"]
    os.kill(agent_pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(agent_pid) or psutil.Process(agent_pid).status() == "zombie",
               what="the agent to die")
    assert all(frozen_by_kernel(pid, "cgroup-v1") for pid in pids)  # left frozen by the crash
    start = env.agent.run("agent", "start", "--detach", "--thing-name", "test-device")
    assert start.returncode == 0, start.stdout + start.stderr
    wait_until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids),
               what="the frozen leftovers to be reaped")
    assert "thawed 1 freezer cgroup(s) left by a previous agent" in (env.agent.root / "logs" / "agent.log").read_text()
    base = _mount("cgroup", "freezer")
    assert not [p for p in base.glob("**/roost-*/*") if p.is_dir() and TICKER in p.name]
    wait_until(lambda: env.details()["state"] == "RUNNING" and len(env.pids()) == 2, what="the ticker again")
    assert set(env.pids()).isdisjoint(pids)

