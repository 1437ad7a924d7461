"""What a component may touch on the device, and what it may not.

The agent keeps its own state private and gives each component a place of its own:

* **The root folder's modes** (:meth:`Workspace.secure_root`). With isolation on (the agent is
  root, components run as other users) the root is ``0711``: a component can reach the paths it
  is given (the IPC socket, its work folder, its artifacts) but cannot list anything.
  ``state.db``, ``cli.token``, ``hub.json`` are ``0600``, the spool, the logs and the recipes
  ``0700``; artifacts are root's, readable (not writable) by the component's group as their
  ``Permission`` says.
* **A work folder** ``work/<name>`` owned by the component's user, mode ``0700``.
* **A Python environment of its own** ``envs/<name>`` (:meth:`Workspace.prepare`): a virtual
  environment on the *component interpreter* (the system ``python3`` by default, as on
  Greengrass; ``--component-python`` to choose), created as the component's user with the
  system site-packages visible, so ``python3``/``pip3`` in a recipe resolve there and
  ``pip3 install xgboost==1.6.2`` changes that environment only, never the agent's. ``roost.ipc``
  is importable in it through a ``.pth`` file naming ``sdk/``, a folder holding only the IPC
  client package. The ``roost`` command (``roost serve``, ``roost lambda run``) is
  ``bin/roost``, a wrapper that runs the agent's installation read-only.

When the interpreter cannot make environments (no ``venv`` module), components get it directly
and the agent says so once.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import roost
from roost.agent.component_spec import ComponentSpec
from roost.agent.errors import AgentError
from roost.agent.paths import AgentPaths
from roost.agent.users import Isolation, RunAs

logger = logging.getLogger(__name__)

#: Files of the ``roost`` package that make up the component SDK (pure Python, stdlib only).
SDK_FILES = ("__init__.py", "py.typed", "errors.py")
SDK_PACKAGES = ("ipc",)
_VENV_TIMEOUT = 60.0
_PIP_WRAPPER = '#!/bin/sh\nexec "$(dirname "$0")/python3" -m pip "$@"\n'


def default_component_python() -> str:
    """The system interpreter when there is one, else the one the agent's Python is built on."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    return getattr(sys, "_base_executable", sys.executable)


def agent_command() -> list[str]:
    """How to run this installation's ``roost`` command."""
    script = Path(sys.executable).parent / "roost"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "roost"]


