"""Pausing and resuming a component's processes (IPC ``PauseComponent`` / ``ResumeComponent``).

A paused component's processes are frozen, not stopped: they keep their memory, files and sockets
and go on where they were when resumed. How, detected once when the agent starts (never assumed):

* ``cgroup-v2`` — the cgroup v2 freezer (``cgroup.freeze``, Linux >= 5.2): the processes move into
  ``<the agent's cgroup>/roost-<root id>/<component>``, which is frozen; the kernel confirms
  (``cgroup.events``: ``frozen 1``). Children they fork are in it too.
* ``cgroup-v1`` — the v1 ``freezer`` controller, the same way (``freezer.state``: ``FROZEN``).
* ``signal`` — where no freezer cgroup can be made (an unprivileged agent, no cgroupfs):
  ``SIGSTOP`` to every process of the component (its process group, their descendants and the
  strays found by their marker, see :mod:`roost.agent.process`), confirmed by each process'
  state; ``SIGCONT`` resumes. A stopped process's parent may notice (``waitpid`` with
  ``WUNTRACED``); a frozen one's cannot: the cgroup methods are preferred.

``ROOST_PAUSE_METHOD`` (``auto``, ``cgroup-v2``, ``cgroup-v1``, ``signal``) in the agent's
environment chooses one; a chosen method that is not available makes pausing fail with
``PAUSE_FAILED`` naming why. Resuming moves the processes back to the cgroups they came from
and removes the component's cgroup. A paused component stays ``RUNNING`` (Greengrass has no paused
state); ``component list`` says ``paused`` with the method beside it. Stopping, restarting or
redeploying a paused component resumes it first (so its Shutdown runs and SIGTERM is handled), as
the nucleus does; so does every other way out of ``RUNNING``. A restarted agent thaws and removes
the cgroups a crashed one left behind before it reaps that one's processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

import psutil

from roost.agent.errors import AgentError
from roost.agent.states import ComponentState
from roost.errors import InvalidInputError

log = logging.getLogger(__name__)

METHOD_ENV: Final = "ROOST_PAUSE_METHOD"
#: How long the kernel (or the processes' states) may take to confirm a freeze.
CONFIRM_TIMEOUT: Final = 5.0
_POLL: Final = 0.01
#: Passes over the component's processes while pausing (a process may fork meanwhile).
_PASSES: Final = 3


class PauseMethod(StrEnum):
    CGROUP_V2 = "cgroup-v2"
    CGROUP_V1 = "cgroup-v1"
    SIGNAL = "signal"


@dataclass
class _Hierarchy:
    """A cgroup hierarchy the agent can make freezer cgroups in."""

    method: PauseMethod
    mount: Path
    own: Path  # the agent's own cgroup in it
    base: Path  # own / roost-<root id>

    def cgroup_of(self, pid: int) -> Path | None:
        """The cgroup folder of ``pid`` in this hierarchy (None if it cannot be read)."""
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            hid, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            if (self.method is PauseMethod.CGROUP_V2 and hid == "0" and controllers == "") or \
                    (self.method is PauseMethod.CGROUP_V1 and "freezer" in controllers.split(",")):
                return self.mount / path.lstrip("/")
        return None

    def freeze_file(self, cgroup: Path) -> Path:
        return cgroup / ("cgroup.freeze" if self.method is PauseMethod.CGROUP_V2 else "freezer.state")

    def freeze(self, cgroup: Path, on: bool) -> None:
        if self.method is PauseMethod.CGROUP_V2:
            self.freeze_file(cgroup).write_text("1" if on else "0")
        else:
            self.freeze_file(cgroup).write_text("FROZEN" if on else "THAWED")

    def frozen(self, cgroup: Path) -> bool:
        if self.method is PauseMethod.CGROUP_V2:
            return "frozen 1" in (cgroup / "cgroup.events").read_text().splitlines()
        return (cgroup / "freezer.state").read_text().strip() == "FROZEN"

    def members(self, cgroup: Path) -> list[int]:
        try:
            return [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
        except OSError:
            return []


def _mounts() -> list[tuple[str, Path, str]]:
    """(fstype, mount point, super options) of the cgroup mounts."""
    out: list[tuple[str, Path, str]] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fstype, _, rest = right.partition(" ")
        if fstype not in ("cgroup", "cgroup2"):
            continue
        options = rest.split(" ")[-1] if rest else ""
        out.append((fstype, Path(left.split(" ")[4]), options))
    return out


def _probe(method: PauseMethod, root_id: str) -> tuple[_Hierarchy | None, str]:
    """The hierarchy of ``method`` if the agent can make freezer cgroups in it, else (None, why)."""
    if method is PauseMethod.CGROUP_V2:
        mount = next((m for fs, m, _ in _mounts() if fs == "cgroup2"), None)
        if mount is None:
            return None, "no cgroup2 file system is mounted"
    else:
        mount = next((m for fs, m, opts in _mounts() if fs == "cgroup" and "freezer" in opts.split(",")), None)
        if mount is None:
            return None, "no cgroup v1 freezer hierarchy is mounted"
    probe = _Hierarchy(method, mount, mount, mount)
    own = probe.cgroup_of(os.getpid())
    if own is None:
        return None, f"the agent's own cgroup in {mount} is unknown"
    hierarchy = _Hierarchy(method, mount, own, own / f"roost-{root_id}")
    existed = hierarchy.base.is_dir()  # left by a crashed agent: thaw_leftovers() empties it
    try:
        hierarchy.base.mkdir(exist_ok=True)
    except OSError as err:
        return None, f"cannot create {hierarchy.base}: {err.strerror}"
    usable = hierarchy.freeze_file(hierarchy.base).exists() or method is PauseMethod.CGROUP_V1
    if not existed:  # made again at the first pause: no empty folder stays behind an agent that is killed
        with contextlib.suppress(OSError):
            hierarchy.base.rmdir()
    if not usable:
        return None, f"{mount} has no cgroup.freeze (Linux < 5.2)"
    return hierarchy, ""


@dataclass
class _Paused:
    method: PauseMethod
    since: float
    procs: list[psutil.Process] = field(default_factory=list)
    cgroup: Path | None = None
    origins: dict[int, Path] = field(default_factory=dict)


def _cgroup_name(component: str) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in component)[:200]
    return safe or "component"


class Freezer:
    """Freezes and thaws sets of processes with the method detected for this agent (module docstring)."""

    def __init__(self, root: Path, method: str | None = None) -> None:
        self.root_id = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
        wanted = (method if method is not None else os.environ.get(METHOD_ENV, "auto")).strip().lower() or "auto"
        self.unavailable: str | None = None
        self.hierarchy: _Hierarchy | None = None
        self.method = PauseMethod.SIGNAL
        reasons = []
        if wanted not in ("auto", *PauseMethod):
            self.unavailable = (f"{METHOD_ENV}={wanted!r} is not one of auto, "
                                f"{', '.join(m.value for m in PauseMethod)}")
        elif wanted != PauseMethod.SIGNAL:
            for candidate in (PauseMethod.CGROUP_V2, PauseMethod.CGROUP_V1):
                if wanted not in ("auto", candidate):
                    continue
                hierarchy, why = _probe(candidate, self.root_id)
                if hierarchy is not None:
                    self.hierarchy, self.method = hierarchy, candidate
                    break
                reasons.append(f"{candidate}: {why}")
            if self.hierarchy is None and wanted != "auto":
                self.unavailable = f"{METHOD_ENV}={wanted} is not available here ({'; '.join(reasons)})"
        self._paused: dict[str, _Paused] = {}
        log.info("pausing components with %s%s", self.method.value,
                 f" ({'; '.join(reasons)})" if reasons and self.unavailable is None else "")

    # -- queries ---------------------------------------------------------------------------------
    def paused(self, component: str) -> PauseMethod | None:
        entry = self._paused.get(component)
        return entry.method if entry is not None else None

    # -- pause / resume --------------------------------------------------------------------------
    async def pause(self, component: str, members: Callable[[], list[psutil.Process]]) -> PauseMethod:
        """Freeze every process ``members()`` returns (asked again until no new one appears)."""
        if self.unavailable is not None:
            raise AgentError(f"cannot pause {component}: {self.unavailable}", code="PAUSE_FAILED")
        if component in self._paused:
            return self._paused[component].method
        entry = _Paused(self.method, time.time())
        self._paused[component] = entry
        try:
            if self.hierarchy is not None:
                await self._freeze_cgroup(component, entry, members)
            else:
                await self._stop_signals(component, entry, members)
        except BaseException as err:
            self._paused.pop(component, None)
            self._thaw(component, entry)
            if isinstance(err, OSError):
                raise AgentError(f"cannot pause {component} with {entry.method}: {err}", code="PAUSE_FAILED") from err
            raise
        log.info("%s paused (%s, %d process(es))", component, entry.method,
                 len(entry.procs) if entry.cgroup is None else len(self._members_of(entry)))
        return entry.method

    def resume(self, component: str) -> bool:
        """Thaw ``component``; False if it was not paused."""
        entry = self._paused.pop(component, None)
        if entry is None:
            return False
        self._thaw(component, entry)
        log.info("%s resumed (%s, paused for %.1f s)", component, entry.method, time.time() - entry.since)
        return True

    def thaw_leftovers(self) -> int:
        """Thaw and remove the freezer cgroups a previous agent on this root left (it crashed)."""
        hierarchy = self.hierarchy
        if hierarchy is None or not hierarchy.base.is_dir():
            return 0
        count = 0
        for cgroup in sorted(p for p in hierarchy.base.iterdir() if p.is_dir()):
            with contextlib.suppress(OSError):
                hierarchy.freeze(cgroup, False)
                for pid in hierarchy.members(cgroup):
                    with contextlib.suppress(OSError):
                        (hierarchy.own / "cgroup.procs").write_text(str(pid))
                cgroup.rmdir()
                count += 1
        with contextlib.suppress(OSError):
            hierarchy.base.rmdir()
        if count:
            log.warning("thawed %d freezer cgroup(s) left by a previous agent in %s", count, hierarchy.base)
        return count

    def close(self) -> None:
        for component in list(self._paused):
            self.resume(component)
        if self.hierarchy is not None:
            with contextlib.suppress(OSError):
                self.hierarchy.base.rmdir()

    # -- the methods -----------------------------------------------------------------------------
    async def _freeze_cgroup(self, component: str, entry: _Paused,
                             members: Callable[[], list[psutil.Process]]) -> None:
        hierarchy = self.hierarchy
        assert hierarchy is not None
        hierarchy.base.mkdir(exist_ok=True)
        cgroup = hierarchy.base / _cgroup_name(component)
        cgroup.mkdir(exist_ok=True)
        entry.cgroup = cgroup
        procs_file = cgroup / "cgroup.procs"
        for number in range(_PASSES):
            inside = set(hierarchy.members(cgroup))
            moved = 0
            for proc in members():
                if proc.pid in inside:
                    continue
                origin = hierarchy.cgroup_of(proc.pid)
                try:
                    procs_file.write_text(str(proc.pid))
                except ProcessLookupError:
                    continue  # it exited meanwhile
                if origin is not None:
                    entry.origins[proc.pid] = origin
                moved += 1
            if number == 0:
                hierarchy.freeze(cgroup, True)  # what joins later is frozen on entry
            elif moved == 0:
                break
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while not hierarchy.frozen(cgroup):
            if time.monotonic() >= deadline:
                raise AgentError(f"cannot pause {component}: the kernel did not confirm the freeze of {cgroup} "
                                 f"within {CONFIRM_TIMEOUT:g} s", code="PAUSE_FAILED")
            await asyncio.sleep(_POLL)

    async def _stop_signals(self, component: str, entry: _Paused,
                            members: Callable[[], list[psutil.Process]]) -> None:
        for _ in range(_PASSES):
            known = {p.pid for p in entry.procs}
            new = [p for p in members() if p.pid not in known]
            if not new:
                break
            for proc in new:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc.send_signal(signal.SIGSTOP)
                    entry.procs.append(proc)
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while True:
            running = [p.pid for p in entry.procs if _status(p) not in (psutil.STATUS_STOPPED, None)]
            if not running:
                return
            if time.monotonic() >= deadline:
                raise AgentError(f"cannot pause {component}: process(es) {running} did not stop within "
                                 f"{CONFIRM_TIMEOUT:g} s of SIGSTOP", code="PAUSE_FAILED")
            await asyncio.sleep(_POLL)

    def _members_of(self, entry: _Paused) -> list[int]:
        if self.hierarchy is None or entry.cgroup is None:
            return [p.pid for p in entry.procs]
        return self.hierarchy.members(entry.cgroup)

    def _thaw(self, component: str, entry: _Paused) -> None:
        hierarchy = self.hierarchy
        if entry.cgroup is not None and hierarchy is not None:
            try:
                hierarchy.freeze(entry.cgroup, False)
            except OSError as err:
                log.error("%s: cannot thaw %s: %s", component, entry.cgroup, err)
            for pid in hierarchy.members(entry.cgroup):
                origin = entry.origins.get(pid, hierarchy.own)
                for dest in (origin, hierarchy.own):
                    try:
                        (dest / "cgroup.procs").write_text(str(pid))
                        break
                    except ProcessLookupError:
                        break
                    except OSError:
                        continue
            try:
                entry.cgroup.rmdir()
            except OSError as err:
                log.warning("%s: cannot remove %s: %s", component, entry.cgroup, err.strerror)
            if not self._paused:
                with contextlib.suppress(OSError):  # not empty: another component is paused
                    hierarchy.base.rmdir()
            return
        for proc in entry.procs:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                proc.send_signal(signal.SIGCONT)


def _status(proc: psutil.Process) -> str | None:
    try:
        status: str = proc.status()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    return None if status == psutil.STATUS_ZOMBIE else status


class ComponentPauses:
    """PauseComponent / ResumeComponent on the supervisor's components, Greengrass' rules.

    ``state(name)`` raises :class:`~roost.agent.errors.ComponentNotFoundError` for an unknown
    component; ``members(name)`` lists its live processes; ``builtins`` are the AWS-provided names the
    agent itself stands in for (not generic components, so they cannot be paused).
    """

    def __init__(self, freezer: Freezer, state: Callable[[str], ComponentState],
                 members: Callable[[str], list[psutil.Process]], builtins: frozenset[str]) -> None:
        self.freezer = freezer
        self._state = state
        self._members = members
        self._builtins = builtins

    def _check(self, name: str, verb: str) -> None:
        if name in self._builtins:
            raise InvalidInputError(f"only generic components can be {verb}: {name} is built into the agent",
                                    code="COMPONENT_NOT_PAUSABLE")

    async def pause(self, name: str) -> PauseMethod:
        self._check(name, "paused")
        state = self._state(name)
        if state is not ComponentState.RUNNING:
            raise InvalidInputError(f"component {name} is not running (it is {state})", code="COMPONENT_NOT_RUNNING")
        if self.freezer.paused(name) is None and not self._members(name):
            raise InvalidInputError(f"component {name} is {state} but has no live process to pause",
                                    code="COMPONENT_NOT_RUNNING")
        method = await self.freezer.pause(name, lambda: self._members(name))
        if self._state(name) is not ComponentState.RUNNING:  # it stopped while being frozen
            self.freezer.resume(name)
            raise InvalidInputError(f"component {name} stopped while being paused", code="COMPONENT_NOT_RUNNING")
        return method

    def resume(self, name: str) -> None:
        self._check(name, "resumed")
        self._state(name)  # unknown: ComponentNotFoundError
        if not self.freezer.resume(name):
            raise InvalidInputError(f"component {name} is not paused", code="COMPONENT_NOT_PAUSED")

    def on_state(self, name: str, new: ComponentState) -> None:
        """Leaving RUNNING (stop, restart, redeploy, error) resumes a paused component first."""
        if new is not ComponentState.RUNNING and self.freezer.resume(name):
            log.info("%s: resumed because it is going %s", name, new)
