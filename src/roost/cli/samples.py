"""`roost samples train-wine|wine-holdout|wine-mlp`: the sample models and their validation data."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated

import typer

from roost.cli.output import console, emit_json, handle_errors

app = typer.Typer(help="Sample models and data used by the sample components.", no_args_is_help=True)


@app.command("train-wine")
@handle_errors
def train_wine(out: Annotated[Path, typer.Option("--out", help="Where to write the XGBoost JSON model.")],
               seed: Annotated[int, typer.Option("--seed")] = 2,
               compile_cache: Annotated[Path | None, typer.Option(
                   "--compile-cache", help="Also compile the model (treelite → tl2cgen) into this cache.")] = None,
               force: Annotated[bool, typer.Option("--force", help="Retrain even if OUT exists.")] = False,
               as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Train the deterministic wine-quality regressor on the vendored UCI data (13 features)."""
    from roost.serve.wine import train_wine as train

    out.parent.mkdir(parents=True, exist_ok=True)
    trained = False
    if force or not out.exists():
        train(out, seed=seed)
        trained = True
    compiled = None
    if compile_cache is not None:
        from roost.serve.backends import compile_model

        compiled = compile_model(out, compile_cache)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    if as_json:
        emit_json({"model": str(out), "sha256": digest, "trained": trained,
                   "compiled": str(compiled) if compiled else None})
    else:
        console.print(f"{'trained' if trained else 'kept'} {out} (sha256 {digest[:16]}…)"
                      + (f"; compiled {compiled}" if compiled else ""))


@app.command("wine-holdout")
@handle_errors
def wine_holdout(out: Annotated[Path, typer.Option("--out", help="Where to write the validation CSV.")],
                 seed: Annotated[int, typer.Option("--seed")] = 2,
                 as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Write the rows train-wine holds out (25 %) as validation data for `roost model optimize --validate`."""
    from roost.learn.validation import write_validation_csv
    from roost.serve.wine import FEATURES, holdout

    x, y = holdout(seed=seed)
    write_validation_csv(out, x, y, FEATURES)
    if as_json:
        emit_json({"data": str(out), "rows": len(x), "label": "quality"})
    else:
        console.print(f"wrote {len(x)} held-out rows (13 features + quality) to {out}")


@app.command("wine-mlp")
@handle_errors
def wine_mlp(out: Annotated[Path, typer.Option("--out", help="Where to write the .onnx model.")],
             seed: Annotated[int, typer.Option("--seed")] = 2,
             as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Build the fp32 ONNX wine regressor (13 -> 256 ReLU -> 1), the sample model of int8 lightening."""
    from roost.learn.wine_mlp import train_wine_mlp

    train_wine_mlp(out, seed=seed)
    if as_json:
        emit_json({"model": str(out), "sha256": hashlib.sha256(out.read_bytes()).hexdigest()})
    else:
        console.print(f"built {out}")


@app.command("wine-classes")
@handle_errors
def wine_classes(out: Annotated[Path, typer.Option("--out", help="Folder for edge.json and centre.json.")],
                 seed: Annotated[int, typer.Option("--seed")] = 2,
                 as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Train the wine-quality classifiers of joint inference: a small edge model and the big centre model."""
    from roost.learn.wine_classes import train_wine_classifier

    models = {size: train_wine_classifier(out / f"{size}.json", size, seed=seed)
              for size in ("edge", "centre")}
    if as_json:
        emit_json({size: {"model": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
                   for size, path in models.items()})
    else:
        for size, path in models.items():
            console.print(f"trained the {size} classifier into {path}")
