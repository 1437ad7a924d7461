"""`roost model optimize|show|publish`: lighten a model, read a variant's report, publish a variant.

Exit codes: 0 a publishable variant was written (or shown, or published); 1 the candidate failed its
gate (its report is printed and it is kept, marked, in ``OUT.rejected/``), or a transformation
failed; 3 bad input (model, data, ``--to``, ``--max-regression``, a variant folder); 4 the model file
does not exist; 7 the output folder exists, or publishing a variant that failed its gate.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from roost.cli.hub import HubOpt, TokenOpt, admin_client
from roost.cli.output import EXIT_FAILED, console, emit_json, err_console, handle_errors, table
from roost.errors import InvalidInputError

app = typer.Typer(help="Lighten models (int8, compiled, pruned) behind validation gates; publish variants.",
                  no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("optimize")
@handle_errors
def optimize(
    model: Annotated[Path, typer.Argument(help="XGBoost model (.json/.ubj) or .onnx.")],
    to: Annotated[str, typer.Option("--to", help="int8 (ONNX) | compiled (XGBoost) | pruned (XGBoost)")],
    validate: Annotated[Path, typer.Option("--validate", help=(
        "Held-out CSV: one column per model feature and the label column."))],
    max_regression: Annotated[str | None, typer.Option("--max-regression", help=(
        "The gate: the largest relative loss of the metric allowed, a fraction (default 0.01 = 1 %)."))] = None,
    out: Annotated[Path | None, typer.Option("--out", help=(
        "Folder of the variant (default ./<model>-<target>); a failed candidate goes to OUT.rejected."))] = None,
    label: Annotated[str, typer.Option("--label", help="The label column of the validation CSV.")] = "quality",
    int8_mode: Annotated[str, typer.Option("--int8-mode", help="dynamic | static (calibrated, QDQ)")] = "dynamic",
    calibrate: Annotated[Path | None, typer.Option("--calibrate", help=(
        "CSV for static int8 calibration (the validation schema; default: the validation rows)."))] = None,
    latency_calls: Annotated[int, typer.Option("--latency-calls", min=1, max=100_000, help=(
        "Single-row calls per latency median."))] = 300,
    as_json: JsonOpt = False,
) -> None:
    """Make a lighter variant of MODEL and validate it; keep it publishable only if it passes its gate."""
    from roost.learn.lighten import describe
    from roost.learn.lighten import optimize as run

    target = out if out is not None else Path.cwd() / f"{model.stem}-{to}"
    result = run(model, to, validate, out=target, max_regression=max_regression, label=label, int8_mode=int8_mode,
                 calibrate=calibrate, latency_calls=latency_calls)
    if as_json:
        emit_json(result.to_json())
    else:
        table(f"{to} variant of {model}", ["", "value"], describe(result), ids=())
        if not result.passed:
            err_console.print(f"[bold red]gate failed[/]: not publishable; the candidate is kept, marked "
                              f"(rejected.json), in {result.path}", highlight=False)
    if not result.passed:
        raise typer.Exit(EXIT_FAILED)


@app.command("show")
@handle_errors
def show(variant_dir: Annotated[Path, typer.Argument(help="A variant folder (variant.json).")],
         as_json: JsonOpt = False) -> None:
    """A variant's record and report, its files checked against their sha256."""
    from roost.learn.lighten import read_variant

    variant = read_variant(variant_dir)
    if as_json:
        emit_json(variant.model_dump(mode="json"))
        return
    r = variant.report
    table(f"variant {variant_dir}", ["", "value"], [
        ("target", variant.target), ("source", f"{variant.source['path']} ({variant.source['sha256'][:12]})"),
        (r.metric, f"{r.metric_before:.6g} -> {r.metric_after:.6g} (regression {r.regression:+.4%}, gate "
                   f"{r.max_regression:.4%}: {'passed' if r.passed else 'FAILED'})"),
        ("size", f"{r.size_bytes_before:,} -> {r.size_bytes:,} bytes"),
        ("latency", f"{r.latency_us_before:.1f} -> {r.latency_us:.1f} µs"),
        ("publishable", str(variant.publishable)),
    ], ids=())


