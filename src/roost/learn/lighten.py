"""Model lightening: int8 quantisation (ONNX), tree compilation (tl2cgen), tree pruning (XGBoost).

:func:`optimize` turns a model into a candidate variant, measures it against the original on the
operator's validation data (:mod:`roost.learn.validation`) and keeps it as a *publishable variant*
only when its report passes the gate:

* ``OUT/`` — the variant: its model file(s) and ``variant.json`` (the record: source, files with
  their sha256, the report, ``"publishable": true``). Only such a folder can be published.
* ``OUT.rejected/`` — a candidate that missed its gate, kept for inspection, marked by
  ``rejected.json`` (the same record with ``"publishable": false``) and no ``variant.json``.

What applies to what (anything else is refused with ``LIGHTEN_NOT_APPLICABLE``):

* ``compiled`` — XGBoost models (``.json``/``.ubj``): :func:`roost.serve.backends.compile_model`;
  the variant holds the shared library ``model.so`` and the tree model ``model.json`` it was built
  from (a device compiles its own from it: the library is CPU-specific).
* ``pruned`` — XGBoost models: the first *k* trees (``booster[:k]``), *k* the smallest from which
  on the regression on the *search half* of the validation rows stays within half the gate (for
  every count from *k* to the whole model: a lucky dip of a noisy curve does not choose *k*); the
  report is measured on the other half (a fixed shuffle, seed 0), so what chose *k* does not
  grade it. Every tree count is scored up to :data:`MAX_SEARCH_POINTS` trees, a grid above.
* ``int8`` — ONNX models with weights to quantise (MatMul, Gemm, Conv...): onnxruntime's
  ``quantize_dynamic`` (default) or ``quantize_static`` (QDQ, calibrated on ``calibrate`` or the
  validation rows). An ONNX tree ensemble has no weights to quantise (``NOTHING_TO_QUANTIZE``); a
  model already quantised is refused (``ALREADY_QUANTIZED``); so is an XGBoost model: converted to
  ONNX it is a tree ensemble, so int8 would be a no-op under another name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import import_module
from pathlib import Path
from typing import Any, Final, Literal, get_args

import numpy as np
import xgboost as xgb
from pydantic import BaseModel, ConfigDict, ValidationError

from roost.learn.errors import (
    LighteningError,
    ModelLoadError,
    ModelMissingError,
    NotApplicableError,
    OutputExistsError,
    ValidationDataError,
    VariantError,
)
from roost.learn.images import image_predictor, load_image_validation, model_classes
from roost.learn.validation import (
    DEFAULT_LABEL,
    Matrix,
    Metric,
    ValidationReport,
    ValidationSet,
    evaluate,
    load_validation,
    measure_latency_us,
    parse_max_regression,
    regression,
)
from roost.serve.backends import (
    CompiledTreesBackend,
    OnnxTabularBackend,
    XGBoostBackend,
    compile_model,
    load_booster,
    model_digest,
)
from roost.serve.errors import ModelError
from roost.serve.image import LABELS_FILE

__all__ = [
    "REJECTED_FILE",
    "TARGETS",
    "VARIANT_FILE",
    "OptimizeResult",
    "SourceModel",
    "Target",
    "Variant",
    "open_model",
    "optimize",
    "read_variant",
]

log = logging.getLogger(__name__)

Target = Literal["int8", "compiled", "pruned"]
TARGETS: Final[tuple[str, ...]] = get_args(Target)
Int8Mode = Literal["dynamic", "static"]
VARIANT_FILE: Final = "variant.json"
REJECTED_FILE: Final = "rejected.json"

_XGBOOST_SUFFIXES: Final = (".json", ".ubj")
#: ONNX operators whose weights int8 quantisation can take (onnxruntime's quantisable ops).
_QUANTISABLE: Final = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "LSTM", "GRU", "Gather"})
#: Operators that only a quantised model has.
_QUANTISED: Final = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
    "MatMulInteger", "ConvInteger", "QGemm", "QAttention", "DynamicQuantizeMatMul",
})
_TREES: Final = frozenset({"TreeEnsembleRegressor", "TreeEnsembleClassifier", "TreeEnsemble"})
#: The pruning search aims at this share of the gate on its half of the rows, so that the noise
#: between the two halves does not routinely fail the report's gate.
SEARCH_SHARE: Final = 0.5
#: Tree counts the pruning search scores at most (every count up to this many trees; a grid above).
MAX_SEARCH_POINTS: Final = 512


class _QuantiserAdvice(logging.Filter):
    """onnxruntime's quantiser logs advice ("Please consider ... pre-processing") on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider")


