"""Federated wine regression on Flower: 3 SuperNodes on this machine, 10 rounds, each strategy.

Writes bench/results-learn-federated.json: per round time, bytes and held-out RMSE; the final RMSE
against the same model trained centrally on the union (target: within 3 %); and a check of what
crossed the network: the ServerApp saves every message it sends and receives (arrays, metrics and
config, ``capture-messages``; the wire itself is TLS), and each training row of each device is
looked for in them: the CSV text of its first 6 values, and 4 consecutive values packed as float64
or float32.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

from roost.learn.federated_job import Device, JobSpec, run_job
from roost.learn.wine_task import write_partitions

OUT = Path(__file__).parent / "results-learn-federated.json"


def _rows_leaked(messages: Path, parts: list[Path]) -> dict[str, int]:
    """Counts of training rows found in the captured Flower messages (as CSV text, or as packed floats)."""
    files = sorted(messages.glob("*.bin"))
    blob = b"".join(f.read_bytes() for f in files)
    text_hits = packed_hits = rows = 0
    for part in parts:
        lines = part.read_text().splitlines()[1:]
        for line in lines:
            rows += 1
            values = line.split(",")
            if ",".join(values[:6]).encode() in blob:
                text_hits += 1
            floats = [float(v) for v in values[:11]]
            if struct.pack("<4d", *floats[3:7]) in blob or struct.pack("<4f", *floats[3:7]) in blob:
                packed_hits += 1
    return {"rows_checked": rows, "rows_found_as_text": text_hits, "rows_found_as_floats": packed_hits,
            "bytes_scanned": len(blob), "messages_scanned": len(files)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--strategies", default="fedxgb-bagging,fedavg")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="roost-bench-fl-"))
    results: dict[str, object] = {"devices": args.devices, "rounds": args.rounds, "runs": {}}
    try:
        parts = write_partitions(base / "data", args.devices)
        results["rows_per_device"] = [len(p.read_text().splitlines()) - 1 for p in parts]
        for strategy in args.strategies.split(","):
            folder = base / strategy
            started = time.perf_counter()
            status = run_job(strategy, JobSpec("wine", strategy, args.rounds, min_participants=args.devices),
                             [Device(f"edge-{i}", p) for i, p in enumerate(parts)], folder, capture=True)
            doc = status.as_json()
            final, central = doc["final_metric"], doc["centralised_metric"]
            doc["wall_seconds"] = time.perf_counter() - started
            doc["relative_gap"] = (final - central) / central if final and central else None
            doc["within_3_percent"] = bool(doc["relative_gap"] is not None and doc["relative_gap"] <= 0.03)
            doc["network_check"] = _rows_leaked(folder / "out" / "messages", parts)
            doc["total_bytes"] = sum(r["bytes"] for r in doc["rounds"])
            results["runs"][strategy] = doc  # type: ignore[index]
            print(f"{strategy}: final RMSE {final:.4f}, central {central:.4f}, gap {doc['relative_gap']:+.2%}, "
                  f"{doc['total_bytes']} bytes, {doc['wall_seconds']:.1f} s; rows found on the wire: "
                  f"{doc['network_check']}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
