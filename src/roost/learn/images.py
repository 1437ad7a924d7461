"""Validation data for image classifiers: a CSV of ``path[,label]``, decoded as the server decodes.

``path`` is relative to the CSV's folder and must stay inside it (symlinks followed); ``label`` is a
class name of the model's ``labels.json``. With labels on every row the metric is top-1 accuracy
against them (``measured_against: labels``); without a label column (or with every label empty) it
is top-1 *agreement* with the original model (``measured_against: agreement``: the original scores
1.0 by construction) — the report says which. Images are preprocessed with
:func:`roost.serve.image.preprocess` at the model's input size, exactly as ``roost serve`` does.
"""

from __future__ import annotations

import csv
import json
import os
from importlib import import_module
from pathlib import Path
from typing import Any, Final

import numpy as np

from roost.learn.errors import ModelLoadError, ValidationDataError
from roost.learn.validation import MAX_VALIDATION_BYTES, Matrix, ValidationSet
from roost.serve.errors import RequestError
from roost.serve.image import LABELS_FILE, preprocess

__all__ = ["MAX_IMAGES", "image_predictor", "load_image_validation", "model_classes"]

#: Most images one validation set may name (each is decoded into memory at the model's size).
MAX_IMAGES: Final = 2_000


def model_classes(model: Path) -> list[str] | None:
    """The class names of ``labels.json`` beside the model, or ``None`` when there is none."""
    path = Path(model).parent / LABELS_FILE
    if not path.is_file():
        return None
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path} is not a readable JSON list of class names: {err}") from err
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ModelLoadError(f"{path} must be a JSON list of class names")
    return labels


def image_predictor(model: Path) -> tuple[Any, int]:
    """``(predict, input side)``: a one-thread onnxruntime session's ``N x 3 x S x S`` → logits."""
    ort = import_module("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 1, 1, 3
    try:
        session = ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own exception types
        raise ModelLoadError(f"onnxruntime cannot load {model}: {err}") from err
    inp, out = session.get_inputs()[0], session.get_outputs()[0].name
    shape = list(inp.shape)
    if len(shape) != 4 or shape[1] != 3 or not isinstance(shape[2], int) or shape[2] != shape[3]:
        raise ModelLoadError(f"{model}: an image model's input is N x 3 x S x S, got {shape}")

    def predict(x: Matrix) -> Matrix:
        return np.asarray(session.run([out], {inp.name: x})[0], dtype=np.float32)

    return predict, int(shape[2])


def load_image_validation(path: Path, size: int, classes: list[str] | None) -> ValidationSet:
    """Read and decode the images ``path`` names (see the module notes for the format and codes)."""
    path = Path(path)
    if not path.is_file():
        raise ValidationDataError(f"validation data {path} does not exist", code="VALIDATION_DATA_MISSING")
    if path.stat().st_size > MAX_VALIDATION_BYTES:
        raise ValidationDataError(f"validation data {path} is larger than {MAX_VALIDATION_BYTES} bytes")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = [row for row in csv.reader(fh) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValidationDataError(f"validation data {path} is not a readable CSV: {err}") from err
    if not rows:
        raise ValidationDataError(f"validation data {path} is empty (no header)", code="VALIDATION_DATA_EMPTY")
    header = [c.strip() for c in rows[0]]
    if "path" not in header:
        raise ValidationDataError(f"validation data {path} has no 'path' column (an image model's data is "
                                  f"path[,label]; columns: {header})", code="VALIDATION_COLUMN_MISSING")
    extra = [c for c in header if c not in ("path", "label")] + (["path"] if header.count("path") > 1 else [])
    if extra:
        raise ValidationDataError(f"validation data {path} has columns other than path and label: {extra}",
                                  code="VALIDATION_COLUMN_EXTRA")
    body = rows[1:]
    if not body:
        raise ValidationDataError(f"validation data {path} has a header but no rows", code="VALIDATION_DATA_EMPTY")
    if len(body) > MAX_IMAGES:
        raise ValidationDataError(f"validation data {path} names {len(body)} images; the limit is {MAX_IMAGES}")
    col_path, col_label = header.index("path"), header.index("label") if "label" in header else None
    folder = os.path.realpath(path.parent)
    labels = [row[col_label].strip() if col_label is not None and col_label < len(row) else "" for row in body]
    labelled = any(labels)
    if labelled and classes is None:
        raise ValidationDataError(f"validation data {path} has labels but the model has no {LABELS_FILE} beside it "
                                  "to name its classes", code="VALIDATION_LABEL_UNKNOWN")
    batches, targets = [], []
    for line, (row, label) in enumerate(zip(body, labels, strict=True), start=2):
        name = row[col_path].strip() if col_path < len(row) else ""
        resolved = os.path.realpath(os.path.join(folder, name))
        if not name or not resolved.startswith(folder + os.sep):
            raise ValidationDataError(f"validation data {path} line {line}: image path {name!r} is not inside "
                                      f"{folder}", code="INVALID_PATH")
        try:
            data = Path(resolved).read_bytes()
            batches.append(preprocess(data, size=size))
        except OSError as err:
            raise ValidationDataError(f"validation data {path} line {line}: {name!r} cannot be read: {err.strerror}",
                                      code="VALIDATION_IMAGE_UNREADABLE") from err
        except RequestError as err:
            raise ValidationDataError(f"validation data {path} line {line}: {name!r}: {err.message}",
                                      code="VALIDATION_IMAGE_UNREADABLE") from err
        if labelled:
            if not label:
                raise ValidationDataError(f"validation data {path} line {line}: no label (label every row, or none "
                                          "to measure agreement with the original)", code="VALIDATION_LABEL_MISSING")
            assert classes is not None
            if label not in classes:
                raise ValidationDataError(f"validation data {path} line {line}: {label!r} is not a class of the model",
                                          code="VALIDATION_LABEL_UNKNOWN")
            targets.append(classes.index(label))
    x = np.ascontiguousarray(np.concatenate(batches), dtype=np.float32)
    y = np.asarray(targets, dtype=np.float32)
    return ValidationSet(path=str(path), label="label", features=[], x=x, y=y,
                         against="labels" if labelled else "agreement")
