"""Federated wine regression through the hub: a `roost hub serve` process and 3 agents (separate processes,
each its own root, enrolled with one-time tokens), `roost learn start --target group:learners --rounds 10`
per strategy: the hub runs the SuperLink and deploys com.roost.FlowerSuperNode to each agent with that
device's own data path; at the end the hub publishes the model as the next com.roost.WineQuality version.

Writes bench/results-learn-hub.json: per strategy the job's rounds (participants, held-out RMSE, bytes,
seconds), the final RMSE against the same model trained centrally on the union (target: within 3 %), the
wall time from `learn start` to its JSON, and the published version. The fleet is the demo's
(:mod:`roost.demo.fleet`, without the SSH-registered device).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from roost.demo.fleet import LEARNERS, start_fleet
from roost.demo.procs import roost_json
from roost.demo.steps import Runner
from roost.learn.wine_task import write_partitions
from roost.samples import RECIPES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_header, write_results

OUT = Path(__file__).parent / "results-learn-hub.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--strategies", default="fedavg,fedxgb-bagging")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="roost-bench-learn-hub-"))
    os.chmod(base, 0o711)
    run = Runner(Console(stderr=True))
    doc: dict[str, Any] = {**run_header({"federated RMSE vs central": "within 3 %"}),
                           "command": "python bench/learn_hub.py " + " ".join(sys.argv[1:]), "rounds": args.rounds,
                           "jobs": {}}
    try:
        fleet = start_fleet(run, base, {}, ssh=False)
        learners = fleet.learners
        doc["devices"] = [n.name for n in learners]
        roost_json(*fleet.hub.cli("component", "publish", "--recipe",
                                  str(RECIPES / "com.roost.FlowerSuperNode-1.0.0.yaml")), what="publish SuperNode")
        data = base / "fl-data"
        data.mkdir()
        os.chmod(data, 0o755)
        parts = write_partitions(data, len(learners))
        for part in parts:
            os.chmod(part, 0o644)  # the SuperNode component runs as the agent's component user
        doc["rows_per_device"] = [len(p.read_text().splitlines()) - 1 for p in parts]
        device_data = [f"--device-data={n.name}={p}" for n, p in zip(learners, parts, strict=True)]
        for strategy in args.strategies.split(","):
            t0 = time.monotonic()
            job = roost_json(*fleet.hub.cli("learn", "start", "--target", f"group:{LEARNERS}", "--task", "wine",
                                            "--strategy", strategy, "--rounds", str(args.rounds), *device_data,
                                            "--wait", "--timeout", "1800"), what=f"learn start {strategy}",
                             timeout=1900)
            wall = time.monotonic() - t0
            final, central = job.get("final_metric"), job.get("centralised_metric")
            gap = (final - central) / central if final is not None and central else None
            doc["jobs"][strategy] = {**job, "wall_seconds": round(wall, 1), "relative_gap": gap,
                                     "within_3_percent": gap is not None and gap <= 0.03}
            print(f"{strategy}: {job['status']} RMSE {final} vs central {central} (gap {gap}), {wall:.0f} s, "
                  f"{job.get('component')}", file=sys.stderr)
    finally:
        failed = run.stop_all()
        if failed:
            print(f"clean-ups failed: {failed}", file=sys.stderr)
    doc["load_after"] = list(os.getloadavg())
    write_results(doc, str(args.out))


if __name__ == "__main__":
    main()
