"""`roost samples train-wine`: the wine-quality model of the sample inference component."""

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
