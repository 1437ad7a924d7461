"""Inference benchmark: Roost's model backends and model server beside the peer engines, one run.

Measures, in one run:

* ``../shared/peers/peers_inference.py`` (the original Lambda handler path, ``inplace_predict``,
  ``DMatrix``, tl2cgen, GTIL, onnxruntime, numpy) as a subprocess, with a bounded ``--calls``;
* model compute per call of each Roost backend (``xgboost``, ``compiled``, ``onnx`` through
  :func:`roost.serve.engine.load_tabular`) at batch 1 / 40 / 1000 (median, p99, rows/s), with the
  peers' method (same batches drawn from ``wine_concat.csv``, warm-up, fresh process), the
  ``auto`` choice, and Roost's whole in-process request path (Lambda event → ``unwrap_event`` →
  ``decode_tabular`` → ``predict`` → list) beside the original handler's compute at batch 2;
* end to end, through a real agent in a temp root: the original two-record Lambda event
  (``samples.json``) sent by a requester component with ``IpcClient.request`` to a
  ``roost serve --model <seed model>`` component and to ``roost lambda run`` hosting a handler that
  behaves as the original (``pd.read_json`` → ``XGBRegressor.predict`` → ``json.dumps``): median
  and p99 round trip, compared with the original handler's compute alone;
* micro-batched throughput: 64 single-row requests kept in flight by one requester component
  against ``roost serve`` with micro-batching on (default) and off (``--max-batch 1``): requests/s,
  latency under load and the average batch size (from the batcher's own counters).

Every wait has a deadline; the agent and its components are stopped in ``finally`` (SIGKILL of
what was started from the private temp root if ``agent stop`` fails), also on SIGTERM.

Usage::

    .venv/bin/python bench/inference.py [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from common import HERE, REPO, SHARED, Agent, Workspace, bench_tmp, log, pubsub_acl

PEERS = SHARED / "peers" / "peers_inference.py"
MODEL = SHARED / "seed-data" / "xgboost_wine_quality.json"
SAMPLES = SHARED / "seed-data" / "samples.json"
DATA = REPO / "src" / "roost" / "samples" / "data" / "wine_concat.csv"
LAMBDA_HANDLER = REPO / "src" / "roost" / "samples" / "artifacts" / "com.roost.WineLambda" / "1.0.0" / "inference.py"
COMPONENT_SCRIPT = HERE / "inference_component.py"
FEATURES = ["fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
            "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol",
            "color_red", "color_white"]
BATCHES = [1, 40, 1000]
BACKENDS = ["xgboost", "compiled", "onnx"]
PEER_ENGINES_FULL = "lambda,inplace,dmatrix,tl2cgen,gtil,onnxrt,numpy"
PEER_ENGINES_QUICK = "lambda,inplace,dmatrix,tl2cgen,onnxrt"
PEER_LABELS = {
    "lambda": "peer: Lambda handler path (JSON → pd.read_json → XGBRegressor.predict)",
    "inplace": "peer: Booster.inplace_predict",
    "dmatrix": "peer: DMatrix + predict",
    "tl2cgen": "peer: treelite → tl2cgen .so",
    "gtil": "peer: treelite GTIL",
    "onnxrt": "peer: onnxmltools → onnxruntime",
    "numpy": "peer: numpy tree walk",
}
TOL = 1e-5
E2E_TARGET = 10.0  # round trip at least 10x faster than the handler's compute alone
B1_TARGET = 2.0  # single-row compute within 2x of the fastest peer
PATH_TARGET = 0.8  # issue 10: the server's request path at batch 1000, rows/s vs Booster.inplace_predict


# -- shared data ---------------------------------------------------------------------------------


def draws(n_rows: int) -> dict[int, list[int]]:
    """Batch start rows, drawn exactly as peers_inference.py draws them (same seed, same order)."""
    rng = np.random.default_rng(0)
    out = {}
    for bs in BATCHES:
        k = 64 if bs == 1 else (32 if bs == 40 else 5)
        out[bs] = [int(s) for s in rng.integers(0, n_rows - bs, size=k)]
    return out


def prepare(tmp: Path) -> dict[str, Any]:
    """Rows, reference predictions and request bodies shared by the compute worker and the components."""
    import pandas as pd
    import xgboost as xgb

    df = pd.read_csv(DATA)
    df["color_red"] = (df["color"] == "red").astype("int64")
    df["color_white"] = (df["color"] == "white").astype("int64")
    df = df[FEATURES]
    x_all = np.ascontiguousarray(df.to_numpy(dtype=np.float32))
    ref_bst = xgb.Booster()
    ref_bst.load_model(str(MODEL))
    ref_bst.set_param({"nthread": 1})
    ref = ref_bst.inplace_predict(x_all)
    np.savez(tmp / "data.npz", X=x_all, ref=ref)
    bodies = {f"{bs}:{s}": df.iloc[s:s + bs].to_json(orient="records")
              for bs, starts in draws(len(df)).items() for s in starts}
    samples_body = json.dumps(json.loads(SAMPLES.read_text()))
    bodies["samples"] = samples_body
    (tmp / "bodies.json").write_text(json.dumps(bodies))
    sample_x = pd.read_json(io.StringIO(samples_body))[FEATURES].to_numpy(dtype=np.float32)
    samples_expect = [float(v) for v in ref_bst.inplace_predict(sample_x)]
    # single-row Lambda events for the load phase: 256 distinct rows with their expected predictions
    rows = np.random.default_rng(1).choice(len(df), size=256, replace=False)
    cases = [{"event": {"body": df.iloc[int(i):int(i) + 1].to_json(orient="records"), "isBase64Encoded": False},
              "expect": [float(ref[int(i)])]} for i in rows]
    (tmp / "load-events.json").write_text(json.dumps(cases))
    return {"rows": len(df), "samples_body": samples_body, "samples_expect": samples_expect}


def time_cell(fn: Callable[[Any], Any], inputs: list[Any], calls: int, warmup: int, cap_s: float) -> dict[str, Any]:
    """The peers' timing loop: warm-up, then ``calls`` calls cycling over ``inputs`` (or ``cap_s``)."""
    k = len(inputs)
    for i in range(warmup):
        fn(inputs[i % k])
    lat = np.empty(calls, np.int64)
    t_end = time.monotonic() + cap_s
    got = calls
    for i in range(calls):
        x = inputs[i % k]
        t0 = time.perf_counter_ns()
        fn(x)
        lat[i] = time.perf_counter_ns() - t0
        if time.monotonic() > t_end:
            got = i + 1
            break
    us = np.sort(lat[:got]) / 1000.0
    return {"calls": int(got), "median_us": float(np.median(us)), "p99_us": float(us[min(got - 1, int(0.99 * got))]),
            "mean_us": float(us.mean()), "min_us": float(us[0])}


