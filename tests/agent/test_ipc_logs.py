"""The agent's own log is bounded: it rotates at its cap, and refusals are logged in O(1) lines.

Real agent processes (started detached, as `roost agent start --detach` does), real sockets.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.agent.daemon import agent_stdio_log, start_detached, stop_agent
from roost.agent.errors import AgentError
from roost.agent.paths import AgentPaths
from roost.ipc import rpc


@pytest.fixture
def paths() -> Iterator[AgentPaths]:
    root = Path(tempfile.mkdtemp(prefix="roost-logs-"))  # short: Unix socket paths are limited
    p = AgentPaths.at(root)
    yield p
    stop_agent(p, timeout=60)


def _refused_connects(path: Path, n: int) -> None:
    """``n`` CONNECTs with a wrong token, each read until the agent closes it."""
    for _ in range(n):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(path))
            s.sendall(rpc.connect_message("not-a-valid-svcuid"))
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
            assert answer, "the agent closed without answering"


def test_agent_log_rotation_cap_holds_after_many_refused_connects(paths: AgentPaths) -> None:
    # DEBUG logs every refusal with its detail: plenty of lines to rotate through.
    start_detached(paths, "log-device", extra_args=["--log-level", "DEBUG", "--log-max-bytes", "4096",
                                                    "--log-backups", "2"])
    _refused_connects(paths.ipc_socket, 400)
    files = sorted(p.name for p in paths.logs.glob("agent.log*"))
    assert files == ["agent.log", "agent.log.1", "agent.log.2"]
    sizes = [(paths.logs / f).stat().st_size for f in files]
    assert all(0 < size <= 4096 for size in sizes), sizes
    assert "unknown or missing authToken" in (paths.logs / "agent.log").read_text()
    assert agent_stdio_log(paths).stat().st_size == 0  # nothing bypassed logging


def test_a_burst_of_refused_connects_adds_one_log_line(paths: AgentPaths) -> None:
    start_detached(paths, "log-device")
    before = paths.agent_log.read_text().count("\n")
    _refused_connects(paths.ipc_socket, 300)
    new = paths.agent_log.read_text().splitlines()[before:]
    refusals = [line for line in new if "refused" in line]
    assert len(refusals) == 1, new
    assert "refused IPC connections: unknown or missing authToken" in refusals[0]
    assert "further ones are counted" in refusals[0]
    # start-up lines may still land after start_detached returns; from the refusal on, nothing but a
    # summary line (if this ran across a 60 s boundary)
    assert len(new[new.index(refusals[0]):]) <= 2, new


def test_a_traceback_at_start_still_reaches_the_user(paths: AgentPaths) -> None:
    with pytest.raises(AgentError, match="exited with code 1 during start") as info:
        start_detached(paths, "log-device", extra_args=["--log-max-bytes", "10"])
    assert info.value.code == "AGENT_START_FAILED"
    assert "ValueError: the agent log's max_bytes must be at least 1024" in info.value.message
