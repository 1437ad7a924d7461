"""What a replica serves: a tabular model answering windows, or an image classifier answering images.

Both load through :mod:`roost.serve` (:func:`roost.serve.engine.load_tabular`,
:class:`roost.serve.image.ImageClassifier`); this module adds what a window needs on top:

- a classifier's window answer is the majority class of its rows (ties go to the lowest class) and
  its confidence the mean probability of that class over the rows; XGBoost ``binary:logistic`` and
  ``multi:softprob`` give probabilities, ``binary:logitraw`` margins (turned into probabilities);
  ``multi:softmax`` and ``binary:hinge`` give classes only, so their confidence is ``None``;
- a regressor's answer is the mean of its row predictions, with confidence ``None`` (a regressor has
  no probability to report).

Every call here is blocking (model calls); the replica runs them in its executor.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from roost.cluster.errors import StreamMessageError
from roost.cluster.protocol import IMAGE_INVALID
from roost.serve.errors import ModelError, RequestError

__all__ = ["ImageModel", "ServedModel", "TabularModel", "TabularOutcome", "Task", "aggregate", "task_of"]

log = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float32]
Task = Literal["regressor", "probabilities", "margins", "classes"]


@dataclass(frozen=True)
class TabularOutcome:
    result: float
    confidence: float | None
    predictions: list[float]


def task_of(objective: str) -> Task:
    """How to read a model's output, from its XGBoost objective."""
    if objective in ("binary:logistic", "multi:softprob"):
        return "probabilities"
    if objective == "binary:logitraw":
        return "margins"
    if objective in ("multi:softmax", "binary:hinge"):
        return "classes"
    return "regressor"


def _majority(classes: npt.NDArray[np.int64], n_classes: int) -> int:
    return int(np.bincount(classes, minlength=n_classes).argmax())


def aggregate(pred: Matrix, task: Task) -> TabularOutcome:
    """One window's answer from its per-row predictions (see the module notes)."""
    out = np.asarray(pred, dtype=np.float64)
    if task == "regressor":
        if out.ndim != 1:
            raise ModelError(f"a regressor's window needs one output per row, got shape {out.shape}")
        return TabularOutcome(float(out.mean()), None, [float(v) for v in out])
    if task == "classes":
        classes = np.rint(out.reshape(len(out))).astype(np.int64)
        if (classes < 0).any():
            raise ModelError("a classifier predicted a negative class")
        return TabularOutcome(float(_majority(classes, int(classes.max()) + 1)), None, [float(c) for c in classes])
    if task == "margins":
        out = 1.0 / (1.0 + np.exp(-out))
    probs = np.stack([1.0 - out, out], axis=1) if out.ndim == 1 else out
    classes = probs.argmax(axis=1).astype(np.int64)
    majority = _majority(classes, probs.shape[1])
    return TabularOutcome(float(majority), float(probs[:, majority].mean()), [float(c) for c in classes])


class TabularModel:
    """An XGBoost model (any engine :func:`~roost.serve.engine.load_tabular` chooses) answering windows."""

    kind: Literal["tabular"] = "tabular"

    def __init__(self, model_path: Path, *, engine: str, cache_dir: Path) -> None:
        from roost.serve.backends import load_booster
        from roost.serve.engine import load_tabular

        booster, _ = load_booster(model_path)
        objective = str(json.loads(booster.save_config())["learner"]["objective"]["name"])
        self.task: Task = task_of(objective)
        self.loaded = load_tabular(model_path, engine, cache_dir=cache_dir)  # type: ignore[arg-type]
        self.features: list[str] = list(self.loaded.feature_names)
        self.description = f"{model_path.name} ({objective}, engine {self.loaded.engine})"

    def predict_window(self, matrix: Matrix) -> TabularOutcome:
        try:
            pred = self.loaded.backend.predict(matrix)
        except ModelError:
            raise
        except Exception as err:  # an engine's own exception types
            raise ModelError(f"the model raised while predicting: {type(err).__name__}: {err}",
                             code="INFERENCE_FAILED") from err
        return aggregate(pred, self.task)

    def self_test(self, rows: int) -> None:
        """Predict one window of zeros; :class:`ModelError` unless every answer is a finite number."""
        outcome = self.predict_window(np.zeros((max(1, rows), len(self.features)), dtype=np.float32))
        if not np.isfinite(outcome.result) or not np.isfinite(outcome.predictions).all():
            raise ModelError(f"the model's self-test prediction is not finite ({outcome.result})")


class ImageModel:
    """An ONNX image classifier (``model.onnx`` + ``labels.json``) answering images with top-k labels."""

    kind: Literal["image"] = "image"

    def __init__(self, model_dir: Path, *, top_k: int, threads: int | None = None) -> None:
        from roost.serve.image import ImageClassifier

        self.classifier = ImageClassifier(model_dir, threads=threads)
        self.top_k = top_k
        self.features: list[str] = []
        self.description = f"{model_dir} ({len(self.classifier.labels)} labels)"

    def classify(self, image: bytes, seq: int) -> list[tuple[str, float]]:
        try:
            return self.classifier.classify_bytes(image, self.top_k)
        except RequestError as err:
            raise StreamMessageError(f"the image cannot be used: {err.message}", code=IMAGE_INVALID,
                                     seq=seq) from err

    def self_test(self, rows: int) -> None:
        """Classify a generated grey PNG; :class:`ModelError` unless the scores are finite."""
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (128, 128, 128)).save(buf, format="PNG")
        labels = self.classify(buf.getvalue(), 0)
        if not labels or not all(np.isfinite(score) for _, score in labels):
            raise ModelError("the image model's self-test classification gave no finite scores")


ServedModel = TabularModel | ImageModel

