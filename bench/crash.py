"""Crash harness: SIGKILL the agent at a random moment of a deployment, restart it, count copies.

Issue 8, item 3. It proves (or disproves) that a restarted agent finds and stops every component
process its killed predecessor left behind, so that no component runs twice and none runs outside
supervision.

Setup: one agent root in a temp folder (or ``--root``), a real agent (``roost agent start --root R
--detach``), and generated test components (recipes + artifacts in the temp folder), 4 names x 2
versions, whose steps cover every kind of process the supervisor starts:

* ``crash.A``: Install (a short sleep); Run is a ``/bin/sh`` with a child (``python3 -c`` sleeping,
  not exec'd: ``; echo`` follows it), so a copy is a shell and its child in one process group;
* ``crash.B``: HARD dependency on ``crash.A``; Run exec's a Python artifact (one process);
  1.1.0 adds an Install;
* ``crash.C``: Install, a Startup that starts a background daemon (``sleep 3600 &``; Startup exits
  0, the daemon stays in Startup's process group) and a Shutdown that kills the daemon;
* ``crash.D``: 1.0.0 Run is a shell with a ``sleep`` child, 1.1.0 Install + an exec'd ``sleep``.

Every lifecycle has ``Setenv: {CRASH_VERSION: <version>}`` and every step ``CRASH_STEP: <step>``, so a
live process tells which version and which step started it.

Calibration: a few deployments (same random kinds as the trials) are timed from the return of
``deployment create`` to their end; the median is the "typical duration" D.

One trial:

1. choose 1-3 operations on distinct names among the generated set: *add* a name the agent does not
   run as a root (random version), *change* a root to its other version, *remove* a root; submit them
   as one ``roost deployment create --root R --recipe-dir .. --artifact-dir .. --merge N=V ...
   --remove N --json`` (a real CLI process; it returns once the deployment is queued);
2. sleep a delay drawn uniformly from [0, D], then SIGKILL the agent (pid from ``R/agent.pid``);
3. the phase at kill time, read after the kill (the dead agent cannot change it): the deployment's
   status in ``R/state.db`` (read-only) and the lifecycle steps alive (``CRASH_STEP`` of the live
   component processes);
4. ``roost agent start --root R --detach`` (a real CLI process);
5. wait (bounded, ``--settle-timeout``) until no deployment is QUEUED/IN_PROGRESS and every
   component is RUNNING/FINISHED/BROKEN/ERRORED, twice in a row 0.2 s apart (the observation calls
   are the CLI's own ``ListLocalDeployments``/``ListComponents`` IPC calls, made in-process through
   ``roost.cli.local.call`` to spare a 0.3 s interpreter start per poll);
6. checks, from a scan of ``/proc/*/environ`` for ``ROOST_ROOT=R`` and ``ROOST_COMPONENT_NAME``
   (zombies excluded), grouped by process group: one group = one *copy*.
   A **duplicate** is a component with more than one live copy. A **leftover** is a live process of a
   component the agent does not list as RUNNING, or of a version other than the one it lists;
   *missing* (informational) is a component listed RUNNING, not a Startup-only component, with no copy;
7. every ``--stop-every``-th trial (and after any failing trial): ``roost agent stop``; every component
   process still alive then is a leftover (``stop_leftovers``); the harness SIGKILLs whatever it found
   (counted in ``killed_by_harness``) and starts the agent again, so one failure does not cascade.

The run always ends by itself: every wait and every CLI call is bounded, ``--max-minutes`` bounds the
whole run, and a ``finally`` stops the agent and SIGKILLs every process whose environment names the
root (and any agent process of the root).

    .venv/bin/python bench/crash.py                                   # 1,000 trials -> bench/results-crash.json
    .venv/bin/python bench/crash.py --trials 100 --seed 1 --out bench/results-crash-before.json

Exit status: 0 when no trial found a leftover, a duplicate or an unsettled agent; 1 when some did;
2 when the harness itself could not run (e.g. the agent would not start).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

NAMES = ("crash.A", "crash.B", "crash.C", "crash.D")
VERSIONS = ("1.0.0", "1.1.0")
SETTLED = frozenset({"RUNNING", "FINISHED", "BROKEN", "ERRORED"})
ACTIVE_DEPLOYMENT = frozenset({"QUEUED", "IN_PROGRESS"})
CLI_TIMEOUT = 60.0
STOP_TIMEOUT = 120.0
KILL_WAIT = 5.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the process scan (the counting function) --------------------------------------------------------

@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    sid: int
    component: str
    version: str | None
    step: str | None
    cmdline: str


def _read_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgid, sid) of ``pid`` from ``/proc/PID/stat``; None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
    except OSError:
        return None
    # comm is in parentheses and may contain spaces or parentheses: split after the last ')'.
    fields = raw[raw.rfind(")") + 2:].split()
    try:
        return fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    except (IndexError, ValueError):
        return None


def _read_environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def _root_forms(root: str | Path) -> set[str]:
    return {str(root), os.path.realpath(root), os.path.abspath(root)}


def scan(root: str | Path) -> list[Proc]:
    """Every live (non-zombie) process whose environment has ``ROOST_ROOT=root`` and a component name."""
    roots = _root_forms(root)
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        env = _read_environ(pid)
        if env.get("ROOST_ROOT") not in roots or not env.get("ROOST_COMPONENT_NAME"):
            continue
        stat = _read_stat(pid)  # read after the environment: a zombie's environ reads empty anyway
        if stat is None or stat[0] in ("Z", "X"):
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        found.append(Proc(pid=pid, ppid=stat[1], pgid=stat[2], sid=stat[3],
                          component=env["ROOST_COMPONENT_NAME"], version=env.get("CRASH_VERSION"),
                          step=env.get("CRASH_STEP"), cmdline=cmd[:200]))
    return found


def copies(procs: Iterable[Proc]) -> dict[str, dict[int, list[Proc]]]:
    """Component name -> process group id -> its live processes. One group is one copy."""
    out: dict[str, dict[int, list[Proc]]] = {}
    for p in procs:
        out.setdefault(p.component, {}).setdefault(p.pgid, []).append(p)
    return out


def kill_procs(procs: Iterable[Proc]) -> int:
    """SIGKILL these processes and their groups; wait (bounded) until they are gone. Returns how many."""
    procs = list(procs)
    for pgid in {p.pgid for p in procs}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    for p in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT
    while time.monotonic() < deadline:
        if all((s := _read_stat(p.pid)) is None or s[0] in ("Z", "X") for p in procs):
            break
        time.sleep(0.02)
    return len(procs)


def agent_processes(root: str | Path) -> list[int]:
    """Pids of live agent processes of ``root`` (found by their command line)."""
    roots = _root_forms(root)
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        # `python -m roost.agent --root R ...` (the detached agent) or `roost agent start --root R`
        if not ({"agent", "roost.agent"} & set(argv)) or "--root" not in argv:
            continue
        i = argv.index("--root")
        if i + 1 < len(argv) and argv[i + 1] in roots:
            stat = _read_stat(int(entry))
            if stat is not None and stat[0] not in ("Z", "X"):
                pids.append(int(entry))
    return pids


def _wait_dead(pid: int, timeout: float = KILL_WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = _read_stat(pid)
        if s is None or s[0] in ("Z", "X"):
            return True
        time.sleep(0.01)
    return False


# -- the test components ---------------------------------------------------------------------------

def write_components(base: Path) -> tuple[Path, Path]:
    recipes, artifacts = base / "recipes", base / "artifacts"
    recipes.mkdir(parents=True, exist_ok=True)
    for version in VERSIONS:
        v2 = version != VERSIONS[0]
        lifecycles: dict[str, dict[str, Any]] = {
            "crash.A": {
                "Install": "sleep 0.3" if v2 else "sleep 0.2",
                "Run": "python3 -c 'import time; time.sleep(3600)'; echo crash.A run ended",
            },
            "crash.B": {
                **({"Install": "sleep 0.1"} if v2 else {}),
                "Run": "exec python3 {artifacts:path}/svc.py",
            },
            "crash.C": {
                "Install": "sleep 0.2" if v2 else "sleep 0.1",
                "Startup": "sleep 3600 >/dev/null 2>&1 &\necho $! > daemon.pid",
                "Shutdown": "kill $(cat daemon.pid) 2>/dev/null; rm -f daemon.pid; true",
            },
            "crash.D": (
                {"Install": "sleep 0.3", "Run": "exec sleep 3600"} if v2
                else {"Run": "sleep 3600; echo crash.D run ended"}
            ),
        }
        for name, steps in lifecycles.items():
            lifecycle: dict[str, Any] = {"Setenv": {"CRASH_VERSION": version}}
            for step, script in steps.items():
                lifecycle[step] = {"Script": script, "Setenv": {"CRASH_STEP": step.lower()}}
            manifest: dict[str, Any] = {"Platform": {"os": "*"}, "Lifecycle": lifecycle}
            if name == "crash.B":
                art = artifacts / name / version
                art.mkdir(parents=True, exist_ok=True)
                (art / "svc.py").write_text("import time\nwhile True:\n    time.sleep(3600)\n")
                manifest["Artifacts"] = [{"URI": f"s3://crash-bench/{name}/{version}/svc.py"}]
            recipe: dict[str, Any] = {
                "RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": version,
                "ComponentType": "aws.greengrass.generic",
                "ComponentConfiguration": {"DefaultConfiguration": {}},
                "Manifests": [manifest],
            }
            if name == "crash.B":
                recipe["ComponentDependencies"] = {
                    "crash.A": {"VersionRequirement": ">=1.0.0", "DependencyType": "HARD"}}
            (recipes / f"{name}-{version}.json").write_text(json.dumps(recipe, indent=1))
    artifacts.mkdir(parents=True, exist_ok=True)
    return recipes, artifacts


# -- talking to the agent --------------------------------------------------------------------------

#: The ``src`` folder the CLI, the agent and the in-process IPC calls import roost from (``--commit``).
SRC: Path | None = None


def use_commit(rev: str, into: Path) -> tuple[Path, str]:
    """Export ``rev``'s ``src/`` (``git archive``) into ``into`` and import roost from there from now on.

    Runs a clean committed tree while others edit the working tree. Returns (src folder, full commit).
    """
    global SRC
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], capture_output=True, text=True,
                            cwd=REPO, check=True, timeout=30).stdout.strip()
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", commit, "src"], capture_output=True, cwd=REPO, check=True,
                             timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True, timeout=60)
    SRC = into / "src"
    sys.path.insert(0, str(SRC))
    for mod in [m for m in sys.modules if m == "roost" or m.startswith("roost.")]:
        del sys.modules[mod]
    return SRC, commit


def cli(*args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """A real ``roost`` CLI process (bounded)."""
    try:
        return subprocess.run([sys.executable, "-m", "roost", *args], capture_output=True, text=True,
                              timeout=timeout, check=False, cwd=REPO, env=_clean_env())
    except subprocess.TimeoutExpired as err:
        return subprocess.CompletedProcess(err.cmd, 124, "", f"timed out after {timeout} s")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROOST_", "SVCUID", "AWS_GG_"))}
    if SRC is not None:  # the detached agent inherits it, and so its components
        env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    return env


def ipc(root: Path, operation: str, request: dict[str, Any], timeout: float = 20.0) -> dict[str, Any] | None:
    """The CLI's own IPC call (``roost.cli.local.call``), in-process; None when the agent does not answer."""
    from roost.cli import local
    from roost.errors import RoostError
    try:
        return local.call(str(root), operation, request, timeout=timeout)
    except (RoostError, OSError, TimeoutError) as err:
        log(f"  {operation}: {type(err).__name__}: {err}")
        return None


