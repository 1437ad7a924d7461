"""Step 3: the edge cluster. The shipped ``scalar`` service type (the original's memory requests: a Xavier with
8 GiB takes two replicas, a TX2 with 4 GiB one) is applied; clients ask the hub for sessions one after the
other and are admitted onto edge replicas until the edge is full, then offloaded to the centre. One edge
client and the offloaded one then stream wine windows with `roost stream` at the same time, and their
end-to-end times and bytes per window are shown side by side."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import roost.samples
from roost.demo.fleet import Fleet
from roost.demo.procs import roost_json
from roost.demo.steps import Runner, StepFailed
from roost.hub.contract.cluster import ClusterSession

log = logging.getLogger(__name__)

WINE_CSV = Path(roost.samples.__file__).parent / "data" / "wine_concat.csv"
TYPE = "scalar"
MAX_CLIENTS = 8


def _stream(session: ClusterSession, windows: int) -> subprocess.Popen[str]:
    assert session.token is not None
    return subprocess.Popen([sys.executable, "-m", "roost", "stream", "--endpoint", session.endpoint,
                             "--session-token", session.token, "--data", str(WINE_CSV), "--windows", str(windows),
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def _finish(proc: subprocess.Popen[str], what: str, timeout: float = 120) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        raise StepFailed(f"roost stream ({what}) did not end within {timeout:g} s") from None
    try:
        doc: dict[str, Any] = json.loads(out)
    except ValueError:
        raise StepFailed(f"roost stream ({what}) exited {proc.returncode}: {(err or out).strip()[-400:]}") from None
    if proc.returncode != 0 or "error" in doc:
        raise StepFailed(f"roost stream ({what}) exited {proc.returncode}: {doc.get('error') or doc.get('errors')}")
    return doc


def run_cluster(run: Runner, fleet: Fleet, outcome: dict[str, Any], windows: int) -> None:
    applied = roost_json(*fleet.hub.cli("cluster", "service-type", "apply", "--samples"),
                         what="cluster service-type apply --samples", timeout=300)
    names = [t.get("name") for t in applied] if isinstance(applied, list) else applied
    run.ok(f"service types applied: {names} (their replica components published)")
    sessions: list[ClusterSession] = []
    admitted: list[dict[str, Any]] = []
    with fleet.api() as api:
        try:
            for i in range(1, MAX_CLIENTS + 1):
                s = api.create_cluster_session(TYPE, f"car-{i}", wait_seconds=90)
                sessions.append(s)
                admitted.append({"client": s.client_id, "tier": str(s.tier), "node": s.node, "offloaded": s.offloaded,
                                 "ready_ms": s.ready_ms, "warm": s.warm})
                where = "OFFLOADED to the centre (the edge is full)" if s.offloaded else "admitted at the edge"
                run.line(f"    {s.client_id:7} {where:42} node={s.node:12} ready in {s.ready_ms or 0:.0f} ms "
                         f"({'warm' if s.warm else 'new replica'})")
                if s.offloaded:
                    break
            else:
                raise StepFailed(f"{MAX_CLIENTS} clients were all admitted at the edge; none was offloaded")
            edge = next(s for s in sessions if not s.offloaded)
            centre = sessions[-1]
            run.ok(f"{len(sessions) - 1} clients filled the edge by capacity; client {len(sessions)} went to the "
                   f"centre. Streaming {windows} windows of 40 wine rows from {edge.client_id} (edge) and "
                   f"{centre.client_id} (centre) at once")
            procs = {"edge": _stream(edge, windows), "centre": _stream(centre, windows)}
            reports = {tier: _finish(p, f"{tier} session") for tier, p in procs.items()}
        finally:
            for s in sessions:
                try:
                    api.end_cluster_session(s.id, "demo done")
                except Exception as err:  # ending what was admitted must not hide the step's own error
                    log.warning("ending cluster session %s: %s", s.id, err)
    rows = [("tier", "node", "windows", "E2E p50 ms", "E2E mean ms", "server p50 ms", "bytes sent/window",
             "bytes received/window")]
    for tier, doc in reports.items():
        s = edge if tier == "edge" else centre
        rows.append((tier, s.node, str(doc["windows"]), f"{doc['e2e_ms']['p50']:.2f}", f"{doc['e2e_ms']['mean']:.2f}",
                     f"{doc['server_ms']['p50']:.2f}", f"{doc['bytes_per_window']['sent']:.0f}",
                     f"{doc['bytes_per_window']['received']:.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        run.line("    " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    # the hub's admission says where a session went (`roost stream --endpoint` streams without asking the hub)
    chosen = {"edge": edge, "centre": centre}
    outcome.update({"admitted": admitted, "edge_full_after": len(sessions) - 1,
                    "streams": {tier: {"node": chosen[tier].node, "offloaded": chosen[tier].offloaded,
                                       "windows": d["windows"], "e2e_ms": d["e2e_ms"], "server_ms": d["server_ms"],
                                       "bytes_per_window": d["bytes_per_window"]} for tier, d in reports.items()}})
