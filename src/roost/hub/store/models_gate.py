"""Model versions at the hub: validation reports, the deployment gate, benchmarks, recommendation.

* A component version may carry a validation report (:class:`~roost.hub.contract.learn.ModelValidation`):
  its metric on the operator's held-out data (with the data's sha256), its size, its latency per
  device class and, for a lightened variant, its own gate against its original. The hub refuses a
  report whose numbers contradict each other (``VALIDATION_REPORT_INCONSISTENT``).
* **The gate** (:func:`gate_checks`, run inside a deployment's transaction): each version of the
  deployment that carries a report is compared with its *baseline*: the version the operator
  names (``baseline``) or else the version of that component deployed on the target now. Its
  regression (relative loss of the metric, as in :mod:`roost.learn.validation`) must be at most
  ``max_regression`` (default 0.01), and a variant's own gate must have passed. An explicit
  ``max_regression`` demands a report of each *model* component (one with a validated version at the
  hub; a deployment's clients carry none): ``VALIDATION_REPORT_MISSING``. Versions measured
  on different data, or with different metrics, cannot be compared (``GATE_BASELINE_INCOMPARABLE``).
  A failure refuses the deployment (``DEPLOYMENT_GATE_FAILED``) unless ``override_gate`` with an
  ``override_reason`` (``GATE_OVERRIDE_REASON_MISSING`` without one); the checks, overrides and the
  reason are stored with the deployment.
* **Benchmarks**: a device records the latency it measured for component versions; the hub files
  them under the device's class (:func:`roost.learn.device_class.device_class`, from the labels the
  hub holds, not from what the device claims), latest per device.
* **Recommendation** (:func:`choose`): among the versions with a report and a measurement on the
  device's class, those within ``max_latency_ms`` and at least ``min_metric`` (RMSE: at most), the
  best metric wins (ties: the lower latency). Every candidate gets the reason it was or was not chosen.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from roost.hub.contract import DeploymentCreate, DeploymentStatus
from roost.hub.contract.learn import (
    BenchmarkIn,
    BenchmarkRecord,
    Candidate,
    GateCheck,
    ModelValidation,
    Recommendation,
)
from roost.hub.errors import HubConflictError, HubNotFoundError, UnprocessableError
from roost.hub.models import ClusterNode, Component, ComponentValidation, Deployment, Device, ModelBenchmark
from roost.hub.names import check_name
from roost.hub.store.base import StoreBase
from roost.learn.device_class import device_class

__all__ = ["DEFAULT_MAX_REGRESSION", "ModelGateStore", "check_validation", "choose", "regression"]

logger = logging.getLogger(__name__)

#: The gate when a deployment does not name ``max_regression`` (as ``roost model optimize``'s).
DEFAULT_MAX_REGRESSION = 0.01
#: Relative tolerance when a report's stated regression is checked against its own numbers.
_TOLERANCE = 1e-6
#: Latency accepted in a record: finite, > 0, at most an hour per row.
_MAX_LATENCY_US = 3.6e9
_MAX_CALLS = 10_000_000
#: Benchmarks read for one recommendation (a bound on the rows a class can have).
_MAX_ROWS = 10_000


def regression(before: float, after: float, metric: str) -> float:
    """The relative loss of ``after`` against ``before`` (:func:`roost.learn.validation.regression`)."""
    loss = after - before if metric == "rmse" else before - after
    if before == 0:
        return 0.0 if loss <= 0 else math.inf
    return loss / abs(before)


def _better(a: float, b: float, metric: str) -> bool:
    return a < b if metric == "rmse" else a > b


def check_validation(report: ModelValidation) -> ModelValidation:
    """``report`` if its numbers are finite and agree with each other; ``VALIDATION_REPORT_INCONSISTENT``."""
    def bad(why: str) -> UnprocessableError:
        return UnprocessableError(f"the validation report contradicts itself: {why}",
                                  code="VALIDATION_REPORT_INCONSISTENT")
    if not math.isfinite(report.value) or report.value < 0:
        raise bad(f"its {report.metric} {report.value!r} is not a finite number >= 0")
    if report.metric == "accuracy" and report.value > 1:
        raise bad(f"an accuracy of {report.value!r} is above 1")
    for klass, micros in report.latency_us.items():
        if not klass or len(klass) > 255 or not math.isfinite(micros) or micros <= 0:
            raise bad(f"latency {micros!r} µs for device class {klass!r} is not a finite number > 0")
    gate = report.variant
    if gate is not None:
        numbers = (gate.metric_before, gate.metric_after, gate.regression, gate.max_regression)
        if not all(math.isfinite(n) for n in numbers) or gate.max_regression < 0:
            raise bad("its variant gate has a number that is not finite (or a negative max_regression)")
        expected = regression(gate.metric_before, gate.metric_after, report.metric)
        if abs(expected - gate.regression) > _TOLERANCE * max(1.0, abs(expected)):
            raise bad(f"its variant regression {gate.regression:.6g} is not what {gate.metric_before:.6g} -> "
                      f"{gate.metric_after:.6g} ({report.metric}) gives ({expected:.6g})")
        if (gate.regression <= gate.max_regression) != gate.passed:
            raise bad(f"passed={gate.passed}, but the regression {gate.regression:.6g} against the gate "
                      f"{gate.max_regression:.6g} says otherwise")
    base = report.baseline
    if base is not None:
        if not (math.isfinite(base.value) and base.value >= 0 and math.isfinite(base.regression)):
            raise bad(f"its baseline {base.version} has a number that is not finite (or a negative value)")
        expected = regression(base.value, report.value, report.metric)
        if abs(expected - base.regression) > _TOLERANCE * max(1.0, abs(expected)):
            raise bad(f"its regression {base.regression:.6g} against the baseline {base.version} is not what "
                      f"{base.value:.6g} -> {report.value:.6g} ({report.metric}) gives ({expected:.6g})")
    return report


def _parse_gate(req: DeploymentCreate) -> float:
    if req.max_regression is None:
        return DEFAULT_MAX_REGRESSION
    if not math.isfinite(req.max_regression) or req.max_regression < 0:
        raise UnprocessableError(f"max_regression must be a finite number >= 0 (a fraction, 0.01 = 1 %), got "
                                 f"{req.max_regression!r}", code="MAX_REGRESSION_INVALID")
    return req.max_regression


def _report(s: Session, name: str, version: str) -> ModelValidation | None:
    row = s.get(ComponentValidation, (name, version))
    return None if row is None else ModelValidation.model_validate(row.report)


def _validated(s: Session, name: str) -> bool:
    """Whether any version of component ``name`` carries a validation report (it is a model component)."""
    return s.scalar(select(ComponentValidation.version).where(ComponentValidation.name == name).limit(1)) is not None


def _deployed_version(s: Session, kind: str, target_name: str, name: str) -> str | None:
    """The version of ``name`` the target runs now: its latest deployment that was not aborted or canceled
    (an aborted rollout left the devices on the one before it, superseded by it)."""
    live = (DeploymentStatus.ACTIVE, DeploymentStatus.COMPLETED, DeploymentStatus.SUPERSEDED)
    for components in s.scalars(select(Deployment.components).where(
            Deployment.target_type == kind, Deployment.target_name == target_name,
            Deployment.status.in_(live)).order_by(Deployment.seq.desc()).limit(1)):
        version = dict(components).get(name)
        return None if version is None else str(version)
    return None


def gate_checks(s: Session, req: DeploymentCreate, kind: str, target_name: str) -> list[GateCheck]:
    """The gate's checks for ``req`` (see the module notes); raises when it refuses the deployment."""
    gate = _parse_gate(req)
    if req.override_gate and not (req.override_reason or "").strip():
        raise UnprocessableError("override_gate needs override_reason: say why the gate is overridden (it is "
                                 "recorded with the deployment)", code="GATE_OVERRIDE_REASON_MISSING")
    stray = sorted(set(req.baseline) - set(req.components))
    if stray:
        raise UnprocessableError(f"baseline names component(s) not in the deployment: {', '.join(stray)}",
                                 code="GATE_BASELINE_INCOMPARABLE")
    checks: list[GateCheck] = []
    for name, version in sorted(req.components.items()):
        report = _report(s, name, version)
        if report is None:
            # An explicit gate judges the model components: those with a validated version at the hub (a
            # deployment's other components, its clients, are not models and carry no report).
            if name in req.baseline or (req.max_regression is not None and _validated(s, name)):
                raise UnprocessableError(
                    f"{name} {version} has no validation report at the hub, so the gate cannot judge it; attach "
                    f"one (`roost model validate`)", code="VALIDATION_REPORT_MISSING")
            continue
        source = "operator" if name in req.baseline else "target"
        base_version = req.baseline.get(name) or _deployed_version(s, kind, target_name, name)
        check = GateCheck(component=name, version=version, metric=report.metric, value=report.value,
                          baseline_source="none", max_regression=gate, passed=True)
        failures: list[str] = []
        if report.variant is not None and not report.variant.passed:
            failures.append(f"its own variant gate failed (regression {report.variant.regression:.4%} > "
                            f"{report.variant.max_regression:.4%})")
        if base_version is not None and base_version != version:
            check_name(base_version, "baseline version")
            base = _report(s, name, base_version)
            if base is None:
                if source == "operator":
                    raise UnprocessableError(f"the baseline {name} {base_version} has no validation report at "
                                             "the hub", code="VALIDATION_REPORT_MISSING")
            else:
                if base.metric != report.metric or base.data_sha256 != report.data_sha256:
                    raise UnprocessableError(
                        f"{name} {version} and its baseline {base_version} were validated on different data or "
                        f"metrics ({report.data} {report.data_sha256[:12]} {report.metric} vs {base.data} "
                        f"{base.data_sha256[:12]} {base.metric}); validate both on the same held-out file "
                        "(`roost model validate`)", code="GATE_BASELINE_INCOMPARABLE")
                loss = regression(base.value, report.value, report.metric)
                check = check.model_copy(update={"baseline_source": source, "baseline_version": base_version,
                                                 "baseline_value": base.value, "regression": loss})
                if loss > gate:
                    failures.append(f"{report.metric} {report.value:.6g} against {base.value:.6g} of {base_version} "
                                    f"is a regression of {loss:.4%}, more than the gate {gate:.4%}")
        if failures:
            if not req.override_gate:
                raise HubConflictError(f"{name} {version} fails its validation gate: {'; '.join(failures)}. Deploy "
                                       "a better version, or override explicitly (--override-gate with a reason)",
                                       code="DEPLOYMENT_GATE_FAILED")
            check = check.model_copy(update={"passed": False, "overridden": True,
                                             "reason": (req.override_reason or "").strip()})
            logger.warning("validation gate overridden for %s %s: %s", name, version, "; ".join(failures))
        checks.append(check)
    return checks


