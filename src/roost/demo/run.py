"""The whole-system demo, step by step (what `roost demo` and `make demo` run); see :mod:`roost.demo`."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from roost.demo.cluster import run_cluster
from roost.demo.fleet import chmod_searchable, start_fleet
from roost.demo.learn import flower_missing, run_learning
from roost.demo.linger import linger, show_endpoints
from roost.demo.rollout import finish_rollout, start_rollout
from roost.demo.sshd import unavailable as ssh_unavailable
from roost.demo.steps import DemoStepError, Runner, StepFailed

log = logging.getLogger(__name__)


@dataclass
class Options:
    requests: int = 2          # requests each consumer / requester sends
    windows: int = 20          # windows each cluster stream sends
    fl_rounds: int = 4         # federated rounds (FedAvg's held-out RMSE is within 3 % of its last by round 4)
    linger: float = 60.0       # seconds left up at the end
    keep: bool = False         # left up until Ctrl-C
    ssh: bool = True           # try to register one device over SSH
    base: Path | None = None   # where everything lives (default: a fresh temp folder, removed at the end)


def preflight(run: Runner, outcome: dict[str, Any], options: Options) -> None:
    """Fail at once, not minutes in: the learning step needs the Flower venv. SSH is optional (a note)."""
    why = flower_missing()
    if why is not None:
        raise StepFailed(f"the learning step needs Flower: {why}")
    run.ok("the Flower venv answers (the learning step's SuperLink and SuperNodes)")
    ssh = ssh_unavailable() if options.ssh else "--no-ssh"
    run.ok("an sshd and an account can be made here: edge-tx2 will be registered over SSH" if ssh is None
           else f"edge-tx2 will be enrolled with a token, not over SSH: {ssh}")
    outcome.update({"flower": True, "ssh": ssh is None})


def run_demo(options: Options, console: Console, quiet: bool = False) -> dict[str, Any]:
    """Run every step; returns the summary. A failing step raises DemoStepError naming it (after clean-up)."""
    run = Runner(console, quiet)
    owned = options.base is None
    base = Path(tempfile.mkdtemp(prefix="roost-demo-")) if options.base is None else options.base
    if owned:
        chmod_searchable(base)
    failure: DemoStepError | None = None
    try:
        with run.step("preflight", "what the later steps need, checked before anything starts") as out:
            preflight(run, out, options)
        with run.step("fleet", "a hub (SQLite, a local process) and three agents enrolled with one-time tokens: "
                               "a Jetson Xavier, a TX2 and the centre") as out:
            fleet = start_fleet(run, base, out, ssh=options.ssh)
        with run.step("rollout", "the wine and image inference components to the whole group, staged: two "
                                 "devices at once, the third a minute later") as out:
            deployment = start_rollout(run, fleet, out, options.requests)
        with run.step("cluster", "edge-cluster admission by capacity until the edge is full, then offload to the "
                                 "centre; streams from both tiers side by side") as out:
            run_cluster(run, fleet, out, options.windows)
        with run.step("rollout-complete", "the second stage reaches the third device; the consumers' and "
                                          "requesters' lines from every device's logs") as out:
            finish_rollout(run, fleet, out, deployment, options.requests)
        with run.step("learn", "federated learning across the agents; the new model version passes its "
                               "validation gate and rolls out") as out:
            run_learning(run, fleet, out, options.fl_rounds, options.requests)
        with run.step("endpoints", "the hub's and the agents' metrics endpoints and the console, to open") as out:
            show_endpoints(run, fleet, out)
        linger(run, options.linger, options.keep)
    except DemoStepError as err:
        failure = err
    except KeyboardInterrupt:
        failure = DemoStepError("interrupted", "Ctrl-C before the demo ended")
    finally:
        run.say("\n[bold]Stopping[/] the agents, the hub and what the demo started")
        failed = run.stop_all()
        if owned and not failed and failure is None:
            shutil.rmtree(base, ignore_errors=True)
        elif owned:
            run.note(f"the demo's folder is kept for a look at the logs: {base}")
    if failure is None and failed:
        failure = DemoStepError("stop", "; ".join(failed))
    if failure is not None:
        failure.summary = run.summary() | {"failed_step": failure.step, "cleanup_failures": failed}
        raise failure
    run.ok("everything stopped")
    return run.summary()
