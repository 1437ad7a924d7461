"""Roost as a system service: the systemd units of the agent and the hub, written and enabled.

``roost agent install-service`` and ``roost hub install-service`` render a unit with
:func:`agent_unit` / :func:`hub_unit` and install it with :func:`install`: a system unit
(``/etc/systemd/system``) when run as root, a user unit (``~/.config/systemd/user``) otherwise.
``systemctl daemon-reload`` and ``enable [--now]`` run only where systemd is the init system
(``/run/systemd/system`` exists, as ``sd_booted()`` checks) and, for a user unit, the user's
manager answers (``$XDG_RUNTIME_DIR/systemd``); elsewhere (a container, a chroot) the unit is
written and the result says why it was not enabled, so a caller (the provisioning playbook) can
start the agent another way.

**Who the process runs as.**

* The hub runs as a dedicated system user (``roost-hub`` unless ``--user``), created when missing,
  owning the hub root; its unit is hardened fully: ``ProtectSystem=strict`` with the root as the
  only writable path, no capabilities, private ``/tmp`` and devices, kernel and cgroup trees read
  only. A database URL (it may hold a password) goes into ``ROOT/hub.env`` (0600), read through
  ``EnvironmentFile=``, never into the world-readable unit.
* The agent runs as root by default, because isolating components from it and from each other
  needs root: each component runs as its own user (Greengrass' ``ggc_user`` model, see
  :mod:`roost.agent.users`) and is frozen through the agent's delegated cgroup (``Delegate=yes``).
  Its hardening stops where components would break: ``NoNewPrivileges`` (a component's
  ``RequiresPrivilege`` step runs as root directly; ``sudo`` inside a component does not work),
  kernel modules, logs, clock and hostname protected; the file system is left writable, since
  Greengrass recipes install packages with ``RequiresPrivilege`` steps. ``harden=True``
  (``--harden``) adds ``ProtectSystem=full`` and ``ProtectHome=read-only`` for devices whose
  components write neither ``/usr`` nor ``/etc``. With ``user=NAME`` (``--user``) the agent runs as
  that dedicated unprivileged user instead (created when missing, owning the root): components
  then run as the same user (no per-component isolation, as :mod:`roost.agent.users` says) and the
  unit is hardened like the hub's.

The agent stops its components itself on SIGTERM (``KillMode=mixed``: only the main process gets
the signal; whatever is left when ``TimeoutStopSec`` runs out is killed) and ``Restart=on-failure``
brings it back after a crash, not after ``roost agent stop``.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from roost.errors import ConflictError, InvalidInputError
from roost.provision.errors import ServiceUnitError

logger = logging.getLogger(__name__)

Scope = Literal["system", "user"]
#: Unit names Roost writes: letters, digits and ``-_.@``, ending ``.service``.
UNIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,200}\.service$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
DEFAULT_HUB_USER = "roost-hub"
SYSTEMD_RUNNING = Path("/run/systemd/system")
_NOLOGIN = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")

#: Options every Roost unit gets.
_COMMON = ("NoNewPrivileges=yes", "ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectClock=yes",
           "ProtectHostname=yes", "LockPersonality=yes", "RestrictRealtime=yes", "RestrictSUIDSGID=yes",
           "SystemCallArchitectures=native")
#: What a process that needs no root, no devices and writes only its root folder also gets.
_STRICT = ("ProtectSystem=strict", "PrivateTmp=yes", "PrivateDevices=yes", "ProtectKernelTunables=yes",
           "ProtectControlGroups=yes", "ProtectProc=invisible", "RestrictNamespaces=yes",
           "CapabilityBoundingSet=", "AmbientCapabilities=", "UMask=0077")


@dataclass(frozen=True)
class ServiceUnit:
    """A rendered unit: its name, where it goes, its text and what :func:`install` must prepare."""

    name: str
    scope: Scope
    path: Path
    text: str
    #: The dedicated user the unit runs as (created when missing, given ``owns``), or None.
    user: str | None = None
    #: The folder that user must own (the agent's or the hub's root).
    owns: Path | None = None
    #: ``ROOT/hub.env`` contents, written 0600 beside the unit (the database URL), or None.
    environment_file: tuple[Path, str] | None = None


@dataclass(frozen=True)
class InstallResult:
    unit: Path
    enabled: bool
    started: bool
    reason: str | None

    def as_json(self) -> dict[str, object]:
        return {"unit": str(self.unit), "enabled": self.enabled, "started": self.started, "reason": self.reason}


def default_scope() -> Scope:
    return "system" if os.geteuid() == 0 else "user"


def unit_dir(scope: Scope) -> Path:
    if scope == "system":
        return Path("/etc/systemd/system")
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def roost_executable() -> Path:
    """The ``roost`` script of this installation (beside the running interpreter), absolute."""
    here = Path(sys.executable).parent / "roost"
    found = here if here.is_file() else (Path(p) if (p := shutil.which("roost")) else None)
    if found is None:
        raise ServiceUnitError(f"no `roost` executable beside {sys.executable} or on PATH: install Roost into "
                               "that environment first", code="SERVICE_UNIT_INVALID")
    return found.absolute()


def quote(word: str, what: str) -> str:
    """One ExecStart word, quoted by systemd's rules (``%`` doubled); control characters refused."""
    if any(ord(c) < 32 or ord(c) == 127 for c in word):
        raise InvalidInputError(f"{what} {word!r} holds a control character; a systemd unit cannot carry it",
                                code="SERVICE_UNIT_INVALID")
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def bare(value: str, what: str) -> str:
    """A whole-line setting (``EnvironmentFile=``, which takes no quotes): ``%`` doubled, control
    characters refused."""
    return quote(value, what)[1:-1].replace('\\"', '"').replace("\\\\", "\\")


