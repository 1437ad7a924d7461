"""How long the test tiers and a local CLI command take on this machine (issue 9's timings).

Runs, in this checkout's .venv: ``pytest -q -m "not slow"`` (the unit tier of ``make test-fast``),
the whole ``pytest -q -n 2 --dist loadfile`` (the test part of ``make test``: two pytest-xdist
workers), and ``roost agent status`` on a root with
no agent, ``--cli-runs`` times (the CLI's start-up: a local command loads no hub client). Writes
wall times, the pytest summary lines and the machine's load average to ``--out``.

    .venv/bin/python bench/suite.py --out bench/results-suite.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _timed(cmd: list[str], timeout: float) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    return time.perf_counter() - t0, proc


def _summary(out: str) -> str:
    lines = [ln for ln in out.splitlines() if " passed" in ln or " failed" in ln]
    return lines[-1].strip("= ") if lines else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results-suite.json")
    ap.add_argument("--cli-runs", type=int, default=10)
    ap.add_argument("--skip-full", action="store_true", help="only the unit tier and the CLI")
    args = ap.parse_args()
    py = sys.executable
    result: dict[str, Any] = {
        "command": " ".join([Path(py).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "git_commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                     check=False).stdout.strip(),
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(), "load_before": os.getloadavg()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        cli = []
        for _ in range(args.cli_runs):
            wall, proc = _timed([str(Path(py).parent / "roost"), "agent", "status", "--root", f"{tmp}/none"], 60)
            assert proc.returncode == 5, proc.stderr  # "no agent running"
            cli.append(wall)
    result["cli_agent_status_s"] = {"runs": cli, "median": statistics.median(cli), "mean": statistics.fmean(cli)}
    wall, proc = _timed([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow"], 1800)
    result["unit_tier"] = {"wall_s": wall, "summary": _summary(proc.stdout), "returncode": proc.returncode}
    if not args.skip_full:
        wall, proc = _timed([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadfile"], 3600)
        result["full_suite"] = {"wall_s": wall, "summary": _summary(proc.stdout), "returncode": proc.returncode}
    result["machine"]["load_after"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
