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
from typing import Annotated

import typer

from roost.cli.hub import HubOpt, TokenOpt, admin_client
from roost.cli.output import EXIT_FAILED, console, emit_json, err_console, handle_errors, table

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
    hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False,
) -> None:
    """Publish a variant as a component version (model files + variant.json + a serving recipe).

    Only a variant whose report passed its gate is published; there is no --force.
    """
    from roost.learn.publish import check_publishable, write_recipe

    variant = check_publishable(variant_dir)
    files = {name: variant_dir / name for name in [*variant.files, "variant.json"]}
    scratch = Path(tempfile.mkdtemp(prefix="roost-variant-"))
    try:
        recipe = write_recipe(variant, component, version, scratch)
        with admin_client(hub, token) as client:
            result = client.publish_component(recipe, files)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if as_json:
        emit_json(result.model_dump(mode="json"))
        return
    console.print(f"published [bold]{result.name}@{result.version}[/] ({len(result.artifacts)} artifact(s)): the "
                  f"{variant.target} variant of {variant.source['path']}")