@app.command("publish")
@handle_errors
def publish(
    variant_dir: Annotated[Path, typer.Argument(help="A variant folder written by roost model optimize.")],
    component: Annotated[str, typer.Option("--component", help="Component name, e.g. com.example.WinePruned.")],
    version: Annotated[str, typer.Option("--version", help="Component version (semver).")],
    validate: Annotated[Path | None, typer.Option("--validate", help=(
        "Held-out CSV: measure the variant on it and attach the report to the version at the hub (the "
        "deployment gate compares versions validated on the same file)."))] = None,
    label: Annotated[str, typer.Option("--label", help="The label column of the validation CSV.")] = "quality",
    hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Publish a variant as a component version (model files + variant.json + a serving recipe).

    Only a variant whose report passed its gate is published; there is no --force.
    """
    from roost.learn.publish import check_publishable, write_recipe

    variant = check_publishable(variant_dir)
    report = None
    if validate is not None:
        from roost.learn.assess import assess, with_variant

        tree = "model.json" if "model.json" in variant.files else variant.model_file
        report = with_variant(assess(variant_dir / tree, validate, label=label), variant).to_report()
    files = {name: variant_dir / name for name in [*variant.files, "variant.json"]}
    scratch = Path(tempfile.mkdtemp(prefix="roost-variant-"))
    try:
        recipe = write_recipe(variant, component, version, scratch)
        with admin_client(hub, token) as client:
            result = client.publish_component(recipe, files)
            if report is not None:
                from roost.hub.contract import ModelValidation

                result.validation = client.set_validation(component, version, ModelValidation.model_validate(report))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if as_json:
        emit_json(result.model_dump(mode="json"))
        return
    console.print(f"published [bold]{result.name}@{result.version}[/] ({len(result.artifacts)} artifact(s)): the "
                  f"{variant.target} variant of {variant.source['path']}")


_MODEL_FILES = ("model.json", "model.ubj", "model.onnx")


def _model_artifact(component: dict[str, Any], name: str, version: str) -> str:
    files = [a["file"] for a in component.get("artifacts", [])]
    for wanted in _MODEL_FILES:
        if wanted in files:
            return wanted
    candidates = [f for f in files if f.endswith((".json", ".ubj", ".onnx")) and f != "variant.json"]
    if len(candidates) == 1:
        return str(candidates[0])
    raise InvalidInputError(f"{name} {version} has no model artifact Roost can validate (model.json, model.ubj, "
                            f"model.onnx; artifacts: {', '.join(files) or 'none'}); name it with --model-file",
                            code="MODEL_UNREADABLE")


@app.command("validate")
@handle_errors
def validate_cmd(
    component: Annotated[str, typer.Argument(help="NAME=VERSION of a model version published at the hub.")],
    data: Annotated[Path, typer.Option("--data", help="Held-out CSV: the model's feature columns and the label.")],
    label: Annotated[str, typer.Option("--label", help="The label column of the validation CSV.")] = "quality",
    model_file: Annotated[str | None, typer.Option("--model-file", help=(
        "The version's model artifact (default: model.json, model.ubj or model.onnx)."))] = None,
    latency_calls: Annotated[int, typer.Option("--latency-calls", min=1, max=100_000, help=(
        "Single-row calls per latency median."))] = 300,
    hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """(Re)compute a version's validation report on a held-out CSV and attach it at the hub.

    The model file is fetched from the hub (digest-checked); the metric, size and this machine's
    latency (under its device class) are measured here.
    """
    from roost.hub.contract import ModelValidation
    from roost.learn.assess import assess

    name, sep, version = component.partition("=")
    if not sep or not name or not version:
        raise InvalidInputError(f"expected NAME=VERSION, got {component!r}", code="INVALID_ARGUMENT")
    scratch = Path(tempfile.mkdtemp(prefix="roost-validate-"))
    try:
        with admin_client(hub, token) as client:
            info = client.component(name, version)
            file_name = model_file or _model_artifact(info, name, version)
            local = scratch / Path(file_name).name
            client.download_artifact(name, version, file_name, local)
            measured = assess(local, data, label=label, calls=latency_calls)
            previous = info.get("validation") or {}
            report = ModelValidation.model_validate(measured.to_report())
            if previous.get("variant"):  # the variant's own gate stays with the version
                report.variant = ModelValidation.model_validate(previous).variant
            stored = client.set_validation(name, version, report)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if as_json:
        emit_json({"component": f"{name}={version}", "validation": stored.model_dump(mode="json")})
        return
    table(f"validation of {name} {version}", ["", "value"], _validation_rows(stored.model_dump(mode="json")), ids=())


def _validation_rows(v: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [(str(v["metric"]), f"{v['value']:.6g} on {v['rows']} rows of {v['data']} ({str(v['data_sha256'])[:12]})"),
            ("size", f"{v['size_bytes']:,} bytes")]
    rows += [(f"latency ({klass})", f"{micros:.1f} µs") for klass, micros in sorted(v.get("latency_us", {}).items())]
    gate = v.get("variant")
    if gate:
        rows.append(("variant gate", f"regression {gate['regression']:+.4%} (gate {gate['max_regression']:.4%}): "
                                     f"{'passed' if gate['passed'] else 'FAILED'}"))
    return rows


@app.command("recommend")
@handle_errors
def recommend(
    device: Annotated[str, typer.Option("--device", help="The device to choose a variant for.")],
    max_latency_ms: Annotated[float | None, typer.Option("--max-latency-ms", help=(
        "Largest latency per row allowed on the device's class (ms)."))] = None,
    min_metric: Annotated[float | None, typer.Option("--min-metric", help=(
        "The metric the variant must reach: accuracy at least, RMSE at most."))] = None,
    component: Annotated[list[str] | None, typer.Option("--component", help=(
        "Only these components' versions are candidates (repeatable; default: every validated version)."))] = None,
    hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """The variant that fits a device best (measured latency on its class, validation metric), with why."""
    with admin_client(hub, token) as client:
        answer = client.recommend(device, max_latency_ms=max_latency_ms, min_metric=min_metric,
                                  components=component or [])
    if as_json:
        emit_json(answer.model_dump(mode="json"))
        return
    table(f"candidates for {device} ({answer.device_class})", ["component", "version", "metric", "latency", "why"], [
        (c.component, c.version, "-" if c.value is None else f"{c.metric} {c.value:.4g}",
         "-" if c.latency_us is None else f"{c.latency_us / 1000:.3g} ms ({c.devices} device(s))", c.why)
        for c in answer.candidates], ids=())
    console.print(f"chosen: [bold]{answer.chosen}[/]")


@app.command("benchmark")
@handle_errors
def benchmark(
    candidate: Annotated[list[str], typer.Option("--candidate", help="NAME=VERSION of a published variant "
                                                                     "(repeatable).")],
    rows: Annotated[Path, typer.Option("--rows", help="CSV in the validation format to time the models on.")],
    name: Annotated[str, typer.Option("--component", help="The benchmark component's name.")] =
    "com.roost.ModelBenchmark",
    version: Annotated[str, typer.Option("--version", help="The benchmark component's version.")] = "1.0.0",
    label: Annotated[str, typer.Option("--label", help="The label column of the rows CSV.")] = "quality",
    calls: Annotated[int, typer.Option("--calls", min=1, max=100_000, help="Single-row calls per median.")] = 300,
    hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Publish the benchmark component for these candidates; deploy it to a device of each class to measure.

    Then `roost deployment create --hub URL --target device:NAME --component NAME=VERSION`; each
    device records its measurements at the hub, under its device class (see `roost model recommend`).
    """
    import json

    from roost.learn.benchmark import CANDIDATES_FILE, ROWS_FILE, build_recipe, engine_of, write_rows
    from roost.serve.backends import load_booster

    pairs = []
    for item in candidate:
        cname, sep, cversion = item.partition("=")
        if not sep or not cname or not cversion:
            raise InvalidInputError(f"--candidate expects NAME=VERSION, got {item!r}", code="INVALID_ARGUMENT")
        pairs.append((cname, cversion))
    scratch = Path(tempfile.mkdtemp(prefix="roost-benchmark-"))
    try:
        listed: list[dict[str, str]] = []
        features: list[str] | None = None
        with admin_client(hub, token) as client:
            for i, (cname, cversion) in enumerate(pairs):
                info = client.component(cname, cversion)
                file_name = _model_artifact(info, cname, cversion)
                local = f"c{i}-{Path(file_name).name}"
                client.download_artifact(cname, cversion, file_name, scratch / local)
                if features is None and not local.endswith(".onnx"):
                    features = load_booster(scratch / local)[1]
                listed.append({"component": cname, "version": cversion, "model": local,
                               "engine": engine_of(info.get("recipe") or {}, file_name)})
            if features is None:
                raise InvalidInputError("the candidates carry no feature names (ONNX only): add an XGBoost "
                                        "candidate or name the features in the model", code="INVALID_ARGUMENT")
            write_rows(rows, features, scratch / ROWS_FILE, label=label)
            (scratch / CANDIDATES_FILE).write_text(json.dumps(listed, indent=1), encoding="utf-8")
            files = [CANDIDATES_FILE, ROWS_FILE, *(c["model"] for c in listed)]
            recipe = scratch / "recipe.yaml"
            recipe.write_text(build_recipe(name, version, files, calls), encoding="utf-8")
            result = client.publish_component(recipe, {f: scratch / f for f in files})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if as_json:
        emit_json({"component": f"{result.name}={result.version}", "candidates": listed})
        return
    console.print(f"published [bold]{result.name}@{result.version}[/] timing {len(listed)} candidate(s); deploy it "
                  f"to a device of each class: roost deployment create --hub URL --target device:NAME "
                  f"--component {result.name}={result.version}")


@app.command("benchmark-run", hidden=True)
@handle_errors
def benchmark_run(
    folder: Annotated[Path, typer.Option("--dir", help="The benchmark component's artifact folder.")],
    hub_config: Annotated[Path, typer.Option("--hub-config", help="The agent's hub.json.")],
    work: Annotated[Path, typer.Option("--work", help="A folder for compiled models.")],
    calls: Annotated[int, typer.Option("--calls", min=1, max=100_000)] = 300,
    as_json: JsonOpt = False,
) -> None:
    """Run by the benchmark component on a device: time each candidate and record it at the hub."""
    from roost.learn.benchmark import run

    records = run(folder, hub_config, work, calls=calls)
    if as_json:
        emit_json(records)
        return
    for r in records:
        console.print(f"{r['component']} {r['version']} ({r['engine']}): {r['latency_us']:.1f} µs per row on "
                      f"{r['device_class']}", highlight=False)
