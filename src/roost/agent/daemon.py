"""Running the agent as a background process: the PID lock, ``--detach`` and ``agent stop``.

A detached agent logs through a size-capped rotating handler into ``logs/agent.log`` (10 MiB,
``.1`` .. ``.3`` backups: see :func:`roost.agent.logfile.configure_agent_logging`). Its
stdout/stderr go to ``logs/agent.out``, truncated at every start: only what bypasses logging
lands there (an uncaught traceback at start, a C-level crash), and ``start_detached`` shows its
tail with the log's when the agent dies during start.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from roost.agent.errors import AgentError
from roost.agent.paths import AgentPaths
from roost.errors import ConflictError, OperationTimeoutError


class PidLock:
    """An exclusive lock on ``agent.pid`` holding the agent's PID: never two agents on one root."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> PidLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(fd)
            raise ConflictError(f"another agent is already running on {self.path.parent} (pid {read_pid(self.path)})",
                                code="AGENT_ALREADY_RUNNING") from err
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def running_pid(paths: AgentPaths) -> int | None:
    """The PID of the agent holding the lock on this root, or None."""
    if not paths.pid_file.exists():
        return None
    fd = os.open(paths.pid_file, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_pid(paths.pid_file)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def socket_ready(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def agent_stdio_log(paths: AgentPaths) -> Path:
    """Where a detached agent's stdout/stderr go (truncated at each start)."""
    return paths.logs / "agent.out"


def start_detached(paths: AgentPaths, thing_name: str | None, timeout: float = 60.0,
                   extra_args: list[str] | None = None) -> int:
    """Start the agent in the background; return its PID once the IPC socket accepts connections."""
    pid = running_pid(paths)
    if pid is not None:
        raise ConflictError(f"an agent is already running on {paths.root} (pid {pid})", code="AGENT_ALREADY_RUNNING")
    paths.ensure()
    args = [sys.executable, "-m", "roost.agent", "--root", str(paths.root)]
    if thing_name:
        args += ["--thing-name", thing_name]
    args += ["--log-file", str(paths.agent_log)]
    args += extra_args or []
    stdio = agent_stdio_log(paths)
    with open(stdio, "wb") as out:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                                close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            # An uncaught traceback is in agent.out (and logged); a refusal is only in agent.log.
            shown = tail(stdio, 15) or tail(paths.agent_log, 15)
            raise AgentError(f"the agent exited with code {code} during start; see {paths.agent_log} and {stdio}:\n"
                             + shown, code="AGENT_START_FAILED")
        if running_pid(paths) == proc.pid and socket_ready(paths.ipc_socket):
            return proc.pid
        time.sleep(0.02)
    proc.terminate()
    raise OperationTimeoutError(f"the agent did not open {paths.ipc_socket} within {timeout:g} s; "
                                f"see {paths.agent_log}", code="AGENT_START_TIMEOUT")


def stop_agent(paths: AgentPaths, timeout: float = 120.0) -> int | None:
    """SIGTERM the agent (it stops its components in reverse dependency order); SIGKILL on timeout."""
    pid = running_pid(paths)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_pid(paths) is None:
            return pid
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    raise OperationTimeoutError(f"the agent (pid {pid}) did not stop within {timeout:g} s and was killed; "
                                "its components are stopped at the next start", code="AGENT_STOP_TIMEOUT")


def tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
