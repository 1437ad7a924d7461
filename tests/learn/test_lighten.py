"""`roost model optimize|show|publish`: the three transformations, their reports and gates, every refusal.

A small XGBoost model (30 trees of depth 3, trained on the sample split of the vendored wine data)
and the fp32 wine MLP are built once per module; the CLI runs in process (Typer's CliRunner) and
publishes to a real hub (uvicorn in a thread).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import xgboost as xgb
from onnx import helper, numpy_helper
from typer.testing import CliRunner

from roost.cli.main import app
from roost.learn import lighten
from roost.learn.errors import GateFailedError, NotApplicableError, VariantError
from roost.learn.lighten import REJECTED_FILE, VARIANT_FILE, optimize, read_variant
from roost.learn.publish import check_publishable, variant_recipe
from roost.learn.validation import evaluate, load_validation, write_validation_csv
from roost.learn.wine_mlp import train_wine_mlp
from roost.recipe import parse_recipe
from roost.serve.backends import onnx_model
from roost.serve.image import SAMPLE_MODEL_DIR
from roost.serve.wine import FEATURES, holdout, load_wine, split
from tests.hub.conftest import HubServer

runner = CliRunner()
TREES = 30


def _cli(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "200"})


def _crushed_by_int8(path: Path) -> Path:
    """A wine regressor that per-tensor int8 wrecks: its first MatMul holds the fitted weights beside a
    huge one the second layer multiplies by zero, so quantising with one scale rounds the real ones to 0."""
    x, y = load_wine()
    mean, std = x.mean(axis=0), x.std(axis=0)
    xs = np.hstack([(x - mean) / std, np.ones((len(x), 1))])
    beta = np.linalg.lstsq(xs, y, rcond=None)[0]
    w1 = np.zeros((13, 2), dtype=np.float32)
    w1[:, 0], w1[:, 1] = beta[:-1], 1e4
    w2 = np.array([[1.0], [0.0]], dtype=np.float32)

    def c(name: str, v: Any) -> Any:
        return numpy_helper.from_array(np.asarray(v, dtype=np.float32), name)

    graph = helper.make_graph(
        [helper.make_node("Sub", ["input", "mean"], ["a"]), helper.make_node("Div", ["a", "std"], ["s"]),
         helper.make_node("MatMul", ["s", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["o"]),
         helper.make_node("Add", ["o", "b"], ["variable"])],
        "crushed", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [None, 13])],
        [helper.make_tensor_value_info("variable", onnx.TensorProto.FLOAT, [None, 1])],
        [c("mean", mean), c("std", std), c("w1", w1), c("w2", w2), c("b", [beta[-1]])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    prop = model.metadata_props.add()
    prop.key, prop.value = "feature_names", json.dumps(list(FEATURES))
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lighten")
    x, y = load_wine()
    train, _ = split(len(x))
    booster = xgb.train({"max_depth": 3, "eta": 0.3, "base_score": 0.5, "nthread": 1, "seed": 1},
                        xgb.DMatrix(x[train], label=y[train], feature_names=list(FEATURES)), TREES)
    booster.save_model(str(root / "wine.json"))
    hx, hy = holdout()
    write_validation_csv(root / "holdout.csv", hx, hy, FEATURES)
    return {
        "root": root, "xgb": root / "wine.json", "data": root / "holdout.csv",
        "mlp": train_wine_mlp(root / "mlp.onnx"), "crushed": _crushed_by_int8(root / "crushed.onnx"),
        "trees_onnx": onnx_model(root / "wine.json", root / "cache"),
    }


def test_pruned_keeps_fewer_trees_and_reports_on_the_half_that_did_not_choose(models: dict[str, Path],
                                                                               tmp_path: Path) -> None:
    result = optimize(models["xgb"], "pruned", models["data"], out=tmp_path / "v", max_regression="0.05",
                      latency_calls=20)
    assert result.passed and result.path == tmp_path / "v"
    r = result.variant.report
    assert r.details["trees_before"] == TREES and 0 < int(r.details["trees_after"]) < TREES
    rows = load_validation(models["data"], list(FEATURES)).rows
    assert r.rows == rows // 2 and int(r.details["search_rows"]) == rows - rows // 2
    pruned = xgb.Booster(model_file=str(tmp_path / "v" / "model.json"))
    assert pruned.num_boosted_rounds() == r.details["trees_after"] and pruned.feature_names == list(FEATURES)
    assert r.size_bytes == (tmp_path / "v" / "model.json").stat().st_size < r.size_bytes_before
    assert r.regression <= r.max_regression == 0.05 and r.metric == "rmse" and r.passed
    assert read_variant(tmp_path / "v").report == r  # the record on disk, its files' digests checked


def test_compiled_matches_the_original_within_float32(models: dict[str, Path], tmp_path: Path) -> None:
    result = optimize(models["xgb"], "compiled", models["data"], out=tmp_path / "c", latency_calls=20)
    r = result.variant.report
    assert result.passed and r.engine == "compiled" and r.engine_before == "xgboost"
    assert abs(r.metric_after - r.metric_before) <= 1e-5 * r.metric_before
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["model.json", "model.so", VARIANT_FILE]
    assert r.size_bytes == (tmp_path / "c" / "model.so").stat().st_size and r.rows > 1000


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_quantises_the_mlp(models: dict[str, Path], tmp_path: Path, mode: str) -> None:
    result = optimize(models["mlp"], "int8", models["data"], out=tmp_path / "q", max_regression=0.05,
                      int8_mode=mode, latency_calls=20)
    r = result.variant.report
    assert result.passed and r.engine == f"onnxruntime-int8-{mode}" and r.size_bytes < r.size_bytes_before
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q" / "model.onnx")).graph.node}
    assert ops & ({"DynamicQuantizeLinear", "MatMulInteger"} if mode == "dynamic" else {"QuantizeLinear"})
    assert r.details["calibration_rows"] == (r.rows if mode == "static" else 0)


def test_a_failed_gate_writes_no_variant_and_cannot_be_published(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "crushed-int8"
    result = _cli("model", "optimize", str(models["crushed"]), "--to", "int8", "--validate", str(models["data"]),
                  "--out", str(out), "--latency-calls", "5", "--json")
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    rejected = tmp_path / "crushed-int8.rejected"
    assert doc["variant"] is None and doc["publishable"] is False and doc["candidate"] == str(rejected)
    assert doc["report"]["passed"] is False and doc["report"]["regression"] > 0.1  # int8 wrecked it (~ the mean)
    assert not out.exists() and (rejected / REJECTED_FILE).is_file() and not (rejected / VARIANT_FILE).exists()
    with pytest.raises(GateFailedError):
        check_publishable(rejected)
    shown = _cli("model", "show", str(rejected), "--json")
    assert shown.exit_code == 3 and json.loads(shown.stdout)["error"]["code"] == "VARIANT_INVALID"
    again = _cli("model", "optimize", str(models["crushed"]), "--to", "int8", "--validate", str(models["data"]),
                 "--out", str(out), "--latency-calls", "5")
    assert again.exit_code == 1 and "gate failed" in again.stderr and (rejected / REJECTED_FILE).is_file()


def test_the_json_interface(models: dict[str, Path], tmp_path: Path) -> None:
    result = _cli("model", "optimize", str(models["xgb"]), "--to", "pruned", "--validate", str(models["data"]),
                  "--max-regression", "0.05", "--out", str(tmp_path / "p"), "--latency-calls", "5", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["variant"] == str(tmp_path / "p") and doc["publishable"] is True
    assert {"metric_before", "metric_after", "size_bytes", "latency_us", "metric", "regression",
            "max_regression", "passed", "engine", "rows"} <= set(doc["report"])
    people = _cli("model", "show", str(tmp_path / "p"))
    assert people.exit_code == 0 and "passed" in people.stdout


def _error(*args: str, code: int) -> str:
    result = _cli("model", "optimize", *args, "--latency-calls", "5", "--json")
    assert result.exit_code == code, result.output
    return str(json.loads(result.stdout)["error"]["code"])


def test_models_that_do_not_load(models: dict[str, Path], tmp_path: Path) -> None:
    data = str(models["data"])
    (tmp_path / "notes.json").write_text('{"hello": 1}')
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage" * 50)
    (tmp_path / "model.pkl").write_bytes(b"x")
    cut = tmp_path / "cut.json"
    cut.write_bytes(models["xgb"].read_bytes()[:5000])
    out = ("--out", str(tmp_path / "o"))
    assert _error(str(tmp_path / "none.json"), "--to", "pruned", "--validate", data, *out, code=4) == "MODEL_MISSING"
    for bad in ("notes.json", "junk.onnx", "model.pkl", "cut.json"):
        assert _error(str(tmp_path / bad), "--to", "pruned", "--validate", data, *out, code=3) == "MODEL_UNREADABLE"
    assert not (tmp_path / "o").exists()


def test_targets_that_do_not_apply(models: dict[str, Path], tmp_path: Path) -> None:
    data, out = str(models["data"]), ("--out", str(tmp_path / "o"))
    assert _error(str(models["xgb"]), "--to", "fp16", "--validate", data, *out, code=3) == "LIGHTEN_TARGET_UNKNOWN"
    assert _error(str(models["mlp"]), "--to", "int8", "--int8-mode", "fast", "--validate", data, *out,
                  code=3) == "LIGHTEN_TARGET_UNKNOWN"
    assert _error(str(models["xgb"]), "--to", "int8", "--validate", data, *out, code=3) == "LIGHTEN_NOT_APPLICABLE"
    for to in ("pruned", "compiled"):
        assert _error(str(models["mlp"]), "--to", to, "--validate", data, *out, code=3) == "LIGHTEN_NOT_APPLICABLE"
    assert _error(str(models["trees_onnx"]), "--to", "int8", "--validate", data, *out,
                  code=3) == "NOTHING_TO_QUANTIZE"
    assert _error(str(SAMPLE_MODEL_DIR), "--to", "int8", "--validate", data, *out, code=3) == "ALREADY_QUANTIZED"
    assert not (tmp_path / "o").exists()


def test_bad_gates_data_and_outputs(models: dict[str, Path], tmp_path: Path) -> None:
    model, data, out = str(models["xgb"]), str(models["data"]), ("--out", str(tmp_path / "o"))
    for gate in ("-0.1", "lots"):
        assert _error(model, "--to", "pruned", "--validate", data, "--max-regression", gate, *out,
                      code=3) == "MAX_REGRESSION_INVALID"
    wide = tmp_path / "wide.csv"
    wide.write_text(models["data"].read_text().replace("quality\n", "quality,extra\n", 1).replace("\n", ",1\n")
                    .replace("quality,extra,1\n", "quality,extra\n", 1))
    assert _error(model, "--to", "pruned", "--validate", str(wide), *out, code=3) == "VALIDATION_COLUMN_EXTRA"
    assert _error(model, "--to", "pruned", "--validate", data, "--label", "score", *out,
                  code=3) == "VALIDATION_LABEL_MISSING"
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("mine")
    assert _error(model, "--to", "pruned", "--validate", data, *out, code=7) == "LIGHTEN_OUTPUT_EXISTS"
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "wide.csv"]  # no temporary folder left behind


def test_an_onnx_model_without_feature_names_takes_the_csv_order(models: dict[str, Path], tmp_path: Path) -> None:
    proto = onnx.load(str(models["mlp"]))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    result = optimize(tmp_path / "bare.onnx", "int8", models["data"], out=tmp_path / "q", max_regression=0.05,
                      latency_calls=5)
    assert result.variant.features == list(FEATURES)
    narrow = tmp_path / "narrow.csv"
    hx, hy = holdout()
    write_validation_csv(narrow, hx[:, :12], hy, FEATURES[:12])
    with pytest.raises(Exception) as err:
        optimize(tmp_path / "bare.onnx", "int8", narrow, out=tmp_path / "q2")
    assert getattr(err.value, "code", None) == "VALIDATION_COLUMN_MISSING"


def test_publish_only_what_passed(models: dict[str, Path], tmp_path: Path, hub_server: HubServer) -> None:
    pruned = optimize(models["xgb"], "pruned", models["data"], out=tmp_path / "p", max_regression=0.05,
                      latency_calls=5)
    recipe = parse_recipe(variant_recipe(pruned.variant, "com.example.WinePruned", "1.0.0"))
    assert recipe.name == "com.example.WinePruned"
    hub = ("--hub", hub_server.url, "--token", hub_server.token)
    result = _cli("model", "publish", str(tmp_path / "p"), "--component", "com.example.WinePruned",
                  "--version", "1.0.0", *hub, "--json")
    assert result.exit_code == 0, result.output
    files = {a["file"]: a["sha256"] for a in json.loads(result.stdout)["artifacts"]}
    assert files == {**pruned.variant.files, VARIANT_FILE: lighten._sha256(tmp_path / "p" / VARIANT_FILE)}

    crushed = optimize(models["crushed"], "int8", models["data"], out=tmp_path / "x", latency_calls=5)
    refused = _cli("model", "publish", str(crushed.path), "--component", "com.example.Crushed", "--version", "1.0.0",
                   *hub, "--json")
    assert refused.exit_code == 7 and json.loads(refused.stdout)["error"]["code"] == "GATE_FAILED"

    record = json.loads((tmp_path / "p" / VARIANT_FILE).read_text())
    record["report"]["passed"] = False  # a report edited by hand: its numbers say otherwise
    (tmp_path / "p" / VARIANT_FILE).write_text(json.dumps(record))
    with pytest.raises(VariantError, match="says otherwise"):
        check_publishable(tmp_path / "p")
    (tmp_path / "p" / "model.json").write_text("{}")  # a model swapped after validation
    with pytest.raises(VariantError, match="does not match the sha256"):
        read_variant(tmp_path / "p")

    mlp = optimize(models["mlp"], "int8", models["data"], out=tmp_path / "q", max_regression=0.05, latency_calls=5)
    with pytest.raises(NotApplicableError):
        check_publishable(mlp.path)


def test_the_holdout_is_what_the_sample_model_did_not_train_on(tmp_path: Path) -> None:
    x, _ = load_wine()
    train, rest = split(len(x))
    assert len(set(train.tolist()) & set(rest.tolist())) == 0 and len(train) + len(rest) == len(x)
    hx, hy = holdout()
    assert len(hx) == len(rest) and evaluate(hy, hy, "rmse") == 0.0
    result = _cli("samples", "wine-holdout", "--out", str(tmp_path / "h.csv"), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["rows"] == len(rest)


def test_a_classifier_is_graded_by_accuracy(tmp_path: Path) -> None:
    x, y = load_wine()
    train, _ = split(len(x))
    good = (y >= 6).astype(np.float32)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": 1},
                        xgb.DMatrix(x[train], label=good[train], feature_names=list(FEATURES)), 20)
    booster.save_model(str(tmp_path / "good.json"))
    hx, hy = holdout()
    write_validation_csv(tmp_path / "good.csv", hx, (hy >= 6).astype(np.float32), FEATURES, label="good")
    result = optimize(tmp_path / "good.json", "pruned", tmp_path / "good.csv", out=tmp_path / "p", label="good",
                      max_regression=0.05, latency_calls=5)
    r = result.variant.report
    assert r.metric == "accuracy" and 0.6 < r.metric_before <= 1.0 and r.regression <= 0.05 and result.passed
