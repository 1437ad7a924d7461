"""The ClientApp: trains on the device's own CSV (node config ``data-path``) and sends only a model update.

XGBoost strategies: the first round boosts ``local-rounds`` trees from scratch; later rounds load the
global model and boost ``local-rounds`` more. Bagging sends only those new trees (FedXgbBagging appends
every client's trees to the global model); cyclic sends the whole model (FedXgbCyclic takes the one
client's model as the new global model: sending only the new trees made each round's global model just
the last client's few trees). FedAvg/FedProx: full-batch gradient descent on a linear model, with the
proximal term when the server sends ``proximal-mu``.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from roost_wine_fl.task import (
    XGB_PARAMS,
    XGB_STRATEGIES,
    booster_from,
    dmatrix,
    linear_predict,
    read_csv,
    rmse,
)

app = ClientApp()


def _data(context: Context) -> tuple[np.ndarray, np.ndarray]:
    return read_csv(str(context.node_config["data-path"]))


def _train_xgb(msg: Message, context: Context, x: np.ndarray, y: np.ndarray) -> Message:
    local_rounds = int(context.run_config["local-rounds"])
    raw = msg.content["arrays"]["0"].numpy().tobytes()
    train = dmatrix(x, y)
    import xgboost as xgb

    if raw:
        booster = booster_from(raw)
        before = booster.num_boosted_rounds()
        booster = xgb.train(XGB_PARAMS, train, num_boost_round=local_rounds, xgb_model=booster)
        if str(context.run_config["strategy"]) == "fedxgb-bagging":  # bagging appends the new trees
            booster = booster[before:booster.num_boosted_rounds()]
        # cyclic: the global model is the last client's whole model, so it is sent whole
    else:
        booster = xgb.train(XGB_PARAMS, train, num_boost_round=local_rounds)
    update = bytes(booster.save_raw("json"))
    metrics = MetricRecord({"num-examples": len(y), "train-rmse": rmse(booster.predict(train), y)})
    arrays = ArrayRecord([np.frombuffer(update, dtype=np.uint8)])
    return Message(content=RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


def _train_linear(msg: Message, context: Context, x: np.ndarray, y: np.ndarray) -> Message:
    config = msg.content["config"]
    mean = np.asarray(config["feature-mean"], dtype=np.float64)
    scale = np.asarray(config["feature-scale"], dtype=np.float64)
    mu = float(config.get("proximal-mu", 0.0))
    w_global = msg.content["arrays"].to_numpy_ndarrays()[0].astype(np.float64)
    w = w_global.copy()
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    lr = float(context.run_config["learning-rate"])
    for _ in range(int(context.run_config["local-epochs"])):
        grad = z.T @ (z @ w - y) / len(y) + mu * (w - w_global)
        w -= lr * grad
    metrics = MetricRecord({"num-examples": len(y), "train-rmse": rmse(linear_predict(w, x, mean, scale), y)})
    return Message(content=RecordDict({"arrays": ArrayRecord([w]), "metrics": metrics}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    x, y = _data(context)
    if str(context.run_config["strategy"]) in XGB_STRATEGIES:
        return _train_xgb(msg, context, x, y)
    return _train_linear(msg, context, x, y)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    x, y = _data(context)
    if str(context.run_config["strategy"]) in XGB_STRATEGIES:
        raw = msg.content["arrays"]["0"].numpy().tobytes()
        value = rmse(booster_from(raw).predict(dmatrix(x)), y) if raw else float("nan")
    else:
        config = msg.content["config"]
        w = msg.content["arrays"].to_numpy_ndarrays()[0]
        value = rmse(linear_predict(w, x, np.asarray(config["feature-mean"]), np.asarray(config["feature-scale"])), y)
    metrics = MetricRecord({"num-examples": len(y), "rmse": value})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
