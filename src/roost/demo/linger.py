"""Step 6: what to open. The hub's metrics endpoints, every agent's ``/metrics`` and the console are checked
(each answers 200) and printed with the admin token they need, then left up for ``--linger`` seconds (or until
Ctrl-C with ``--keep``) before everything stops."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from roost.demo.fleet import Fleet
from roost.demo.steps import Runner, StepFailed

log = logging.getLogger(__name__)


def _check(url: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return httpx.get(url, headers=headers, timeout=10).status_code
    except httpx.HTTPError as err:
        raise StepFailed(f"{url} did not answer: {err}") from err


def show_endpoints(run: Runner, fleet: Fleet, outcome: dict[str, Any]) -> None:
    hub = fleet.hub.url
    hub_urls = {"metrics": f"{hub}/metrics", "fleet metrics": f"{hub}/metrics/fleet",
                "Prometheus service discovery": f"{hub}/v1/prometheus/targets"}
    checked: dict[str, int] = {}
    for what, url in hub_urls.items():
        checked[url] = _check(url, fleet.hub.token)
        run.line(f"    hub {what:29} {url}  (Authorization: Bearer <admin token>)")
    for node in fleet.nodes:
        checked[node.metrics_url] = _check(node.metrics_url, None)
        run.line(f"    agent {node.name:27} {node.metrics_url}")
    console = f"{hub}/console/login"
    checked[console] = _check(console, None)
    bad = {url: code for url, code in checked.items() if code != 200}
    if bad:
        raise StepFailed(f"endpoints did not answer 200: {bad}")
    run.say(f"\n  [bold]console[/]: {console}  — sign in with the admin token:")
    run.line(f"    {fleet.hub.token}")
    run.line(f"    (also for the CLI: export ROOST_HUB={hub} ROOST_TOKEN=<that token>; roost cluster nodes)")
    outcome.update({"hub_metrics": list(hub_urls.values()), "agent_metrics": {n.name: n.metrics_url
                                                                             for n in fleet.nodes},
                    "console": console, "status_codes": checked})


def linger(run: Runner, seconds: float, keep: bool) -> None:
    """Wait ``seconds`` (``keep``: until Ctrl-C). Ctrl-C ends the wait either way."""
    if not keep and seconds <= 0:
        return
    run.say(f"\n[bold]Left up {'until Ctrl-C' if keep else f'for {seconds:g} s (Ctrl-C stops sooner)'}.[/]")
    deadline = None if keep else time.monotonic() + seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5 if deadline is None else min(0.5, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        run.say("\n  Ctrl-C: stopping")
