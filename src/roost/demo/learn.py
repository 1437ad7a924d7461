"""Step 5: collaborative AI. A short federated-learning job (Flower, FedAvg on the wine task's linear model)
across the agents that can run the Flower venv, each training on its own part of the wine data; the hub
publishes the aggregated model as a new ``com.roost.WineQuality`` version with its validation report, and a
group deployment rolls it out through the hub's validation gate (its default ``max_regression``, 0.01). The
fleet's 1.0.0 trains on the device at install and carries no report, so the gate has no baseline to compare
with and says so. The consumer's prediction for the same two records is shown before (1.0.0) and after (the
federated version)."""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from roost.cli import local
from roost.demo.fleet import GROUP, LEARNERS, Fleet, Node
from roost.demo.procs import roost_json, wait_until
from roost.demo.rollout import CLASSIFIER, CONSUMER, REQUESTER, WINE, results, sender_config
from roost.demo.steps import Runner, StepFailed
from roost.learn.errors import FlowerMissingError
from roost.learn.superlink import flower_bin
from roost.learn.wine_task import write_partitions
from roost.samples import RECIPES

log = logging.getLogger(__name__)

SUPERNODE = "com.roost.FlowerSuperNode"
_PUBLISHED = re.compile(r"^com\.roost\.WineQuality=(\d+\.\d+\.\d+)$")


def flower_missing() -> str | None:
    try:
        flower_bin()
    except FlowerMissingError as err:
        return str(err)
    return None


def _prediction(node: Node) -> str:
    lines = results(node.logs / f"{CONSUMER}.log")
    if not lines:
        raise StepFailed(f"{node.name}'s consumer logged no result")
    return lines[-1].split("] result: ", 1)[1]


