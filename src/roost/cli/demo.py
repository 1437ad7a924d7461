"""`roost demo`: the whole system on one machine (:mod:`roost.demo`); `roost demo --quick`: an agent in a fresh
root, the sample inference components deployed, their logs shown.

The four samples are the original system's scenario, on Roost: the wine-quality model served as a
component (``com.roost.WineQuality``, trained at Install from the vendored UCI data) and a
consumer that sends it records and logs the predictions; an image classifier (EfficientNet-Lite0,
int8 ONNX) and a requester that asks it about an image and logs the label.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from roost.agent.daemon import start_detached, stop_agent
from roost.agent.paths import AgentPaths
from roost.cli import local
from roost.cli.output import console, emit_json, exit_code_for, handle_errors, styled, table
from roost.errors import RoostError
from roost.samples import ARTIFACTS, RECIPES

WINE, CONSUMER = "com.roost.WineQuality", "com.roost.WineConsumer"
CLASSIFIER, REQUESTER = "com.roost.ImageClassifier", "com.roost.ImageRequester"


def _results(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text(errors="replace").splitlines() if "] result: " in line]


@handle_errors
def demo(quick: Annotated[bool, typer.Option("--quick", help="Only the device demo: one agent, the samples over "
                                                            "local pub/sub.")] = False,
         rounds: Annotated[int, typer.Option("--rounds", min=1, max=1000, help="Requests each requester sends.")]
         = 3,
         interval: Annotated[float, typer.Option("--interval", min=0.05, help="--quick: seconds between requests.")]
         = 1.0,
         root: Annotated[Path | None, typer.Option("--root", help="Folder for everything (default: a fresh temp dir, "
                                                                  "removed at the end).")] = None,
         keep: Annotated[bool, typer.Option("--keep", help="Full demo: leave it up until Ctrl-C. --quick: leave the "
                                                           "root folder in place.")] = False,
         linger: Annotated[float, typer.Option("--linger", min=0, help="Full demo: seconds the endpoints stay up "
                                                                       "at the end.")] = 60.0,
         windows: Annotated[int, typer.Option("--windows", min=2, max=100000, help="Full demo: windows each "
                                                                                 "cluster stream sends.")] = 20,
         fl_rounds: Annotated[int, typer.Option("--fl-rounds", min=1, max=100, help="Full demo: federated "
                                                                                     "rounds.")] = 4,
         ssh: Annotated[bool, typer.Option("--ssh/--no-ssh", help="Full demo: register one device over SSH when an "
                                                                  "sshd can be started here.")] = True,
         as_json: Annotated[bool, typer.Option("--json", help="No progress; print one JSON summary.")] = False,
         ) -> None:
    """The whole system on one machine: a hub, three agents, a staged rollout, the edge cluster, federated
    learning, the metrics and the console (--quick: the device-only demo)."""
    if quick:
        _quick(rounds, interval, root, keep, as_json)
        return
    from roost.demo.run import Options, run_demo
    from roost.demo.steps import DemoStepError

    try:
        summary = run_demo(Options(requests=rounds, windows=windows, fl_rounds=fl_rounds, linger=linger, keep=keep,
                                   ssh=ssh, base=root), console, quiet=as_json)
    except DemoStepError as err:
        if as_json:  # the error as every command prints it, with the steps that did run
            emit_json({"error": {"code": err.code, "message": err.message}, **err.summary})
            raise typer.Exit(exit_code_for(err)) from err
        raise
    if as_json:
        emit_json(summary)


def _quick(rounds: int = 3, interval: float = 1.0, root: Path | None = None, keep: bool = False,
           as_json: bool = False) -> None:
    """Start an agent, deploy the sample inference components, show requests and results, stop."""
    def say(*args: Any, **kwargs: Any) -> None:
        if not as_json:
            console.print(*args, **kwargs)

    owned = root is None
    root_dir = Path(tempfile.mkdtemp(prefix="roost-demo-")) if root is None else root
    paths = AgentPaths.at(root_dir)
    sender_conf = {"MERGE": {"msgCountLimit": rounds, "intervalSeconds": interval}}
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                      transient=True, disable=as_json) as prog:
            task = prog.add_task("starting the agent")
            t0 = time.monotonic()
            pid = start_detached(paths, "demo-device")
            say(f"[green]✓[/] agent started (pid {pid}) in {time.monotonic() - t0:.2f} s on {paths.root}")
            prog.update(task, description="deploying the samples (Install trains and compiles the wine model)")
            request = {"recipeDirectoryPath": str(RECIPES), "artifactsDirectoryPath": str(ARTIFACTS),
                       "rootComponentVersionsToAdd": {WINE: "1.0.0", CONSUMER: "1.0.0", CLASSIFIER: "1.0.0",
                                                      REQUESTER: "1.0.0"},
                       "componentToConfiguration": {CONSUMER: sender_conf, REQUESTER: sender_conf}}
            dep_id = local.call(str(paths.root), "CreateLocalDeployment", request)["deploymentId"]
            deadline = time.monotonic() + 600
            dep = {"status": "QUEUED"}
            while dep["status"] in ("QUEUED", "IN_PROGRESS") and time.monotonic() < deadline:
                dep = local.call(str(paths.root), "GetLocalDeploymentStatus",
                                 {"deploymentId": dep_id, "waitSeconds": 20}, timeout=40)["deployment"]
            say(f"[green]✓[/] deployment {dep_id}: {styled(dep['status'])}")
            if dep["status"] != "SUCCEEDED":
                raise RoostError(json.dumps(dep.get("deploymentStatusDetails", {})), code="DEMO_FAILED")
            prog.update(task, description=f"waiting for {rounds} results from each requester")
            logs = {name: paths.log_file(name) for name in (CONSUMER, REQUESTER)}
            deadline = time.monotonic() + 60 + rounds * interval * 2
            while time.monotonic() < deadline and any(len(_results(p)) < rounds for p in logs.values()):
                time.sleep(0.1)
        comps = local.call(str(paths.root), "ListComponents", {})["components"]
        short = {name: len(_results(path)) for name, path in logs.items() if len(_results(path)) < rounds}
        if as_json:
            if short:
                raise RoostError(f"missing results: {short} of {rounds}", code="DEMO_FAILED")
            emit_json({"deploymentId": dep_id, "status": dep["status"], "components": comps,
                       "results": {name: _results(path) for name, path in logs.items()}})
            return
        table("Components", ["name", "version", "state"],
              [(c["componentName"], c["version"], styled(c["state"])) for c in comps])
        for name, path in logs.items():
            console.rule(f"logs/{name}.log")
            lines = [ln for ln in path.read_text(errors="replace").splitlines() if "] request: " in ln
                     or "] result: " in ln]
            for line in lines[-2 * rounds:]:
                console.print(line, highlight=False, markup=False, soft_wrap=True)
        if short:
            raise RoostError(f"missing results: {short} of {rounds}", code="DEMO_FAILED")
        console.print(f"[green]✓[/] {rounds} wine predictions and {rounds} image labels went over the agent's "
                      "local pub/sub, offline")
    finally:
        stop_agent(paths)
        say("[green]✓[/] agent and components stopped")
        if owned and not keep:
            shutil.rmtree(root_dir, ignore_errors=True)
