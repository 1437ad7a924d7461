"""The ServerApp: runs the chosen Flower strategy, checks every update, records each round.

Each round appends one JSON line to ``<out-dir>/rounds.jsonl``: round, participants (updates
accepted), rejected updates with their reason, bytes sent to and received from the SuperNodes
(model payloads), and the RMSE of the aggregated model on the hub's held-out set. A round with fewer
accepted updates than ``min-participants`` ends the run: the line carries ``failed`` with the reason
(``participants`` or every rejection), and Roost fails the job with it. The final model goes to
``<out-dir>/model.json`` (XGBoost) or ``<out-dir>/linear.json``.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx, FedXgbBagging, FedXgbCyclic

from roost_wine_fl.task import (
    FEATURES,
    XGB_STRATEGIES,
    UpdateRejected,
    booster_from,
    check_linear_update,
    check_xgb_update,
    dmatrix,
    linear_predict,
    read_csv,
    rmse,
)

app = ServerApp()


def _record_bytes(record: Any) -> int:
    return sum(len(array.data) for array in record.values()) if isinstance(record, ArrayRecord) else 0


class RunFailed(RuntimeError):
    """The run cannot go on (too few participants); the reason is in rounds.jsonl."""


class Recorder:
    """Per-round bookkeeping shared by the strategy wrapper and the evaluation function."""

    def __init__(self, out: Path, min_participants: int, max_update_bytes: int, xgb_kind: bool) -> None:
        self.out, self.min_participants = out, min_participants
        self.max_update_bytes, self.xgb_kind = max_update_bytes, xgb_kind
        self.rounds: dict[int, dict[str, Any]] = {}
        self.capture = False

    def keep(self, name: str, msg: Message) -> None:
        """Save a message's arrays and metrics as sent (``capture-messages``: the bench scans them for rows)."""
        folder = self.out / "messages"
        folder.mkdir(exist_ok=True)
        arrays = msg.content.get("arrays")
        blob = b"".join(array.data for array in arrays.values()) if isinstance(arrays, ArrayRecord) else b""
        metrics = msg.content.get("metrics")
        config = msg.content.get("config")
        text = json.dumps({"metrics": dict(metrics) if metrics is not None else {},
                           "config": {k: v for k, v in dict(config).items()} if config is not None else {}})
        (folder / f"{name}.bin").write_bytes(blob + text.encode())

    def entry(self, server_round: int) -> dict[str, Any]:
        return self.rounds.setdefault(server_round, {"round": server_round, "participants": 0, "rejected": [],
                                                     "bytes_down": 0, "bytes_up": 0, "started": time.time()})

    def write(self, line: dict[str, Any]) -> None:
        with (self.out / "rounds.jsonl").open("a") as fh:
            fh.write(json.dumps(line) + "\n")

    def check(self, msg: Message) -> None:
        arrays = msg.content["arrays"]
        if not isinstance(arrays, ArrayRecord) or len(arrays) != 1:
            raise UpdateRejected("the update must carry exactly one array")
        array = next(iter(arrays.values()))
        if self.xgb_kind:
            check_xgb_update(array.numpy().tobytes(), self.max_update_bytes)
        else:
            if len(array.data) > self.max_update_bytes:
                raise UpdateRejected(f"update of {len(array.data)} bytes is over the limit of {self.max_update_bytes}")
            check_linear_update(array.numpy())

    def screen(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        entry = self.entry(server_round)
        accepted: list[Message] = []
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                entry["rejected"].append({"node": node, "reason": f"client error: {msg.error.reason[:200]}"})
                continue
            entry["bytes_up"] += _record_bytes(msg.content.get("arrays"))
            if self.capture:
                self.keep(f"up-{server_round}-{node}", msg)
            try:
                self.check(msg)
            except UpdateRejected as err:
                entry["rejected"].append({"node": node, "reason": f"corrupt update: {err}"})
                continue
            accepted.append(msg)
        entry["participants"] = len(accepted)
        if len(accepted) < self.min_participants:
            entry["failed"] = (f"round {server_round}: {len(accepted)} usable update(s), fewer than the minimum of "
                               f"{self.min_participants}")
            entry["seconds"] = time.time() - entry.pop("started")
            self.write(entry)
            raise RunFailed(entry["failed"])
        return accepted


def append_trees(global_bst: bytes, update: bytes) -> bytes:
    """``global_bst`` with every tree of ``update`` appended, one boosting iteration per iteration of it.

    Flower's ``aggregate_bagging`` appends ``num_parallel_tree`` trees of each update (one iteration):
    with ``local-rounds`` > 1 the other trees a client boosted were dropped, so the global model held a
    quarter of the trees the central baseline has. This keeps them all."""
    if not global_bst:
        return update
    doc, new = json.loads(bytearray(global_bst)), json.loads(bytearray(update))
    model, added = doc["learner"]["gradient_booster"]["model"], new["learner"]["gradient_booster"]["model"]
    count = int(model["gbtree_model_param"]["num_trees"])
    for i, tree in enumerate(added["trees"]):
        tree["id"] = count + i
        model["trees"].append(tree)
        model["tree_info"].append(added["tree_info"][i])
    model["gbtree_model_param"]["num_trees"] = str(count + len(added["trees"]))
    steps = added["iteration_indptr"]
    for before, after in itertools.pairwise(steps):
        model["iteration_indptr"].append(model["iteration_indptr"][-1] + (after - before))
    return json.dumps(doc).encode()


def _wrap(base: type, recorder: Recorder) -> Any:
    class Screened(base):  # type: ignore[misc, valid-type]
        def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                            grid: Grid) -> Iterable[Message]:
            messages = list(super().configure_train(server_round, arrays, config, grid))
            if recorder.capture:
                for m in messages:
                    recorder.keep(f"down-{server_round}-{m.metadata.dst_node_id}", m)
            recorder.entry(server_round)["bytes_down"] += sum(_record_bytes(m.content.get("arrays")) for m in messages)
            return messages

        def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> Any:
            accepted = recorder.screen(server_round, replies)
            if base is not FedXgbBagging:
                return super().aggregate_train(server_round, accepted)
            current = self.current_bst or b""
            for msg in accepted:  # screened: exactly one array, an XGBoost JSON model
                current = append_trees(current, msg.content["arrays"]["0"].numpy().tobytes())
            self.current_bst = current
            metrics = self.train_metrics_aggr_fn([m.content for m in accepted], self.weighted_by_key)
            return ArrayRecord([np.frombuffer(current, dtype=np.uint8)]), metrics

    return Screened


