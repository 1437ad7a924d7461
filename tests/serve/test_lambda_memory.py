"""``--memory-mb`` on the Lambda host's worker: real worker processes, without an agent.

(The end-to-end test through an agent is in ``test_lambda_e2e.py``.)
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from roost.serve.errors import ServeError
from roost.serve.lambda_host import (
    HANDLER_OUT_OF_MEMORY,
    MIB,
    HandlerWorker,
    LambdaOptions,
    cgroup_memory_status,
    vm_status,
)

pytestmark = pytest.mark.timeout(120)

HANDLER_PY = textwrap.dedent("""
    import json, os

    def handler(event, context):
        request = json.loads(event["body"])
        block = bytearray(request["mib"] * 1024 * 1024)
        block[::4096] = b"x" * len(block[::4096])
        return {"pid": os.getpid(), "allocated": len(block)}
""")


@pytest.fixture
def worker(tmp_path: Path) -> Any:
    (tmp_path / "alloc.py").write_text(HANDLER_PY)
    w = HandlerWorker(LambdaOptions(handler="alloc.handler", path=tmp_path, memory_mb=48, timeout_s=30))
    yield w
    w.kill()


def _event(mib: int) -> dict[str, Any]:
    return {"body": json.dumps({"mib": mib}), "isBase64Encoded": False}


def _address_space_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            soft, hard = line.split()[3:5]
            assert soft == hard
            return int(soft)
    raise AssertionError("no address space limit line")


async def test_worker_limits_its_address_space_to_the_initialised_size_plus_memory_mb(worker: HandlerWorker) -> None:
    below = await worker.invoke(_event(24), "r-1")
    assert below["allocated"] == 24 * MIB
    memory = worker.memory
    assert memory is not None and memory.memory_mb == 48
    assert memory.limit == memory.base_virtual + 48 * MIB
    assert _address_space_limit(below["pid"]) == memory.limit  # what the kernel enforces on that process
    assert 0 < memory.base_resident <= memory.base_virtual

    with pytest.raises(ServeError) as over:
        await worker.invoke(_event(200), "r-2")
    assert over.value.code == HANDLER_OUT_OF_MEMORY
    assert "--memory-mb 48" in over.value.message and "MemoryError" in over.value.message
    assert "r-2" in over.value.message

    fresh = await worker.invoke(_event(24), "r-3")  # a new execution environment
    assert fresh["allocated"] == 24 * MIB and fresh["pid"] != below["pid"]
    assert worker.memory is not None and _address_space_limit(fresh["pid"]) == worker.memory.limit


def test_vm_status_reads_this_process() -> None:
    status = vm_status()
    assert status["VmSize"] >= status["VmRSS"] > 0


@pytest.mark.parametrize(("layout", "expected"), [
    ("hybrid", "cgroup v2 at {root}/unified has no memory controller "
               "(hybrid layout: memory is a cgroup v1 controller)"),
    ("v1", "no cgroup v2 hierarchy (memory is a cgroup v1 controller here)"),
    ("v2-not-delegated", "cgroup v2 memory controller present, but not delegated to {root}/svc"),
    ("v2-delegated", "cgroup v2 memory controller delegated to {root}/svc (not used: RLIMIT_AS applies)"),
])
def test_cgroup_memory_status_names_what_the_system_offers(tmp_path: Path, layout: str, expected: str) -> None:
    """Directory trees shaped like /sys/fs/cgroup (this machine can show only one layout: hybrid)."""
    root = tmp_path / "cgroup"
    proc = tmp_path / "proc-self-cgroup"
    if layout == "hybrid":
        (root / "unified").mkdir(parents=True)
        (root / "unified" / "cgroup.controllers").write_text("\n")
        proc.write_text("4:memory:/box\n0::/\n")
    elif layout == "v1":
        root.mkdir()
        proc.write_text("4:memory:/box\n1:cpu:/\n")
    else:
        (root / "svc").mkdir(parents=True)
        (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        (root / "svc" / "cgroup.subtree_control").write_text("memory pids\n" if layout == "v2-delegated" else "\n")
        proc.write_text("0::/svc\n")
    got = cgroup_memory_status(root, proc)
    assert got.startswith(expected.format(root=root)), got


def test_cgroup_memory_status_of_this_machine_matches_its_proc_file() -> None:
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    got = cgroup_memory_status()
    if not any(line.startswith("0::") for line in lines):
        assert got.startswith("no cgroup v2 hierarchy")
    elif any(":memory:" in line for line in lines):
        assert "memory is a cgroup v1 controller" in got
    else:
        assert "cgroup v2" in got
