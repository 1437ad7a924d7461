"""Publishing a lightened variant as a component version, only when its report passed its gate.

The component is the sample WineQuality (or, for an image classifier's int8 variant, ImageClassifier)
component's serving recipe pointed at the variant's files:
its artifacts are the variant's model file(s) and ``variant.json`` (so the report travels with the
model), and Run serves the tree model with the variant's engine (``xgboost`` for a pruned model,
``compiled`` for a compiled one: the device compiles its own library from ``model.json``, cached in
its work folder, since the measured ``model.so`` is specific to the CPU that built it).

Refused, each with its code: a folder without a valid record or whose files do not match it
(``VARIANT_INVALID``); a rejected candidate, a record not marked publishable, or a report whose
``passed`` contradicts its own numbers (``GATE_FAILED``); an int8 variant of a
tabular ONNX model (``LIGHTEN_NOT_APPLICABLE``: ``roost serve`` serves tabular models as XGBoost
trees). An image variant is served with ``roost serve --image-model`` (its folder keeps ``labels.json``).
There is no ``--force``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import yaml

from roost.learn.errors import GateFailedError, NotApplicableError, VariantError
from roost.learn.lighten import REJECTED_FILE, VARIANT_FILE, Variant, read_variant
from roost.serve.image import LABELS_FILE

__all__ = ["check_publishable", "tabular_recipe", "variant_recipe", "write_recipe"]

log = logging.getLogger(__name__)


def check_publishable(folder: Path) -> Variant:
    """The variant of ``folder`` if it may be published; raises otherwise (see the module notes)."""
    folder = Path(folder)
    if not (folder / VARIANT_FILE).exists() and (folder / REJECTED_FILE).is_file():
        raise GateFailedError(f"{folder} holds a candidate that failed its gate ({REJECTED_FILE}); it is not "
                              "publishable")
    variant = read_variant(folder)
    report = variant.report
    if (report.regression <= report.max_regression) != report.passed:
        raise VariantError(f"{folder / VARIANT_FILE}: its report says passed={report.passed}, but its regression "
                           f"{report.regression:.6g} against the gate {report.max_regression:.6g} says otherwise")
    if not (variant.publishable and report.passed):
        raise GateFailedError(f"{folder}: the variant's report did not pass its gate (regression "
                              f"{report.regression:.4%} > {report.max_regression:.4%}); it is not publishable")
    if variant.target == "int8" and LABELS_FILE not in variant.files:
        raise NotApplicableError(f"{folder} is an int8 variant of a tabular ONNX model; publishing those is not "
                                 "supported yet (roost serve serves tabular models as XGBoost trees)")
    return variant


def _serving_recipe(name: str, version: str, description: str, config: dict[str, Any], topics: tuple[str, str],
                    what: str, run: list[str], files: list[str], setenv: dict[str, str] | None = None) -> str:
    """A serving component's recipe: its topics in the configuration and its pub/sub policy, one Run step."""
    request, result = topics
    lifecycle: dict[str, Any] = {"Setenv": setenv} if setenv else {}
    lifecycle["Run"] = " ".join(run)
    recipe = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "ComponentType": "aws.greengrass.generic",
        "ComponentDescription": description,
        "ComponentPublisher": "Roost",
        "ComponentConfiguration": {"DefaultConfiguration": {
            "requestTopic": request, "resultTopic": result, **config,
            "accessControl": {"aws.greengrass.ipc.pubsub": {f"{name}:pubsub:1": {
                "policyDescription": f"Receive {what} requests, publish results and replies.",
                "operations": ["aws.greengrass#SubscribeToTopic", "aws.greengrass#PublishToTopic"],
                "resources": [request, result, "roost/reply/*"],
            }}},
        }},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": lifecycle,
            "Artifacts": [{"URI": f"s3://roost-variants/{name}/{version}/{file}"} for file in files],
        }],
    }
    return "---\n" + yaml.safe_dump(recipe, sort_keys=False, width=120)


def variant_recipe(variant: Variant, name: str, version: str) -> str:
    """The recipe (YAML) of the component serving ``variant``."""
    files = sorted([*variant.files, VARIANT_FILE])
    r = variant.report
    description = (f"A {variant.target} variant of {Path(variant.source['path']).name} (sha256 "
                   f"{variant.source['sha256'][:12]}), validated on {r.rows} rows: {r.metric} {r.metric_before:.6g} -> "
                   f"{r.metric_after:.6g} (gate {r.max_regression:.4g}, passed; {r.measured_against}), "
                   f"{r.size_bytes} bytes. The report is the artifact variant.json.")
    topics = "--request-topic {configuration:/requestTopic} --result-topic {configuration:/resultTopic}"
    if LABELS_FILE in variant.files:
        return _serving_recipe(name, version, description, {"topK": 5}, ("local/image/inference", "local/image/result"),
                               "image", ["roost serve --image-model {artifacts:path}",
                                         f"--name {name} --version {version}",
                                         "--allowed-dir {kernel:rootPath}/packages/artifacts/com.roost.ImageRequester",
                                         "--top-k {configuration:/topK}", topics], files)
    tree_model = "model.json" if "model.json" in variant.files else str(variant.report.details.get("tree_model"))
    engine = "compiled" if variant.target == "compiled" else "xgboost"
    return tabular_recipe(name, version, description, tree_model, files, engine=engine)


def tabular_recipe(name: str, version: str, description: str, model_file: str, files: list[str], *,
                   engine: str = "xgboost", configurable_engine: bool = False) -> str:
    """The recipe (YAML) of a component serving the tabular model artifact ``model_file`` with ``roost serve``
    on ``local/inference``; ``configurable_engine`` makes the engine the configuration's ``engine`` (default
    ``engine``), as in the sample WineQuality recipe."""
    topics = "--request-topic {configuration:/requestTopic} --result-topic {configuration:/resultTopic}"
    config: dict[str, Any] = {"maxBatch": 64}
    if configurable_engine:
        config["engine"] = engine
    chosen = "{configuration:/engine}" if configurable_engine else engine
    return _serving_recipe(name, version, description, config, ("local/inference", "local/result"),
                           "inference", [f"roost serve --model {{artifacts:path}}/{model_file} --engine {chosen}",
                                         f"--name {name} --version {version} --max-batch {{configuration:/maxBatch}}",
                                         topics], files, setenv={"ROOST_SERVE_CACHE": "{work:path}/cache"})


def write_recipe(variant: Variant, name: str, version: str, folder: Path | None = None) -> Path:
    """Write :func:`variant_recipe` to a file (in a new temporary folder unless ``folder``)."""
    where = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="roost-variant-recipe-"))
    path = where / f"{name}-{version}.yaml"
    path.write_text(variant_recipe(variant, name, version))
    return path