def choose(rows: Sequence[Candidate], max_latency_ms: float | None, min_metric: float | None) -> list[Candidate]:
    """The candidates with ``meets``, ``chosen`` and ``why`` filled in (see the module notes)."""
    out: list[Candidate] = []
    for c in rows:
        why: list[str] = []
        if c.latency_us is None:
            why.append("not measured on this device class")
        elif max_latency_ms is not None and c.latency_us > max_latency_ms * 1000:
            why.append(f"latency {c.latency_us / 1000:.3g} ms > {max_latency_ms:g} ms")
        if c.value is None or c.metric is None:
            why.append("no validation report")
        elif min_metric is not None and _better(min_metric, c.value, c.metric):
            bound = "at most" if c.metric == "rmse" else "at least"
            why.append(f"{c.metric} {c.value:.4g} is not {bound} {min_metric:g}")
        out.append(c.model_copy(update={"meets": not why, "why": "; ".join(why)}))
    fitting = [c for c in out if c.meets]
    if fitting:
        metric = fitting[0].metric or "rmse"
        best = fitting[0]
        for c in fitting[1:]:
            assert c.value is not None and best.value is not None and c.latency_us is not None
            assert best.latency_us is not None
            if _better(c.value, best.value, metric) or (c.value == best.value and c.latency_us < best.latency_us):
                best = c
        for i, c in enumerate(out):
            if c is best:
                out[i] = c.model_copy(update={"chosen": True, "why": (
                    f"chosen: the best {metric} of the {len(fitting)} candidate(s) that meet the constraints")})
            elif c.meets:
                assert c.value is not None and best.value is not None
                out[i] = c.model_copy(update={"why": f"meets the constraints; {metric} {c.value:.4g} is not better "
                                                     f"than {best.value:.4g} of {best.component} {best.version}"})
    return out


