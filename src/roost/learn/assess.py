"""One model on held-out data: its metric, size and latency, as the report a registered version carries.

:func:`assess` is what ``roost model validate`` runs (on the model file of a version published at
the hub) and what ``roost model publish`` attaches (from the variant's own report). The report's
latency is filed under the device class of the machine that measured it
(:func:`roost.learn.device_class.device_class` of this machine's labels). Tabular models only
(XGBoost ``.json``/``.ubj``, ONNX): image classifiers are validated with ``roost model optimize``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from roost.learn.device_class import device_class
from roost.learn.errors import ModelLoadError, NotApplicableError
from roost.learn.lighten import Variant, _csv_features, open_model
from roost.learn.validation import DEFAULT_LABEL, Metric, evaluate, load_validation, measure_latency_us
from roost.serve.backends import OnnxTabularBackend, XGBoostBackend
from roost.serve.errors import ModelError

__all__ = ["Assessment", "assess", "file_sha256", "this_device_class", "with_variant"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Assessment:
    metric: Metric
    value: float
    rows: int
    data: str
    data_sha256: str
    size_bytes: int
    latency_us: float
    device_class: str
    variant_gate: dict[str, float | bool] | None = None

    def to_report(self) -> dict[str, object]:
        """The hub's :class:`~roost.hub.contract.learn.ModelValidation`, as JSON."""
        out: dict[str, object] = {"metric": self.metric, "value": self.value, "rows": self.rows, "data": self.data,
                                  "data_sha256": self.data_sha256, "size_bytes": self.size_bytes,
                                  "latency_us": {self.device_class: self.latency_us}}
        if self.variant_gate is not None:
            out["variant"] = self.variant_gate
        return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def this_device_class() -> str:
    from roost.agent.enrolment import detect_labels

    return device_class(detect_labels())


def assess(model: Path, data: Path, *, label: str = DEFAULT_LABEL, calls: int = 300) -> Assessment:
    """Measure ``model`` on ``data`` (errors: ``MODEL_MISSING``, ``MODEL_UNREADABLE``, the ``VALIDATION_*`` codes)."""
    src = open_model(model)
    if src.image:
        raise NotApplicableError(f"{model} is an image classifier: validate it with roost model optimize")
    features = src.features if src.features is not None else _csv_features(data, label)
    rows = load_validation(data, features, label=label)
    try:
        backend = (XGBoostBackend(src.path, nthread=1) if src.kind == "xgboost"
                   else OnnxTabularBackend(src.path, feature_names=features, nthread=1))
        value = evaluate(backend.predict(rows.x), rows.y, src.metric)
    except ModelError as err:
        raise ModelLoadError(f"model {model} does not run on {data}: {err.message}") from err
    latency = measure_latency_us(backend.predict, rows.x, calls=calls)
    return Assessment(metric=src.metric, value=value, rows=rows.rows, data=Path(data).name,
                      data_sha256=file_sha256(Path(data)), size_bytes=src.path.stat().st_size, latency_us=latency,
                      device_class=this_device_class())


def with_variant(measured: Assessment, variant: Variant) -> Assessment:
    """``measured`` (the variant's model on the held-out file) plus the variant's own gate and latency.

    The latency is the variant's report's (its own engine: a compiled library, not the tree model the
    metric was measured with); the gate is its check against the original on the report's rows.
    """
    r = variant.report
    return replace(measured, latency_us=r.latency_us, size_bytes=r.size_bytes, variant_gate={
        "metric_before": r.metric_before, "metric_after": r.metric_after, "regression": r.regression,
        "max_regression": r.max_regression, "passed": r.passed})