@dataclass
class SourceModel:
    """A model to lighten, loaded enough to know what applies to it."""

    path: Path
    kind: Literal["xgboost", "onnx"]
    features: list[str] | None
    metric: Metric
    ops: frozenset[str] = frozenset()
    image: bool = False
    objective: str = ""
    booster: xgb.Booster | None = field(default=None, repr=False)


def open_model(path: Path) -> SourceModel:
    """Load ``path`` (an XGBoost ``.json``/``.ubj``, an ``.onnx`` or an image-model folder).

    ``MODEL_MISSING`` when nothing is there, ``MODEL_UNREADABLE`` when it does not load as a model.
    """
    path = Path(path)
    if path.is_dir() and (path / "model.onnx").is_file():
        path = path / "model.onnx"
    if not path.exists():
        raise ModelMissingError(f"model {path} does not exist")
    if not path.is_file():
        raise ModelLoadError(f"model {path} is not a file (nor an image-model folder with model.onnx)")
    if path.suffix in _XGBOOST_SUFFIXES:
        return _open_xgboost(path)
    if path.suffix == ".onnx":
        return _open_onnx(path)
    raise ModelLoadError(f"model {path}: not a kind Roost lightens (an XGBoost .json/.ubj, an .onnx, or a folder "
                         "holding model.onnx)")


def _open_xgboost(path: Path) -> SourceModel:
    try:
        booster, names = load_booster(path)
    except ModelError as err:
        raise ModelLoadError(f"model {path} does not load as an XGBoost model: {err.message}") from err
    objective = str(json.loads(booster.save_config())["learner"]["objective"]["name"])
    if objective.startswith("reg:"):
        metric: Metric = "rmse"
    elif objective in ("binary:logistic", "multi:softprob"):
        metric = "accuracy"
    else:
        raise NotApplicableError(f"model {path}: objective {objective!r} has no validation metric here (regression "
                                 "reg:*, binary:logistic and multi:softprob do)")
    return SourceModel(path, "xgboost", names, metric, objective=objective, booster=booster)


def _open_onnx(path: Path) -> SourceModel:
    onnx = import_module("onnx")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as err:  # onnx raises DecodeError, ValidationError, OSError...
        raise ModelLoadError(f"model {path} does not load as ONNX: {err}") from err
    ops = frozenset(node.op_type for node in proto.graph.node)
    inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    dims = len(inputs[0].type.tensor_type.shape.dim) if inputs else 0
    meta = {p.key: p.value for p in proto.metadata_props}
    names = json.loads(meta["feature_names"]) if "feature_names" in meta else None
    image = dims == 4
    return SourceModel(path, "onnx", [] if image else names, "accuracy" if image else "rmse", ops=ops, image=image)


def _check_applies(src: SourceModel, target: str) -> None:
    if target not in TARGETS:
        raise NotApplicableError(f"unknown --to {target!r}; choose one of {', '.join(TARGETS)}",
                                 code="LIGHTEN_TARGET_UNKNOWN")
    if target in ("compiled", "pruned") and src.kind != "xgboost":
        raise NotApplicableError(f"--to {target} applies to XGBoost tree models, not to the ONNX model {src.path}")
    if target == "int8":
        if src.kind == "xgboost":
            raise NotApplicableError(
                f"--to int8 applies to ONNX models; {src.path} is an XGBoost tree model, and converted to ONNX it "
                "is a tree ensemble with no weights to quantise: use --to compiled or --to pruned")
        if src.ops & _QUANTISED:
            raise NotApplicableError(f"{src.path} is already quantised ({', '.join(sorted(src.ops & _QUANTISED))})",
                                     code="ALREADY_QUANTIZED")
        if not src.ops & _QUANTISABLE:
            what = "a tree ensemble" if src.ops & _TREES else "a graph"
            raise NotApplicableError(
                f"{src.path} is {what} without weights int8 can take (ops: {', '.join(sorted(src.ops))}); "
                "for trees use --to compiled or --to pruned on the XGBoost model", code="NOTHING_TO_QUANTIZE")


def _csv_features(data: Path, label: str) -> list[str]:
    """Feature names for an ONNX model that carries none: the CSV's columns but the label, in order."""
    try:
        with Path(data).open(encoding="utf-8") as fh:
            header = fh.readline()
    except OSError:
        return []  # load_validation names the problem
    return [c.strip() for c in header.strip().split(",") if c.strip() and c.strip() != label]


