"""Lightening benchmark: size, latency and metric change of each variant of the sample models, one run.

Every variant is made by :func:`roost.learn.lighten.optimize` (what ``roost model optimize`` runs),
validated on the wine rows the sample model did not train on (``roost samples wine-holdout``: 1,330
rows, 25 % of the vendored UCI data). Models:

* ``sample``: the sample WineQuality model (``roost samples train-wine``: 400 trees of depth 4) →
  ``compiled``, ``pruned`` (gates 1 %, 2 % and 5 %); ``int8`` is refused (a tree model), and so is int8 of
  its ONNX conversion (a tree ensemble: nothing to quantise).
* ``seed``: ``../shared/seed-data/xgboost_wine_quality.json`` (427 trees of depth 4, the upstream
  model) → ``compiled``, ``pruned`` (the same gates). Upstream trained it on its own split, so some of these rows may
  be in its training set: its metric is shown, not claimed held out.
* ``mlp``: the fp32 ONNX wine MLP (``roost samples wine-mlp``, 13 → 256 → 1) → ``int8`` dynamic and
  static (calibrated on the validation rows).
* ``image``: the sample ImageClassifier's model → ``int8`` is refused: it is already int8.

Latency is the report's: per row at batch 1, median of ``--calls`` single-row calls, one thread. The
baseline in the same run: ``Booster.inplace_predict`` of each original tree model called directly
(no Roost wrapper), and the peers script (``../shared/peers/peers_inference.py --threads 1``,
engines inplace, tl2cgen, onnxrt on the seed model) unless ``--no-peers``.

Usage::

    .venv/bin/python bench/lighten.py [--calls 2000] [--json bench/results-lighten.json] [--no-peers]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from roost.errors import RoostError
from roost.learn.lighten import optimize
from roost.learn.validation import write_validation_csv
from roost.learn.wine_mlp import train_wine_mlp
from roost.serve.backends import onnx_model
from roost.serve.image import SAMPLE_MODEL_DIR
from roost.serve.wine import FEATURES, holdout, train_wine

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
SEED_MODEL = SHARED / "seed-data" / "xgboost_wine_quality.json"
PEERS = SHARED / "peers" / "peers_inference.py"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def inplace_us(model: Path, x: np.ndarray, calls: int) -> float:
    """Median µs of ``Booster.inplace_predict`` on one float32 row, called directly (one thread)."""
    booster = xgb.Booster(model_file=str(model))
    booster.set_param({"nthread": 1})
    rows = [np.ascontiguousarray(x[i : i + 1]) for i in range(256)]
    for i in range(50):
        booster.inplace_predict(rows[i % 256], validate_features=False)
    times = []
    for i in range(calls):
        t0 = time.perf_counter_ns()
        booster.inplace_predict(rows[i % 256], validate_features=False)
        times.append((time.perf_counter_ns() - t0) / 1000)
    return float(statistics.median(times))


def variant(name: str, model: Path, target: str, data: Path, work: Path, calls: int, **kw: Any) -> dict[str, Any]:
    out = work / f"{name}-{target}-{kw.get('int8_mode', '')}{kw.get('max_regression', '')}"
    t0 = time.perf_counter()
    try:
        result = optimize(model, target, data, out=out, latency_calls=calls, **kw)
    except RoostError as err:
        log(f"{name} {target}: refused ({err.code}): {err.message}")
        return {"model": name, "target": target, "refused": err.code, "message": err.message}
    seconds = time.perf_counter() - t0
    r = result.variant.report.model_dump()
    log(f"{name} {target} {kw}: {r['metric']} {r['metric_before']:.4f} -> {r['metric_after']:.4f} "
        f"({r['regression']:+.3%}, {'passed' if r['passed'] else 'FAILED'}), {r['size_bytes_before']} -> "
        f"{r['size_bytes']} bytes, {r['latency_us_before']:.1f} -> {r['latency_us']:.1f} us, {seconds:.1f} s")
    return {"model": name, "target": target, "options": kw, "publishable": result.passed, "seconds": seconds,
            "report": r}


def peers(calls: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peers.json"
        cmd = [sys.executable, str(PEERS), "--threads", "1", "--calls", str(calls), "--only", "inplace,tl2cgen,onnxrt",
               "--cell-s", "30", "--engine-s", "120", "--json", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if not out.is_file():
            return {"error": proc.stderr[-500:]}
        data = json.loads(out.read_text())
    batch1 = {name: next((r["median_us"] for r in o.get("results", []) if r["batch"] == 1), None)
              for name, o in data["engines"].items()}
    return {"command": " ".join(cmd[1:-2]), "batch1_median_us": batch1, "model": data["model"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--json", default=str(HERE / "results-lighten.json"))
    ap.add_argument("--no-peers", action="store_true")
    a = ap.parse_args()
    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="roost-bench-lighten-"))
    try:
        sample = train_wine(work / "wine-quality.json")
        x, y = holdout()
        data = write_validation_csv(work / "holdout.csv", x, y, FEATURES)
        mlp = train_wine_mlp(work / "wine-mlp.onnx")
        trees_onnx = onnx_model(sample, work / "cache")
        rows: list[dict[str, Any]] = []
        for name, model in (("sample", sample), ("seed", SEED_MODEL)):
            rows.append(variant(name, model, "compiled", data, work, a.calls))
            rows.append(variant(name, model, "pruned", data, work, a.calls, max_regression="0.01"))
            rows.append(variant(name, model, "pruned", data, work, a.calls, max_regression="0.02"))
            rows.append(variant(name, model, "pruned", data, work, a.calls, max_regression="0.05"))
        rows.append(variant("sample", sample, "int8", data, work, a.calls))
        rows.append(variant("sample-onnx", trees_onnx, "int8", data, work, a.calls))
        rows.append(variant("mlp", mlp, "int8", data, work, a.calls, int8_mode="dynamic"))
        rows.append(variant("mlp", mlp, "int8", data, work, a.calls, int8_mode="static"))
        rows.append(variant("image", SAMPLE_MODEL_DIR, "int8", data, work, a.calls))
        baseline = {"sample": inplace_us(sample, x, a.calls), "seed": inplace_us(SEED_MODEL, x, a.calls)}
        log(f"Booster.inplace_predict batch 1: {baseline}")
        peer = None if a.no_peers else peers(min(a.calls, 1000))
        log(f"peers: {peer}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "started": started.isoformat().replace("+00:00", "Z"),
        "finished": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "load_average": [load_before, os.getloadavg()[0]],
        "machine": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
        "versions": {p: metadata.version(p) for p in ("xgboost-cpu", "onnxruntime", "tl2cgen", "treelite", "onnx")},
        "calls": a.calls, "validation_rows": len(x),
        "inplace_predict_batch1_us": baseline, "peers": peer, "variants": rows,
    }
    Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {a.json}")


if __name__ == "__main__":
    main()
