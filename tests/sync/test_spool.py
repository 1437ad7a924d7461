"""The report spool and the retry policy: order, ids, crashes, bounds, backoff schedule."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from roost.agent.spool import Backoff, Spool


def _result(n: int) -> dict[str, object]:
    return {"deployment_id": f"dep-{n}", "status": "SUCCEEDED", "revision": n}


def _heartbeat(n: int) -> dict[str, object]:
    return {"revision": n, "components": {"c": {"version": "1.0.0", "state": "RUNNING"}}}


def test_reports_come_back_in_order_with_unique_ids(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    added = [spool.add(_result(i) if i % 2 else _heartbeat(i)) for i in range(25)]
    pending = spool.pending()
    assert [e.report["revision"] for e in pending] == list(range(25))
    assert len({e.id for e in pending}) == 25
    assert [e.seq for e in pending] == sorted(e.seq for e in pending)
    assert [e.id for e in spool.pending(3)] == [a.id for a in added[:3]]
    # File names are <seq>-<id>.json; the content carries the same id.
    for entry in pending:
        assert entry.path.name == f"{entry.seq:012d}-{entry.id}.json"
        assert json.loads(entry.path.read_text())["id"] == entry.id
        assert stat.S_IMODE(entry.path.stat().st_mode) == 0o600


def test_ack_deletes_and_order_survives_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    entries = [spool.add(_result(i)) for i in range(5)]
    spool.ack([entries[0].id, entries[1].id])
    reopened = Spool(tmp_path / "spool")
    assert [e.id for e in reopened.pending()] == [e.id for e in entries[2:]]
    later = reopened.add(_result(99))
    assert later.seq > entries[-1].seq  # sequence continues after the files on disk
    assert reopened.pending()[-1].id == later.id


def test_given_id_is_kept_and_crash_before_ack_redelivers_the_same_id(tmp_path: Path) -> None:
    """A crash between the hub storing a report and the agent deleting it re-sends the same id,
    which an id-keyed receiver (the hub's device_reports) applies once."""
    received: dict[str, dict[str, object]] = {}
    applied: list[str] = []

    def hub_receive(batch: list[dict[str, object]]) -> None:
        for report in batch:
            rid = str(report["id"])
            if rid not in received:
                received[rid] = report
                applied.append(rid)

    spool = Spool(tmp_path / "spool")
    spool.add({**_result(1), "id": "fixed-id-1"})
    spool.add(_result(2))
    hub_receive([e.report for e in spool.pending()])
    # crash: no ack. The next agent opens the same folder and sends everything again.
    again = Spool(tmp_path / "spool")
    assert again.pending()[0].id == "fixed-id-1"
    hub_receive([e.report for e in again.pending()])
    again.ack(e.id for e in again.pending())
    assert len(applied) == 2 and applied[0] == "fixed-id-1"
    assert Spool(tmp_path / "spool").pending() == []


def test_crash_during_write_leaves_no_half_report(tmp_path: Path) -> None:
    """A process killed between writing the temporary file and renaming it: the report never
    existed (it was not acknowledged to anyone), the spool opens cleanly."""
    directory = tmp_path / "spool"
    code = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from roost.agent.spool import Spool
        spool = Spool(Path({str(directory)!r}))
        spool.add({{"deployment_id": "d1", "status": "SUCCEEDED"}})
        real_replace = os.replace
        def crash(src, dst):
            os._exit(9)
        os.replace = crash
        spool.add({{"deployment_id": "d2", "status": "FAILED"}})
    """)
    proc = subprocess.run([sys.executable, "-c", code], check=False, timeout=60)
    assert proc.returncode == 9
    assert any(p.name.startswith(".tmp-") for p in directory.iterdir())
    spool = Spool(directory)
    assert [e.report["deployment_id"] for e in spool.pending()] == ["d1"]
    assert not any(p.name.startswith(".tmp-") for p in directory.iterdir())


def test_corrupt_file_is_moved_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    good = spool.add(_result(1))
    bad = spool.add(_result(2))
    bad.path.write_text("{not json")
    reopened = Spool(tmp_path / "spool")
    assert [e.id for e in reopened.pending()] == [good.id]
    assert (bad.path.parent / (bad.path.name + ".corrupt")).exists()


def test_bound_drops_oldest_heartbeats_never_results(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_reports=5)
    results = [spool.add(_result(i)) for i in range(3)]
    beats = [spool.add(_heartbeat(i)) for i in range(10)]
    pending = spool.pending()
    assert len(pending) == 5
    assert [e.id for e in pending if not e.heartbeat] == [r.id for r in results]
    assert [e.id for e in pending if e.heartbeat] == [b.id for b in beats[-2:]]  # the newest survive
    assert spool.dropped == 8
    assert len([p for p in (tmp_path / "spool").iterdir() if p.suffix == ".json"]) == 5
    # Results are never dropped, even past the bound; the newest heartbeat stays too.
    more = [spool.add(_result(100 + i)) for i in range(6)]
    pending = spool.pending()
    assert [e.id for e in pending if not e.heartbeat] == [r.id for r in [*results, *more]]
    assert [e.id for e in pending if e.heartbeat] == [beats[-1].id]
    # Order is still strictly by sequence.
    assert [e.seq for e in pending] == sorted(e.seq for e in pending)


def test_reject_moves_a_refused_report_out_of_the_way(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    first = spool.add(_result(1))
    second = spool.add(_result(2))
    moved = spool.reject(first)
    assert moved.exists() and moved.parent.name == "rejected"
    assert [e.id for e in Spool(tmp_path / "spool").pending()] == [second.id]


def test_invalid_ids_and_bounds_are_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    with pytest.raises(ValueError):
        spool.add({"id": "../escape"})
    with pytest.raises(ValueError):
        Spool(tmp_path / "other", max_reports=0)
    assert stat.S_IMODE(os.stat(tmp_path / "spool").st_mode) == 0o700


def test_backoff_schedule_is_exponential_capped_full_jitter() -> None:
    top = Backoff(base=0.5, cap=60.0, rand=lambda: 1.0)
    assert [top.next_delay() for _ in range(10)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    draws = iter([0.5, 0.25, 0.0, 0.999])
    jitter = Backoff(base=1.0, cap=8.0, floor=0.1, rand=lambda: next(draws))
    # delay = random * min(cap, base * 2**attempt); never below the floor (no busy loop).
    assert [jitter.next_delay() for _ in range(4)] == pytest.approx([0.5, 0.5, 0.1, 7.992])
    jitter.reset()
    assert jitter.attempt == 0
    huge = Backoff(rand=lambda: 1.0)
    huge.attempt = 10_000
    assert huge.next_delay() == 60.0


async def test_backoff_wait_uses_the_injected_sleep() -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    backoff = Backoff(base=1.0, cap=5.0, rand=lambda: 1.0, sleep=fake_sleep)
    for _ in range(5):
        await backoff.wait()
    assert slept == [1.0, 2.0, 4.0, 5.0, 5.0]