def check_name(name: str) -> str:
    if not UNIT_NAME.fullmatch(name):
        raise InvalidInputError(f"unit name {name!r} is not a systemd service name (letters, digits, '-_.@', "
                                "ending in .service)", code="SERVICE_UNIT_INVALID")
    return name


def check_user(user: str) -> str:
    if not USER_NAME.fullmatch(user) or user == "root":
        raise InvalidInputError(f"service user {user!r} is not a valid dedicated user name (lower-case letters, "
                                "digits, '_' and '-', at most 32; not root)", code="SERVICE_UNIT_INVALID")
    return user


def _render(description: str, exec_start: list[str], service: list[str]) -> str:
    lines = ["# Written by Roost's install-service; change it with `systemctl edit` (an override survives a",
             "# re-install).", "[Unit]", f"Description={description}", "After=network-online.target",
             "Wants=network-online.target", "StartLimitIntervalSec=300", "StartLimitBurst=5", "", "[Service]",
             "Type=simple", "ExecStart=" + " ".join(exec_start), "Restart=on-failure", "RestartSec=5", *service,
             "", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def _home_protection(root: Path) -> str:
    """``ProtectHome=yes`` hides /home, /root and /run/user: read-only where the root lies inside them
    (``ReadWritePaths`` then opens just the root)."""
    inside = any(root == p or p in root.parents for p in (Path("/home"), Path("/root"), Path("/run/user")))
    return "ProtectHome=read-only" if inside else "ProtectHome=yes"


def agent_unit(root: Path, *, name: str = "roost-agent.service", user: str | None = None, harden: bool = False,
               scope: Scope | None = None, roost: Path | None = None) -> ServiceUnit:
    """The agent's unit for ``root`` (see the module docstring for what each choice means)."""
    scope = scope or default_scope()
    root = root.absolute()
    if scope == "user" and user is not None:
        raise InvalidInputError("--user needs a system unit (run install-service as root); a user unit runs as "
                                "the user who installs it", code="SERVICE_UNIT_INVALID")
    exe = roost or roost_executable()
    exec_start = [quote(str(exe), "the roost executable"), "agent", "start", "--root", quote(str(root), "root")]
    service = [f"Environment={quote('ROOST_ROOT=' + str(root), 'root')}", "KillMode=mixed", "TimeoutStopSec=150",
               "LimitNOFILE=65536", *_COMMON]
    if scope == "system" and user is None:
        service += ["User=root", "Delegate=yes"]
        if harden:
            service += ["ProtectSystem=full", _home_protection(root)]
    elif user is not None:
        service += [f"User={check_user(user)}", f"Group={user}", "Delegate=yes", *_STRICT, _home_protection(root),
                    f"ReadWritePaths={quote(str(root), 'root')}"]
    else:  # a user unit: the user's own manager, no capabilities to drop
        service += ["Delegate=yes"]
    if scope == "user":
        text = _render(f"Roost device agent ({root})", exec_start, service).replace(
            "WantedBy=multi-user.target", "WantedBy=default.target")
    else:
        text = _render(f"Roost device agent ({root})", exec_start, service)
    name = check_name(name)
    return ServiceUnit(name=name, scope=scope, path=unit_dir(scope) / name, text=text, user=user,
                       owns=root if user else None)


def hub_unit(root: Path, *, name: str = "roost-hub.service", user: str = DEFAULT_HUB_USER, host: str = "127.0.0.1",
             port: int = 8080, workers: int = 1, db_url: str | None = None, scope: Scope | None = None,
             roost: Path | None = None) -> ServiceUnit:
    """The hub's unit: ``roost hub serve`` as a dedicated user, hardened fully (module docstring)."""
    scope = scope or default_scope()
    root = root.absolute()
    if scope != "system":
        raise InvalidInputError("the hub's unit is a system unit with a dedicated user: run install-service as root "
                                "(or use --print and install it yourself)", code="SERVICE_UNIT_INVALID")
    if not 0 < port < 65536:
        raise InvalidInputError(f"--port {port} is not a TCP port (1-65535)", code="SERVICE_UNIT_INVALID")
    exe = roost or roost_executable()
    exec_start = [quote(str(exe), "the roost executable"), "hub", "serve", "--root", quote(str(root), "root"),
                  "--host", quote(host, "host"), "--port", str(port), "--workers", str(workers)]
    service = [f"User={check_user(user)}", f"Group={user}", "KillMode=mixed", "TimeoutStopSec=30",
               "LimitNOFILE=65536", *_COMMON, *_STRICT, _home_protection(root),
               f"ReadWritePaths={quote(str(root), 'root')}"]
    if port < 1024:  # the only capability the hub may need
        service = [s for s in service if not s.startswith(("CapabilityBoundingSet=", "AmbientCapabilities="))]
        service += ["CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "AmbientCapabilities=CAP_NET_BIND_SERVICE"]
    env: tuple[Path, str] | None = None
    if db_url:
        if "\n" in db_url:
            raise InvalidInputError("--db holds a line break", code="SERVICE_UNIT_INVALID")
        env = (root / "hub.env", f"ROOST_HUB_DB={db_url}\n")
        service.append(f"EnvironmentFile={bare(str(env[0]), 'root')}")
    name = check_name(name)
    return ServiceUnit(name=name, scope=scope, path=unit_dir(scope) / name,
                       text=_render(f"Roost hub ({root})", exec_start, service), user=user, owns=root,
                       environment_file=env)


def systemd_manager(scope: Scope) -> str | None:
    """Why systemctl cannot manage ``scope`` units here, or None when it can (detected, not assumed)."""
    if not SYSTEMD_RUNNING.is_dir():
        return f"systemd is not the init system here ({SYSTEMD_RUNNING} does not exist)"
    if shutil.which("systemctl") is None:
        return "systemctl is not installed"
    if scope == "user":
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if not runtime or not (Path(runtime) / "systemd").is_dir():
            return ("no systemd user manager answers for this user (XDG_RUNTIME_DIR/systemd is missing; "
                    "`loginctl enable-linger` starts one at boot)")
    return None


def ensure_user(user: str, home: Path) -> None:
    """The dedicated system user and group, created when missing (root only)."""
    try:
        pwd.getpwnam(user)
        return
    except KeyError:
        pass
    useradd = shutil.which("useradd") or shutil.which("useradd", path="/usr/sbin:/sbin")
    if useradd is None:
        raise ServiceUnitError(f"user {user!r} does not exist and useradd is not installed", code="SERVICE_UNIT_FAILED")
    shell = next((s for s in _NOLOGIN if Path(s).exists()), "/bin/false")
    done = subprocess.run([useradd, "--system", "--user-group", "--home-dir", str(home), "--no-create-home",
                           "--shell", shell, user], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise ServiceUnitError(f"useradd {user} failed: {done.stderr.strip() or done.returncode}",
                               code="SERVICE_UNIT_FAILED")
    logger.info("created system user %s", user)


def _chown_tree(root: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            os.chown(path, entry.pw_uid, entry.pw_gid)


def _systemctl(scope: Scope, *args: str) -> None:
    command = ["systemctl", *(["--user"] if scope == "user" else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise ServiceUnitError(f"`{' '.join(command)}` failed: {done.stderr.strip() or done.returncode}",
                               code="SERVICE_UNIT_FAILED")


def install(unit: ServiceUnit, *, start: bool = True) -> InstallResult:
    """Write the unit (and its environment file), prepare its user, and enable it where systemd runs."""
    if unit.scope == "system" and os.geteuid() != 0:
        raise ServiceUnitError(f"writing {unit.path} needs root", code="SERVICE_UNIT_FAILED")
    if unit.user is not None and unit.owns is not None:
        ensure_user(unit.user, unit.owns)
    if unit.environment_file is not None:
        path, text = unit.environment_file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(path, 0o600)
    if unit.user is not None and unit.owns is not None:
        _chown_tree(unit.owns, unit.user)
    unit.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unit.path.with_name(unit.path.name + ".tmp")
    tmp.write_text(unit.text)
    tmp.chmod(0o644)
    tmp.replace(unit.path)
    reason = systemd_manager(unit.scope)
    if reason is not None:
        logger.info("wrote %s; not enabled: %s", unit.path, reason)
        return InstallResult(unit.path, enabled=False, started=False, reason=reason)
    _systemctl(unit.scope, "daemon-reload")
    _systemctl(unit.scope, "enable", *(["--now"] if start else []), unit.name)
    return InstallResult(unit.path, enabled=True, started=start, reason=None)


def uninstall(name: str, scope: Scope | None = None, *, root: Path | None = None) -> InstallResult:
    """Stop and disable the unit where systemd runs, and remove its file. With ``root``, a unit that runs
    another root is refused (``SERVICE_UNIT_OTHER_ROOT``): two agents on one machine have two units."""
    scope = scope or default_scope()
    path = unit_dir(scope) / check_name(name)
    if root is not None and path.exists():
        wanted = "--root " + quote(str(root.absolute()), "root")
        if wanted not in path.read_text():
            raise ConflictError(f"{path} does not run {root} (no `{wanted}` in its ExecStart); name that root's "
                                "unit with --name", code="SERVICE_UNIT_OTHER_ROOT")
    reason = systemd_manager(scope)
    if reason is None and path.exists():
        _systemctl(scope, "disable", "--now", name)
    existed = path.exists()
    path.unlink(missing_ok=True)
    if reason is None:
        _systemctl(scope, "daemon-reload")
    return InstallResult(path, enabled=False, started=False,
                         reason=reason if existed else f"{path} was not installed")
