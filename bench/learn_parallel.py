"""Parallel inference throughput across 1, 2 and 4 replicas on this machine, and what limits it (issue 13,
item 4).

Four real ``roost cluster replica`` processes (one session each, the xgboost engine, one thread per
window: 40 rows is under the engine's multi-thread cut-off) serve the same model on 127.0.0.1; the
client (:func:`roost.learn.parallel.parallel_infer`, what ``roost cluster infer`` runs) splits the
whole wine data set (5,320 rows, twice: 10,640 rows, 266 windows of 40) across the first N of them,
two windows in flight per replica, and merges the answers in order (checked against the model run
locally). Two models: the big wine classifier of joint inference (400 rounds x 10 classes of depth 8:
4,000 trees, milliseconds per window) and the shipped ``scalar`` regressor (400 trees of depth 4,
a fraction of a millisecond per window).

CPU use is measured per process (``psutil`` user + system time over the run, divided by its wall
time): the replicas', the client's, and the machine's (``psutil.cpu_times`` of all cores). A run on
this 2-core machine cannot go beyond 2 cores of work: once the replicas plus the client use them,
more replicas only share the same cores.

Writes ``bench/results-learn-parallel.json``. ``run()`` returns the results; ``main()`` is the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.learn.replicas import ReplicaProcess  # noqa: E402

from roost.cluster.tokens import TokenSigner  # noqa: E402
from roost.learn.joint import XGBoostEdgeModel  # noqa: E402
from roost.learn.parallel import parallel_infer  # noqa: E402
from roost.learn.wine_classes import train_wine_classifier  # noqa: E402
from roost.serve.wine import load_wine, train_wine  # noqa: E402

RESULTS = HERE / "results-learn-parallel.json"
COUNTS = (1, 2, 4)
WINDOW = 40
DEPTH = 2


def _cpu(procs: list[psutil.Process]) -> list[float]:
    out = []
    for p in procs:
        t = p.cpu_times()
        out.append(t.user + t.system)
    return out


async def _one(replicas: list[ReplicaProcess], x: np.ndarray, expected: list[float]) -> dict[str, Any]:
    procs = [psutil.Process(r.proc.pid) for r in replicas if r.proc is not None]
    me = psutil.Process(os.getpid())
    cpu0, mine0, machine0 = _cpu(procs), _cpu([me])[0], psutil.cpu_times()
    t0 = time.perf_counter()
    report = await parallel_infer([r.target() for r in replicas], x, window=WINDOW, depth=DEPTH)
    wall = time.perf_counter() - t0
    cpu1, mine1, machine1 = _cpu(procs), _cpu([me])[0], psutil.cpu_times()
    if report.predictions != expected:
        raise AssertionError("the merged predictions differ from the model's own")
    fields = [f for f in machine1._fields if f not in ("guest", "guest_nice")]  # user already counts guest time
    total = sum(getattr(machine1, f) - getattr(machine0, f) for f in fields)
    idle = sum(getattr(machine1, f) - getattr(machine0, f) for f in ("idle", "iowait") if f in fields)
    busy_share = (total - idle) / total if total > 0 else 0.0
    machine_cores = busy_share * (psutil.cpu_count() or 1)
    replicas_cores = sum(b - a for a, b in zip(cpu0, cpu1, strict=True)) / wall
    client_cores = (mine1 - mine0) / wall
    return {"wall_s": round(wall, 4), "rows_per_s": round(len(x) / wall, 1),
            "windows_per_s": round(report.windows / wall, 1),
            "windows_per_replica": [s.windows for s in report.replicas],
            "cpu_cores": {"replicas": [round((b - a) / wall, 3) for a, b in zip(cpu0, cpu1, strict=True)],
                          "replicas_total": round(replicas_cores, 3), "client": round(client_cores, 3),
                          "machine_busy": round(machine_cores, 3), "machine_busy_share": round(busy_share, 3),
                          # other helpers' processes on this shared machine, and the kernel
                          "others": round(max(0.0, machine_cores - replicas_cores - client_cores), 3)}}


async def _model(name: str, model: Path, work: Path, signer: TokenSigner, x: np.ndarray,
                 repeats: int, size: int) -> dict[str, Any]:
    expected = XGBoostEdgeModel(model).predict(x)[0].tolist() if name == "classifier" else None
    if expected is None:
        from roost.serve.backends import XGBoostBackend

        expected = [float(v) for v in XGBoostBackend(model, nthread=1).predict(x)]
    replicas = [ReplicaProcess(model, f"{name}-{i}", signer, work, sessions=1, window=WINDOW) for i in range(4)]
    try:
        for r in replicas:
            r.start(timeout=120)
        for r in replicas:  # the warm-up window of a first session is not part of the measure
            await parallel_infer([r.target()], x[:WINDOW], window=WINDOW)
        out: dict[str, Any] = {"model": model.name, "bytes": size, "by_replicas": {}}
        for n in COUNTS:
            runs = [await _one(replicas[:n], x, expected) for _ in range(repeats)]
            best = sorted(runs, key=lambda r: r["rows_per_s"])[len(runs) // 2]  # the median run
            out["by_replicas"][str(n)] = {**best, "rows_per_s_runs": [r["rows_per_s"] for r in runs]}
            c = best["cpu_cores"]
            print(f"{name:>10} x{n}: {best['rows_per_s']:>9.1f} rows/s  replicas {c['replicas_total']:.2f} cores, "
                  f"client {c['client']:.2f}, others {c['others']:.2f}, machine {c['machine_busy']:.2f} of "
                  f"{psutil.cpu_count()}",
                  file=sys.stderr, flush=True)
        one = out["by_replicas"]["1"]["rows_per_s"]
        out["speedup"] = {str(n): round(out["by_replicas"][str(n)]["rows_per_s"] / one, 3) for n in COUNTS}
        return out
    finally:
        for r in replicas:
            r.stop()


def _limit(doc: dict[str, Any]) -> str:
    """What bounds the 2- and 4-replica runs, from the CPU each process used."""
    cores = psutil.cpu_count() or 2
    parts = []
    for n in ("2", "4"):
        c = doc["by_replicas"][n]["cpu_cores"]
        parts.append(f"{n} replicas: {doc['by_replicas'][n]['rows_per_s']:.0f} rows/s, machine {c['machine_busy']:.2f}"
                     f" of {cores} cores busy (replicas {c['replicas_total']:.2f}, client {c['client']:.2f}, other "
                     f"processes {c['others']:.2f})")
    c2 = doc["by_replicas"]["2"]["cpu_cores"]
    if c2["others"] > 0.2:
        verdict = ("other processes on this shared machine took part of the cores during the run, so the "
                   "replicas could not use them all")
    elif c2["machine_busy"] >= 0.9 * cores and c2["replicas_total"] >= 0.75 * cores:
        verdict = (f"CPU: the replicas' model calls fill the {cores} cores at 2 replicas; more replicas only share "
                   "them (and each other's caches)")
    elif c2["machine_busy"] >= 0.9 * cores:
        verdict = "CPU: the cores are full, split between the replicas and the client (framing, JSON replies)"
    else:
        verdict = "not the cores: the per-window round trip and the single client thread bound it"
    return f"{verdict}. " + "; ".join(parts)


async def _measure(work: Path, repeats: int) -> dict[str, Any]:
    signer = TokenSigner.from_file(work / "cluster-signing.key")
    x, _ = load_wine()
    x = np.concatenate([x, x])
    classifier = train_wine_classifier(work / "centre.json", "centre")
    regressor = train_wine(work / "wine-quality.json")
    results: dict[str, Any] = {
        "rows": len(x), "window": WINDOW, "depth": DEPTH, "cores": psutil.cpu_count(),
        "replicas": "roost cluster replica processes on 127.0.0.1, one session each, engine xgboost",
        "repeats": repeats, "models": {}}
    for name, model in (("classifier", classifier), ("regressor", regressor)):
        doc = await _model(name, model, work, signer, x, repeats, model.stat().st_size)
        doc["limit"] = _limit(doc)
        results["models"][name] = doc
    return results


def run(*, repeats: int = 3, out: Path | None = RESULTS) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="roost-parallel-bench-") as tmp:
        results = asyncio.run(_measure(Path(tmp), repeats))
    if out is not None:
        out.write_text(json.dumps(results, indent=2) + "\n")
    for name, doc in results["models"].items():
        rates = ", ".join(f"{n}: {doc['by_replicas'][n]['rows_per_s']:.0f}" for n in doc["by_replicas"])
        print(f"{name} ({doc['model']}): rows/s by replicas {rates}; speed-up {doc['speedup']}")
        print(f"  limit: {doc['limit']}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    run(repeats=args.repeats, out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