# -- phase 1 and 2: compute ----------------------------------------------------------------------


def compute_worker(a: argparse.Namespace) -> None:
    """Runs in its own process (like each peer engine): Roost's backends and request path."""
    import pandas as pd
    import xgboost as xgb

    from roost.serve.engine import load_tabular
    from roost.serve.request import decode_tabular, unwrap_event

    tmp = Path(a.tmp)
    d = np.load(tmp / "data.npz", allow_pickle=False)
    x_all, ref = d["X"], d["ref"]
    bodies: dict[str, str] = json.loads((tmp / "bodies.json").read_text())
    starts = draws(len(x_all))
    cache = tmp / "cache"
    out: dict[str, Any] = {"backends": {}, "paths": {}}

    def cells(fn: Callable[[Any], Any], make: Callable[[int, int], Any]) -> list[dict[str, Any]]:
        res = []
        for bs in BATCHES:
            r = time_cell(fn, [make(bs, s) for s in starts[bs]], a.calls, a.warmup, a.cell_s)
            r.update({"batch": bs, "rows_per_s": bs / (r["mean_us"] * 1e-6)})
            res.append(r)
        return res

    def matrix(bs: int, s: int) -> Any:
        return np.ascontiguousarray(x_all[s:s + bs])

    for name in BACKENDS:
        try:
            t0 = time.perf_counter()
            lm = load_tabular(MODEL, name, cache_dir=cache)  # type: ignore[arg-type]
            load_s = time.perf_counter() - t0
            pred = np.concatenate([lm.backend.predict(x_all[i:i + 1000]) for i in range(0, len(x_all), 1000)])
            diff = float(np.max(np.abs(pred.astype(np.float64) - ref.astype(np.float64))))
            out["backends"][name] = {"load_s": load_s, "max_abs_diff": diff,
                                     "results": cells(lm.backend.predict, matrix)}
        except Exception as err:  # reported as "not available"
            out["backends"][name] = {"error": f"{type(err).__name__}: {err}"}
        log(f"compute: {name} done")

    t0 = time.perf_counter()
    auto = load_tabular(MODEL, "auto", cache_dir=cache)
    out["auto"] = {"engine": auto.engine, "load_s": time.perf_counter() - t0, "timings": auto.timings,
                   "skipped": auto.skipped}
    names = auto.feature_names
    backend = auto.backend

    def roost_path(event: dict[str, Any]) -> Any:
        doc, _meta = unwrap_event(event)
        return np.asarray(backend.predict(decode_tabular(doc, names))).reshape(-1).tolist()  # as roost serve

    def event(bs: int, s: int) -> dict[str, Any]:
        return {"body": bodies[f"{bs}:{s}"], "isBase64Encoded": False}

    out["paths"]["roost"] = cells(roost_path, event)

    reg = xgb.XGBRegressor()
    reg.load_model(str(MODEL))

    def handler_compute(ev: dict[str, Any]) -> str:  # the original handler's work, prints left out
        values = pd.read_json(io.StringIO(ev["body"]))
        return json.dumps(reg.predict(values).tolist())

    samples_ev = [{"body": bodies["samples"], "isBase64Encoded": False}]
    for key, fn in (("roost", roost_path), ("lambda", handler_compute)):
        r = time_cell(fn, samples_ev, a.calls, a.warmup, a.cell_s)
        r.update({"batch": 2, "rows_per_s": 2 / (r["mean_us"] * 1e-6)})
        out["paths"][f"{key}_samples"] = r
    print("RESULT " + json.dumps(out), flush=True)


