"""`roost component list|details|restart|stop|metrics` (this device) and `roost component publish` (a hub)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from roost.cli import local
from roost.cli.agent import JsonOpt, RootOpt
from roost.cli.hub import HubOpt, TokenOpt, admin_client
from roost.cli.output import console, emit_json, err_console, handle_errors, styled, table
from roost.errors import InvalidInputError

app = typer.Typer(help="Inspect and control the components on this device.", no_args_is_help=True)


@app.command("list")
@handle_errors
def list_(root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Every component with its version and state."""
    comps = local.call(root, "ListComponents", {})["components"]
    if as_json:
        emit_json(comps)
        return
    table("Components", ["name", "version", "state"],
          [(c["componentName"], c["version"], styled(c["state"])) for c in comps])


@app.command("details")
@handle_errors
def details(name: str, root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Version, state and configuration of one component."""
    comp = local.call(root, "GetComponentDetails", {"componentName": name})["componentDetails"]
    if as_json:
        emit_json(comp)
        return
    console.print(f"[bold]{comp['componentName']}[/] {comp['version']}  {styled(comp['state'])}")
    console.print_json(json.dumps(comp.get("configuration", {})))


@app.command("restart")
@handle_errors
def restart(name: str, root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Stop and start a component (clears BROKEN)."""
    out = local.call(root, "RestartComponent", {"componentName": name}, timeout=180)
    emit_json(out) if as_json else console.print(out.get("message", "restarted"))


@app.command("stop")
@handle_errors
def stop(name: str, root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Stop a component (Shutdown step, then SIGTERM/SIGKILL)."""
    out = local.call(root, "StopComponent", {"componentName": name}, timeout=180)
    emit_json(out) if as_json else console.print(out.get("message", "stopped"))


@app.command("metrics")
@handle_errors
def metrics(name: Annotated[str | None, typer.Argument(help="Only this component's metrics.")] = None,
            root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """The metrics components reported with PutComponentMetric (latest value, count, sum, min, max)."""
    found = local.call(root, "GetComponentMetrics", {"componentName": name} if name else {})["components"]
    if as_json:
        emit_json(found)
        return
    table("Component metrics", ["component", "metric", "unit", "latest", "count", "sum", "min", "max"],
          [(comp, metric, s["unit"], f"{s['value']:g}", str(s["count"]), f"{s['sum']:g}", f"{s['min']:g}",
            f"{s['max']:g}") for comp, by_name in found.items() for metric, s in by_name.items()])


@app.command("publish")
@handle_errors
def publish(directory: Annotated[Path | None, typer.Argument(help="A folder holding one recipe file and its "
                                                                  "artifacts (instead of --recipe/--artifacts).")]
            = None,
            hub: HubOpt = None, token: TokenOpt = None,
            recipe: Annotated[Path | None, typer.Option("--recipe", help="Recipe file (YAML or JSON).")] = None,
            artifacts: Annotated[Path | None, typer.Option("--artifacts", help=(
                "Folder holding the files the recipe's artifact URIs name: DIR/FILE, or the local-deployment "
                "layout DIR/NAME/VERSION/FILE."))] = None,
            as_json: JsonOpt = False) -> None:
    """Publish a component version (recipe + artifacts) to a hub."""
    if recipe is None and directory is not None:
        found = sorted(p for p in directory.iterdir() if p.suffix.lower() in (".yaml", ".yml", ".json"))
        if len(found) != 1:
            raise InvalidInputError(f"{directory} must hold exactly one recipe file (found {len(found)}); "
                                    "use --recipe FILE", code="INVALID_ARGUMENT")
        recipe, artifacts = found[0], artifacts or directory
    if recipe is None:
        raise InvalidInputError("give --recipe FILE (and --artifacts DIR) or a folder", code="INVALID_ARGUMENT")
    _publish(recipe, artifacts, hub, token, as_json)


def _find_artifacts(artifacts_dir: Path | None, name: str, version: str, wanted: list[str]
                    ) -> tuple[dict[str, Path], list[str]]:
    """Each wanted file in DIR itself, else in DIR/NAME/VERSION/ (how ``deployment create --artifact-dir``
    lays artifacts out); and the files found in neither."""
    files: dict[str, Path] = {}
    missing: list[str] = []
    for file_name in wanted:
        candidates = [] if artifacts_dir is None else [artifacts_dir / file_name,
                                                        artifacts_dir / name / version / file_name]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            missing.append(file_name)
        else:
            files[file_name] = found
    return files, missing


def _publish(recipe_file: Path, artifacts_dir: Path | None, hub: str | None, token: str | None,
            as_json: bool) -> None:
    """Check the recipe here, find each artifact its URIs name in DIR, upload all with a progress bar."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

    from roost.recipe import load_recipe

    recipe = load_recipe(recipe_file)
    wanted = sorted({a.file_name for m in recipe.manifests for a in m.artifacts if a.scheme != "docker"})
    files, missing = _find_artifacts(artifacts_dir, recipe.name, recipe.version, wanted)
    if missing:
        if artifacts_dir is None:
            where = "(no --artifacts DIR given)"
        else:
            where = (f"in {artifacts_dir} nor in {artifacts_dir / recipe.name / recipe.version} (the local-deployment "
                     "layout DIR/NAME/VERSION/)")
        raise InvalidInputError(f"{recipe.name}@{recipe.version}: artifact file(s) named by the recipe's URIs not "
                                f"found {where}: {', '.join(missing)}", code="ARTIFACT_MISSING")
    total = sum(p.stat().st_size for p in files.values())
    with admin_client(hub, token) as client:
        if total and not as_json:
            with Progress(TextColumn("uploading {task.description}"), BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), TimeElapsedColumn(), console=err_console,
                          transient=True) as progress:
                task = progress.add_task(f"{recipe.name}@{recipe.version}", total=total)
                result = client.publish_component(recipe_file, files,
                                                  lambda n: progress.advance(task, n))
        else:
            result = client.publish_component(recipe_file, files)
    if as_json:
        emit_json(result.model_dump(mode="json"))
        return
    console.print(f"published [bold]{result.name}@{result.version}[/] ({len(result.artifacts)} artifact(s))")
    for art in result.artifacts:
        console.print(f"  {art.file}  {art.size} bytes  sha256 {art.sha256}", highlight=False, soft_wrap=True)


__all__ = ["app", "typer"]