def _nearest(candidates: Sequence[Candidate], max_latency_ms: float | None, min_metric: float | None) -> Candidate:
    """The measured candidate that misses the constraints by the least (relative shortfalls summed)."""
    def miss(c: Candidate) -> float:
        total = 0.0
        if max_latency_ms is not None and c.latency_us is not None:
            total += max(0.0, c.latency_us / (max_latency_ms * 1000) - 1)
        if min_metric is not None and c.value is not None and c.metric is not None and min_metric:
            total += max(0.0, regression(min_metric, c.value, c.metric))
        return total
    measured = [c for c in candidates if c.latency_us is not None and c.value is not None]
    return min(measured or candidates, key=miss)


class ModelGateStore(StoreBase):
    """Validation reports, benchmarks and recommendation (the gate runs in :mod:`.deployments`)."""

    def set_validation(self, name: str, version: str, report: ModelValidation) -> ModelValidation:
        """Attach (or replace) the validation report of a published version."""
        check_name(name, "component name")
        check_name(version, "component version")
        report = check_validation(report).model_copy(update={"measured_at": report.measured_at or self.clock()})
        now = self.clock()

        def run(s: Session) -> ModelValidation:
            if s.get(Component, (name, version)) is None:
                raise HubNotFoundError(f"component {name} version {version} is not published",
                                       code="COMPONENT_NOT_FOUND")
            row = s.get(ComponentValidation, (name, version))
            data = report.model_dump(mode="json")
            if row is None:
                s.add(ComponentValidation(name=name, version=version, report=data, updated_at=now))
            else:
                row.report, row.updated_at = data, now
            return report
        out = self._write(run)
        logger.info("validation report of %s %s: %s %.6g on %s", name, version, report.metric, report.value,
                    report.data)
        return out

    def get_validation(self, name: str, version: str) -> ModelValidation:
        check_name(name, "component name")
        check_name(version, "component version")

        def run(s: Session) -> ModelValidation:
            report = _report(s, name, version)
            if report is None:
                raise HubNotFoundError(f"{name} {version} has no validation report at the hub",
                                       code="VALIDATION_REPORT_MISSING")
            return report
        return self._read(run)

    def _class_of(self, s: Session, device: Device) -> str:
        node = s.get(ClusterNode, device.id)
        accelerators = sorted((node.accelerators or {}).keys()) if node is not None else []
        return device_class(device.labels or {}, accelerators)

    def record_benchmarks(self, device_id: int, body: BenchmarkIn) -> list[BenchmarkRecord]:
        """File a device's measurements under its class (the latest per device and version)."""
        for m in body.measurements:
            check_name(m.component, "component name")
            check_name(m.version, "component version")
            if not math.isfinite(m.latency_us) or not 0 < m.latency_us <= _MAX_LATENCY_US:
                raise UnprocessableError(f"latency of {m.component} {m.version}: {m.latency_us!r} µs is not a finite "
                                         f"number in (0, {_MAX_LATENCY_US:g}]", code="BENCHMARK_RECORD_INVALID")
            if not 1 <= m.calls <= _MAX_CALLS:
                raise UnprocessableError(f"calls of {m.component} {m.version}: {m.calls} is not in 1..{_MAX_CALLS}",
                                         code="BENCHMARK_RECORD_INVALID")
        now = self.clock()

        def run(s: Session) -> list[BenchmarkRecord]:
            device = s.get(Device, device_id)
            if device is None or device.revoked_at is not None:
                raise HubNotFoundError("this device is not enrolled", code="DEVICE_NOT_FOUND")
            klass = self._class_of(s, device)
            out = []
            for m in body.measurements:
                if s.get(Component, (m.component, m.version)) is None:
                    raise UnprocessableError(f"benchmark of {m.component} {m.version}: that version is not "
                                             "published", code="BENCHMARK_RECORD_INVALID")
                s.execute(delete(ModelBenchmark).where(
                    ModelBenchmark.device_class == klass, ModelBenchmark.name == m.component,
                    ModelBenchmark.version == m.version, ModelBenchmark.device_id == device.id))
                s.add(ModelBenchmark(device_class=klass, name=m.component, version=m.version, device_id=device.id,
                                     latency_us=m.latency_us, calls=m.calls, engine=m.engine, recorded_at=now))
                out.append(BenchmarkRecord(device_class=klass, device=device.name, component=m.component,
                                           version=m.version, latency_us=m.latency_us, calls=m.calls,
                                           engine=m.engine, recorded_at=now))
            return out
        records = self._write(run)
        logger.info("benchmarks from device %d: %d measurement(s) under %s", device_id, len(records),
                    records[0].device_class if records else "?")
        return records

    def list_benchmarks(self, klass: str | None = None) -> list[BenchmarkRecord]:
        def run(s: Session) -> list[BenchmarkRecord]:
            query = (select(ModelBenchmark, Device.name).join(Device, Device.id == ModelBenchmark.device_id)
                     .order_by(ModelBenchmark.device_class, ModelBenchmark.name, ModelBenchmark.version, Device.name)
                     .limit(_MAX_ROWS))
            if klass is not None:
                query = query.where(ModelBenchmark.device_class == klass)
            return [BenchmarkRecord(device_class=b.device_class, device=n, component=b.name, version=b.version,
                                    latency_us=b.latency_us, calls=b.calls, engine=b.engine,
                                    recorded_at=b.recorded_at) for b, n in s.execute(query)]
        return self._read(run)

    def device_class_of(self, device_name: str) -> str:
        return self._read(lambda s: self._class_of(s, self._device(s, device_name)))

    def recommend(self, device_name: str, *, max_latency_ms: float | None = None, min_metric: float | None = None,
                  components: Sequence[str] = ()) -> Recommendation:
        """The variant that fits ``device_name`` best, with the table of candidates (module notes)."""
        for label, bound in (("max_latency_ms", max_latency_ms), ("min_metric", min_metric)):
            if bound is not None and (not math.isfinite(bound) or bound < 0):
                raise UnprocessableError(f"{label} must be a finite number >= 0, got {bound!r}",
                                         code="INVALID_ARGUMENT")
        wanted = {check_name(c, "component name") for c in components}

        def run(s: Session) -> tuple[str, dict[tuple[str, str], list[float]], dict[tuple[str, str], dict[str, Any]]]:
            klass = self._class_of(s, self._device(s, device_name))
            latencies: dict[tuple[str, str], list[float]] = {}
            for b in s.scalars(select(ModelBenchmark).where(ModelBenchmark.device_class == klass).limit(_MAX_ROWS)):
                latencies.setdefault((b.name, b.version), []).append(b.latency_us)
            reports = {(v.name, v.version): v.report for v in s.scalars(select(ComponentValidation).limit(_MAX_ROWS))}
            return klass, latencies, reports
        klass, latencies, reports = self._read(run)
        keys = sorted(set(latencies) | set(reports))
        if wanted:
            keys = [k for k in keys if k[0] in wanted]
        if not any(k in latencies for k in keys):
            raise HubNotFoundError(
                f"no benchmark measured on device class {klass} (device {device_name}) yet: deploy the benchmark "
                f"component to a device of that class (`roost model benchmark --hub URL --candidate NAME=VERSION ... "
                f"--device {device_name}`), then ask again", code="BENCHMARK_MISSING")
        rows = []
        for key in keys:
            report = ModelValidation.model_validate(reports[key]) if key in reports else None
            measured = latencies.get(key, [])
            rows.append(Candidate(component=key[0], version=key[1], metric=report.metric if report else None,
                                  value=report.value if report else None,
                                  latency_us=statistics.median(measured) if measured else None,
                                  devices=len(measured), why=""))
        metrics = {r.metric for r in rows if r.metric is not None}
        if len(metrics) > 1:
            raise UnprocessableError(f"the candidates mix metrics ({', '.join(sorted(metrics))}); name the "
                                     "components of one model with --component", code="GATE_BASELINE_INCOMPARABLE")
        table = choose(rows, max_latency_ms, min_metric)
        chosen = [c for c in table if c.chosen]
        if not chosen:
            near = _nearest(table, max_latency_ms, min_metric)
            raise HubConflictError(
                f"no candidate meets the constraints on device class {klass}; the nearest is {near.component} "
                f"{near.version} ({near.why}); candidates: "
                + "; ".join(f"{c.component} {c.version}: {c.why}" for c in table), code="NO_CANDIDATE_FITS")
        return Recommendation(device=device_name, device_class=klass, max_latency_ms=max_latency_ms,
                              min_metric=min_metric, chosen=f"{chosen[0].component}={chosen[0].version}",
                              candidates=table)
