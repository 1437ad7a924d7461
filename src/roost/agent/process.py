"""Running lifecycle scripts as real processes, and making sure none outlives its step.

Every script runs as ``/bin/sh -c <script>`` in a new session (so in its own process group,
whose id is the shell's pid), with stdin from ``/dev/null`` and stdout/stderr piped line by line
into the component's :class:`~roost.agent.logfile.RotatingLog`.

Stopping a process means stopping everything it started:

* the whole process group gets SIGTERM, then SIGKILL after the grace period;
* descendants that left the group (``setsid``, double fork) are found with psutil, both as
  children of the group's processes and by a marker variable, ``ROOST_PROCESS_TAG``, that every
  spawned process inherits in its environment;
* after the shell has been reaped, its pid (and so the group id) may be reused by an unrelated
  process, so group members are then only killed if they carry the marker.

Every process is started as the component's user (:class:`~roost.agent.users.RunAs`) when the
agent says so, and is written to a :class:`ProcessJournal` *before* it is spawned (its tag), then
with its process group once spawned, and removed only once nothing of it is alive: after an agent
crash, :func:`reap_journal` finds every leftover by its tag and its group, and stops it.

Exit is detected with a pidfd (Linux >= 5.3; polling otherwise) rather than with
``asyncio.subprocess``, whose ``wait()`` also waits for the pipes to close and so would hang
while a daemon started by a Startup script keeps stdout open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil

from roost.agent.errors import LifecycleTimeoutError
from roost.agent.logfile import RotatingLog
from roost.agent.users import RunAs
from roost.errors import InvalidInputError

logger = logging.getLogger(__name__)

TAG_ENV = "ROOST_PROCESS_TAG"
#: Seconds between SIGTERM and SIGKILL when the caller does not say.
DEFAULT_GRACE = 5.0
#: After the shell exits, how long to wait for the pipes to reach end of file.
DRAIN_TIMEOUT = 1.0
#: How long to wait for SIGKILLed processes to disappear.
KILL_WAIT = 5.0
#: Tolerance when comparing process create times (psutil derives them from the boot time).
CREATE_TIME_TOLERANCE = 0.5
STDERR_TAIL_LINES = 5
_READ_SIZE = 65536
_MAX_LINE = 64 * 1024
_POLL_INTERVAL = 0.05


# -- Skipif --------------------------------------------------------------------------------

def skip_step(skipif: str | None, env: Mapping[str, str], cwd: Path | None = None) -> bool:
    """Evaluate a recipe ``Skipif``: ``onpath <exe>`` or ``exists <file>``.

    ``onpath`` looks the executable up on the ``PATH`` of ``env`` (the step's environment);
    ``exists`` resolves a relative file against ``cwd`` (the component's work folder).
    Returns True when the step must be skipped. Anything else raises
    :class:`~roost.errors.InvalidInputError` (code ``INVALID_SKIPIF``).
    """
    if skipif is None or not skipif.strip():
        return False
    keyword, _, arg = skipif.strip().partition(" ")
    arg = arg.strip()
    if not arg:
        raise InvalidInputError(f"invalid Skipif {skipif!r}: expected 'onpath <exe>' or 'exists <file>'",
                                code="INVALID_SKIPIF")
    keyword = keyword.lower()
    if keyword == "onpath":
        return shutil.which(arg, path=env.get("PATH", os.defpath)) is not None
    if keyword == "exists":
        target = Path(arg).expanduser()
        if not target.is_absolute() and cwd is not None:
            target = cwd / target
        return target.exists()
    raise InvalidInputError(f"invalid Skipif {skipif!r}: expected 'onpath <exe>' or 'exists <file>'",
                            code="INVALID_SKIPIF")


# -- psutil helpers ------------------------------------------------------------------------

def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _group_members(pgid: int) -> list[psutil.Process]:
    """Live processes whose process group is ``pgid`` (never the agent itself)."""
    me = os.getpid()
    members = []
    for pid in psutil.pids():
        if pid == me:
            continue
        try:
            if os.getpgid(pid) != pgid:
                continue
            proc = psutil.Process(pid)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            continue
        if _alive(proc):
            members.append(proc)
    return members


def _has_tag(proc: psutil.Process, tag: str) -> bool | None:
    """True/False if ``proc`` does/doesn't carry the marker; None if it can't be read."""
    try:
        return proc.environ().get(TAG_ENV) == tag
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return None
    except (psutil.NoSuchProcess, OSError):
        return False


def _tagged(tag: str) -> list[psutil.Process]:
    me = os.getpid()
    found = []
    for proc in psutil.process_iter():
        if proc.pid != me and _has_tag(proc, tag) and _alive(proc):
            found.append(proc)
    return found


def _descendants(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    found = []
    for proc in procs:
        try:
            found.extend(proc.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _signal_all(procs: Iterable[psutil.Process], sig: int) -> None:
    for proc in procs:
        # psutil checks the create time first, so a reused pid is never signalled.
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            proc.send_signal(sig)


async def _wait_gone(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited (zombies count as exited); return the survivors."""
    pending = [p for p in procs if _alive(p)]
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        await asyncio.sleep(_POLL_INTERVAL)
        pending = [p for p in pending if _alive(p)]
    return pending


def kill_process_group(pgid: int, create_time: float | None, *, sig: int = signal.SIGKILL) -> int:
    """Signal every process of group ``pgid`` — left over from an agent that was killed.

    ``create_time`` is the group leader's create time as recorded when it was spawned
    (:attr:`ManagedProcess.create_time`). If a process with pid ``pgid`` still exists but was
    created at another time, the pid has been reused and nothing is signalled. Group members
    created before the recorded leader cannot belong to it and are spared as well. The agent's
    own group is never signalled. Returns how many processes were signalled (0 when refused).
    """
    if pgid <= 1 or pgid == os.getpgrp():
        logger.warning("refusing to signal process group %d (the agent's own or a system group)", pgid)
        return 0
    if create_time is not None:
        try:
            leader = psutil.Process(pgid)
            leader_time = leader.create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
        else:
            if abs(leader_time - create_time) > CREATE_TIME_TOLERANCE:
                logger.warning("not killing process group %d: its leader pid was reused "
                               "(created %.2f, expected %.2f)", pgid, leader_time, create_time)
                return 0
    members = _group_members(pgid)
    if create_time is not None:
        kept = []
        for proc in members:
            try:
                if proc.create_time() >= create_time - CREATE_TIME_TOLERANCE:
                    kept.append(proc)
            except psutil.NoSuchProcess:
                continue
        members = kept
    _signal_all(members, sig)
    pids = [p.pid for p in members]
    if pids:
        logger.info("sent signal %d to left-over process group %d: pids %s", sig, pgid, pids)
    return len(pids)


def _protocol_factory(reader: asyncio.StreamReader) -> Callable[[], asyncio.StreamReaderProtocol]:
    return lambda: asyncio.StreamReaderProtocol(reader)


# -- the journal of started processes ------------------------------------------------------

class ProcessJournal(Protocol):
    """Durable record of the processes the agent started (:class:`roost.agent.store.Store`)."""

    def intend(self, tag: str, component: str, step: str) -> None: ...

    def spawned(self, tag: str, pgid: int, create_time: float) -> None: ...

    def ended(self, tag: str) -> None: ...


class JournalRow(Protocol):
    @property
    def tag(self) -> str | None: ...

    @property
    def component(self) -> str: ...

    @property
    def pgid(self) -> int | None: ...

    @property
    def create_time(self) -> float | None: ...


def _procs_by_tag(tags: set[str]) -> dict[str, list[psutil.Process]]:
    found: dict[str, list[psutil.Process]] = {}
    if not tags:
        return found
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            tag = proc.environ().get(TAG_ENV)
        except (psutil.Error, OSError):
            continue
        if tag in tags and _alive(proc):
            found.setdefault(tag, []).append(proc)
    return found


def _leader_matches(pgid: int, create_time: float | None) -> bool:
    try:
        leader = psutil.Process(pgid)
        return create_time is not None and abs(leader.create_time() - create_time) <= CREATE_TIME_TOLERANCE \
            and _alive(leader)
    except psutil.Error:
        return False


def reap_journal(rows: Sequence[JournalRow]) -> dict[str, int]:
    """SIGKILL every live process of ``rows`` (left by an agent that died); return counts per component.

    A row's processes are those carrying its tag (wherever they moved: new sessions, double
    forks), the members of its process group while the recorded leader is still the same process,
    and their descendants. Rows without a tag (written by older agents) go through
    :func:`kill_process_group`. Waits up to :data:`KILL_WAIT` s for the processes to disappear.
    """
    counts: dict[str, int] = {}
    by_tag = _procs_by_tag({r.tag for r in rows if r.tag is not None})
    victims: dict[int, psutil.Process] = {}
    own_group = os.getpgrp()
    for row in rows:
        if row.tag is None:
            if row.pgid is not None:
                counts[row.component] = counts.get(row.component, 0) + kill_process_group(row.pgid, row.create_time)
            continue
        procs = {p.pid: p for p in by_tag.get(row.tag, [])}
        if row.pgid is not None and row.pgid > 1 and row.pgid != own_group and _leader_matches(row.pgid,
                                                                                               row.create_time):
            procs.update({p.pid: p for p in _group_members(row.pgid)})
        procs.update({p.pid: p for p in _descendants(list(procs.values()))})
        procs.pop(os.getpid(), None)
        if procs:
            counts[row.component] = counts.get(row.component, 0) + len(procs)
            victims.update(procs)
    _signal_all(victims.values(), signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT
    pending = [p for p in victims.values() if _alive(p)]
    while pending and time.monotonic() < deadline:
        time.sleep(_POLL_INTERVAL)
        pending = [p for p in pending if _alive(p)]
    if pending:
        logger.error("left-over processes %s survived SIGKILL", [p.pid for p in pending])
    return counts


# -- one process ---------------------------------------------------------------------------

class ManagedProcess:
    """One ``/bin/sh -c`` process in its own process group, with its output logged."""

    def __init__(self, popen: subprocess.Popen[bytes], *, log: RotatingLog, name: str, step: str,
                 tag: str, started_at: float, journal: ProcessJournal | None = None) -> None:
        self._popen = popen
        self._log = log
        self.name = name
        self.step = step
        self._tag = tag
        self._journal = journal
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._loop = asyncio.get_running_loop()
        self._exit: asyncio.Future[int] = self._loop.create_future()
        self._pidfd: int | None = None
        self._poller: asyncio.Task[None] | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._transports: list[asyncio.BaseTransport] = []
        try:
            self._leader: psutil.Process | None = psutil.Process(popen.pid)
            self.create_time = self._leader.create_time()
        except psutil.NoSuchProcess:  # pragma: no cover - the child is not reaped yet, so it exists
            self._leader = None
            self.create_time = started_at

    @classmethod
    async def spawn(cls, script: str, *, env: Mapping[str, str], cwd: Path, log: RotatingLog, name: str,
                    step: str = "run", run_as: RunAs | None = None,
                    journal: ProcessJournal | None = None) -> ManagedProcess:
        """Start ``script`` (as ``run_as`` when given; the agent's user otherwise).

        The process is written to ``journal`` before it is spawned. Raises OSError if it cannot
        be started (bad ``cwd``, unknown user, the journal cannot be written...).
        """
        tag = uuid.uuid4().hex
        full_env = dict(env)
        full_env[TAG_ENV] = tag
        if journal is not None:
            try:
                journal.intend(tag, name, step)
            except Exception as err:
                raise OSError(f"cannot record the {step} process of {name} before starting it: {err}") from err
        started_at = time.time()
        identity: dict[str, object] = {}
        if run_as is not None:
            identity = {"user": run_as.uid, "group": run_as.gid, "extra_groups": list(run_as.groups)}
        try:
            # Popen forks synchronously, as asyncio's own subprocess support does; it takes about a ms.
            popen = subprocess.Popen(  # noqa: ASYNC220
                ["/bin/sh", "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, cwd=cwd, env=full_env, start_new_session=True, close_fds=True,
                **identity)  # type: ignore[call-overload]
        except BaseException:
            if journal is not None:
                with contextlib.suppress(Exception):
                    journal.ended(tag)
            raise
        self = cls(popen, log=log, name=name, step=step, tag=tag, started_at=started_at, journal=journal)
        try:
            if journal is not None:
                journal.spawned(tag, popen.pid, self.create_time)
            self._watch_exit()
            assert popen.stdout is not None
            assert popen.stderr is not None
            for pipe, stream in ((popen.stdout, "stdout"), (popen.stderr, "stderr")):
                reader = asyncio.StreamReader(limit=_MAX_LINE * 2)
                transport, _ = await self._loop.connect_read_pipe(_protocol_factory(reader), pipe)
                self._transports.append(transport)
                self._pumps.append(asyncio.create_task(self._pump(reader, stream),
                                                       name=f"roost-log-{name}-{step}-{stream}"))
        except BaseException:
            self.kill()
            self._close_io()
            raise
        logger.debug("%s: %s step started (pid %d)", name, step, popen.pid)
        return self

    # -- properties ----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def pgid(self) -> int:
        """The process group id: the shell's pid (it was started in a new session)."""
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The shell's exit code once it has exited (negative: killed by that signal)."""
        return self._exit.result() if self._exit.done() else None

    @property
    def stderr_tail(self) -> tuple[str, ...]:
        """The last few lines written to stderr."""
        return tuple(self._stderr_tail)

    # -- waiting and stopping ----------------------------------------------------------

    async def wait(self, drain: float = DRAIN_TIMEOUT) -> int:
        """Wait for the shell to exit, return its exit code.

        Then wait up to ``drain`` seconds for its output to be logged: a background process
        that inherited stdout keeps the pipe open, and its output is logged until it exits.
        """
        code = await asyncio.shield(self._exit)
        pending = [t for t in self._pumps if not t.done()]
        if pending and drain > 0:
            await asyncio.wait(pending, timeout=drain)
        return code

    def _collect(self) -> dict[int, psutil.Process]:
        """Every live process that belongs to this one (see the module docstring)."""
        procs: dict[int, psutil.Process] = {}
        leader_reaped = self._exit.done()
        if self._leader is not None and not leader_reaped and _alive(self._leader):
            procs[self._leader.pid] = self._leader
        for proc in _group_members(self.pgid):
            # Once the shell is reaped, the group id may name somebody else's group.
            if not leader_reaped or _has_tag(proc, self._tag) is not False:
                procs[proc.pid] = proc
        for proc in _descendants(list(procs.values())):
            procs[proc.pid] = proc
        for proc in _tagged(self._tag):
            procs[proc.pid] = proc
        procs.pop(os.getpid(), None)
        return procs

    def members(self) -> list[psutil.Process]:
        """Every live process of this one (leader, group, descendants, strays by their marker)."""
        return list(self._collect().values())

    def kill(self) -> None:
        """SIGKILL everything at once, without waiting (also used when a task is cancelled)."""
        targets = self._collect()
        if not self._exit.done():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)
        _signal_all(targets.values(), signal.SIGKILL)

    async def terminate(self, grace: float = DEFAULT_GRACE) -> int:
        """SIGTERM the group (and strays), SIGKILL after ``grace`` s, reap; return the exit code.

        Also used after the shell has exited by itself, to stop whatever it left behind.
        Cancelling this coroutine SIGKILLs everything immediately.
        """
        try:
            targets = self._collect()
            if targets:
                logger.debug("%s: %s: SIGTERM to %s", self.name, self.step, sorted(targets))
                _signal_all(targets.values(), signal.SIGTERM)
                survivors = await _wait_gone(targets.values(), grace)
                survivors.extend(self._collect().values())  # started meanwhile
                if any(_alive(p) for p in survivors):
                    logger.info("%s: %s step did not stop within %g s after SIGTERM; sending SIGKILL",
                                self.name, self.step, grace)
                    self.kill()
                    left = await _wait_gone(survivors, KILL_WAIT)
                    if left:
                        logger.error("%s: processes %s survived SIGKILL", self.name, [p.pid for p in left])
            async with asyncio.timeout(KILL_WAIT):
                code = await asyncio.shield(self._exit)
            pending = [t for t in self._pumps if not t.done()]
            if pending:
                await asyncio.wait(pending, timeout=DRAIN_TIMEOUT)
            self._close_io()
            if not self._collect():
                self._forget()
            return code
        except BaseException:
            self.kill()
            self._close_io()
            raise

    # -- internals ---------------------------------------------------------------------

    def _forget(self) -> None:
        """Nothing of this process is alive: drop it from the journal."""
        journal, self._journal = self._journal, None
        if journal is not None:
            try:
                journal.ended(self._tag)
            except Exception as err:  # the row stays; the next agent start finds nothing to stop
                logger.warning("%s: cannot remove the %s process from the journal: %s", self.name, self.step, err)

    def _watch_exit(self) -> None:
        try:
            self._pidfd = os.pidfd_open(self._popen.pid)
        except (AttributeError, OSError):
            self._poller = asyncio.create_task(self._poll_exit())
            return
        self._loop.add_reader(self._pidfd, self._on_pidfd)

    def _on_pidfd(self) -> None:
        code = self._popen.poll()
        if code is None:
            return
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self._set_exit(code)

    async def _poll_exit(self) -> None:
        while (code := self._popen.poll()) is None:
            await asyncio.sleep(_POLL_INTERVAL)
        self._set_exit(code)

    def _set_exit(self, code: int) -> None:
        if not self._exit.done():
            self._exit.set_result(code)
            logger.debug("%s: %s step exited with %d", self.name, self.step, code)

    async def _pump(self, reader: asyncio.StreamReader, stream: str) -> None:
        buffer = b""
        try:
            while chunk := await reader.read(_READ_SIZE):
                buffer += chunk
                lines = buffer.split(b"\n")
                buffer = lines.pop()
                if len(buffer) > _MAX_LINE:
                    lines.append(buffer)
                    buffer = b""
                self._emit(stream, lines)
        finally:
            if buffer:
                self._emit(stream, [buffer])

    def _emit(self, stream: str, lines: list[bytes]) -> None:
        if not lines:
            return
        try:
            self._log.write_lines(stream, lines)
        except OSError as err:  # a full disk must not kill the component
            logger.warning("%s: cannot write to %s: %s", self.name, self._log.path, err)
        if stream == "stderr":
            for line in lines[-STDERR_TAIL_LINES:]:
                self._stderr_tail.append(line.decode("utf-8", "replace").rstrip())

    def _close_io(self) -> None:
        for task in self._pumps:
            task.cancel()
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        if self._poller is not None and self._exit.done():
            self._poller.cancel()


# -- one-shot steps ------------------------------------------------------------------------

@dataclass(frozen=True)
class StepResult:
    exit_code: int
    stderr_tail: tuple[str, ...]


async def run_step(script: str, *, env: Mapping[str, str], cwd: Path, log: RotatingLog, timeout: float | None,
                   name: str, step: str, grace: float = DEFAULT_GRACE, run_as: RunAs | None = None,
                   journal: ProcessJournal | None = None) -> StepResult:
    """Run a one-shot step to completion; see :func:`run_script`. Also returns the stderr tail."""
    proc = await ManagedProcess.spawn(script, env=env, cwd=cwd, log=log, name=name, step=step, run_as=run_as,
                                      journal=journal)
    try:
        try:
            async with asyncio.timeout(timeout):
                code = await proc.wait()
        except TimeoutError:
            logger.warning("%s: %s step timed out after %g s; stopping its processes", name, step, timeout)
            await proc.terminate(grace)
            raise LifecycleTimeoutError(name, step, timeout or 0.0) from None
        # Whatever the script left running in its group (or escaped from it) goes too.
        await proc.terminate(grace)
    except asyncio.CancelledError:
        proc.kill()
        raise
    return StepResult(code, proc.stderr_tail)


async def run_script(script: str, *, env: Mapping[str, str], cwd: Path, log: RotatingLog,
                     timeout: float | None, name: str, step: str) -> int:
    """Run a one-shot lifecycle step (Install, Startup, Shutdown, Recover); return its exit code.

    On timeout the whole process group is terminated (SIGTERM, SIGKILL after a grace) and
    :class:`~roost.agent.errors.LifecycleTimeoutError` is raised. Processes the script leaves
    behind are stopped when it exits. Cancelling the call kills every process at once.
    """
    result = await run_step(script, env=env, cwd=cwd, log=log, timeout=timeout, name=name, step=step)
    return result.exit_code
