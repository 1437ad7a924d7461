"""Joint inference on wine quality as classes: accuracy, share sent to the centre, latency and bytes, as
a curve over each hard-example filter's threshold (issue 13, item 3).

- edge: the small classifier of ``roost samples wine-classes`` (10 rounds of depth 2), in this process;
- centre: the big one (400 rounds of depth 8) served by a real ``roost cluster replica`` process on
  127.0.0.1, reached over its websocket with a session token signed as the hub signs them;
- rows: the 1,330 held-out rows of the sample split (``roost samples wine-holdout``), one per request
  (batch 1, Sedna's per-sample pattern), in file order.

Per filter (threshold, cross-entropy, margin, random) and threshold, every row goes through
:class:`roost.learn.joint.JointInference`: accuracy against ``quality``, share answered by the centre,
mean end-to-end latency per row, mean centre round trip per hard row, bytes on the centre's socket.
The big model alone is measured the same way (every row over the socket), the edge alone locally.

**The chosen threshold** per filter is the one sending the fewest rows while staying within 1 point of
the big model alone. It is chosen on these same rows, so a cross-check is reported too: the threshold
chosen on the even rows, measured on the odd rows (from the same runs' per-row answers).

Writes ``bench/results-learn-joint.json`` and ``docs/joint-inference.png``; ``--quick`` runs a coarse
grid. ``run()`` returns the results (what ``bench/learn.py`` calls); ``main()`` is the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.learn.replicas import ReplicaProcess  # noqa: E402

from roost.cluster.replica_session import ReplicaSession  # noqa: E402
from roost.cluster.tokens import TokenSigner  # noqa: E402
from roost.learn.hard_examples import FILTERS, make_filter  # noqa: E402
from roost.learn.joint import JointAnswer, JointInference, XGBoostEdgeModel, direct_centre, run_joint  # noqa: E402
from roost.learn.wine_classes import SHAPES, train_wine_classifier  # noqa: E402
from roost.serve.wine import holdout  # noqa: E402

RESULTS = HERE / "results-learn-joint.json"
PLOT = REPO / "docs" / "joint-inference.png"
TARGET_POINTS = 0.01
TARGET_SHARE = 0.30


def _grid(name: str, quick: bool) -> list[float]:
    step = 0.1 if quick else 0.02
    if name == "random":
        step = 0.2 if quick else 0.1
    return [round(float(t), 4) for t in np.arange(0.0, 1.0 + 1e-9, step)]


async def _centre_alone(replica: ReplicaProcess, x: np.ndarray) -> dict[str, Any]:
    preds: list[float] = []
    e2e: list[float] = []
    async with ReplicaSession(replica.target()) as session:
        await session.predict(0, x[:1])  # the warm-up window
        sent0, received0 = session.sent, session.received
        for i in range(len(x)):
            t0 = time.perf_counter()
            reply = await session.predict(i + 1, x[i:i + 1])
            e2e.append((time.perf_counter() - t0) * 1000.0)
            preds.extend(reply.predictions)
        sent, received = session.sent - sent0, session.received - received0
    return {"predictions": preds, "latency_ms_per_row": round(float(np.mean(e2e)), 4),
            "bytes_sent_per_row": round(sent / len(x), 2), "bytes_received_per_row": round(received / len(x), 2)}


def _acc(answers: list[JointAnswer], y: np.ndarray, rows: slice) -> float:
    return float(np.mean(np.asarray([a.prediction for a in answers])[rows] == y[rows]))


def _share(answers: list[JointAnswer], rows: slice) -> float:
    return float(np.mean(np.asarray([a.answered_by == "centre" for a in answers])[rows]))


async def _curve(name: str, edge: XGBoostEdgeModel, replica: ReplicaProcess, x: np.ndarray, y: np.ndarray,
                 quick: bool) -> tuple[list[dict[str, Any]], list[list[JointAnswer]]]:
    points: list[dict[str, Any]] = []
    runs: list[list[JointAnswer]] = []
    for threshold in _grid(name, quick):
        hard_filter = make_filter(name, threshold, seed=13)
        async with JointInference(edge, direct_centre(replica.target()), hard_filter) as joint:
            await joint.infer(x[:1])  # warm the centre session (its first window is the warm-up)
            report = await run_joint(joint, x, batch=1)
        doc = report.summary(y)
        hard_batches = [b for b in report.batches if b.centre_ms is not None]
        points.append({
            "threshold": threshold, "accuracy": doc["accuracy"], "share_sent": doc["share_sent"],
            "latency_ms_per_row": doc["latency_ms"]["batch"]["mean"],
            "latency_ms_per_row_p99": doc["latency_ms"]["batch"]["p99"],
            "edge_ms_per_row": doc["latency_ms"]["edge"]["mean"],
            "centre_ms_per_hard_row": doc["latency_ms"]["centre"]["mean"],
            "bytes_sent_per_row": doc["bytes"]["sent_per_row"],
            "bytes_received_per_row": doc["bytes"]["received_per_row"],
            "bytes_sent_per_hard_row": round(sum(b.bytes_sent for b in hard_batches) / len(hard_batches), 2)
            if hard_batches else None,
            "centre_errors": doc["centre_errors"]})
        runs.append(report.answers)
        print(f"{name:>13} < {threshold:<5} acc {doc['accuracy']:.4f} sent {doc['share_sent']:.3f} "
              f"{doc['latency_ms']['batch']['mean']:.3f} ms/row {doc['bytes']['sent_per_row']:.1f} B/row",
              file=sys.stderr, flush=True)
    return points, runs


def _choose(points: list[dict[str, Any]], big: float) -> dict[str, Any] | None:
    ok = [p for p in points if p["accuracy"] >= big - TARGET_POINTS]
    return min(ok, key=lambda p: (p["share_sent"], -p["accuracy"])) if ok else None


def _cross_check(points: list[dict[str, Any]], runs: list[list[JointAnswer]], y: np.ndarray,
                 big_pred: np.ndarray) -> dict[str, Any] | None:
    even, odd = slice(0, None, 2), slice(1, None, 2)
    big_even = float(np.mean(big_pred[even] == y[even]))
    big_odd = float(np.mean(big_pred[odd] == y[odd]))
    ok = [(p, r) for p, r in zip(points, runs, strict=True) if _acc(r, y, even) >= big_even - TARGET_POINTS]
    if not ok:
        return None
    point, answers = min(ok, key=lambda pr: (_share(pr[1], even), -_acc(pr[1], y, even)))
    return {"threshold": point["threshold"], "chosen_on": "even rows", "measured_on": "odd rows",
            "accuracy": round(_acc(answers, y, odd), 6), "share_sent": round(_share(answers, odd), 6),
            "centre_alone_accuracy": round(big_odd, 6),
            "within_1_point": _acc(answers, y, odd) >= big_odd - TARGET_POINTS}


def plot(results: dict[str, Any], path: Path = PLOT) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    (acc_ax, share_ax), (trade_ax, lat_ax) = axes
    big, edge = results["centre_alone"]["accuracy"], results["edge_alone"]["accuracy"]
    for name, curve in results["filters"].items():
        t = [p["threshold"] for p in curve["points"]]
        acc_ax.plot(t, [p["accuracy"] for p in curve["points"]], marker=".", label=name)
        share_ax.plot(t, [p["share_sent"] for p in curve["points"]], marker=".", label=name)
        trade_ax.plot([p["share_sent"] for p in curve["points"]], [p["accuracy"] for p in curve["points"]],
                      marker=".", label=name)
        lat_ax.plot(t, [p["latency_ms_per_row"] for p in curve["points"]], marker=".", label=name)
        chosen = curve["chosen"]
        if chosen is not None:
            trade_ax.scatter([chosen["share_sent"]], [chosen["accuracy"]], s=80, marker="*", zorder=3)
    for ax in (acc_ax, trade_ax):
        ax.axhline(big, color="black", linestyle="--", linewidth=0.8, label="centre alone")
        ax.axhline(big - TARGET_POINTS, color="grey", linestyle=":", linewidth=0.8, label="centre - 1 point")
        ax.axhline(edge, color="red", linestyle="--", linewidth=0.8, label="edge alone")
    trade_ax.axvline(TARGET_SHARE, color="grey", linestyle=":", linewidth=0.8)
    acc_ax.set(xlabel="threshold", ylabel="accuracy", title="accuracy over the threshold")
    share_ax.set(xlabel="threshold", ylabel="share sent to the centre", title="share sent over the threshold")
    trade_ax.set(xlabel="share sent to the centre", ylabel="accuracy", title="accuracy vs share sent (* chosen)")
    lat_ax.set(xlabel="threshold", ylabel="ms per row (end to end)", title="latency per row (batch 1)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"joint inference, wine quality as classes ({results['rows']} held-out rows)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)
    return path


async def _measure(work: Path, quick: bool) -> dict[str, Any]:
    edge_path = train_wine_classifier(work / "edge.json", "edge")
    centre_path = train_wine_classifier(work / "centre.json", "centre")
    signer = TokenSigner.from_file(work / "cluster-signing.key")
    replica = ReplicaProcess(centre_path, "centre-bench", signer, work, sessions=2).start(timeout=120)
    try:
        x, y = holdout()
        edge = XGBoostEdgeModel(edge_path)
        edge_pred = edge.predict(x)[0]
        t0 = time.perf_counter()
        for i in range(len(x)):
            edge.predict(x[i:i + 1])
        edge_ms = (time.perf_counter() - t0) * 1000.0 / len(x)
        centre = await _centre_alone(replica, x)
        big_pred = np.asarray(centre["predictions"])
        big_acc = float(np.mean(big_pred == y))
        results: dict[str, Any] = {
            "task": "wine quality as classes (0-9; 3-9 occur), 1,330 held-out rows of the sample split, batch 1",
            "rows": len(x),
            "edge_model": {"path": edge_path.name, "shape": dict(zip(("max_depth", "rounds", "eta"), SHAPES["edge"],
                                                                      strict=True)),
                           "bytes": edge_path.stat().st_size},
            "centre_model": {"path": centre_path.name,
                             "shape": dict(zip(("max_depth", "rounds", "eta"), SHAPES["centre"], strict=True)),
                             "bytes": centre_path.stat().st_size,
                             "served_by": "roost cluster replica (a separate process), websocket on 127.0.0.1"},
            "edge_alone": {"accuracy": round(float(np.mean(edge_pred == y)), 6),
                           "latency_ms_per_row": round(edge_ms, 4)},
            "centre_alone": {"accuracy": round(big_acc, 6),
                             **{k: v for k, v in centre.items() if k != "predictions"}},
            "target": {"within_points_of_centre": TARGET_POINTS, "max_share_sent": TARGET_SHARE},
            "filters": {},
        }
        for name in FILTERS:
            points, runs = await _curve(name, edge, replica, x, y, quick)
            chosen = _choose(points, big_acc)
            results["filters"][name] = {
                "points": points, "chosen": chosen,
                "meets_target": bool(chosen is not None and chosen["share_sent"] <= TARGET_SHARE),
                "cross_check": _cross_check(points, runs, y, big_pred)}
        met = {n: f["chosen"] for n, f in results["filters"].items() if f["meets_target"]}
        results["best"] = min(({"filter": n, **c} for n, c in met.items()), key=lambda c: c["share_sent"],
                              default=None)
        return results
    finally:
        replica.stop()


def run(*, quick: bool = False, out: Path | None = RESULTS, plot_path: Path | None = PLOT) -> dict[str, Any]:
    """Measure, write the results JSON and the plot; returns the results."""
    with tempfile.TemporaryDirectory(prefix="roost-joint-bench-") as tmp:
        results = asyncio.run(_measure(Path(tmp), quick))
    results["quick"] = quick
    if out is not None:
        out.write_text(json.dumps(results, indent=2) + "\n")
    if plot_path is not None:
        plot(results, plot_path)
    _print(results)
    return results


def _print(results: dict[str, Any]) -> None:
    print(f"edge alone   accuracy {results['edge_alone']['accuracy']:.4f}  "
          f"{results['edge_alone']['latency_ms_per_row']:.3f} ms/row")
    print(f"centre alone accuracy {results['centre_alone']['accuracy']:.4f}  "
          f"{results['centre_alone']['latency_ms_per_row']:.3f} ms/row  "
          f"{results['centre_alone']['bytes_sent_per_row']:.0f} B/row sent")
    print(f"{'filter':>13} {'threshold':>9} {'accuracy':>8} {'sent':>6} {'ms/row':>7} {'B/row':>6}")
    for name, f in results["filters"].items():
        for p in f["points"]:
            mark = " <- chosen" if f["chosen"] is p else ""
            print(f"{name:>13} {p['threshold']:>9.2f} {p['accuracy']:>8.4f} {p['share_sent']:>6.3f} "
                  f"{p['latency_ms_per_row']:>7.3f} {p['bytes_sent_per_row']:>6.1f}{mark}")
    for name, f in results["filters"].items():
        c = f["chosen"]
        if c is None:
            print(f"{name}: no threshold within 1 point of the centre alone")
        else:
            print(f"{name}: chosen {c['threshold']}: accuracy {c['accuracy']:.4f}, sent {c['share_sent']:.3f} "
                  f"(target met: {f['meets_target']}); cross-check {f['cross_check']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a coarse threshold grid")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args(argv)
    run(quick=args.quick, out=args.out, plot_path=args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
