"""Model gate benchmark: what the benchmark component measures for the sample model's variants on this
machine, the recommendation it leads to, and what the gate costs a deployment at the hub.

1. The sample WineQuality model (``roost samples train-wine``: 400 trees of depth 4), its pruned
   variant (gate 5 %) and its compiled variant are made with :func:`roost.learn.lighten.optimize`,
   validated on the held-out rows (:func:`roost.learn.assess.assess`, the report ``roost model
   validate`` attaches), and timed by :func:`roost.learn.benchmark.measure`: the code the benchmark
   component runs on a device (engine per candidate, median of ``--calls`` single-row calls, one thread).
2. A hub store (SQLite, in process) holds the three versions with their reports and the
   measurements; the recommendation for a device of this machine's class is computed without a bound
   and with a latency bound between the fastest and the slowest candidate.
3. Deployment creation with and without a validation report (the gate's extra reads): the median of
   ``--deployments`` creations each.

Usage::

    .venv/bin/python bench/model_gate.py [--calls 2000] [--deployments 200] [--json bench/results-model-gate.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_tmp, log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results-model-gate.json")
    args = parser.parse_args()

    from tests.hub.conftest import publish_to_store

    from roost.hub.app import HubConfig, open_store
    from roost.hub.contract import BenchmarkIn, DeploymentCreate, Measurement, ModelValidation
    from roost.learn.assess import assess, with_variant
    from roost.learn.benchmark import CANDIDATES_FILE, ROWS_FILE, measure, write_rows
    from roost.learn.lighten import optimize, read_variant
    from roost.learn.validation import write_validation_csv
    from roost.serve.wine import FEATURES, holdout, train_wine

    work = bench_tmp("model-gate")
    try:
        model = train_wine(work / "wine.json")
        hx, hy = holdout()
        data = write_validation_csv(work / "holdout.csv", hx, hy, FEATURES)
        pruned = optimize(model, "pruned", data, out=work / "pruned", max_regression=0.05, latency_calls=200)
        compiled = optimize(model, "compiled", data, out=work / "compiled", latency_calls=200)
        log(f"variants: pruned passed={pruned.passed}, compiled passed={compiled.passed}")
        folder = work / "bench"
        folder.mkdir()
        candidates = [("com.example.Wine", model, "xgboost", None),
                      ("com.example.WinePruned", pruned.path / "model.json", "xgboost", pruned.path),
                      ("com.example.WineCompiled", compiled.path / "model.json", "compiled", compiled.path)]
        listed = []
        for i, (name, path, engine, _) in enumerate(candidates):
            shutil.copyfile(path, folder / f"c{i}-model.json")
            listed.append({"component": name, "version": "1.0.0", "model": f"c{i}-model.json", "engine": engine})
        (folder / CANDIDATES_FILE).write_text(json.dumps(listed))
        write_rows(data, list(FEATURES), folder / ROWS_FILE)
        timings = measure(folder, work / "bench-work", calls=args.calls)

        store = open_store(HubConfig(root=work / "hub"))
        store.enroll(store.create_enroll_token().token, "bench-device", _labels())
        device_id = store._read(lambda s: store._device(s, "bench-device").id)
        reports: dict[str, dict[str, Any]] = {}
        for name, path, _, variant_dir in candidates:
            publish_to_store(store, name, "1.0.0")
            measured = assess(path, data, calls=200)
            if variant_dir is not None:
                measured = with_variant(measured, read_variant(variant_dir))
            report = store.set_validation(name, "1.0.0", ModelValidation.model_validate(measured.to_report()))
            reports[name] = report.model_dump(mode="json")
        store.record_benchmarks(device_id, BenchmarkIn(measurements=[
            Measurement(component=t.candidate.component, version=t.candidate.version, latency_us=t.latency_us,
                        calls=t.calls, engine=t.candidate.engine) for t in timings]))
        latencies = sorted(t.latency_us for t in timings)
        bound_ms = (latencies[0] + latencies[-1]) / 2 / 1000
        unbounded = store.recommend("bench-device")
        bounded = store.recommend("bench-device", max_latency_ms=bound_ms)

        publish_to_store(store, "com.example.Plain", "1.0.0")
        times: dict[str, list[float]] = {"com.example.Plain": [], "com.example.Wine": []}
        for i in range(args.deployments * 2):  # interleaved, so that the database's growth is shared
            component = list(times)[i % 2]
            t0 = time.perf_counter()
            store.create_deployment(DeploymentCreate(target="device:bench-device", components={component: "1.0.0"}))
            times[component].append((time.perf_counter() - t0) * 1000)
        plain_ms, gated_ms = (statistics.median(v) for v in times.values())
        result = {
            "machine": {"python": platform.python_version(), "arch": platform.machine()},
            "device_class": unbounded.device_class,
            "calls": args.calls,
            "candidates": [{"component": (name := t.candidate.component), "engine": t.candidate.engine,
                            "latency_us": round(t.latency_us, 2), "rmse": round(reports[name]["value"], 5),
                            "size_bytes": reports[name]["size_bytes"]} for t in timings],
            "recommend_unbounded": {"chosen": unbounded.chosen,
                                    "table": [c.model_dump(mode="json") for c in unbounded.candidates]},
            "recommend_bounded": {"max_latency_ms": round(bound_ms, 4), "chosen": bounded.chosen,
                                  "table": [c.model_dump(mode="json") for c in bounded.candidates]},
            "deployment_create_ms": {"without_report": round(plain_ms, 3), "with_gate": round(gated_ms, 3),
                                     "deployments": args.deployments},
        }
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        log(json.dumps({k: result[k] for k in ("candidates", "deployment_create_ms")}, indent=1))
        log(f"recommend: {unbounded.chosen}; within {bound_ms:.4f} ms: {bounded.chosen}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _labels() -> dict[str, str]:
    from roost.agent.enrolment import detect_labels

    return detect_labels()


if __name__ == "__main__":
    main()
