"""Where the model server's request path spends its time at batch 1000 (issue 10's request-path target).

One process, the seed model, 1,000 rows of the wine data as the original's records JSON
(``DataFrame.to_json(orient="records")`` inside a Lambda-style event), each step timed alone:
``unwrap_event`` (orjson parses the body), ``decode_tabular`` (records → float32 matrix in model order,
type and range checked), the ``compiled`` backend's predict, the list of floats, the whole path, and
``Booster.inplace_predict`` on the ready matrix (the peer the target is set against; xgboost's default
threads). Median of ``--calls`` calls after a warm-up.

    .venv/bin/python bench/request_path.py --json bench/results-request-path.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from common import REPO, SHARED, log
from roost.serve.engine import load_tabular
from roost.serve.request import decode_tabular, unwrap_event

MODEL = SHARED / "seed-data" / "xgboost_wine_quality.json"
DATA = REPO / "src" / "roost" / "samples" / "data" / "wine_concat.csv"
ROWS = 1000


def timed(fn: Callable[[], Any], calls: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1000.0)
    return {"median_us": statistics.median(samples), "mean_us": statistics.fmean(samples)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        model = load_tabular(MODEL, "compiled", cache_dir=Path(cache))
        names = model.feature_names
        df = pd.read_csv(DATA)
        df["color_red"] = (df["color"] == "red").astype("int64")
        df["color_white"] = (df["color"] == "white").astype("int64")
        event = {"body": df.iloc[:ROWS][list(names)].to_json(orient="records"), "isBase64Encoded": False}
        doc, _ = unwrap_event(event)
        matrix = decode_tabular(doc, names)
        preds = model.backend.predict(matrix)
        booster = xgb.Booster()
        booster.load_model(str(MODEL))

        def path() -> list[float]:
            inner, _meta = unwrap_event(event)
            out: list[float] = np.asarray(model.backend.predict(decode_tabular(inner, names))).reshape(-1).tolist()
            return out

        steps = {
            "unwrap_event (orjson)": lambda: unwrap_event(event),
            "decode_tabular": lambda: decode_tabular(doc, names),
            "compiled predict": lambda: model.backend.predict(matrix),
            "to list": lambda: np.asarray(preds).reshape(-1).tolist(),
            "whole path": path,
            "peer: Booster.inplace_predict": lambda: booster.inplace_predict(matrix),
        }
        results = {}
        for name, fn in steps.items():
            results[name] = timed(fn, a.calls, a.warmup)
            log(f"{name}: median {results[name]['median_us']:,.0f} µs")
    whole, peer = results["whole path"], results["peer: Booster.inplace_predict"]
    ratio = peer["mean_us"] / whole["mean_us"]  # rows/s of the path over rows/s of inplace_predict
    log(f"request path at batch {ROWS}: {ROWS / whole['mean_us'] * 1e6:,.0f} rows/s = {ratio:.2f}x inplace_predict "
        f"(target >= 0.8x: {'MET' if ratio >= 0.8 else 'NOT MET'})")
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "rows": ROWS, "calls": a.calls,
           "loadavg": os.getloadavg(), "steps": results, "path_vs_inplace_rows_per_s": ratio}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
