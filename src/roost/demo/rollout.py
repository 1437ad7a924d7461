"""Step 2 (and 4): a group deployment of the wine and image inference components with a staged rollout.

The four samples of `roost demo --quick` (the wine-quality model and the consumer that asks it, the image
classifier and the requester) are published to the hub and deployed to ``group:fleet`` with at most two
devices released per minute: two devices get it at once, the third a minute later (the hub's rollout clock
is real; the demo runs the cluster step meanwhile). Then the consumers' and requesters' ``request:`` /
``result:`` lines are read from each device's component logs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from roost.demo.fleet import GROUP, Fleet
from roost.demo.procs import roost_json, wait_until
from roost.demo.steps import Runner, StepFailed
from roost.samples import ARTIFACTS, RECIPES

log = logging.getLogger(__name__)

WINE, CONSUMER = "com.roost.WineQuality", "com.roost.WineConsumer"
CLASSIFIER, REQUESTER = "com.roost.ImageClassifier", "com.roost.ImageRequester"
SAMPLES = (WINE, CONSUMER, CLASSIFIER, REQUESTER)
PER_MINUTE = 2


def publish_samples(fleet: Fleet) -> None:
    for name in SAMPLES:
        args = ["component", "publish", "--recipe", str(RECIPES / f"{name}-1.0.0.yaml")]
        if (ARTIFACTS / name / "1.0.0").is_dir():
            args += ["--artifacts", str(ARTIFACTS)]
        roost_json(*fleet.hub.cli(*args), what=f"publish {name}")


def sender_config(count: int, interval: float) -> dict[str, Any]:
    return {"MERGE": {"msgCountLimit": count, "intervalSeconds": interval}}


def start_rollout(run: Runner, fleet: Fleet, outcome: dict[str, Any], requests: int) -> str:
    publish_samples(fleet)
    run.ok(f"published {', '.join(SAMPLES)} (recipes + artifacts) to the hub's registry")
    body = {"target": f"group:{GROUP}", "components": dict.fromkeys(SAMPLES, "1.0.0"),
            "configuration": {CONSUMER: sender_config(requests, 1.0), REQUESTER: sender_config(requests, 1.0)},
            "max_per_minute": PER_MINUTE, "abort_failure_percent": 50}
    with fleet.api() as api:
        dep = api.create_deployment(body)
        released = sorted(r.device for r in dep.devices or [] if r.released_at is not None)
        held = sorted(r.device for r in dep.devices or [] if r.released_at is None)
        run.ok(f"deployment {dep.id} to group:{GROUP}: at most {PER_MINUTE} devices per minute, abort if half "
               f"fail; released now: {', '.join(released)}; held back for the next minute: {', '.join(held) or '-'}")
        if len(released) != PER_MINUTE or not held:
            raise StepFailed(f"expected {PER_MINUTE} devices released and the rest held back, got released "
                             f"{released}, held {held}")

        def first_stage() -> Any:
            rows = api.deployment(dep.id).devices or []
            bad = [r for r in rows if r.status in ("FAILED", "ROLLED_BACK", "TIMED_OUT", "CANCELED")]
            if bad:
                failed = ", ".join(f"{r.device} ({r.status}: {r.message})" for r in bad)
                raise StepFailed(f"the rollout failed on {failed}")
            return rows if all(r.status == "SUCCEEDED" for r in rows if r.device in released) else None

        rows = wait_until(first_stage, 420, f"the first stage ({', '.join(released)}) to succeed", interval=0.5)
    for r in sorted(rows, key=lambda r: r.device):
        stage = "first stage" if r.device in released else (
            "second stage: released" if r.released_at is not None else "second stage: not released yet")
        run.line(f"    {r.device:12} {r.status:11} {stage}")
    outcome.update({"deployment": dep.id, "first_stage": released, "held_back": held})
    run.ok(f"first stage done: {', '.join(released)} run the samples; {', '.join(held)} follows a minute after "
           "the first release")
    return str(dep.id)


def _lines(path: Path, *markers: str) -> list[str]:
    if not path.exists():
        return []
    return [ln for ln in path.read_text(errors="replace").splitlines() if any(m in ln for m in markers)]


def results(path: Path) -> list[str]:
    return _lines(path, "] result: ")


def finish_rollout(run: Runner, fleet: Fleet, outcome: dict[str, Any], deployment: str, requests: int) -> None:
    with fleet.api() as api:
        def ended() -> Any:
            dep = api.deployment(deployment)
            if dep.status in ("ABORTED", "CANCELED"):
                raise StepFailed(f"deployment {deployment} ended {dep.status}: {dep.status_reason}")
            return dep if dep.status == "COMPLETED" else None

        dep = wait_until(ended, 240, f"deployment {deployment} to complete on every device", interval=0.5)
    outcome["status"] = dep.status
    outcome["counts"] = dep.counts
    run.ok(f"deployment {deployment}: {dep.status} {dict(dep.counts)}")
    shown: dict[str, dict[str, list[str]]] = {}
    for node in fleet.nodes:
        logs = {name: node.logs / f"{name}.log" for name in (CONSUMER, REQUESTER)}
        wait_until(lambda logs=logs: all(len(results(p)) >= requests for p in logs.values()), 120,
                   f"{requests} results from the consumer and the requester on {node.name}")
        shown[node.name] = {}
        for name, path in logs.items():
            lines = _lines(path, "] request: ", "] result: ")[-2 * requests:]
            shown[node.name][name] = [ln for ln in lines if "] result: " in ln]
            run.say(f"  [bold]{node.name}[/] logs/{name}.log")
            for ln in lines:
                run.line(f"    {ln[:200]}")
    outcome["results"] = shown