# --------------------------------------------------------------------------------------------
# the variant record


class Variant(BaseModel):
    """``variant.json``: what a variant is, where it came from, and its validation report."""

    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = 1
    target: Target
    model_file: str
    files: dict[str, str]
    features: list[str]
    source: dict[str, str]
    report: ValidationReport
    publishable: bool
    created: str


@dataclass
class OptimizeResult:
    path: Path
    variant: Variant

    @property
    def passed(self) -> bool:
        return self.variant.publishable

    def to_json(self) -> dict[str, Any]:
        """The scripts' interface: the variant's path and its report (plus the record's facts)."""
        return {
            "variant": str(self.path) if self.passed else None,
            "candidate": str(self.path),
            "publishable": self.passed,
            "target": self.variant.target,
            "model_file": str(self.path / self.variant.model_file),
            "report": self.variant.report.model_dump(),
        }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_variant(folder: Path) -> Variant:
    """The record of a variant folder, its files checked against their digests (``VARIANT_INVALID``)."""
    folder = Path(folder)
    record = folder / VARIANT_FILE
    if not record.is_file():
        hint = " (it holds a rejected candidate: its gate failed)" if (folder / REJECTED_FILE).is_file() else ""
        raise VariantError(f"{folder} has no {VARIANT_FILE}: not a publishable variant{hint}")
    try:
        variant = Variant.model_validate_json(record.read_bytes())
    except (OSError, ValidationError) as err:
        raise VariantError(f"{record} is not a valid variant record: {err}") from err
    for name, digest in variant.files.items():
        if Path(name).name != name:
            raise VariantError(f"{record} names a file outside its folder: {name!r}")
        file = folder / name
        if not file.is_file() or _sha256(file) != digest:
            raise VariantError(f"{file} is missing or does not match the sha256 in {record}")
    return variant


# --------------------------------------------------------------------------------------------
# transformations: each writes its files into ``work`` and returns (model file, extra facts,
# predict before, predict after, engines, rows of the report, size before)


@dataclass
class _Candidate:
    model_file: str
    predict_before: Callable[[Matrix], Matrix]
    predict_after: Callable[[Matrix], Matrix]
    engine_before: str
    engine_after: str
    report_set: ValidationSet
    size_bytes: int
    details: dict[str, float | int | str]


def _compiled(src: SourceModel, data: ValidationSet, work: Path) -> _Candidate:
    cache = work / ".cache"
    try:
        lib = compile_model(src.path, cache)
        backend = CompiledTreesBackend(src.path, cache, nthread=1)
    except ModelError as err:
        raise LighteningError(f"compiling {src.path} failed: {err.message}") from err
    shutil.copyfile(lib, work / "model.so")
    shutil.copyfile(src.path, work / f"model{src.path.suffix}")
    shutil.rmtree(cache)
    reference = XGBoostBackend(src.path, nthread=1)
    return _Candidate("model.so", reference.predict, backend.predict, "xgboost", "compiled", data,
                      (work / "model.so").stat().st_size, {"tree_model": f"model{src.path.suffix}"})


def _split(data: ValidationSet) -> tuple[ValidationSet, ValidationSet]:
    if data.rows < 2:
        raise ValidationDataError(f"--to pruned splits the validation rows in two (search, report); {data.path} has "
                                  f"{data.rows}", code="VALIDATION_DATA_EMPTY")
    order = np.random.default_rng(0).permutation(data.rows)
    half = (data.rows + 1) // 2

    def part(rows: Any) -> ValidationSet:
        return data.model_copy(update={"x": np.ascontiguousarray(data.x[rows]), "y": data.y[rows]})

    return part(np.sort(order[:half])), part(np.sort(order[half:]))


