"""Who a component runs as: POSIX users and groups, and whether isolation is on.

Greengrass runs components as an unprivileged system user (``ggc_user:ggc_group``) when the
nucleus runs as root, or as the user a deployment names in ``componentToRunWithInfo.posixUser``
(``user`` or ``user:group``, names or numeric ids). Roost does the same:

* when the agent runs as root, **isolation is on**: every lifecycle step runs as the component's
  user (its ``posixUser``, else the agent's default user, ``roost-components`` unless
  ``--component-default-user`` says otherwise, created as a system user and group if missing);
  steps with ``RequiresPrivilege: true`` run as root;
* when the agent is not root, components run as the agent's own user (the agent logs once that
  isolation is off); a ``posixUser`` naming anybody else cannot be honoured and fails the
  deployment with :class:`PosixUserError` (``POSIX_USER_UNAVAILABLE``), never silently.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass

from roost.agent.errors import PosixUserError

logger = logging.getLogger(__name__)

DEFAULT_COMPONENT_USER = "roost-components"
_NOLOGIN = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")


@dataclass(frozen=True)
class RunAs:
    """A resolved POSIX identity: the user, its primary (or chosen) group, supplementary groups."""

    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    def describe(self) -> str:
        try:
            group = grp.getgrgid(self.gid).gr_name
        except KeyError:
            group = str(self.gid)
        return f"{self.user}:{group}"


def _user_entry(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise PosixUserError(f"posixUser {name!r}: no such user on this device", code="POSIX_USER_UNKNOWN") from None


def _group_id(name: str, spec: str) -> int:
    try:
        return grp.getgrgid(int(name)).gr_gid if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError:
        raise PosixUserError(f"posixUser {spec!r}: no such group {name!r} on this device",
                             code="POSIX_GROUP_UNKNOWN") from None


def lookup(spec: str) -> RunAs:
    """Resolve ``user`` or ``user:group`` (names or ids); raises :class:`PosixUserError`."""
    text = spec.strip()
    user, sep, group = text.partition(":")
    if not user or (sep and not group) or text.count(":") > 1 or any(c.isspace() for c in text):
        raise PosixUserError(f"invalid posixUser {spec!r}: expected 'user' or 'user:group'",
                             code="POSIX_USER_INVALID")
    entry = _user_entry(user)
    gid = _group_id(group, spec) if sep else entry.pw_gid
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, gid))))
    return RunAs(entry.pw_name, entry.pw_uid, gid, groups, entry.pw_dir)


def current() -> RunAs:
    """The identity the agent itself runs as."""
    uid = os.geteuid()
    try:
        entry = pwd.getpwuid(uid)
        name, home = entry.pw_name, entry.pw_dir
    except KeyError:
        name, home = str(uid), os.environ.get("HOME", "/")
    return RunAs(name, uid, os.getegid(), tuple(sorted(set(os.getgroups()))), home)


def ensure_system_user(name: str) -> RunAs:
    """The user ``name``; created (with a group of the same name, no login, no home) if missing."""
    try:
        return lookup(name)
    except PosixUserError as err:
        if err.code != "POSIX_USER_UNKNOWN" or ":" in name or name.isdigit():
            raise
    useradd = shutil.which("useradd") or shutil.which("useradd", path="/usr/sbin:/sbin")
    if useradd is None:
        raise PosixUserError(f"the component user {name!r} does not exist and useradd is not installed: "
                             f"create it, or start the agent with --component-default-user USER",
                             code="POSIX_USER_UNKNOWN")
    shell = next((s for s in _NOLOGIN if os.path.exists(s)), "/bin/false")
    args = [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", shell]
    try:
        grp.getgrnam(name)
        args += ["--gid", name]
    except KeyError:
        args += ["--user-group"]
    result = subprocess.run([*args, name], capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise PosixUserError(f"could not create the component user {name!r}: {result.stderr.strip()}",
                             code="POSIX_USER_UNKNOWN")
    logger.info("created the system user %s for components", name)
    return lookup(name)


class Isolation:
    """Decides the :class:`RunAs` of each lifecycle step (see the module docstring)."""

    def __init__(self, enabled: bool, default: RunAs | None, agent: RunAs) -> None:
        self.enabled = enabled
        self.default = default
        self.agent = agent

    @classmethod
    def for_agent(cls, default_user: str | None = None) -> Isolation:
        agent = current()
        if agent.uid != 0:
            logger.warning("the agent runs as %s, not root: component isolation is off, components run as %s",
                           agent.user, agent.user)
            return cls(False, None, agent)
        default = ensure_system_user(default_user or DEFAULT_COMPONENT_USER)
        if default.uid == 0:
            logger.warning("the component default user %s is root: component isolation is off", default.user)
            return cls(False, None, agent)
        return cls(True, default, agent)

    @classmethod
    def off(cls) -> Isolation:
        """Components run as the agent's user, whoever that is (tests of the supervisor alone)."""
        return cls(False, None, current())

    def resolve(self, posix_user: str | None, component: str) -> RunAs | None:
        """The identity of ``component``'s steps; None means "as the agent" (no switch)."""
        if not self.enabled:
            if posix_user is None:
                return None
            wanted = lookup(posix_user)
            if wanted.uid == self.agent.uid and wanted.gid in (self.agent.gid, *self.agent.groups):
                return None
            raise PosixUserError(f"{component}: cannot run as {posix_user!r}: the agent runs as {self.agent.user}, "
                                 f"not root, so components run as {self.agent.user}", code="POSIX_USER_UNAVAILABLE")
        if posix_user is None:
            return self.default
        wanted = lookup(posix_user)
        return None if wanted.uid == 0 and wanted.gid == 0 else wanted
