"""Publishing a federated job's aggregated model as a new version of its serving component, with its report.

When a hub job's rounds are done (:mod:`roost.hub.learn_runner`), its final model becomes the next patch
version of the job's serving component (``com.roost.WineQuality`` unless the job names another; ``1.0.0``
when the registry holds none), through the registry's own publish path (:meth:`RegistryStore.publish_component`:
staged files, hub-computed digests, immutable versions):

* artifacts ``model.json`` (the servable XGBoost model, :func:`roost.learn.federated_model.job_model`: the
  trees as aggregated, or the linear model folded into ``gblinear``) and ``federated.json`` (the job's
  record: strategy, rounds, devices, metrics, the held-out file, and a linear model's original weights);
* the recipe of a tabular serving component (:func:`roost.learn.publish.tabular_recipe`);
* a validation report (:func:`roost.learn.assess.assess` on the job's held-out set, the rows the ServerApp
  scores on, written as ``roost samples wine-holdout`` writes them): RMSE, size, latency under the hub's
  device class and, when the component's version before it is validated on the same file, the
  comparison with it (``baseline``). The deployment gate then judges the version like any other.

The report is checked before the version is published, so a version is never left without it. A
component named by the job must already be in the registry (a typo does not start a new component) and
serve a tabular model (its latest recipe runs ``roost serve --model``); the default may start at 1.0.0.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import nodesemver

from roost.hub.contract import BaselineComparison, LearnJob, ModelValidation
from roost.hub.contract.federated import SERVING_COMPONENT
from roost.hub.errors import HubConflictError
from roost.hub.names import check_name
from roost.learn.assess import assess
from roost.learn.errors import ServingComponentError
from roost.learn.federated_model import MODEL_FILE, JobModel, job_model, write_job_holdout
from roost.learn.publish import tabular_recipe
from roost.learn.validation import regression
from roost.recipe.resolve import sort_versions

if TYPE_CHECKING:
    from roost.hub.store import Store

__all__ = ["RECORD_FILE", "check_serving_component", "next_version", "publish_job_model"]

log = logging.getLogger(__name__)

#: The job's record, published beside the model.
RECORD_FILE: Final = "federated.json"
HOLDOUT_FILE: Final = "wine-holdout.csv"
#: Publishes tried when another publisher takes the version first (VERSION_EXISTS).
_ATTEMPTS: Final = 5
_SERVES: Final = re.compile(r"\broost\s+serve\b.*\s--model\b", re.S)


def next_version(versions: list[str]) -> str:
    """The next patch version above the highest semantic version in ``versions`` (``1.0.0`` if none)."""
    valid = [v for v in versions if nodesemver.valid(v, False) is not None]
    if not valid:
        return "1.0.0"
    return str(nodesemver.inc(sort_versions(valid)[-1], "patch", False))


def _scripts(recipe: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for manifest in recipe.get("Manifests") or []:
        for step in ("Run", "Startup"):
            value = (manifest.get("Lifecycle") or {}).get(step)
            script = value.get("Script") if isinstance(value, dict) else value
            if isinstance(script, str):
                out.append(script)
    return out


def check_serving_component(store: Store, name: str) -> str | None:
    """The highest version of ``name`` in the registry (None when there is none and ``name`` is the default);
    ``LEARN_COMPONENT_UNKNOWN`` / ``LEARN_COMPONENT_NOT_SERVING`` otherwise (see the module notes)."""
    check_name(name, "component name")
    versions = [v for v in store.component_versions(name) if nodesemver.valid(v, False) is not None]
    if not versions:
        if name == SERVING_COMPONENT:
            return None
        raise ServingComponentError(f"component {name} has no version in the registry; publish a version that "
                                    f"serves a wine model first, or let the job publish to {SERVING_COMPONENT}")
    latest = sort_versions(versions)[-1]
    recipe = store.get_component(name, latest).recipe or {}
    if not any(_SERVES.search(script) for script in _scripts(recipe)):
        raise ServingComponentError(f"component {name} {latest} does not serve a tabular model (its recipe does "
                                    "not run `roost serve --model`); a job's model cannot become its next version",
                                    code="LEARN_COMPONENT_NOT_SERVING")
    return latest


def _baseline(store: Store, name: str, current: str | None, report: ModelValidation) -> BaselineComparison | None:
    if current is None:
        return None
    base = store.get_component(name, current).validation
    if base is None or base.metric != report.metric or base.data_sha256 != report.data_sha256:
        log.info("%s %s has no report on the job's held-out file: the new version has no baseline comparison",
                 name, current)
        return None
    return BaselineComparison(version=current, value=base.value,
                              regression=regression(base.value, report.value, report.metric))


def _record(job: LearnJob, model: JobModel, report: ModelValidation) -> dict[str, Any]:
    out: dict[str, Any] = {
        "job": job.job, "task": job.task, "strategy": job.strategy, "target": job.target, "devices": job.devices,
        "rounds": [r.model_dump() for r in job.rounds], "final_metric": job.final_metric,
        "centralised_metric": job.centralised_metric, "model": {"kind": model.kind, "engine": model.engine,
                                                                "from": model.source.name},
        "holdout": {"file": report.data, "sha256": report.data_sha256, "rows": report.rows}}
    if model.linear is not None:
        out["linear"] = model.linear
    return out


def _description(job: LearnJob, model: JobModel, report: ModelValidation) -> str:
    text = (f"The aggregated {model.kind} model of federated job {job.job} ({job.strategy}, {len(job.rounds)} "
            f"rounds on {len(job.devices)} devices of {job.target}), validated on {report.rows} rows of "
            f"{report.data}: {report.metric} {report.value:.6g}")
    if report.baseline is not None:
        text += f" ({report.baseline.regression:+.2%} against {report.baseline.version})"
    return text + f"; {report.size_bytes} bytes. The job's record is the artifact {RECORD_FILE}."


def _publish(store: Store, recipe: str, files: dict[str, bytes], source: str) -> None:
    staging = store.artifacts.staging()
    try:
        staged = []
        for file_name, data in files.items():
            writer = staging.open(file_name)
            writer.write(data)
            staged.append(writer.finish())
        store.publish_component(recipe.encode(), staging, staged, recipe_source=source)
    finally:
        staging.cleanup()


def publish_job_model(store: Store, job: LearnJob, folder: Path) -> str:
    """Publish the model of ``job`` (its ServerApp wrote ``folder/out``); returns ``NAME=VERSION``.

    Raises ``LEARN_MODEL_MISSING`` / ``LEARN_MODEL_INVALID`` (the model), ``LEARN_COMPONENT_*`` (the
    component), a registry or validation error; nothing is published then."""
    from roost.hub.store.models_gate import check_validation  # hub-only (sqlalchemy): imported when run

    name = job.serving_component
    current = check_serving_component(store, name)
    scratch = Path(tempfile.mkdtemp(prefix="roost-learn-publish-", dir=folder))
    try:
        model = job_model(folder / "out", job.strategy, scratch)
        holdout = write_job_holdout(folder / HOLDOUT_FILE)
        report = ModelValidation.model_validate(assess(model.path, holdout).to_report())
        report.baseline = _baseline(store, name, current, report)
        report = check_validation(report)
        files = {MODEL_FILE: model.path.read_bytes(),
                 RECORD_FILE: json.dumps(_record(job, model, report), indent=1).encode()}
        for attempt in range(_ATTEMPTS):
            version = next_version(store.component_versions(name))
            recipe = tabular_recipe(name, version, _description(job, model, report), MODEL_FILE, sorted(files),
                                    engine=model.engine, configurable_engine=True)
            try:
                _publish(store, recipe, files, f"{name}-{version}.yaml")
                break
            except HubConflictError as err:
                if err.code != "VERSION_EXISTS" or attempt == _ATTEMPTS - 1:
                    raise
                log.info("learn job %s: %s %s was published meanwhile; trying the next version", job.job, name,
                         version)
        store.set_validation(name, version, report)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("learn job %s: published %s %s (%s %.6g on %s)", job.job, name, version, report.metric, report.value,
             report.data)
    return f"{name}={version}"
