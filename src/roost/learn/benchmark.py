"""The benchmark component: each candidate variant's latency, measured on a device, recorded at the hub.

:func:`build_component` (``roost model benchmark``, on the operator's machine) writes a component
folder: the candidates' model files (downloaded from the hub, digest-checked), the rows to time
them on (``rows.csv``, in the validation format), ``candidates.json`` naming which file is which
component version and engine, and a recipe whose Run is ``roost model benchmark-run``. Deployed to
a device, :func:`run` (on the device) loads each candidate with the engine it is served with, times
``calls`` single-row predictions (the median, as :func:`roost.learn.validation.measure_latency_us`)
and posts the measurements with the agent's device credential (read from ``ROOT/hub.json``, which is
why the step runs with ``RequiresPrivilege`` when the agent runs as root). The hub files them under
the device's class; the component then exits (state FINISHED).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from roost.learn.errors import ModelLoadError, VariantError
from roost.learn.validation import DEFAULT_LABEL, load_validation, measure_latency_us
from roost.serve.backends import CompiledTreesBackend, OnnxTabularBackend, XGBoostBackend, load_booster
from roost.serve.errors import ModelError

__all__ = ["CANDIDATES_FILE", "ROWS_FILE", "Candidate", "build_recipe", "measure", "run"]

log = logging.getLogger(__name__)

CANDIDATES_FILE: Final = "candidates.json"
ROWS_FILE: Final = "rows.csv"
#: Candidates one benchmark component times at most.
MAX_CANDIDATES: Final = 32
#: Rows kept in ``rows.csv`` (latency is per row: a few hundred rows cycle enough).
MAX_ROWS: Final = 256
ENGINES: Final = ("xgboost", "compiled", "onnx")


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    component: str = Field(..., min_length=1, max_length=128)
    version: str = Field(..., min_length=1, max_length=64)
    #: The model file in the component's folder (a plain file name).
    model: str = Field(..., min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._-]+$")
    engine: str = Field(..., pattern=r"^(xgboost|compiled|onnx)$")


@dataclass(frozen=True)
class Timing:
    candidate: Candidate
    latency_us: float
    calls: int


def engine_of(recipe: dict[str, Any], model_file: str) -> str:
    """The engine a published serving recipe runs its model with (``--engine X`` in its Run), else by file kind."""
    text = json.dumps(recipe)
    for engine in ENGINES:
        if f"--engine {engine}" in text:
            return engine
    return "onnx" if model_file.endswith(".onnx") else "xgboost"


def build_recipe(name: str, version: str, files: list[str], calls: int) -> str:
    artifacts = "".join(f"      - URI: s3://roost-benchmark/{name}/{version}/{f}\n" for f in files)
    return (f'RecipeFormatVersion: "2020-01-25"\nComponentName: {name}\nComponentVersion: "{version}"\n'
            "ComponentDescription: Measures each candidate model's latency on this device and records it at the "
            "hub (roost model recommend).\n"
            "Manifests:\n  - Platform:\n      os: linux\n    Lifecycle:\n      Run:\n"
            f"        Script: roost model benchmark-run --dir {{artifacts:path}} --hub-config "
            f"{{kernel:rootPath}}/hub.json --work {{work:path}} --calls {calls}\n"
            "        RequiresPrivilege: true\n"
            f"    Artifacts:\n{artifacts}")


def write_rows(data: Path, features: list[str], dest: Path, *, label: str = DEFAULT_LABEL) -> int:
    """``rows.csv``: the first :data:`MAX_ROWS` rows of ``data`` (checked against ``features``)."""
    from roost.learn.validation import write_validation_csv

    rows = load_validation(data, features, label=label)
    write_validation_csv(dest, rows.x[:MAX_ROWS], rows.y[:MAX_ROWS], features, label=label)
    return min(rows.rows, MAX_ROWS)


def read_candidates(folder: Path) -> list[Candidate]:
    try:
        raw = json.loads((folder / CANDIDATES_FILE).read_text(encoding="utf-8"))
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_CANDIDATES:
            raise VariantError(f"{folder / CANDIDATES_FILE} must list 1 to {MAX_CANDIDATES} candidates")
        return [Candidate.model_validate(item) for item in raw]
    except (OSError, ValueError, ValidationError) as err:
        raise VariantError(f"{folder / CANDIDATES_FILE} is not a valid candidate list: {err}") from err


def measure(folder: Path, work: Path, *, calls: int = 300) -> list[Timing]:
    """Time each candidate of ``folder`` on its ``rows.csv`` (compiled ones are built in ``work`` first)."""
    folder, work = Path(folder), Path(work)
    out: list[Timing] = []
    for cand in read_candidates(folder):
        model = folder / cand.model
        try:
            _, features = load_booster(model) if cand.engine != "onnx" else (None, None)
            if cand.engine == "xgboost":
                backend: Any = XGBoostBackend(model, nthread=1)
            elif cand.engine == "compiled":
                backend = CompiledTreesBackend(model, work / "compiled", nthread=1)
            else:
                backend = OnnxTabularBackend(model, nthread=1)
        except ModelError as err:
            raise ModelLoadError(f"candidate {cand.component} {cand.version}: {model.name} does not load: "
                                 f"{err.message}") from err
        names = features if features is not None else list(getattr(backend, "feature_names", []) or [])
        rows = load_validation(folder / ROWS_FILE, names)
        latency = measure_latency_us(backend.predict, rows.x, calls=calls)
        log.info("%s %s (%s): %.1f µs per row", cand.component, cand.version, cand.engine, latency)
        out.append(Timing(cand, latency, calls))
    return out


def run(folder: Path, hub_config: Path, work: Path, *, calls: int = 300) -> list[dict[str, Any]]:
    """Measure every candidate and record the measurements at the hub with the device credential."""
    from roost.hub.contract import BenchmarkIn, Measurement
    from roost.hub.device_client import DeviceClient

    try:
        config = json.loads(Path(hub_config).read_text(encoding="utf-8"))
        hub, credential = str(config["hub"]), str(config["credential"])
    except (OSError, ValueError, KeyError) as err:
        raise VariantError(f"{hub_config} holds no hub enrolment (hub, credential): is the agent enrolled?") from err
    timings = measure(folder, work, calls=calls)
    body = BenchmarkIn(measurements=[Measurement(component=t.candidate.component, version=t.candidate.version,
                                                 latency_us=t.latency_us, calls=t.calls, engine=t.candidate.engine)
                                     for t in timings])

    async def send() -> list[dict[str, Any]]:
        client = DeviceClient(hub, credential)
        try:
            return [r.model_dump(mode="json") for r in await client.send_benchmarks(body)]
        finally:
            await client.close()
    records = asyncio.run(send())
    shutil.rmtree(Path(work) / "compiled", ignore_errors=True)
    return records