def _joined(grid: Grid, expected: int, timeout: float, out: Path) -> bool:
    """Wait until ``expected`` SuperNodes joined the SuperLink (they may be started elsewhere, as
    components); else write ``join.json`` (how many joined) and end the run without a round."""
    deadline = time.monotonic() + timeout
    joined = len(list(grid.get_node_ids()))
    while joined < expected and time.monotonic() < deadline:
        time.sleep(0.5)
        joined = len(list(grid.get_node_ids()))
    if joined < expected:
        (out / "join.json").write_text(json.dumps({"joined": joined, "expected": expected, "timeout": timeout}))
        return False
    return True


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    strategy_name = str(cfg["strategy"])
    out = Path(str(cfg["out-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    rounds, min_p = int(cfg["num-server-rounds"]), int(cfg["min-participants"])
    expected = int(cfg["expected-participants"])
    if not _joined(grid, expected, float(cfg["join-timeout"]), out):
        return
    xgb_kind = strategy_name in XGB_STRATEGIES
    recorder = Recorder(out, min_p, int(cfg["max-update-bytes"]), xgb_kind)
    recorder.capture = bool(cfg["capture-messages"])
    hx, hy = read_csv(str(cfg["holdout-path"]))
    mean = hx.mean(axis=0)
    scale = hx.std(axis=0)
    scale[scale == 0] = 1.0

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if xgb_kind:
            raw = arrays["0"].numpy().tobytes()
            if not raw:
                return None
            value = rmse(booster_from(raw).predict(dmatrix(hx)), hy)
        else:
            value = rmse(linear_predict(arrays.to_numpy_ndarrays()[0], hx, mean, scale), hy)
        if server_round >= 1:
            entry = recorder.entry(server_round)
            entry["metric"] = value
            entry["seconds"] = time.time() - entry.pop("started")
            recorder.write(entry)
        return MetricRecord({"rmse": value})

    # Every round samples the SuperNodes online then: all of them joined before round 1 (``_joined``); a
    # device that left is marked offline by the SuperLink (missed heartbeats) and its reply becomes an error
    # (rejected, the round goes on with the rest). Waiting for ``expected`` here would hang the next round.
    common: dict[str, Any] = {"fraction_evaluate": 0.0, "min_available_nodes": min_p}
    if strategy_name == "fedxgb-bagging":
        strategy = _wrap(FedXgbBagging, recorder)(min_train_nodes=min_p, **common)
    elif strategy_name == "fedxgb-cyclic":
        strategy = _wrap(FedXgbCyclic, recorder)(**common)
        recorder.min_participants = 1  # one device per round by design
    elif strategy_name == "fedavg":
        strategy = _wrap(FedAvg, recorder)(min_train_nodes=min_p, **common)
    elif strategy_name == "fedprox":
        strategy = _wrap(FedProx, recorder)(min_train_nodes=min_p, proximal_mu=float(cfg["proximal-mu"]), **common)
    else:
        raise ValueError(f"unknown strategy {strategy_name!r}")
    initial = (ArrayRecord([np.frombuffer(b"", dtype=np.uint8)]) if xgb_kind
               else ArrayRecord([np.zeros(len(FEATURES) + 1, dtype=np.float64)]))
    train_config = ConfigRecord({"feature-mean": [float(v) for v in mean], "feature-scale": [float(v) for v in scale]})
    try:
        result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=rounds,
                                timeout=float(cfg["round-timeout"]), train_config=train_config, evaluate_fn=evaluate)
    except RunFailed:
        return
    final = result.arrays
    if xgb_kind:
        (out / "model.json").write_bytes(final["0"].numpy().tobytes())
    else:
        w = final.to_numpy_ndarrays()[0]
        (out / "linear.json").write_text(json.dumps({"weights": [float(v) for v in w], "mean": list(map(float, mean)),
                                                     "scale": list(map(float, scale)), "features": list(FEATURES)}))
    (out / "done.json").write_text(json.dumps({"rounds": rounds}))
