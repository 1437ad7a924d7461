"""The freezer on real processes (no agent): each method this machine has, and a method it cannot use."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import psutil
import pytest

from roost.agent.errors import AgentError
from roost.agent.freezer import Freezer, PauseMethod


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "1000"])


@pytest.mark.parametrize("method", ["signal", "cgroup-v2", "cgroup-v1"])
def test_pause_and_resume_a_real_process(tmp_path: Path, method: str) -> None:
    freezer = Freezer(tmp_path, method)
    if freezer.unavailable is not None:
        from tests.conftest import require_service

        require_service(f"{method} freezer", False, freezer.unavailable)
    assert freezer.method == PauseMethod(method)
    proc = _sleeper()
    try:
        target = psutil.Process(proc.pid)
        assert asyncio.run(freezer.pause("com.test.A", lambda: [target])) == PauseMethod(method)
        assert freezer.paused("com.test.A") == PauseMethod(method)
        cgroup = Path(f"/proc/{proc.pid}/cgroup").read_text()
        if method == "signal":
            assert target.status() == psutil.STATUS_STOPPED
        else:
            assert f"roost-{freezer.root_id}/com.test.A" in cgroup, cgroup
        assert freezer.resume("com.test.A") and freezer.paused("com.test.A") is None
        assert target.status() != psutil.STATUS_STOPPED
        assert f"roost-{freezer.root_id}" not in Path(f"/proc/{proc.pid}/cgroup").read_text()
        assert not freezer.resume("com.test.A")  # not paused any more
    finally:
        proc.kill()
        proc.wait()
        freezer.close()
    if freezer.hierarchy is not None:
        assert not freezer.hierarchy.base.exists()


def test_a_chosen_method_that_is_unknown_or_unavailable_fails_pausing(tmp_path: Path) -> None:
    bogus = Freezer(tmp_path, "freeze-ray")
    with pytest.raises(AgentError, match="ROOST_PAUSE_METHOD='freeze-ray' is not one of auto") as err:
        asyncio.run(bogus.pause("com.test.A", list))
    assert err.value.code == "PAUSE_FAILED"