def agent_pid(root: Path) -> int | None:
    try:
        return int((root / "agent.pid").read_text().strip() or "0") or None
    except (OSError, ValueError):
        return None


def db_view(root: Path, deployment_id: str | None) -> dict[str, Any]:
    """The dead agent's last word, read-only from ``state.db``: our deployment's status, component states."""
    out: dict[str, Any] = {}
    try:
        con = sqlite3.connect(f"file:{root / 'state.db'}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as err:
        return {"error": str(err)}
    try:
        con.row_factory = sqlite3.Row
        if deployment_id:
            row = con.execute("SELECT status FROM deployments WHERE id = ?", (deployment_id,)).fetchone()
            out["deployment_status"] = row["status"] if row else "NOT_RECORDED"
        out["components"] = {r["name"]: f"{r['version']}:{r['state']}"
                             for r in con.execute("SELECT name, version, state FROM components")}
    except sqlite3.Error as err:
        out["error"] = str(err)
    finally:
        con.close()
    return out


# -- the harness -----------------------------------------------------------------------------------

class HarnessError(Exception):
    """The harness cannot go on (the agent does not start, ...)."""


class Harness:
    def __init__(self, root: Path, workdir: Path, rng: random.Random, settle_timeout: float) -> None:
        self.root = root
        self.recipes, self.artifacts = write_components(workdir)
        self.rng = rng
        self.settle_timeout = settle_timeout
        self.agent_starts: list[float] = []
        self.prepared = 0

    # agent lifecycle
    def start_agent(self) -> None:
        for attempt in range(3):
            t0 = time.monotonic()
            proc = cli("agent", "start", "--root", str(self.root), "--detach", "--json", timeout=CLI_TIMEOUT)
            if proc.returncode == 0:
                self.agent_starts.append(time.monotonic() - t0)
                return
            log(f"  agent start failed (rc {proc.returncode}, attempt {attempt + 1}): "
                f"{proc.stdout[-300:]} {proc.stderr[-500:]}")
            time.sleep(0.5)
        raise HarnessError("the agent does not start")

    def kill_agent(self) -> int | None:
        pid = agent_pid(self.root)
        if pid is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not _wait_dead(pid):
            raise HarnessError(f"agent {pid} survived SIGKILL")
        return pid

    def stop_agent(self) -> tuple[int, str]:
        proc = cli("agent", "stop", "--root", str(self.root), "--json", timeout=STOP_TIMEOUT + 10)
        # whatever happened, no agent of this root may be left
        for pid in agent_processes(self.root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_dead(pid)
        return proc.returncode, (proc.stdout + proc.stderr)[-300:]

    # observation
    def components(self) -> list[dict[str, Any]] | None:
        out = ipc(self.root, "ListComponents", {})
        return None if out is None else list(out["components"])

    def settle(self) -> tuple[bool, list[dict[str, Any]], list[dict[str, Any]]]:
        """Wait until no deployment is active and every component state is settled, twice in a row."""
        deadline = time.monotonic() + self.settle_timeout
        last: tuple[Any, ...] | None = None
        comps: list[dict[str, Any]] = []
        deps: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            d = ipc(self.root, "ListLocalDeployments", {})
            c = self.components()
            if d is not None and c is not None:
                deps, comps = list(d["localDeployments"]), c
                active = [x for x in deps if x["status"] in ACTIVE_DEPLOYMENT]
                if not active and all(x["state"] in SETTLED for x in comps):
                    key = tuple(sorted((x["componentName"], x["version"], x["state"]) for x in comps))
                    if key == last:
                        return True, comps, deps
                    last = key
                else:
                    last = None
            time.sleep(0.2)
        return False, comps, deps

    # deployments
    def choose(self, comps: list[dict[str, Any]]) -> tuple[list[tuple[str, str, str]], list[str]]:
        """Operations (kind, name, version) and the CLI arguments that submit them."""
        roots = {c["componentName"]: c["version"] for c in comps if c.get("isRoot")}
        names = list(NAMES)
        self.rng.shuffle(names)
        ops: list[tuple[str, str, str]] = []
        for name in names[:self.rng.randint(1, 3)]:
            if name in roots:
                if self.rng.random() < 0.5:
                    ops.append(("change", name, next(v for v in VERSIONS if v != roots[name])))
                else:
                    ops.append(("remove", name, roots[name]))
            else:
                ops.append(("add", name, self.rng.choice(VERSIONS)))
        args = ["deployment", "create", "--root", str(self.root), "--recipe-dir", str(self.recipes),
                "--artifact-dir", str(self.artifacts), "--json"]
        for kind, name, version in ops:
            args += ["--remove", name] if kind == "remove" else ["--merge", f"{name}={version}"]
        return ops, args

    def submit(self, args: list[str]) -> str:
        proc = cli(*args)
        if proc.returncode != 0:
            raise HarnessError(f"deployment create failed (rc {proc.returncode}): {proc.stdout[-300:]} "
                               f"{proc.stderr[-500:]}")
        return str(json.loads(proc.stdout)["deploymentId"])

    def deploy_and_wait(self, args: list[str]) -> float:
        """Submit, wait (bounded) for the deployment's end and for a settled agent; seconds to the end."""
        dep_id = self.submit(args)
        t0 = time.monotonic()
        deadline = t0 + 120
        while time.monotonic() < deadline:
            out = ipc(self.root, "GetLocalDeploymentStatus", {"deploymentId": dep_id, "waitSeconds": 20},
                      timeout=30)
            if out is not None and out["deployment"]["status"] not in ACTIVE_DEPLOYMENT:
                break
        took = time.monotonic() - t0
        ok, _c, _d = self.settle()
        if not ok:
            raise HarnessError("the agent did not settle after an uninterrupted deployment")
        return took

    def calibrate(self, n: int) -> list[float]:
        """Seconds from the return of ``deployment create`` to the deployment's end, for n deployments."""
        durations = []
        for _ in range(n):
            comps = self.prepare()
            durations.append(self.deploy_and_wait(self.choose(comps)[1]))
        return durations

    def prepare(self) -> list[dict[str, Any]]:
        """Make sure at least two roots run before a trial, so that changes and removals happen as often
        as additions (a deployment killed in progress is rolled back, which empties the device over time).
        The preparing deployment is not interrupted. Returns the agent's components."""
        comps = self.components() or []
        roots = {c["componentName"] for c in comps if c.get("isRoot")}
        if len(roots) >= 2:
            return comps
        missing = [n for n in NAMES if n not in roots]
        self.rng.shuffle(missing)
        args = ["deployment", "create", "--root", str(self.root), "--recipe-dir", str(self.recipes),
                "--artifact-dir", str(self.artifacts), "--json"]
        for name in missing[:self.rng.randint(2 - len(roots), len(missing))]:
            args += ["--merge", f"{name}={self.rng.choice(VERSIONS)}"]
        self.deploy_and_wait(args)
        self.prepared += 1
        return self.components() or []


def check(procs: list[Proc], comps: list[dict[str, Any]]) -> dict[str, Any]:
    """Copies per component against the agent's view: duplicates, leftovers, missing."""
    view = {c["componentName"]: c for c in comps}
    groups = copies(procs)
    duplicates = {name: len(g) for name, g in groups.items() if len(g) > 1}
    leftovers: list[dict[str, Any]] = []
    for p in procs:
        agent = view.get(p.component)
        reason = None
        if agent is None:
            reason = "not listed"
        elif agent["state"] != "RUNNING":
            reason = f"listed {agent['state']}"
        elif p.version is not None and p.version != agent["version"]:
            reason = f"version {p.version}, listed {agent['version']}"
        if reason:
            leftovers.append({"component": p.component, "pid": p.pid, "pgid": p.pgid, "version": p.version,
                              "step": p.step, "reason": reason, "cmdline": p.cmdline})
    # every generated component keeps a process while RUNNING (crash.C: its Startup's daemon)
    missing = sorted(n for n, c in view.items() if c["state"] == "RUNNING" and n not in groups)
    return {
        "copies": {name: len(g) for name, g in sorted(groups.items())},
        "duplicates": duplicates,
        "leftovers": leftovers,
        "missing": missing,
    }


def machine_info(src_commit: str | None = None) -> dict[str, Any]:
    """The machine, and the code under test: ``src_commit`` when given (``--commit``), else the working tree."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO,
                            check=False, timeout=10).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True,
                           cwd=REPO, check=False, timeout=10).stdout.strip()
    try:
        import roost
        version = getattr(roost, "__version__", "unknown")
    except ImportError:
        version = "unknown"
    return {
        "cpu_model": cpu, "nproc": os.cpu_count(), "python": platform.python_version(),
        "kernel": platform.release(), "git_commit": src_commit or commit,
        "src_modified_since_commit": False if src_commit else bool(dirty), "harness_commit": commit,
        "roost_version": version, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _tally(table: dict[str, dict[str, int]], key: str, failed: bool) -> None:
    row = table.setdefault(key, {"trials": 0, "failed": 0})
    row["trials"] += 1
    row["failed"] += int(failed)


def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    own_tmp = tempfile.mkdtemp(prefix="roost-crash-")
    workdir = Path(own_tmp)
    # run as root, the agent runs components as an unprivileged user, who must reach the root
    os.chmod(workdir, 0o755)
    root = Path(args.root).resolve() if args.root else workdir / "root"
    if args.root and root.exists() and any(root.iterdir()):
        log(f"--root {root} is not empty; refusing to reuse it")
        return 2
    root.mkdir(parents=True, exist_ok=True)
    src_commit = None
    if args.commit:
        _src, src_commit = use_commit(args.commit, workdir / "tree")
        log(f"running roost from commit {src_commit} (exported to {_src})")
    harness = Harness(root, workdir, rng, args.settle_timeout)
    load_start = os.getloadavg()
    trials: list[dict[str, Any]] = []
    kinds: Counter[str] = Counter()
    by_phase: dict[str, dict[str, int]] = {}
    by_step: dict[str, dict[str, int]] = {}
    totals = Counter[str]()
    calibration: list[float] = []
    typical = 0.0
    timing: dict[str, list[float]] = {}
    error: str | None = None
    t_start = t_trials = time.monotonic()
    deadline = t_start + args.max_minutes * 60 if args.max_minutes else None
    try:
        log(f"crash harness: root {root}, seed {args.seed}, {args.trials} trials")
        harness.start_agent()
        calibration = harness.calibrate(args.calibrate)
        typical = args.max_delay if args.max_delay is not None else statistics.median(calibration)
        log(f"calibration: deployments took {', '.join(f'{d:.2f}' for d in calibration)} s; "
            f"kill delay uniform in [0, {typical:.2f}] s")
        t_trials = time.monotonic()
        for i in range(1, args.trials + 1):
            if deadline is not None and time.monotonic() > deadline:
                log(f"--max-minutes reached after {i - 1} trials")
                break
            trial = one_trial(harness, i, typical, stop_check=(i % args.stop_every == 0))
            trials.append(trial)
            for part, secs in trial["timing_s"].items():
                timing.setdefault(part, []).append(secs)
            for kind in {op[0] for op in trial["ops"]}:
                kinds[kind] += 1
            failed = trial["failed"]
            _tally(by_phase, trial["phase"]["deployment_status"], failed)
            _tally(by_step, "+".join(trial["phase"]["transient_steps"]) or "none", failed)
            for key in ("leftover_processes", "duplicate_components", "killed_by_harness", "stop_leftovers"):
                totals[key] += trial[key]
            totals["leftover_trials"] += int(bool(trial["leftover_processes"]))
            totals["duplicate_trials"] += int(bool(trial["duplicate_components"]))
            totals["stop_checks_scheduled"] += int(trial["stop_scheduled"])
            totals["stop_checks"] += int(trial["stop_rc"] is not None)
            totals["stop_leftover_trials"] += int(bool(trial["stop_leftovers"]))
            totals["unsettled_trials"] += int(not trial["settled"])
            totals["missing_trials"] += int(bool(trial["check"]["missing"]))
            totals["failed_trials"] += int(failed)
            if failed or i % 10 == 0:
                log(f"trial {i}: {'FAILED' if failed else 'ok'} ({trial['phase']['deployment_status']}, "
                    f"delay {trial['kill_delay_s']:.2f} s) totals: {dict(totals)}")
        trials_elapsed = time.monotonic() - t_trials
    except (HarnessError, KeyboardInterrupt, SystemExit) as err:
        error = f"{type(err).__name__}: {err}"
        log(f"harness error: {error}")
        trials_elapsed = time.monotonic() - (t_trials if trials else t_start)
    finally:
        leftovers_at_end = cleanup(harness)
        if not args.keep:
            shutil.rmtree(own_tmp, ignore_errors=True)
            if args.root:
                shutil.rmtree(root, ignore_errors=True)
    done = len(trials)
    summary = {
        "trials": done,
        "failed_trials": totals["failed_trials"],
        "leftover_trials": totals["leftover_trials"], "leftover_processes": totals["leftover_processes"],
        "duplicate_trials": totals["duplicate_trials"], "duplicate_components": totals["duplicate_components"],
        "stop_checks": totals["stop_checks"], "stop_checks_scheduled": totals["stop_checks_scheduled"],
        "stop_leftover_trials": totals["stop_leftover_trials"],
        "stop_leftover_processes": totals["stop_leftovers"],
        "unsettled_trials": totals["unsettled_trials"], "missing_trials": totals["missing_trials"],
        "preparing_deployments": harness.prepared,
        "killed_by_harness": totals["killed_by_harness"], "killed_at_final_cleanup": leftovers_at_end,
        "trials_elapsed_s": round(trials_elapsed, 1),
        "trials_per_minute": round(done / trials_elapsed * 60, 2) if done and trials_elapsed > 0 else None,
        "agent_start_median_s": round(statistics.median(harness.agent_starts), 3) if harness.agent_starts else None,
        "harness_error": error,
        "trial_seconds_median_by_part": {k: round(statistics.median(v), 3) for k, v in timing.items()},
    }
    result = {
        "benchmark": "crash",
        "command": " ".join([os.path.relpath(sys.executable, REPO), *sys.argv]),
        "config": {"trials_requested": args.trials, "seed": args.seed, "stop_every": args.stop_every,
                   "settle_timeout_s": args.settle_timeout,
                   "calibration_deployments_s": [round(d, 3) for d in calibration],
                   "kill_delay_max_s": round(typical, 3) if calibration else None,
                   "components": {n: list(VERSIONS) for n in NAMES}},
        "code_under_test": {"commit": src_commit, "exported": True} if src_commit
        else {"commit": None, "working_tree": str(REPO / "src")},
        "machine": {**machine_info(src_commit), "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "summary": summary,
        "kinds": dict(kinds),
        "kills_by_deployment_status": by_phase,
        "kills_by_transient_steps": by_step,
        "failures": [t for t in trials if t["failed"]],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"crash: {done} trials, {summary['leftover_trials']} with leftovers "
          f"({summary['leftover_processes']} processes), {summary['duplicate_trials']} with duplicates, "
          f"{summary['stop_checks']} agent-stop checks ({summary['stop_checks_scheduled']} scheduled, the others "
          f"after a failed check; {summary['stop_leftover_trials']} left processes), "
          f"{summary['unsettled_trials']} unsettled; {summary['trials_per_minute']} trials/min; seed {args.seed}"
          f"{'; HARNESS ERROR: ' + error if error else ''} -> {out}")
    if error is not None:
        return 2
    return 1 if summary["failed_trials"] else 0


def one_trial(h: Harness, index: int, max_delay: float, *, stop_check: bool) -> dict[str, Any]:
    t0 = time.monotonic()
    prepared_before = h.prepared
    comps_before = h.prepare()
    ops, args = h.choose(comps_before)
    marks = {"start": time.monotonic()}
    dep_id = h.submit(args)
    marks["submitted"] = time.monotonic()
    delay = h.rng.uniform(0, max_delay)
    time.sleep(delay)
    killed = h.kill_agent()
    at_kill = db_view(h.root, dep_id)
    procs_at_kill = scan(h.root)
    transient = transient_steps(procs_at_kill)
    marks["killed"] = time.monotonic()
    h.start_agent()
    marks["restarted"] = time.monotonic()
    settled, comps, deps = h.settle()
    marks["settled"] = time.monotonic()
    procs = scan(h.root)
    result = check(procs, comps)
    leftover = len(result["leftovers"])
    dup = len(result["duplicates"])
    failed = bool(leftover or dup or not settled)
    stop_leftovers: list[dict[str, Any]] = []
    killed_by_harness = 0
    stop_rc = None
    if stop_check or failed:
        stop_rc, _stop_out = h.stop_agent()
        after = scan(h.root)
        stop_leftovers = [{"component": p.component, "pid": p.pgid, "version": p.version, "step": p.step,
                           "cmdline": p.cmdline} for p in after]
        killed_by_harness = kill_procs(after)
        failed = failed or bool(stop_leftovers) or stop_rc != 0
        h.start_agent()
    marks["end"] = time.monotonic()
    ours = next((d for d in deps if d.get("deploymentId") == dep_id), None)
    trial: dict[str, Any] = {
        "trial": index,
        "ops": ops,
        "prepared": h.prepared > prepared_before,
        "kill_delay_s": round(delay, 3),
        "agent_pid_killed": killed,
        "phase": {"deployment_status": at_kill.get("deployment_status", "UNKNOWN"),
                  "transient_steps": transient,
                  "components": at_kill.get("components", {})},
        "deployment_final_status": ours["status"] if ours else None,
        "settled": settled,
        "agent_view": {c["componentName"]: f"{c['version']}:{c['state']}" for c in comps},
        "check": result,
        "leftover_processes": leftover,
        "duplicate_components": dup,
        "stop_scheduled": stop_check,
        "stop_rc": stop_rc,
        "stop_leftovers": len(stop_leftovers),
        "stop_leftover_details": stop_leftovers,
        "killed_by_harness": killed_by_harness,
        "seconds": round(time.monotonic() - t0, 2),
        "timing_s": {"prepare": round(marks["start"] - t0, 3),
                     "submit": round(marks["submitted"] - marks["start"], 3),
                     "delay_and_kill": round(marks["killed"] - marks["submitted"], 3),
                     "restart": round(marks["restarted"] - marks["killed"], 3),
                     "settle": round(marks["settled"] - marks["restarted"], 3),
                     "check_and_stop": round(marks["end"] - marks["settled"], 3)},
        "failed": failed,
    }
    return trial


def transient_steps(procs: Iterable[Proc]) -> list[str]:
    """``component:step`` of the short steps alive: Install, Shutdown, a Startup whose shell still runs."""
    steps = set()
    for p in procs:
        if p.step in ("install", "shutdown") or (p.step == "startup" and p.cmdline.startswith("/bin/sh")):
            steps.add(f"{p.component}:{p.step}")
    return sorted(steps)


def cleanup(h: Harness) -> int:
    """Stop the agent, then SIGKILL every process of the root. Returns how many component processes were left."""
    with contextlib.suppress(Exception):
        if agent_pid(h.root) is not None and agent_processes(h.root):
            h.stop_agent()
    for pid in agent_processes(h.root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_dead(pid)
    left = scan(h.root)
    kill_procs(left)
    return len(left)


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "results-crash.json"))
    p.add_argument("--root", help="agent root (default: a fresh temp folder); must be empty or absent")
    p.add_argument("--stop-every", type=int, default=10, help="`agent stop` + zero-process check every K trials")
    p.add_argument("--calibrate", type=int, default=6, help="deployments timed to pick the kill-delay range")
    p.add_argument("--max-delay", type=float, help="kill delay range [0, X] s instead of the calibrated median")
    p.add_argument("--settle-timeout", type=float, default=60.0)
    p.add_argument("--max-minutes", type=float, help="stop starting trials after this long")
    p.add_argument("--commit", help="run roost from this commit's src/ (git archive into the temp folder) "
                                    "instead of the working tree, e.g. HEAD while others edit src/")
    p.add_argument("--keep", action="store_true", help="keep the temp folder (recipes, root, logs)")
    args = p.parse_args(argv)
    if args.trials < 0 or args.stop_every < 1 or args.calibrate < 1:
        p.error("--trials >= 0, --stop-every >= 1, --calibrate >= 1")
    with _sigterm_as_exit():
        return run(args)


if __name__ == "__main__":
    sys.exit(main())
