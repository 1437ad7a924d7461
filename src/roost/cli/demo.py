"""`roost demo`: an agent in a fresh root, the sample components deployed, their logs shown."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn

from roost.agent.daemon import start_detached, stop_agent
from roost.agent.paths import AgentPaths
from roost.cli import local
from roost.cli.output import console, handle_errors, styled, table
from roost.errors import RoostError
from roost.samples import ARTIFACTS, RECIPES

PUBLISHER, SUBSCRIBER = "com.roost.HelloPublisher", "com.roost.HelloSubscriber"


@handle_errors
def demo(rounds: Annotated[int, typer.Option("--rounds", min=1, max=1000, help="Messages to show.")] = 5,
         root: Annotated[Path | None, typer.Option("--root", help="Agent root (default: a fresh temp dir).")]
         = None,
         keep: Annotated[bool, typer.Option("--keep", help="Leave the root folder in place.")] = False) -> None:
    """Start an agent, deploy the sample publisher and subscriber, show their messages, stop."""
    owned = root is None
    root_dir = Path(tempfile.mkdtemp(prefix="roost-demo-")) if root is None else root
    paths = AgentPaths.at(root_dir)
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console, transient=True) as prog:
            task = prog.add_task("starting the agent")
            t0 = time.monotonic()
            pid = start_detached(paths, "demo-device")
            console.print(f"[green]✓[/] agent started (pid {pid}) in {time.monotonic() - t0:.2f} s on {paths.root}")
            prog.update(task, description="deploying the sample components")
            request = {"recipeDirectoryPath": str(RECIPES), "artifactsDirectoryPath": str(ARTIFACTS),
                       "rootComponentVersionsToAdd": {SUBSCRIBER: "1.0.0", PUBLISHER: "1.0.0"},
                       "componentToConfiguration": {PUBLISHER: {"MERGE": {"intervalSeconds": 0.5}}}}
            dep_id = local.call(str(paths.root), "CreateLocalDeployment", request)["deploymentId"]
            dep = local.call(str(paths.root), "GetLocalDeploymentStatus",
                             {"deploymentId": dep_id, "waitSeconds": 30}, timeout=40)["deployment"]
            console.print(f"[green]✓[/] deployment {dep_id}: {styled(dep['status'])}")
            if dep["status"] != "SUCCEEDED":
                raise RoostError(json.dumps(dep.get("deploymentStatusDetails", {})), code="DEMO_FAILED")
            prog.update(task, description=f"waiting for {rounds} messages")
            sub_log = paths.log_file(SUBSCRIBER)
            deadline = time.monotonic() + 10 + rounds
            received: list[str] = []
            while time.monotonic() < deadline and len(received) < rounds:
                text = sub_log.read_text(errors="replace") if sub_log.exists() else ""
                received = [line for line in text.splitlines() if "received on" in line]
                time.sleep(0.1)
        comps = local.call(str(paths.root), "ListComponents", {})["components"]
        table("Components", ["name", "version", "state"],
              [(c["componentName"], c["version"], styled(c["state"])) for c in comps])
        for name in (PUBLISHER, SUBSCRIBER):
            console.rule(f"logs/{name}.log")
            for line in paths.log_file(name).read_text(errors="replace").splitlines()[-rounds:]:
                console.print(line, highlight=False, markup=False)
        if len(received) < rounds:
            raise RoostError(f"the subscriber received {len(received)} of {rounds} messages", code="DEMO_FAILED")
        console.print(f"[green]✓[/] {len(received)} messages went from the publisher to the subscriber "
                      "over the agent's local IPC")
    finally:
        stop_agent(paths)
        console.print("[green]✓[/] agent and components stopped")
        if owned and not keep:
            shutil.rmtree(root_dir, ignore_errors=True)