def run_compute(tmp: Path, a: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "compute", "--tmp", str(tmp),
           "--calls", str(a.calls), "--warmup", str(a.warmup), "--cell-s", str(a.cell_s)]
    log("compute: Roost backends in a fresh process ...")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.compute_timeout, check=False, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"compute worker timed out after {a.compute_timeout} s"}
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if not line:
        return {"error": f"compute worker rc={p.returncode}: {p.stderr.strip()[-1500:]}"}
    doc: dict[str, Any] = json.loads(line[-1][7:])
    return doc


def run_peers(tmp: Path, a: argparse.Namespace) -> dict[str, Any]:
    if not PEERS.exists():
        return {"error": f"{PEERS} not found"}
    out = tmp / "peers.json"
    cmd = [sys.executable, str(PEERS), "--model", str(MODEL), "--calls", str(a.calls), "--warmup", str(a.warmup),
           "--cell-s", str(a.cell_s), "--engine-s", str(a.peer_engine_s), "--only", a.peers, "--json", str(out)]
    log("peers: " + " ".join(cmd[1:]))
    n_engines = len(a.peers.split(","))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.peer_engine_s * n_engines + 60,
                           check=False)
    except subprocess.TimeoutExpired:
        return {"error": "peers_inference.py timed out"}
    if not out.exists():
        return {"error": f"peers_inference.py exited {p.returncode}: {p.stderr[-1500:]}"}
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def _best_cells(lists: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per batch size, the cell of the round with the lowest median (the least disturbed one)."""
    best: dict[int, dict[str, Any]] = {}
    for cells in lists:
        for c in cells:
            b = int(c["batch"])
            if b not in best or c["median_us"] < best[b]["median_us"]:
                best[b] = {**c, "rounds": len(lists)}
    return [best[b] for b in sorted(best)]


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One document from several rounds of peers (``engines``) or compute (``backends``, ``paths``)."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return rounds[-1] if rounds else {"error": "not run"}
    merged: dict[str, Any] = json.loads(json.dumps(ok[-1]))
    for key in ("engines", "backends"):
        for name, o in merged.get(key, {}).items():
            lists = [r[key][name]["results"] for r in ok if r.get(key, {}).get(name, {}).get("results")]
            if lists:
                o["results"] = _best_cells(lists)
    for name, val in merged.get("paths", {}).items():
        if isinstance(val, list):
            merged["paths"][name] = _best_cells([r["paths"][name] for r in ok if name in r.get("paths", {})])
        else:
            merged["paths"][name] = _best_cells([[r["paths"][name]] for r in ok if name in r.get("paths", {})])[0]
    merged["rounds"] = len(ok)
    return merged


# -- phase 3: through the agent ------------------------------------------------------------------


def cpu_snapshot(agent: Agent) -> dict[int, tuple[str, float]]:
    """CPU seconds of the agent and each of its descendants, by pid, labelled by role."""
    out: dict[int, tuple[str, float]] = {}
    root = agent.process()
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            words = " ".join(p.cmdline()).split()
            script = [i for i, w in enumerate(words) if w.endswith(COMPONENT_SCRIPT.name)]
            if p.pid == root.pid:
                label = "agent"
            elif words and words[0].endswith("sh"):
                label = "shell"
            elif script and script[0] + 1 < len(words):
                label = words[script[0] + 1]  # the role: serve, e2e, load
            elif "lambda" in words:
                label = "lambda-host"
            elif any("multiprocessing" in w for w in words):
                label = "lambda-worker"
            else:
                label = "other"
            out[p.pid] = (label, t.user + t.system)
    return out


def cpu_delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for pid, (label, t) in after.items():
        out[label] = out.get(label, 0.0) + t - before.get(pid, (label, 0.0))[1]
    return out


class Bench:
    """The components of phase 3 in one agent root."""

    def __init__(self, tmp: Path, agent: Agent, a: argparse.Namespace, prep: dict[str, Any]) -> None:
        self.tmp = tmp
        self.agent = agent
        self.a = a
        self.prep = prep
        self.ws = Workspace(tmp / "ws", COMPONENT_SCRIPT)
        self.cache = tmp / "cache"

    def add_serve(self, name: str, max_batch: int) -> Path:
        stats = self.tmp / f"stats-{name}.json"
        # The bench's own interpreter (roost.serve, uvloop): a component's venv holds only roost.ipc.
        run = (f"{sys.executable} -u {{artifacts:path}}/{COMPONENT_SCRIPT.name} serve {stats} --model {MODEL} "
               f"--engine {self.a.engine} --name wine-quality --version 1.0.0 --max-batch {max_batch} "
               f"--cache-dir {self.cache}")
        self.ws.component(name, run, {"accessControl": pubsub_acl(name, ["local/inference", "local/result",
                                                                         "roost/reply/*"])})
        return stats

    def add_lambda(self, name: str) -> None:
        run = ("roost lambda run --handler inference.handler --path {artifacts:path} --function-name wine-quality "
               "--timeout 3 --request-topic local/lambda/inference --result-topic local/lambda/result")
        self.ws.component(name, run, {"accessControl": pubsub_acl(name, ["local/lambda/inference",
                                                                         "local/lambda/result", "roost/reply/*"])},
                          script=False, files=[LAMBDA_HANDLER], setenv={"MODEL_PATH": str(MODEL)})

    def add_requester(self, name: str, role: str, conf: dict[str, Any]) -> Path:
        result = self.tmp / f"result-{name}.json"
        conf = {**conf, "resultFile": str(result), "markFile": str(self.tmp / f"mark-{name}"),
                "maxSeconds": self.a.phase_timeout + 30,
                "probeSeconds": self.a.phase_timeout / 2, "loop": self.a.requester_loop}
        conf_file = self.tmp / f"conf-{name}.json"
        conf_file.write_text(json.dumps(conf))
        run = f"{sys.executable} -u {{artifacts:path}}/{COMPONENT_SCRIPT.name} {role} {conf_file}"
        self.ws.component(name, run, {"accessControl": pubsub_acl(name, [conf["topic"], "roost/reply/*"])})
        return result

    def wait_file(self, path: Path, result: Path, name: str, deadline: float) -> None:
        """Wait for ``path``; fail early when the requester wrote an error result instead."""
        while not path.exists():
            if path != result and result.exists():
                doc = json.loads(result.read_text())
                raise RuntimeError(f"{name} failed: {doc.get('error', doc)}")
            if time.monotonic() > deadline:
                logf = self.agent.root / "logs" / f"{name}.log"
                tail = logf.read_text(errors="replace")[-1500:] if logf.exists() else "(no log)"
                raise TimeoutError(f"{name}: no {path.name} within {self.a.phase_timeout} s; log tail:\n{tail}")
            time.sleep(0.01)

    def measure(self, deploy: list[str], requester: str, result: Path, remove: list[str]) -> dict[str, Any]:
        """Deploy, sample CPU times at the requester's window marks, collect its result, remove."""
        t0 = time.monotonic()
        deadline = t0 + self.a.phase_timeout
        mark = self.tmp / f"mark-{requester}"
        args = [x for n in deploy for x in ("--merge", f"{n}=1.0.0")]
        try:
            self.agent.deploy(self.ws, *args, timeout=self.a.phase_timeout)
            self.wait_file(Path(f"{mark}.start"), result, requester, deadline)
            before = cpu_snapshot(self.agent)
            self.wait_file(Path(f"{mark}.end"), result, requester, deadline)
            after = cpu_snapshot(self.agent)
            self.wait_file(result, result, requester, deadline)
            doc: dict[str, Any] = json.loads(result.read_text())
            if "error" in doc:
                raise RuntimeError(f"{requester} failed: {doc['error']}")
            doc["cpu_s"] = cpu_delta(before, after)
            doc["wall_s"] = time.monotonic() - t0
        finally:
            if remove:
                with contextlib.suppress(Exception):
                    self.agent.deploy(self.ws, *(x for n in remove for x in ("--remove", n)),
                                      timeout=self.a.phase_timeout)
        return doc

    def e2e_conf(self, topic: str) -> dict[str, Any]:
        return {"topic": topic, "event": {"body": self.prep["samples_body"], "isBase64Encoded": False},
                "expect": self.prep["samples_expect"], "n": self.a.n, "warmup": self.a.e2e_warmup}

    def load_conf(self, stats: Path) -> dict[str, Any]:
        return {"topic": "local/inference", "eventsFile": str(self.tmp / "load-events.json"),
                "concurrency": self.a.concurrency, "warmupSeconds": self.a.load_warmup_s,
                "seconds": self.a.load_s, "statsFile": str(stats)}


def run_agent_phases(tmp: Path, a: argparse.Namespace, prep: dict[str, Any], results: dict[str, Any]) -> None:
    agent = Agent(tmp / "root")
    e2e: dict[str, Any] = results.setdefault("e2e", {})
    load: dict[str, Any] = results.setdefault("load", {})
    try:
        agent.start()
        b = Bench(tmp, agent, a, prep)

        def step(store: dict[str, Any], key: str, fn: Callable[[], dict[str, Any]]) -> None:
            log(f"agent: {key} ...")
            try:
                store[key] = fn()
                r = store[key]
                if "median_us" in r:
                    extra = f", {r['rps']:,.0f} req/s" if "rps" in r else ""
                    extra += f", avg batch {r['avg_batch']:.1f}" if "avg_batch" in r else ""
                    log(f"agent: {key}: median {r['median_us']:.0f} µs p99 {r['p99_us']:.0f} µs{extra}")
            except Exception as err:
                store[key] = {"error": f"{type(err).__name__}: {err}"}
                results["errors"][f"{key}"] = store[key]["error"]
                log(f"agent: {key} FAILED: {err}")

        stats = b.add_serve("bench.Serve", 64)
        res = b.add_requester("bench.E2eServe", "e2e", b.e2e_conf("local/inference"))
        step(e2e, "serve", lambda: b.measure(["bench.Serve", "bench.E2eServe"], "bench.E2eServe", res,
                                             ["bench.E2eServe"]))
        res_d = b.add_requester("bench.E2eServeDirect", "e2e", {**b.e2e_conf("local/inference"), "direct": True})
        step(e2e, "serve-direct", lambda: b.measure(["bench.Serve", "bench.E2eServeDirect"], "bench.E2eServeDirect",
                                                    res_d, ["bench.E2eServeDirect"]))
        res_l = b.add_requester("bench.LoadBatched", "load", b.load_conf(stats))
        step(load, "batched", lambda: b.measure(["bench.LoadBatched"], "bench.LoadBatched", res_l,
                                                ["bench.LoadBatched", "bench.Serve"]))
        b.add_lambda("bench.Lambda")
        res_lam = b.add_requester("bench.E2eLambda", "e2e", b.e2e_conf("local/lambda/inference"))
        step(e2e, "lambda", lambda: b.measure(["bench.Lambda", "bench.E2eLambda"], "bench.E2eLambda", res_lam,
                                              ["bench.Lambda", "bench.E2eLambda"]))
        stats1 = b.add_serve("bench.ServeNoBatch", 1)
        res_u = b.add_requester("bench.LoadUnbatched", "load", b.load_conf(stats1))
        step(load, "unbatched", lambda: b.measure(["bench.ServeNoBatch", "bench.LoadUnbatched"],
                                                  "bench.LoadUnbatched", res_u,
                                                  ["bench.ServeNoBatch", "bench.LoadUnbatched"]))
    finally:
        agent.stop()


# -- report --------------------------------------------------------------------------------------


def _f(x: float | None, fmt: str = "{:,.1f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _by_batch(results: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(r["batch"]): r for r in results}


def compute_rows(results: dict[str, Any]) -> list[tuple[str, dict[int, dict[str, Any]], str]]:
    rows = []
    for name, o in results.get("peers", {}).get("engines", {}).items():
        ag = o.get("agreement") or {}
        diff = f"{ag['max_abs_diff']:.1e}" if ag.get("max_abs_diff") is not None else "n/a"
        rows.append((PEER_LABELS.get(name, name), _by_batch(o.get("results", [])), diff))
    comp = results.get("compute", {})
    auto = comp.get("auto", {}).get("engine")
    for name, o in comp.get("backends", {}).items():
        label = f"Roost `{name}` backend" + (" (= auto's choice)" if name == auto else "")
        rows.append((label, _by_batch(o.get("results", [])), f"{o['max_abs_diff']:.1e}" if "max_abs_diff" in o
                     else "n/a"))
    if comp.get("paths", {}).get("roost"):
        rows.append((f"Roost request path: event → unwrap_event → decode_tabular → `{auto}` → list",
                     _by_batch(comp["paths"]["roost"]), "same"))
    return rows


def peer_cell(results: dict[str, Any], engine: str, batch: int) -> dict[str, Any] | None:
    o = results.get("peers", {}).get("engines", {}).get(engine, {})
    return _by_batch(o.get("results", [])).get(batch)


def fastest_peer_b1(results: dict[str, Any]) -> tuple[str, float] | None:
    best = None
    for name, o in results.get("peers", {}).get("engines", {}).items():
        if name == "lambda" or not (o.get("agreement") or {}).get("ok", False):
            continue
        r = _by_batch(o.get("results", [])).get(1)
        if r and (best is None or r["median_us"] < best[1]):
            best = (name, r["median_us"])
    return best


def report(results: dict[str, Any]) -> str:
    lines = [f"# bench/inference.py  {results['date']}  python {results['python']}  cpus={results['cpus']}  "
             f"load avg at start {results['loadavg_start']}  mode={results['mode']}", ""]
    fast = fastest_peer_b1(results)
    inplace = peer_cell(results, "inplace", 1000)
    n_rounds = results.get("args", {}).get("rounds", 1)
    lines.append(f"Model compute per call, µs (median / p99; best median of {n_rounds} round(s) of peers and Roost "
                 "alternating); rows/s = 1000 / mean call time at batch 1000. "
                 f"b=1 ratio: median vs the fastest peer engine at batch 1 ({fast[0] if fast else 'n/a'}); "
                 "rows/s ratio: vs `inplace_predict`.")
    lines.append("")
    lines.append("| engine | batch 1 | batch 40 | batch 1000 | rows/s @1000 | b=1 vs fastest peer | rows/s vs inplace "
                 "| max abs diff |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, by, diff in compute_rows(results):
        cells = [f"{_f(by[bs]['median_us'])} / {_f(by[bs]['p99_us'])}" if bs in by else "-" for bs in BATCHES]
        rps = by[1000]["rows_per_s"] if 1000 in by else None
        r1 = f"{by[1]['median_us'] / fast[1]:.2f}x" if fast and 1 in by else "n/a"
        rr = f"{rps / inplace['rows_per_s']:.2f}x" if rps and inplace else "n/a"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_f(rps, '{:,.0f}')} | {r1} | {rr} | {diff} |")
    comp = results.get("compute", {})
    if "auto" in comp:
        au = comp["auto"]
        t = "; ".join(f"{k} b1 {v['batch1_us']:.1f} / b64 {v['batch64_us']:.1f} µs" for k, v in au["timings"].items()
                      if "batch1_us" in v)
        lines += ["", f"`--engine auto` chose **{au['engine']}** (load + calibrate {au['load_s']:.2f} s; its own "
                      f"timings: {t}).", ""]
    for k in ("roost_samples", "lambda_samples"):
        r = comp.get("paths", {}).get(k)
        if r:
            what = ("Roost request path" if k.startswith("roost") else
                    "original handler compute (pd.read_json → XGBRegressor.predict → json.dumps)")
            lines.append(f"- {what} on the two samples.json records: median {r['median_us']:.1f} µs, "
                         f"p99 {r['p99_us']:.1f} µs")
    lines.append("")
    lines += e2e_table(results)
    lines.append("")
    lines += load_table(results)
    lines.append("")
    lines += targets(results)
    for k, v in results.get("errors", {}).items():
        lines.append(f"- ERROR {k}: {v}")
    return "\n".join(lines)


def handler_compute(results: dict[str, Any]) -> tuple[float | None, float | None]:
    """(peers' lambda engine median at batch 1, this run's handler compute on the 2 samples)."""
    p = peer_cell(results, "lambda", 1)
    s = results.get("compute", {}).get("paths", {}).get("lambda_samples")
    return (p["median_us"] if p else None), (s["median_us"] if s else None)


def e2e_table(results: dict[str, Any]) -> list[str]:
    peer_l, own_l = handler_compute(results)
    lines = ["End to end: the original two-record Lambda event, requester component → agent → server → agent → "
             "requester, sequential. Speed-up = handler compute alone / round-trip median (target ≥ 10x).", "",
             "| server | median µs | p99 µs | server-side median µs | speed-up vs peers' lambda b=1 "
             f"({_f(peer_l, '{:,.0f}')} µs) | vs handler on the 2 samples, this run ({_f(own_l, '{:,.0f}')} µs) "
             "| agent CPU µs/req | server CPU µs/req | requester CPU µs/req |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    labels = {"serve": "`roost serve --model` (engine auto)",
              "serve-direct": "`roost serve --model` (engine auto), direct channel (`connect(direct=True)`)",
              "lambda": "`roost lambda run` (original-style handler)"}
    for key, label in labels.items():
        r = results.get("e2e", {}).get(key)
        if not r:
            continue
        if "error" in r:
            lines.append(f"| {label} | failed: {r['error'][:100]} | | | | | | | |")
            continue
        total = r["n"]  # CPU times are sampled at the start and the end of the measured requests
        cpu = r.get("cpu_s", {})
        server = sum(v for k, v in cpu.items() if k in ("serve", "lambda-host", "lambda-worker"))
        srv = r.get("server_elapsed", {}).get("median_us")
        lines.append(f"| {label} | {r['median_us']:,.0f} | {r['p99_us']:,.0f} | {_f(srv, '{:,.0f}')} | "
                     f"{_f(peer_l / r['median_us'] if peer_l else None, '{:.2f}x')} | "
                     f"{_f(own_l / r['median_us'] if own_l else None, '{:.2f}x')} | "
                     f"{cpu.get('agent', 0) / total * 1e6:,.0f} | {server / total * 1e6:,.0f} | "
                     f"{r['requester_cpu_us']:,.0f} |")
    return lines


def load_table(results: dict[str, Any]) -> list[str]:
    c = results["args"]["concurrency"]
    lines = [f"Throughput: {c} single-row requests in flight (one requester component, asyncio.gather) against "
             "`roost serve`.", "",
             "| micro-batching | req/s | vs unbatched | median µs | p99 µs | avg batch (largest) | "
             "agent CPU µs/req | server CPU µs/req | requester CPU µs/req |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ub = results.get("load", {}).get("unbatched", {}).get("rps")
    for key, label in (("batched", "on (default, max batch 64)"), ("unbatched", "off (`--max-batch 1`)")):
        r = results.get("load", {}).get(key)
        if not r:
            continue
        if "error" in r:
            lines.append(f"| {label} | failed: {r['error'][:100]} | | | | | | | |")
            continue
        cpu = r.get("cpu_s", {})  # sampled at the start and the end of the measured window
        total = max(1, r["requests"])
        batch = f"{r['avg_batch']:.1f} ({r['largest_batch']})" if "avg_batch" in r else "n/a"
        lines.append(f"| {label} | {r['rps']:,.0f} | {_f(r['rps'] / ub if ub else None, '{:.2f}x')} | "
                     f"{r['median_us']:,.0f} | {r['p99_us']:,.0f} | {batch} | "
                     f"{cpu.get('agent', 0) / total * 1e6:,.0f} | {cpu.get('serve', 0) / total * 1e6:,.0f} | "
                     f"{r['requester_cpu_us']:,.0f} |")
    return lines


def targets(results: dict[str, Any]) -> list[str]:
    out = ["Targets (same run):"]
    peer_l, own_l = handler_compute(results)
    for key in ("serve", "serve-direct"):
        r = results.get("e2e", {}).get(key, {})
        if "median_us" in r and (peer_l or own_l):
            parts = []
            for what, base in (("peers' lambda b=1", peer_l), ("handler on the 2 samples", own_l)):
                if base:
                    parts.append(f"{base / r['median_us']:.2f}x vs {what} ({base:,.0f} µs)")
            ok = all(base / r["median_us"] >= E2E_TARGET for base in (peer_l, own_l) if base)
            out.append(f"- end-to-end round trip ({key}) ≥ {E2E_TARGET:.0f}x faster than the handler's compute: "
                       f"{r['median_us']:,.0f} µs; " + ", ".join(parts) + f" → {'MET' if ok else 'NOT MET'}")
    fast = fastest_peer_b1(results)
    comp = results.get("compute", {})
    auto = comp.get("auto", {}).get("engine")
    if fast and auto:
        for name in BACKENDS:
            by = _by_batch(comp.get("backends", {}).get(name, {}).get("results", []))
            if 1 in by:
                ratio = by[1]["median_us"] / fast[1]
                tag = " (auto's choice)" if name == auto else ""
                out.append(f"- single-row compute within {B1_TARGET:.0f}x of the fastest peer ({fast[0]} "
                           f"{fast[1]:.1f} µs): `{name}`{tag} {by[1]['median_us']:.1f} µs = {ratio:.2f}x → "
                           f"{'MET' if ratio <= B1_TARGET else 'NOT MET'}")
    inplace = peer_cell(results, "inplace", 1000)
    if inplace:
        for name in BACKENDS:
            by = _by_batch(comp.get("backends", {}).get(name, {}).get("results", []))
            if 1000 in by:
                ratio = by[1000]["rows_per_s"] / inplace["rows_per_s"]
                out.append(f"- batch-1000 throughput ≥ inplace_predict ({inplace['rows_per_s']:,.0f} rows/s): "
                           f"`{name}` {by[1000]['rows_per_s']:,.0f} rows/s = {ratio:.2f}x → "
                           f"{'MET' if ratio >= 1 else 'NOT MET'}")
        path = _by_batch(comp.get("paths", {}).get("roost", []))
        if 1000 in path:
            ratio = path[1000]["rows_per_s"] / inplace["rows_per_s"]
            out.append(f"- request path at batch 1000 (decode → predict → list) ≥ {PATH_TARGET}x inplace_predict: "
                       f"{path[1000]['rows_per_s']:,.0f} rows/s = {ratio:.2f}x → "
                       f"{'MET' if ratio >= PATH_TARGET else 'NOT MET'}")
    return out


# -- main ----------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~2 min: fewer calls and requests, 5 peer engines")
    ap.add_argument("--json", default="", help="write all results here")
    ap.add_argument("--calls", type=int, default=None, help="compute calls per cell (default 1000, quick 300)")
    ap.add_argument("--warmup", type=int, default=None, help="compute warm-up calls (default 50, quick 20)")
    ap.add_argument("--cell-s", type=float, default=None, help="time cap per compute cell (default 15, quick 6)")
    ap.add_argument("--rounds", type=int, default=None, help="peers + Roost compute rounds, best median per cell "
                                                             "kept (default 2, quick 1)")
    ap.add_argument("--peers", default=None, help=f"peer engines (default {PEER_ENGINES_FULL}; quick "
                                                  f"{PEER_ENGINES_QUICK}; '' to skip)")
    ap.add_argument("--n", type=int, default=None, help="sequential end-to-end requests (default 2000, quick 300)")
    ap.add_argument("--e2e-warmup", type=int, default=None, help="default 200, quick 50")
    ap.add_argument("--concurrency", type=int, default=64, help="single-row requests in flight in the load phase")
    ap.add_argument("--load-s", type=float, default=None, help="measured load window (default 15, quick 5)")
    ap.add_argument("--load-warmup-s", type=float, default=None, help="default 2, quick 1")
    ap.add_argument("--engine", default="auto", help="roost serve --engine for the agent phases")
    ap.add_argument("--requester-loop", choices=["asyncio", "uvloop"], default="asyncio")
    ap.add_argument("--skip-agent", action="store_true", help="compute phases only")
    ap.add_argument("--phase-timeout", type=float, default=240.0, help="seconds per agent phase")
    ap.add_argument("--compute-timeout", type=float, default=600.0, help="seconds for the compute worker")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    q = a.quick
    a.calls = a.calls or (300 if q else 1000)
    a.warmup = a.warmup or (20 if q else 50)
    a.cell_s = a.cell_s or (6.0 if q else 15.0)
    a.peer_engine_s = 90.0 if q else 240.0
    a.rounds = a.rounds or (1 if q else 2)
    a.peers = (PEER_ENGINES_QUICK if q else PEER_ENGINES_FULL) if a.peers is None else a.peers
    a.n = a.n or (300 if q else 2000)
    a.e2e_warmup = a.e2e_warmup or (50 if q else 200)
    a.load_s = a.load_s or (5.0 if q else 15.0)
    a.load_warmup_s = a.load_warmup_s or (1.0 if q else 2.0)
    if a.worker == "compute":
        compute_worker(a)
        return 0

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    tmp = bench_tmp("roost-bench-inf-")
    os.chmod(tmp, 0o1777)  # components (other users) write their stats and results here
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version(), "cpus": os.cpu_count(),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()), "mode": "quick" if q else "full",
        "args": {k: v for k, v in vars(a).items() if k not in ("worker", "tmp")}, "errors": {},
    }
    t_start = time.monotonic()
    try:
        prep = prepare(tmp)
        results["samples_expect"] = prep["samples_expect"]
        peer_rounds: list[dict[str, Any]] = []
        compute_rounds: list[dict[str, Any]] = []
        for i in range(a.rounds):  # peers and Roost alternate, so both see the same machine
            log(f"compute round {i + 1}/{a.rounds}")
            if a.peers:
                peer_rounds.append(run_peers(tmp, a))
            compute_rounds.append(run_compute(tmp, a))
        results["rounds"] = {"peers": peer_rounds, "compute": compute_rounds}
        if a.peers:
            results["peers"] = merge_rounds(peer_rounds)
            if "error" in results["peers"]:
                results["errors"]["peers"] = results["peers"]["error"]
        results["compute"] = merge_rounds(compute_rounds)
        if "error" in results["compute"]:
            results["errors"]["compute"] = results["compute"]["error"]
        if not a.skip_agent:
            run_agent_phases(tmp, a, prep, results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["elapsed_s"] = time.monotonic() - t_start
    results["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(report(results))
    print(f"\n(total {results['elapsed_s']:.0f} s; load average at the end {results['loadavg_end']})")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
