"""A float32 ONNX network for the wine data: the sample model of int8 lightening.

The sample models Roost ships are an XGBoost tree ensemble (nothing to quantise) and an image
classifier that is already int8, so int8 needs an fp32 model with weights to show on: this is a
two-layer perceptron regressor (13 → ``hidden`` ReLU → 1) built with numpy alone, deterministic for
a seed. The first layer is random features, the second a ridge regression on them (closed form), so
"training" takes milliseconds and needs no deep-learning package. The graph standardises its
input itself (``Sub``, ``Div``; float ops the quantiser leaves alone), so the weights it quantises
are all of one scale. Feature names ride in the ONNX metadata (``feature_names``), as in
:func:`roost.serve.backends.onnx_model`.

Trained on the same 75 % split as the sample XGBoost model (:func:`roost.serve.wine.train_wine`),
so :func:`roost.serve.wine.holdout` is held out for both.
"""

from __future__ import annotations

import json
import logging
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np

from roost.serve.wine import FEATURES, load_wine, split

__all__ = ["train_wine_mlp"]

log = logging.getLogger(__name__)


def train_wine_mlp(out: Path, *, hidden: int = 256, seed: int = 2, ridge: float = 1.0) -> Path:
    """Fit the network on the sample model's training split and save it as ONNX; returns ``out``."""
    onnx: Any = import_module("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    x, y = load_wine()
    train, _ = split(len(x), seed=seed)
    xt, yt = x[train].astype(np.float64), y[train].astype(np.float64)
    mean, std = xt.mean(axis=0), xt.std(axis=0)
    std[std == 0] = 1.0
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0.0, 1.0 / np.sqrt(x.shape[1]), (x.shape[1], hidden))
    b1 = rng.normal(0.0, 0.5, hidden)
    h = np.maximum((xt - mean) / std @ w1 + b1, 0.0)
    h1 = np.hstack([h, np.ones((len(h), 1))])
    beta = np.linalg.solve(h1.T @ h1 + ridge * np.eye(hidden + 1), h1.T @ yt)
    w2, b2 = beta[:-1].reshape(hidden, 1), beta[-1:]

    def const(name: str, value: Any) -> Any:
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

    nodes = [
        helper.make_node("Sub", ["input", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "w1"], ["h_mm"]),
        helper.make_node("Add", ["h_mm", "b1"], ["h_pre"]),
        helper.make_node("Relu", ["h_pre"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["o_mm"]),
        helper.make_node("Add", ["o_mm", "b2"], ["variable"]),
    ]
    graph = helper.make_graph(
        nodes, "wine_mlp",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [None, x.shape[1]])],
        [helper.make_tensor_value_info("variable", onnx.TensorProto.FLOAT, [None, 1])],
        [const("mean", mean), const("std", std), const("w1", w1), const("b1", b1), const("w2", w2), const("b2", b2)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="roost")
    model.ir_version = 8
    prop = model.metadata_props.add()
    prop.key, prop.value = "feature_names", json.dumps(list(FEATURES))
    onnx.checker.check_model(model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    log.info("built the wine MLP (13 -> %d -> 1) into %s", hidden, out)
    return out
