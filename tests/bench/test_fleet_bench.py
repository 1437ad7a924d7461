"""The fleet benchmark still runs end to end (a tiny fleet): the bench is code a newcomer runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_fleet_bench_rolls_out_to_a_small_fleet(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "fleet.py"), "--devices", "30", "--db", "sqlite",
                           "--timeout", "60", "--json", str(out)],
                          capture_output=True, text=True, timeout=240, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (result,) = json.loads(out.read_text())
    assert result["final_counts"]["SUCCEEDED"] == 30
    assert result["devices_succeeded_client_side"] == 30 and result["client_errors"] == 0
    assert result["all_succeeded_seconds"] is not None
    assert "| 30 | sqlite |" in proc.stdout
