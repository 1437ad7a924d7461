"""int8 of an fp32 image classifier, validated on images: labels (top-1 accuracy) or agreement with the original.

The model is a tiny convolutional net built here (3 x 32 x 32 → Conv 8 → ReLU → pool → Gemm 4
classes) and the images are small generated PNGs: what is tested is the data path (decoding as the
server does, paths kept inside the CSV's folder, labels by class name) and the report's honesty about
what it measured against, not the accuracy of a real model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from PIL import Image

from roost.learn.errors import ValidationDataError
from roost.learn.images import image_predictor, load_image_validation
from roost.learn.lighten import optimize
from roost.learn.publish import check_publishable, variant_recipe
from roost.recipe import parse_recipe

CLASSES = ["red", "green", "blue", "grey"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    model_dir = root / "model"
    model_dir.mkdir()

    def c(name: str, v: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(v.astype(np.float32), name)

    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["conv"], ["act"]), helper.make_node("GlobalAveragePool", ["act"], ["pool"]),
         helper.make_node("Flatten", ["pool"], ["flat"]), helper.make_node("Gemm", ["flat", "fc", "fcb"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 4])],
        [c("w", rng.normal(0, 0.5, (8, 3, 3, 3))), c("b", rng.normal(0, 0.1, 8)),
         c("fc", rng.normal(0, 1.0, (8, 4))), c("fcb", np.zeros(4))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(model_dir / "model.onnx"))
    (model_dir / "labels.json").write_text(json.dumps(CLASSES))
    images = root / "images"
    images.mkdir()
    for i in range(12):
        pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) // (i % 4 + 1)
        Image.fromarray(pixels).save(images / f"{i}.png")
    (images / "agree.csv").write_text("path\n" + "".join(f"{i}.png\n" for i in range(12)))
    predict, side = image_predictor(model_dir / "model.onnx")
    answers = predict(load_image_validation(images / "agree.csv", side, CLASSES).x).argmax(axis=1)
    (images / "labelled.csv").write_text("path,label\n" + "".join(f"{i}.png,{CLASSES[a]}\n"
                                                                  for i, a in enumerate(answers)))
    return root


def test_int8_without_labels_measures_agreement(folder: Path, tmp_path: Path) -> None:
    result = optimize(folder / "model", "int8", folder / "images" / "agree.csv", out=tmp_path / "q",
                      max_regression=1.0, int8_mode="static", latency_calls=5)
    r = result.variant.report
    assert r.measured_against == "agreement" and r.metric == "accuracy" and r.metric_before == 1.0
    assert 0.0 <= r.metric_after <= 1.0 and r.rows == 12 and result.passed
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == ["labels.json", "model.onnx", "variant.json"]
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in onnx.load(str(tmp_path / "q" /
                                                                                     "model.onnx")).graph.node}
    recipe = parse_recipe(variant_recipe(check_publishable(tmp_path / "q"), "com.example.TinyInt8", "1.0.0"))
    lifecycle = recipe.manifests[0].lifecycle
    assert lifecycle is not None and lifecycle.run is not None
    assert "--image-model {artifacts:path}" in lifecycle.run.script and "agreement" in (recipe.description or "")


def test_int8_with_labels_measures_accuracy(folder: Path, tmp_path: Path) -> None:
    result = optimize(folder / "model" / "model.onnx", "int8", folder / "images" / "labelled.csv", out=tmp_path / "q",
                      max_regression=1.0, latency_calls=5)
    r = result.variant.report
    assert r.measured_against == "labels" and r.metric_before == 1.0  # the labels are the fp32 answers


@pytest.mark.parametrize(("text", "code"), [
    ("path\n../escape.png\n", "INVALID_PATH"),
    ("path\n/etc/hostname\n", "INVALID_PATH"),
    ("path,label\n0.png,purple\n", "VALIDATION_LABEL_UNKNOWN"),
    ("path,label\n0.png,red\n1.png,\n", "VALIDATION_LABEL_MISSING"),
    ("path\nagree.csv\n", "VALIDATION_IMAGE_UNREADABLE"),
    ("path\nmissing.png\n", "VALIDATION_IMAGE_UNREADABLE"),
    ("file,label\n0.png,red\n", "VALIDATION_COLUMN_MISSING"),
    ("path,label,score\n0.png,red,1\n", "VALIDATION_COLUMN_EXTRA"),
    ("path\n", "VALIDATION_DATA_EMPTY"),
])
def test_bad_image_data(folder: Path, text: str, code: str) -> None:
    bad = folder / "images" / f"bad-{hashlib.sha256(text.encode()).hexdigest()[:12]}.csv"
    bad.write_text(text)
    with pytest.raises(ValidationDataError) as err:
        load_image_validation(bad, 32, CLASSES)
    assert err.value.code == code, err.value.message