def _chmod(path: Path, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except FileNotFoundError:
        pass


class Workspace:
    """Prepares the root folder and each component's folders (see the module docstring)."""

    def __init__(self, paths: AgentPaths, isolation: Isolation, component_python: str | None = None) -> None:
        self.paths = paths
        self.isolation = isolation
        self.python = component_python or default_component_python()
        self._venv_ok: bool | None = None
        self._pip_available: bool | None = None

    # -- the root folder ---------------------------------------------------------------------------
    def secure_root(self) -> None:
        """Set the modes of the root folder's contents (see the module docstring).

        With isolation on, raises :class:`~roost.agent.errors.AgentError` (``AGENT_ROOT_UNREACHABLE``)
        when a folder above the root is not searchable by other users: components could reach
        neither the IPC socket nor their own files.
        """
        p = self.paths
        if self.isolation.enabled:
            for parent in p.root.parents:
                if not os.stat(parent).st_mode & stat.S_IXOTH:
                    raise AgentError(
                        f"components run as {self.isolation.default.describe() if self.isolation.default else '?'} "
                        f"could not reach the agent root {p.root}: {parent} is not searchable by other users "
                        f"(mode {stat.S_IMODE(os.stat(parent).st_mode):04o}); use a root below a folder others can "
                        f"search (e.g. --root /var/lib/roost) or `chmod o+x {parent}`", code="AGENT_ROOT_UNREACHABLE")
        _chmod(p.root, 0o711 if self.isolation.enabled else 0o700)
        for private in (p.state_db, p.state_db.with_name("state.db-wal"), p.state_db.with_name("state.db-shm"),
                        p.cli_token, p.root / "hub.json", p.pid_file):
            _chmod(private, 0o600)
        for folder in (p.logs, p.recipes, p.root / "spool"):
            _chmod(folder, 0o700)
        for shared in (p.root / "packages", p.root / "packages" / "artifacts",
                       p.root / "packages" / "artifacts-unarchived", p.root / "work", p.envs_root):
            shared.mkdir(parents=True, exist_ok=True)
            _chmod(shared, 0o711)
        for log in p.logs.glob("*"):
            _chmod(log, 0o600)
        self._install_sdk()
        self._install_command()

    def _install_sdk(self) -> None:
        """``ROOT/sdk``: only the IPC client package, readable by everyone (root's when isolated)."""
        src = Path(roost.__file__).parent
        target = self.paths.sdk
        tmp = Path(tempfile.mkdtemp(prefix=".sdk-", dir=self.paths.root))
        try:
            pkg = tmp / "roost"
            pkg.mkdir()
            for name in SDK_FILES:
                if (src / name).exists():
                    shutil.copyfile(src / name, pkg / name)
            for sub in SDK_PACKAGES:
                shutil.copytree(src / sub, pkg / sub, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            _open_tree(tmp)
            old = target.with_name(".sdk-old")
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _install_command(self) -> None:
        self.paths.bin.mkdir(exist_ok=True)
        _chmod(self.paths.bin, 0o755)
        command = " ".join(_sh_quote(a) for a in agent_command())
        wrapper = self.paths.bin / "roost"
        tmp = wrapper.with_name(".roost.part")
        tmp.write_text(f'#!/bin/sh\n# Roost\'s own command, run from the agent\'s installation (read-only).\n'
                       f'exec {command} "$@"\n')
        os.chmod(tmp, 0o755)
        os.replace(tmp, wrapper)

    def check_reachable(self) -> str | None:
        """Why the default component user cannot run the agent's ``roost`` command (None if it can)."""
        run_as = self.isolation.default
        if run_as is None:
            return None
        targets = [os.path.realpath(a) for a in agent_command()[:1]]
        targets.append(os.path.realpath(sys.executable))
        targets.append(str(Path(roost.__file__).resolve()))
        script = " && ".join(f"test -r {_sh_quote(t)}" for t in targets)
        result = subprocess.run(["/bin/sh", "-c", script], user=run_as.uid, group=run_as.gid, extra_groups=[],
                                capture_output=True, timeout=10, check=False, cwd="/")
        if result.returncode == 0:
            return None
        blocked = next((str(parent) for t in targets for parent in reversed(Path(t).parents)
                        if parent.is_dir() and not os.stat(parent).st_mode & stat.S_IXOTH), None)
        where = f" ({blocked} is not searchable by other users)" if blocked else ""
        return (f"component user {run_as.user} cannot read this agent's installation{where}: recipes that run "
                f"`roost ...` will fail; install Roost where other users can read it (e.g. a venv outside /root)")

    # -- one component -----------------------------------------------------------------------------
    def prepare(self, spec: ComponentSpec) -> None:
        """Make the work folder and the Python environment of ``spec`` ready for its user."""
        run_as = spec.run_as
        work = spec.work_dir
        work.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            _own(work, run_as)
            _chmod(work, 0o700)
        if run_as is not None:
            for folder in (self.paths.artifacts(spec.name, spec.version),
                           self.paths.artifacts_unarchived(spec.name, spec.version)):
                _share_read_only(folder, run_as)
        env_dir = self.paths.env_dir(spec.name)
        if self._venv_ok is False or (env_dir / "bin" / "python3").exists():
            if run_as is not None:
                _own(env_dir, run_as)  # a posixUser change hands the environment over
            return
        self._create_env(spec.name, env_dir, run_as)

    def remove(self, name: str) -> None:
        """Forget a removed component's Python environment (its work folder stays, as on Greengrass)."""
        shutil.rmtree(self.paths.env_dir(name), ignore_errors=True)

    def _create_env(self, name: str, env_dir: Path, run_as: RunAs | None) -> None:
        env_dir.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            os.chown(env_dir, run_as.uid, run_as.gid)
        _chmod(env_dir, 0o700 if run_as is not None else 0o755)
        identity: dict[str, object] = {}
        if run_as is not None:
            identity = {"user": run_as.uid, "group": run_as.gid, "extra_groups": list(run_as.groups)}
        result = subprocess.run(  # type: ignore[call-overload]
            [self.python, "-m", "venv", "--without-pip", "--system-site-packages", str(env_dir)],
            capture_output=True, text=True, timeout=_VENV_TIMEOUT, check=False, cwd="/",
            env={"PATH": os.defpath, "LANG": "C.UTF-8"}, **identity)
        if result.returncode != 0:
            self._venv_ok = False
            shutil.rmtree(env_dir, ignore_errors=True)
            logger.warning("component Python environments are off: %s -m venv failed (%s); components use %s "
                           "directly", self.python, (result.stderr or "").strip().splitlines()[-1:] or "no output",
                           self.python)
            return
        self._venv_ok = True
        site = next(env_dir.glob("lib/python*/site-packages"), None)
        if site is not None:
            pth = site / "roost-sdk.pth"
            pth.write_text(str(self.paths.sdk) + "\n")
            if run_as is not None:
                os.chown(pth, run_as.uid, run_as.gid)
        if self._has_pip():
            for script in ("pip", "pip3"):
                path = env_dir / "bin" / script
                path.write_text(_PIP_WRAPPER)
                os.chmod(path, 0o755)
                if run_as is not None:
                    os.chown(path, run_as.uid, run_as.gid)
        logger.info("%s: Python environment created in %s (on %s)", name, env_dir, self.python)

    def _has_pip(self) -> bool:
        if self._pip_available is None:
            result = subprocess.run([self.python, "-c", "import pip"], capture_output=True, timeout=_VENV_TIMEOUT,
                                    check=False, cwd="/")
            self._pip_available = result.returncode == 0
        return self._pip_available

    def environment(self, name: str, run_as: RunAs | None, base_path: str) -> dict[str, str]:
        """``PATH``, ``VIRTUAL_ENV``, ``HOME``, ``USER``, ``LOGNAME`` of ``name``'s steps."""
        env_dir = self.paths.env_dir(name)
        parts = [str(env_dir / "bin")] if self._venv_ok is not False else []
        parts.append(str(self.paths.bin))
        parts += [p for p in base_path.split(os.pathsep) if p and p not in _agent_bin_dirs()]
        out = {"PATH": os.pathsep.join(parts)}
        if self._venv_ok is not False:
            out["VIRTUAL_ENV"] = str(env_dir)
        if run_as is not None:
            home = run_as.home if run_as.home and os.path.isdir(run_as.home) else str(self.paths.work(name))
            out.update({"HOME": home, "USER": run_as.user, "LOGNAME": run_as.user})
        return out


def _agent_bin_dirs() -> set[str]:
    """Folders on PATH that hold the agent's own interpreter: never a component's ``python3``."""
    return {str(Path(sys.executable).parent), str(Path(sys.prefix) / "bin")}


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _open_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)


def _share_read_only(folder: Path, run_as: RunAs) -> None:
    """Artifacts stay root's; the component's group gets what their owner bits allow, minus write."""
    if not folder.is_dir():
        return
    for target in _walk(folder):
        st = os.lstat(target)
        if stat.S_ISLNK(st.st_mode):
            continue
        mode = stat.S_IMODE(st.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH)
        if stat.S_ISDIR(st.st_mode):
            mode |= 0o755
        else:
            if mode & stat.S_IRUSR:
                mode |= stat.S_IRGRP
            if mode & stat.S_IXUSR:
                mode |= stat.S_IXGRP
        if st.st_uid != 0 or st.st_gid != run_as.gid:
            os.lchown(target, 0, run_as.gid)
        if mode != stat.S_IMODE(st.st_mode):
            os.chmod(target, mode)


def _own(path: Path, run_as: RunAs) -> None:
    """Hand ``path`` (recursively, when it is not the user's yet) to ``run_as``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if st.st_uid == run_as.uid and st.st_gid == run_as.gid:
        return
    for target in _walk(path):
        os.lchown(target, run_as.uid, run_as.gid)


def _walk(path: Path) -> Iterable[Path]:
    yield path
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, filenames in os.walk(path):
            for n in (*dirnames, *filenames):
                yield Path(dirpath) / n
