"""`roost component list|details|restart|stop|metrics|pause|resume` (this device) and `roost component
publish` (a hub)."""

from __future__ import annotations

import json
import os
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
    # A paused component is RUNNING (Greengrass has no paused state); the agent says it is frozen and how.
    table("Components", ["name", "version", "state"],
          [(c["componentName"], c["version"], styled(c["state"]) + (f" (paused: {c['paused']})" if c.get("paused")
                                                                    else "")) for c in comps])


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


@app.command("pause")
@handle_errors
def pause(name: str, root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Freeze a running component's processes (PauseComponent; cgroup freezer, else SIGSTOP)."""
    local.call(root, "PauseComponent", {"componentName": name})
    emit_json({"componentName": name, "paused": True}) if as_json else console.print(f"{name} paused")


@app.command("resume")
@handle_errors
def resume(name: str, root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Thaw a paused component (ResumeComponent)."""
    local.call(root, "ResumeComponent", {"componentName": name})
    emit_json({"componentName": name, "paused": False}) if as_json else console.print(f"{name} resumed")


@app.command("show")
@handle_errors
def show(name: str, version: str, hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """A version published at a hub: its artifacts and, for a model, its validation report."""
    with admin_client(hub, token) as client:
        info = client.component(name, version)
    if as_json:
        emit_json(info)
        return
    table(f"{name} {version}", ["file", "size", "sha256"],
          [(a["file"], f"{a['size']:,}", str(a["sha256"])[:16]) for a in info.get("artifacts", [])], ids=())
    validation = info.get("validation")
    if validation:
        from roost.cli.model import _validation_rows

        table("validation", ["", "value"], _validation_rows(validation), ids=())
    else:
        console.print("no validation report (attach one with roost model validate)")


@app.command("publish")
@handle_errors
def publish(directory: Annotated[Path | None, typer.Argument(help="A folder holding one recipe file and its "
                                                                  "artifact folder (instead of --recipe/--artifacts).")]
            = None,
            hub: HubOpt = None, token: TokenOpt = None,
            recipe: Annotated[Path | None, typer.Option("--recipe", help="Recipe file (YAML or JSON).")] = None,
            artifacts: Annotated[Path | None, typer.Option("--artifacts", help=(
                "The artifact folder: every file in it is published. DIR/NAME/VERSION/ (the local-deployment "
                "layout) when that folder exists, else DIR itself."))] = None,
            validation: Annotated[Path | None, typer.Option("--validation", help=(
                "A model version's validation report (JSON, as GET .../validation answers) to attach."))] = None,
            as_json: JsonOpt = False) -> None:
    """Publish a component version (recipe + its whole artifact folder) to a hub."""
    if recipe is None and directory is not None:
        found = sorted(p for p in directory.iterdir() if p.suffix.lower() in (".yaml", ".yml", ".json"))
        if len(found) != 1:
            raise InvalidInputError(f"{directory} must hold exactly one recipe file (found {len(found)}); "
                                    "use --recipe FILE", code="INVALID_ARGUMENT")
        recipe, artifacts = found[0], artifacts or directory
    if recipe is None:
        raise InvalidInputError("give --recipe FILE (and --artifacts DIR) or a folder", code="INVALID_ARGUMENT")
    _publish(recipe, artifacts, hub, token, as_json, validation)


def artifact_folder(artifacts_dir: Path, name: str, version: str) -> tuple[Path, str]:
    """The folder whose every file is published, and its layout's name.

    ``DIR/NAME/VERSION/`` when that folder exists (how ``deployment create --artifact-dir`` lays
    artifacts out; it is specific to this version, so it wins), else ``DIR`` itself (flat).
    """
    nested = artifacts_dir / name / version
    if nested.is_dir():
        return nested, "DIR/NAME/VERSION/"
    return artifacts_dir, "flat DIR/"


def collect_artifacts(folder: Path, recipe_file: Path, where: str, *, max_files: int | None = None,
                      max_bytes: int | None = None) -> tuple[dict[str, Path], list[str]]:
    """Every file of ``folder`` by relative path (``lib/greet.py``), checked as a local deployment checks
    its folder (:func:`roost.artifact_folder.scan_folder`); and the paths skipped (the recipe file).

    A link inside the folder to a file inside it is published as that file's content; a link to a
    folder is refused (the hub stores files). Empty folders are not published. The limits are the
    local side's (:data:`~roost.artifact_folder.MAX_FOLDER_FILES`, :data:`~roost.artifact_folder.MAX_FOLDER_BYTES`).
    """
    from roost.artifact_folder import MAX_FOLDER_BYTES, MAX_FOLDER_FILES, scan_folder
    from roost.hub.names import check_artifact_path

    if not folder.is_dir():
        raise InvalidInputError(f"{where}: the artifact folder {folder} does not exist or is not a folder",
                                code="ARTIFACT_MISSING")
    recipe_real = os.path.realpath(recipe_file)
    files: dict[str, Path] = {}
    skipped: list[str] = []
    total = 0
    limit_files = MAX_FOLDER_FILES if max_files is None else max_files
    limit_bytes = MAX_FOLDER_BYTES if max_bytes is None else max_bytes
    for entry in scan_folder(where, folder, error=InvalidInputError, max_files=limit_files, max_bytes=limit_bytes):
        if entry.kind == "dir":
            continue
        if entry.kind == "link" and os.path.isdir(entry.target):
            raise InvalidInputError(
                f"{where}: {entry.rel} in the artifact folder {folder} is a symlink to the folder {entry.target}; "
                "the hub stores files only: replace the link with the files, or pack them into a ZIP artifact",
                code="ARTIFACT_UNSAFE_FILE")
        if entry.kind == "file" and os.path.realpath(entry.src) == recipe_real:
            skipped.append(entry.rel)
            continue
        check_artifact_path(entry.rel)
        if '"' in entry.rel:
            raise InvalidInputError(f"{where}: artifact path {entry.rel!r} contains '\"', which an upload cannot "
                                    "carry; rename the file", code="INVALID_PATH")
        total += entry.size
        if total > limit_bytes:
            raise InvalidInputError(f"{where}: the artifact folder {folder} holds more than {limit_bytes} bytes",
                                    code="ARTIFACT_FOLDER_TOO_LARGE")
        files[entry.rel] = Path(entry.target if entry.kind == "link" else entry.src)
    return files, skipped


def _publish(recipe_file: Path, artifacts_dir: Path | None, hub: str | None, token: str | None,
            as_json: bool, validation_file: Path | None = None) -> None:
    """Check the recipe here, gather every file of the artifact folder, upload all with a progress bar."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

    from roost.recipe import load_recipe

    recipe = load_recipe(recipe_file)
    validation = None
    if validation_file is not None:
        from pydantic import ValidationError

        from roost.hub.contract import ModelValidation
        try:
            validation = ModelValidation.model_validate_json(validation_file.read_bytes())
        except (OSError, ValidationError) as err:
            raise InvalidInputError(f"{validation_file} is not a validation report: {err}",
                                    code="VALIDATION_REPORT_INCONSISTENT") from err
    where = f"{recipe.name}@{recipe.version}"
    wanted = sorted({a.file_name for m in recipe.manifests for a in m.artifacts if a.scheme != "docker"})
    files: dict[str, Path] = {}
    folder = artifacts_dir
    if artifacts_dir is not None:
        folder, layout = artifact_folder(artifacts_dir, recipe.name, recipe.version)
        files, skipped = collect_artifacts(folder, recipe_file, where)
        note = f"{where}: publishing {len(files)} file(s) of {folder} (layout {layout})"
        if skipped:
            note += f"; skipped the recipe file {', '.join(skipped)}"
        err_console.print(note, highlight=False, soft_wrap=True)
    missing = [name for name in wanted if name not in files]
    if missing:
        if artifacts_dir is None:
            where_missing = "(no --artifacts DIR given)"
        else:
            where_missing = f"at the top of the artifact folder {folder}"
            if folder == artifacts_dir:
                where_missing += (f" (the local-deployment layout DIR/NAME/VERSION/ would be "
                                  f"{artifacts_dir / recipe.name / recipe.version}, which does not exist)")
        raise InvalidInputError(f"{where}: artifact file(s) named by the recipe's URIs not found "
                                f"{where_missing}: {', '.join(missing)}", code="ARTIFACT_MISSING")
    total = sum(p.stat().st_size for p in files.values())
    with admin_client(hub, token) as client:
        if total and not as_json:
            with Progress(TextColumn("uploading {task.description}"), BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), TimeElapsedColumn(), console=err_console,
                          transient=True) as progress:
                task = progress.add_task(where, total=total)
                result = client.publish_component(recipe_file, files,
                                                  lambda n: progress.advance(task, n))
        else:
            result = client.publish_component(recipe_file, files)
        if validation is not None:
            result.validation = client.set_validation(result.name, result.version, validation)
    if as_json:
        emit_json(result.model_dump(mode="json"))
        return
    console.print(f"published [bold]{result.name}@{result.version}[/] ({len(result.artifacts)} artifact(s))")
    for art in result.artifacts:
        console.print(f"  {art.file}  {art.size} bytes  sha256 {art.sha256}", highlight=False, soft_wrap=True)


__all__ = ["app", "typer"]