def run_learning(run: Runner, fleet: Fleet, outcome: dict[str, Any], rounds: int, requests: int) -> None:
    why = flower_missing()
    if why is not None:
        raise StepFailed(f"Flower is not installed: {why}")
    learners = fleet.learners
    left_out = [n.name for n in fleet.nodes if n not in learners]
    if left_out:
        run.note(f"{', '.join(left_out)} (registered over SSH: its Roost is the wheel's, without the checkout's "
                 "Flower venv) does not train; it still gets the new model")
    roost_json(*fleet.hub.cli("component", "publish", "--recipe", str(RECIPES / f"{SUPERNODE}-1.0.0.yaml")),
               what=f"publish {SUPERNODE}")
    data = fleet.base / "fl-data"
    data.mkdir()
    os.chmod(data, 0o755)
    parts = write_partitions(data, len(learners))
    for part in parts:
        os.chmod(part, 0o644)  # the SuperNode component runs as the agent's component user
    device_data = [f"--device-data={n.name}={p}" for n, p in zip(learners, parts, strict=True)]
    watcher = fleet.node("edge-xavier")
    before = _prediction(watcher)
    run.ok(f"before: {watcher.name}'s consumer got {before} from {WINE} 1.0.0 (trained centrally at install)")
    run.say(f"  [dim]job: {rounds} rounds over group:{LEARNERS} ({', '.join(n.name for n in learners)}), each "
            "SuperNode deployed by the hub as a component with its own data path[/]")
    doc = roost_json(*fleet.hub.cli("learn", "start", "--target", f"group:{LEARNERS}", "--task", "wine",
                                    "--rounds", str(rounds), *device_data, "--wait", "--timeout", "300"),
                     what="learn start", timeout=330)
    for r in doc.get("rounds", []):
        run.line(f"    round {r['round']}: {r['participants']} participants, held-out RMSE {r['metric']:.4f}, "
                 f"{r['bytes']} bytes of model updates")
    outcome.update({"job": doc.get("job"), "status": doc.get("status"), "rounds": doc.get("rounds"),
                    "final_metric": doc.get("final_metric"), "centralised_metric": doc.get("centralised_metric"),
                    "component": doc.get("component"), "before": before})
    if doc.get("status") != "SUCCEEDED":
        raise StepFailed(f"the federated job {doc.get('job')} ended {doc.get('status')}: {doc.get('reason')}")
    run.ok(f"job {doc['job']} SUCCEEDED: federated RMSE {doc['final_metric']:.4f} (the same model trained "
           f"centrally: {doc['centralised_metric']:.4f})")
    found = _PUBLISHED.match(str(doc.get("component") or ""))
    if found is None:
        raise StepFailed(f"the job did not publish its model as a new {WINE} version: its 'component' is "
                         f"{doc.get('component')!r}, not '{WINE}=X.Y.Z' (publishing the aggregated model is not "
                         "in this build of the hub)")
    version = found.group(1)
    with fleet.api() as api:
        report = api.validation(WINE, version)  # raises (VALIDATION_REPORT_MISSING) when the hub holds none
        run.ok(f"{WINE} {version} published with its validation report: {report.metric} {report.value:.4f} on "
               f"{report.rows} held-out rows")
        mark = {p.name: len(results(p.logs / f"{CONSUMER}.log")) for p in fleet.nodes}
        dep = api.create_deployment({
            "target": f"group:{GROUP}",
            "components": {WINE: version, CONSUMER: "1.0.0", CLASSIFIER: "1.0.0", REQUESTER: "1.0.0"},
            # a new request count restarts the consumers, so they ask the new model
            "configuration": {CONSUMER: sender_config(requests + 1, 1.0), REQUESTER: sender_config(requests, 1.0)}})
        if not any(g.component == WINE and g.version == version for g in dep.gate):
            raise StepFailed(f"the hub's gate did not judge {WINE} {version}: {dep.gate}")
        for g in dep.gate:
            if g.baseline_source == "none":
                run.ok(f"gate: {g.component} {g.version} carries its report ({g.metric} {g.value:.4f}); the version "
                       "the fleet runs has none (1.0.0 trains on the device at install), so there was no baseline "
                       f"to compare with: passed on the report alone (max regression {g.max_regression})")
            else:
                run.ok(f"gate: {g.component} {g.version} {g.metric} {g.value:.4f} against {g.baseline_version} "
                       f"{g.baseline_value:.4f} ({g.baseline_source}): regression {g.regression:.2%} <= "
                       f"{g.max_regression:.0%}: {'passed' if g.passed else 'FAILED'}")
        outcome.update({"version": version, "validation": report.model_dump(mode="json"), "deployment": dep.id,
                        "gate": [g.model_dump(mode="json") for g in dep.gate]})

        def ended() -> Any:
            d = api.deployment(dep.id)
            if d.status in ("ABORTED", "CANCELED"):
                raise StepFailed(f"the rollout of {WINE} {version} ended {d.status}: {d.status_reason}")
            return d if d.status == "COMPLETED" else None

        wait_until(ended, 240, f"{WINE} {version} on every device", interval=0.5)
    def answered() -> bool:
        for n in fleet.learners:  # agents run from this checkout: their components can be listed here
            state = _state(n, WINE)
            if state in ("ERRORED", "BROKEN"):
                tail = (n.logs / f"{WINE}.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise StepFailed(f"{WINE} {version} is {state} on {n.name}: {' | '.join(tail)}")
        return all(len(results(n.logs / f"{CONSUMER}.log")) > mark[n.name] for n in fleet.nodes)

    wait_until(answered, 120, "the consumers' first answer from the new model", interval=1.0)
    after = _prediction(watcher)
    run.ok(f"after: {watcher.name}'s consumer got {after} from {WINE} {version} (trained federated)")
    outcome.update({"after": after, "rolled_out": True})


def _state(node: Node, name: str) -> str | None:
    """``name``'s state on ``node`` (the agent's local IPC, as `roost component list` asks it)."""
    comps = local.call(str(node.root), "ListComponents", {})["components"]
    return next((str(c["state"]) for c in comps if c.get("componentName") == name), None)
