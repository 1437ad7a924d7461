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
* ``image-fp32``: an fp32 reconstruction of it (:func:`dequantised`) → ``int8`` dynamic and static
  (calibrated on the images), validated as top-1 *agreement* with the fp32 model on the 4 sample
  images (no labels: agreement, not accuracy; 4 images say little about accuracy).

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
import onnx
import xgboost as xgb
from onnx import helper, numpy_helper

from roost.errors import RoostError
from roost.learn.lighten import optimize
from roost.learn.validation import write_validation_csv
from roost.learn.wine_mlp import train_wine_mlp
from roost.serve.backends import onnx_model
from roost.serve.image import SAMPLE_IMAGE, SAMPLE_MODEL_DIR
from roost.serve.wine import FEATURES, holdout, train_wine

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
SEED_MODEL = SHARED / "seed-data" / "xgboost_wine_quality.json"
PEERS = SHARED / "peers" / "peers_inference.py"
#: The sample image the ImageRequester ships and the seed-data photographs (see their SOURCES).
IMAGES = [SAMPLE_IMAGE, *(SHARED / "seed-data" / n for n in ("pelican.jpeg", "macaw.jpg", "dog.jpg"))]


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


def dequantised(src: Path, out: Path) -> Path:
    """An fp32 graph from the QDQ sample classifier: weights dequantised into float initializers, and each
    activation QuantizeLinear → DequantizeLinear pair replaced by the Clip to the range it saturates
    at (the pair carries the network's ReLU6). Not the original fp32 export (that needs torch): the
    weights keep their int8 precision; its top-1 on the sample images equals the shipped model's."""
    m = onnx.load(str(src))
    g = m.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    keep: list[Any] = []
    new_inits: dict[str, Any] = {}
    producers = {o: n for n in g.node for o in n.output}
    for n in g.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            q = inits[n.input[0]].astype(np.float64)
            scale = inits[n.input[1]].astype(np.float64)
            zp = inits[n.input[2]].astype(np.float64) if len(n.input) > 2 and n.input[2] else np.zeros_like(scale)
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and q.ndim > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zp = scale.reshape(shape), zp.reshape(shape)
            new_inits[n.output[0]] = ((q - zp) * scale).astype(np.float32)
        elif n.op_type == "DequantizeLinear" and producers.get(n.input[0]) is not None \
                and producers[n.input[0]].op_type == "QuantizeLinear":
            qn = producers[n.input[0]]
            act_scale, act_zp = inits[qn.input[1]].astype(np.float64), inits[qn.input[2]]
            info = np.iinfo(act_zp.dtype)
            zero = act_zp.astype(np.float64)
            lo, hi = (info.min - zero) * act_scale, (info.max - zero) * act_scale
            new_inits[n.output[0] + "_min"] = np.asarray(lo, dtype=np.float32)
            new_inits[n.output[0] + "_max"] = np.asarray(hi, dtype=np.float32)
            clip = [qn.input[0], n.output[0] + "_min", n.output[0] + "_max"]
            keep.append(helper.make_node("Clip", clip, [n.output[0]]))
        elif n.op_type == "QuantizeLinear":
            continue
        else:
            keep.append(n)
    used = {i for n in keep for i in n.input}
    del g.node[:]
    g.node.extend(keep)
    old = [t for t in g.initializer if t.name in used and t.name not in new_inits]
    del g.initializer[:]
    g.initializer.extend(old + [numpy_helper.from_array(v, k) for k, v in new_inits.items() if k in used])
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return out


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
    ap.add_argument("--image-calls", type=int, default=200, help="single-image calls per latency median")
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
        fp32 = work / "image-fp32"
        fp32.mkdir()
        dequantised(SAMPLE_MODEL_DIR / "model.onnx", fp32 / "model.onnx")
        shutil.copyfile(SAMPLE_MODEL_DIR / "labels.json", fp32 / "labels.json")
        images = work / "images"
        images.mkdir()
        for image in IMAGES:
            shutil.copyfile(image, images / image.name)
        (images / "agree.csv").write_text("path\n" + "".join(f"{p.name}\n" for p in IMAGES))
        for mode in ("dynamic", "static"):
            rows.append(variant("image-fp32", fp32, "int8", images / "agree.csv", work, a.image_calls,
                                int8_mode=mode, max_regression="0.25"))
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
        "calls": a.calls, "image_calls": a.image_calls, "validation_rows": len(x), "images": len(IMAGES),
        "inplace_predict_batch1_us": baseline, "peers": peer, "variants": rows,
    }
    Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {a.json}")


if __name__ == "__main__":
    main()
