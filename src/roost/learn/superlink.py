"""Flower's processes, started from the Flower venv: the SuperLink, SuperNodes and ``flwr run``.

flwr 1.42 pins fastapi/rich/typer/uvicorn ranges that conflict with Roost's own pins, so it lives in
its own interpreter (``make flower`` builds ``.venv-flower`` from ``requirements/flower.txt``;
``ROOST_FLOWER_BIN`` or a component's ``flowerBin`` configuration names another bin folder). Roost only
starts these commands as subprocesses, with the bin folder first on ``PATH`` (the SuperLink starts
``flower-superexec`` by name) and a private ``FLWR_HOME`` per job (the ``flwr`` CLI's connection file).

The SuperLink serves TLS with the job's certificate (:mod:`roost.learn.tls`) on 127.0.0.1 unless an
address is configured; the app's runtime dependency installation (``uv sync``) is off.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from roost.learn.errors import FlowerMissingError, FlowerProcessError
from roost.learn.tls import JobTLS

__all__ = ["APP_DIR", "PID_FILES", "FlowerProcess", "SuperLink", "flower_bin", "free_port", "kill_leftovers", "run_app",
           "start_supernode"]

log = logging.getLogger(__name__)

APP_DIR = Path(__file__).parent / "flower_app"
_REPO_VENV = Path(__file__).resolve().parents[3] / ".venv-flower" / "bin"
#: The job folder's records of the SuperLink's and ``flwr run``'s process ids (each leads its own session).
PID_FILES = ("superlink.pid", "flwr-run.pid")


def flower_bin(configured: str | None = None) -> Path:
    """The bin folder holding flower-superlink, flower-supernode and flwr; raises FlowerMissingError."""
    where = Path(configured or os.environ.get("ROOST_FLOWER_BIN") or _REPO_VENV)
    for name in ("flower-superlink", "flower-supernode", "flower-superexec", "flwr"):
        if not os.access(where / name, os.X_OK):
            raise FlowerMissingError(f"{where / name} is missing: build the Flower venv with `make flower` (or set "
                                     "ROOST_FLOWER_BIN to a bin folder with flwr==1.42.0 installed)")
    return where


def _env(bin_dir: Path, home: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROOST_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    if home is not None:
        env["FLWR_HOME"] = str(home)
    return env


@dataclass
class FlowerProcess:
    """A started Flower command with its log file; stop() terminates it (then kills it)."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _spawn(name: str, argv: list[str], env: dict[str, str], log_path: Path) -> FlowerProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    log.info("started %s (pid %d)", name, proc.pid)
    return FlowerProcess(name, proc, log_path)


def _wait_port(host: str, port: int, process: FlowerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise FlowerProcessError(f"{process.name} exited with {process.proc.returncode}: {process.tail()}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise FlowerProcessError(f"{process.name} did not listen on {host}:{port} within {timeout:.0f} s")


@dataclass
class SuperLink:
    """One job's SuperLink: its process, its address and the ``flwr`` connection file in ``home``."""

    bin_dir: Path
    folder: Path
    host: str
    port: int
    tls: JobTLS | None
    process: FlowerProcess | None = field(default=None)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def home(self) -> Path:
        return self.folder / "flwr-home"

    def start(self, timeout: float = 30.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        security = (f'root-certificates = "{self.tls.ca_cert}"' if self.tls else "insecure = true")
        (self.home / "config.toml").write_text(f'[superlink]\ndefault = "roost"\n\n[superlink.roost]\n'
                                               f'address = "{self.address}"\n{security}\n')
        argv = [str(self.bin_dir / "flower-superlink"), "--host", self.host, "--port", str(self.port),
                "--disable-runtime-dependency-installation", "--database", str(self.folder / "superlink.db")]
        if self.tls:
            argv += ["--ssl-certfile", str(self.tls.server_cert), "--ssl-keyfile", str(self.tls.server_key),
                     "--ssl-ca-certfile", str(self.tls.ca_cert)]
        else:
            argv.append("--insecure")
        self.process = _spawn("flower-superlink", argv, _env(self.bin_dir, self.home), self.folder / "superlink.log")
        (self.folder / PID_FILES[0]).write_text(str(self.process.proc.pid))
        _wait_port(self.host, self.port, self.process, timeout)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def start_supernode(bin_dir: Path, superlink: str, data_path: Path, log_path: Path, *, runtime_port: int,
                    ca_cert: Path | None, home: Path | None = None) -> FlowerProcess:
    """A SuperNode connected to ``superlink`` that trains on ``data_path`` (the device's own CSV);
    ``home`` is its ``FLWR_HOME`` (where it installs the app), else Flower's default (``~/.flwr``)."""
    argv = [str(bin_dir / "flower-supernode"), "--superlink", superlink, "--port", str(runtime_port),
            "--node-config", f'data-path="{data_path}"', "--max-wait-time", "120"]
    argv += ["--root-certificates", str(ca_cert)] if ca_cert else ["--insecure"]
    return _spawn("flower-supernode", argv, _env(bin_dir, home), log_path)


def run_app(link: SuperLink, run_config: dict[str, str | int | float | bool], *, timeout: float,
            cancel: threading.Event | None = None,
            on_poll: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
    """``flwr run`` the wine app on ``link`` and stream its logs until the run ends (bounded by ``timeout``;
    ``cancel`` set ends it early with FlowerProcessError); ``on_poll`` is called every half second meanwhile."""
    def toml(value: str | int | float | bool) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return f'"{value}"' if isinstance(value, str) else str(value)

    pairs = " ".join(f"{key}={toml(value)}" for key, value in run_config.items())
    argv = [str(link.bin_dir / "flwr"), "run", str(APP_DIR), "roost", "--stream", "--run-config", pairs]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(link.bin_dir, link.home), start_new_session=True)
    (link.folder / PID_FILES[1]).write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while True:
        try:
            out, err = proc.communicate(timeout=0.5)
            return subprocess.CompletedProcess(argv, proc.returncode, out, err)
        except subprocess.TimeoutExpired:
            if on_poll is not None:
                on_poll()
            why = ("the run was cancelled" if cancel is not None and cancel.is_set()
                   else f"flwr run did not end within {timeout:.0f} s" if time.monotonic() > deadline else None)
            if why is not None:
                proc.kill()
                proc.communicate()
                raise FlowerProcessError(why) from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def kill_leftovers(folder: Path) -> list[int]:
    """Kill the SuperLink and ``flwr run`` a job folder's process ids name, if they still run (their hub
    process died without stopping them: they lead their own sessions). A process id is only trusted while
    that process' command line names ``folder`` (a reused id is someone else's). Returns the ids killed."""
    killed = []
    for name in PID_FILES:
        try:
            pid = int((folder / name).read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if str(folder) not in cmdline:
            continue
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        log.warning("killed %s (pid %d) left running by a stopped hub", name.removesuffix(".pid"), pid)
        killed.append(pid)
    return killed