def _pruned(src: SourceModel, data: ValidationSet, work: Path, max_regression: float) -> _Candidate:
    assert src.booster is not None
    booster = src.booster
    booster.set_param({"nthread": 1})
    search, report = _split(data)
    total = booster.num_boosted_rounds()

    def score(k: int) -> float:
        pred = booster.inplace_predict(search.x, iteration_range=(0, k), validate_features=False)
        return evaluate(np.asarray(pred, dtype=np.float32), search.y, src.metric)

    full = score(total)
    step = -(-total // MAX_SEARCH_POINTS)
    kept = total
    for k in range(total - step, 0, -step):  # from the full model down, while the curve stays within
        if regression(full, score(k), src.metric) > max_regression * SEARCH_SHARE:
            break
        kept = k
    pruned = booster[:kept]
    pruned.feature_names = booster.feature_names
    pruned.feature_types = booster.feature_types
    target = work / "model.json"
    pruned.save_model(str(target))
    before, after = XGBoostBackend(src.path, nthread=1), XGBoostBackend(target, nthread=1)
    details: dict[str, float | int | str] = {
        "trees_before": total, "trees_after": kept, "search_rows": search.rows,
        "search_max_regression": max_regression * SEARCH_SHARE,
        "search_metric_before": full, "search_metric_after": score(kept),
    }
    return _Candidate("model.json", before.predict, after.predict, "xgboost", "xgboost", report,
                      target.stat().st_size, details)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over validation rows."""

    def __init__(self, input_name: str, x: Matrix, batch: int) -> None:
        self._batches: Iterator[Matrix] = iter([x[i : i + batch] for i in range(0, len(x), batch)])
        self._name = input_name

    def get_next(self) -> dict[str, Matrix] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._name: batch}


def _int8(
    src: SourceModel, data: ValidationSet, work: Path, mode: Int8Mode, calibrate: ValidationSet | None
) -> _Candidate:
    quantization = import_module("onnxruntime.quantization")
    onnx = import_module("onnx")
    target = work / "model.onnx"
    predict_before = (image_predictor(src.path)[0] if src.image
                      else OnnxTabularBackend(src.path, feature_names=data.features, nthread=1).predict)
    advice = _QuantiserAdvice()
    logging.getLogger().addFilter(advice)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if mode == "dynamic":
                quantization.quantize_dynamic(str(src.path), str(target), weight_type=quantization.QuantType.QInt8)
            else:
                name = _onnx_input(src.path).name
                rows = (calibrate or data).x
                quantization.quantize_static(
                    str(src.path), str(target), _Reader(name, rows, 8 if src.image else 64),
                    quant_format=quantization.QuantFormat.QDQ,
                    activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
                    per_channel=True)
    except Exception as err:  # the quantiser raises whatever its passes raise
        raise LighteningError(f"onnxruntime could not quantise {src.path} ({mode}): {err}") from err
    finally:
        logging.getLogger().removeFilter(advice)
    proto = onnx.load(str(target))
    if not src.image and not any(p.key == "feature_names" for p in proto.metadata_props):
        prop = proto.metadata_props.add()
        prop.key, prop.value = "feature_names", json.dumps(data.features)
        onnx.save(proto, str(target))
    if src.image:
        predict_after = image_predictor(target)[0]
        classes = src.path.parent / LABELS_FILE
        if classes.is_file():
            shutil.copyfile(classes, work / LABELS_FILE)
    else:
        predict_after = OnnxTabularBackend(target, feature_names=data.features, nthread=1).predict
    details: dict[str, float | int | str] = {"mode": mode,
                                             "calibration_rows": (calibrate or data).rows if mode == "static" else 0}
    return _Candidate("model.onnx", predict_before, predict_after, "onnxruntime", f"onnxruntime-int8-{mode}", data,
                      target.stat().st_size, details)


# --------------------------------------------------------------------------------------------


def _check_output(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"output folder {out} exists and is not empty; choose another --out or remove it")


def optimize(
    model: Path,
    target: str,
    data: Path,
    *,
    out: Path,
    max_regression: str | float | None = None,
    label: str = DEFAULT_LABEL,
    int8_mode: str = "dynamic",
    calibrate: Path | None = None,
    latency_calls: int = 300,
) -> OptimizeResult:
    """Make the ``target`` variant of ``model``, validate it on ``data``, keep it if it passes.

    Checks run cheapest first and before anything is written: the gate, the target's name, the
    output folder, the model, whether the target applies to it, the data's schema. Returns where the
    variant (``OUT``) or the rejected candidate (``OUT.rejected``) is.
    """
    gate = parse_max_regression(max_regression)
    if target not in TARGETS:
        _check_applies(SourceModel(Path(model), "onnx", None, "rmse"), target)
    if int8_mode not in get_args(Int8Mode):
        raise NotApplicableError(f"unknown --int8-mode {int8_mode!r}; choose dynamic or static",
                                 code="LIGHTEN_TARGET_UNKNOWN")
    out = Path(out)
    _check_output(out)
    src = open_model(model)
    _check_applies(src, target)
    features = src.features if src.features is not None else _csv_features(data, label)
    if src.image:
        _, side = image_predictor(src.path)
        classes = model_classes(src.path)
        validation = load_image_validation(data, side, classes)
        calibration = load_image_validation(calibrate, side, classes) if calibrate is not None else None
    else:
        validation = load_validation(data, features, label=label)
        calibration = load_validation(calibrate, features, label=label) if calibrate is not None else None
    if src.kind == "onnx" and not src.image:
        width = _onnx_width(src.path)
        if width is not None and width != len(features):
            raise ValidationDataError(f"{src.path} takes {width} features; {data} gives {len(features)}",
                                      code="VALIDATION_COLUMN_MISSING" if len(features) < width
                                      else "VALIDATION_COLUMN_EXTRA")

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        if target == "compiled":
            cand = _compiled(src, validation, work)
        elif target == "pruned":
            cand = _pruned(src, validation, work, gate)
        else:
            cand = _int8(src, validation, work, int8_mode, calibration)  # type: ignore[arg-type]
        result = _report(src, cand, gate, latency_calls)
        files = {p.name: _sha256(p) for p in sorted(work.iterdir()) if p.is_file()}
        variant = Variant(
            target=target,  # type: ignore[arg-type]
            model_file=cand.model_file, files=files, features=features,
            source={"path": str(src.path), "sha256": model_digest(src.path), "kind": src.kind},
            report=result, publishable=result.passed, created=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        )
        record = VARIANT_FILE if variant.publishable else REJECTED_FILE
        (work / record).write_text(variant.model_dump_json(indent=2) + "\n")
        final = out if variant.publishable else out.with_name(out.name + ".rejected")
        if not variant.publishable and final.exists():
            if not (final / REJECTED_FILE).is_file():
                raise OutputExistsError(f"{final} exists and is not a rejected candidate; remove it")
            shutil.rmtree(final)
        if final.exists():
            final.rmdir()  # empty (checked above)
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if variant.publishable:
        log.info("variant %s of %s: %s %.4g -> %.4g, passed", target, src.path, result.metric,
                 result.metric_before, result.metric_after)
    else:
        log.warning("candidate %s of %s failed its gate (regression %.4f > %.4f); kept, marked, in %s", target,
                    src.path, result.regression, gate, final)
    return OptimizeResult(final, variant)


def _onnx_input(path: Path) -> Any:
    proto = import_module("onnx").load(str(path))
    inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if len(inputs) != 1:
        raise ModelLoadError(f"{path} has {len(inputs)} inputs; a tabular model has one")
    return inputs[0]


def _onnx_width(path: Path) -> int | None:
    dims = _onnx_input(path).type.tensor_type.shape.dim
    return int(dims[1].dim_value) if len(dims) == 2 and dims[1].dim_value > 0 else None


def _report(src: SourceModel, cand: _Candidate, gate: float, calls: int) -> ValidationReport:
    rows = cand.report_set
    if rows.against == "agreement":  # the original's top-1 answers are the reference
        rows = rows.model_copy(update={"y": np.asarray(cand.predict_before(rows.x)).argmax(axis=1).astype(np.float32)})
    before = evaluate(cand.predict_before(rows.x), rows.y, src.metric)
    after = evaluate(cand.predict_after(rows.x), rows.y, src.metric)
    loss = regression(before, after, src.metric)
    return ValidationReport(
        metric=src.metric, metric_before=before, metric_after=after, regression=loss, max_regression=gate,
        passed=loss <= gate, size_bytes=cand.size_bytes, size_bytes_before=src.path.stat().st_size,
        latency_us=measure_latency_us(cand.predict_after, rows.x, calls=calls),
        latency_us_before=measure_latency_us(cand.predict_before, rows.x, calls=calls),
        measured_against=rows.against, latency_calls=calls, engine=cand.engine_after,
        engine_before=cand.engine_before, rows=rows.rows, data=rows.path, details=cand.details,
    )


def describe(result: OptimizeResult) -> Sequence[tuple[str, str]]:
    """Rows for people (the CLI's table)."""
    r = result.variant.report
    return [
        ("variant" if result.passed else "rejected candidate", str(result.path)),
        ("target", result.variant.target),
        (r.metric, f"{r.metric_before:.6g} -> {r.metric_after:.6g} (regression {r.regression:+.4%}, "
                   f"gate {r.max_regression:.4%}: {'passed' if r.passed else 'FAILED'})"),
        ("size", f"{r.size_bytes_before:,} -> {r.size_bytes:,} bytes"),
        ("latency (batch 1, median)", f"{r.latency_us_before:.1f} -> {r.latency_us:.1f} µs ({r.engine_before} -> "
                                      f"{r.engine})"),
        ("rows", f"{r.rows} of {r.data}"),
        *((k, str(v)) for k, v in r.details.items()),
    ]
