"""The console's Cluster page over a real hub (uvicorn) with plain httpx: nodes by tier with their
capacity bars, service types, replicas (a failed one with its reason), live and ended sessions with
the offload counts, escaping, the empty state, and sign-in.

``seed_cluster`` (also used by the Chromium test) makes the records through the store API, as the
cluster's own store tests do. The hub's replica monitor polls READY replicas at ``/status``;
:func:`replica_status_server` answers it on a real socket for the one replica made READY here (the
real replica is a ``roost.serve`` component run by an agent, which these page tests do not start).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from sqlalchemy import select, update

from roost.cluster.service_types import SHIPPED, parse_service_type
from roost.hub.console import cluster as view
from roost.hub.contract.cluster import ClusterNode, ClusterSession, NodeCapacity, NodeReport, ReplicaStatus
from roost.hub.models import Device
from roost.hub.store import Store
from tests.hub.conftest import HubServer, publish_to_store
from tests.hub.test_console import browser, sign_in

GI = 2**30
KEY = "test-public-key"
XSS_LABEL = "<script>alert('label')</script>"
XSS_CLIENT = '<img src=x onerror="alert(2)">'
FAILED_REASON = "replica lost: its endpoint 127.0.0.1:1 stopped answering <b>twice</b>"


class _StatusHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the replica's /status: no session connected yet, none ended
        body = b'{"sessions": [], "ended": []}'
        self.send_response(200 if self.path == "/status" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def replica_status_server() -> Iterator[int]:
    """A real HTTP server on 127.0.0.1 answering a replica's ``/status``; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    thread = threading.Thread(target=server.serve_forever, name="replica-status", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _device_id(store: Store, name: str) -> int:
    with store.db.read() as s:
        device_id = s.scalar(select(Device.id).where(Device.name == name))
    assert device_id is not None, name
    return int(device_id)


def add_node(store: Store, name: str, labels: dict[str, str], memory_gi: float, cpu: int, *, tier: str = "edge",
             measured: tuple[float, int] | None = None, ports: tuple[int, int] = (31000, 31999)) -> int:
    """Enrol a device and report it as a cluster node (``measured``: what the agent found, when
    ``--capacity`` overrode it)."""
    store.enroll(store.create_enroll_token(None, 3600).token, name, {})
    device_id = _device_id(store, name)
    allocatable = NodeCapacity(memory_bytes=int(memory_gi * GI), cpu_millis=cpu * 1000)
    found = allocatable if measured is None else NodeCapacity(memory_bytes=int(measured[0] * GI),
                                                              cpu_millis=measured[1] * 1000)
    store.report_node(device_id, NodeReport(labels=labels, allocatable=allocatable, measured=found, tier=tier,  # type: ignore[arg-type]
                                            address="127.0.0.1", port_min=ports[0], port_max=ports[1]))
    return device_id


@dataclass
class Cluster:
    """What :func:`seed_cluster` made: session ids by role and the failed replica's id."""

    live_edge: list[str]
    live_centre: str
    ended_by_client: str
    ended_by_failure: str
    failed_replica: str
    ready_replica: str


def seed_cluster(store: Store, status_port: int) -> Cluster:
    """Four nodes (two edge with room, one edge offline, one centre), two service types, five
    admissions (three at the edge, two offloaded), one READY replica (on ``tx2-1``, whose only port
    is ``status_port``), one failed centre replica and one session ended by its client."""
    publish_to_store(store, "com.roost.ClusterScalar", "1.0.0", {"model.json": b"{}"})
    publish_to_store(store, "com.roost.ClusterImage", "1.0.0", {"model.json": b"{}"})
    store.apply_service_type(parse_service_type({
        **SHIPPED["scalar"].to_wire(),
        "resources": {"requests": {"memory": "3417969Ki", "cpu": "1"}, "limits": {"memory": "3906250Ki", "cpu": "2"}}}))
    store.apply_service_type(SHIPPED["image"])
    add_node(store, "xavier-1", {"machine": "xavier"}, 8, 4, measured=(15.5, 8))
    add_node(store, "tx2-1", {"machine": "tx2"}, 4, 4, ports=(status_port, status_port))
    add_node(store, "nano-1", {"machine": "nano", "note": XSS_LABEL}, 4, 4)
    add_node(store, "centre-1", {"machine": "server"}, 16, 8, tier="centre")
    with store.db.write() as s:  # nano-1 has not been seen for an hour: offline
        s.execute(update(Device).where(Device.name == "nano-1").values(
            last_seen_at=datetime.now(UTC) - timedelta(hours=1)))
    clients = ["wine-client-1", XSS_CLIENT, "wine-client-3", "wine-client-4", "wine-client-5"]
    admitted = [store.admit("scalar", c, None, KEY) for c in clients]
    assert [a.session.node for a in admitted] == ["xavier-1", "xavier-1", "tx2-1", "centre-1", "centre-1"]
    store.replica_ready(admitted[2].replica)
    store.end_session(admitted[0].session.id, "ended by the client")
    store.stop_replica(admitted[4].replica, ReplicaStatus.FAILED, FAILED_REASON, KEY)
    return Cluster(live_edge=[admitted[1].session.id, admitted[2].session.id], live_centre=admitted[3].session.id,
                   ended_by_client=admitted[0].session.id, ended_by_failure=admitted[4].session.id,
                   failed_replica=admitted[4].replica, ready_replica=admitted[2].replica)


def _row(html: str, table: str, text: str) -> str:
    """The ``<tr>`` of table ``#table`` holding ``text``."""
    body = html.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    rows = [r for r in body.split("<tr>") if text in r]
    assert len(rows) == 1, (table, text, rows)
    return rows[0]


# -- the page ---------------------------------------------------------------------------------------


def test_cluster_page_shows_nodes_types_replicas_and_sessions(hub_server: HubServer) -> None:
    with replica_status_server() as port:
        made = seed_cluster(hub_server.store, port)
        with browser(hub_server) as client:
            sign_in(hub_server, client)
            r = client.get("/console/cluster")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert '<a href="/console/cluster" aria-current="page">Cluster</a>' in html

    # The offload counts at the top (live sessions only: one ended, one lost with its replica).
    assert '<p class="muted" id="session-summary">3 sessions: 2 at the edge, 1 offloaded to the centre</p>' in html

    # Nodes: edge first, then centre, each with links, status, labels and capacity bars.
    assert html.index('id="tier-edge"') < html.index('id="tier-centre"')
    edge = html.split('id="tier-edge"', 1)[1].split('id="tier-centre"', 1)[0]
    assert "centre-1" not in edge and {"xavier-1", "tx2-1", "nano-1"} <= set(re.findall(r">([a-z0-9-]+)</a>", edge))
    xavier = _row(html, "nodes-edge", "xavier-1")
    assert '<a href="/console/devices/xavier-1">xavier-1</a>' in xavier and "ONLINE" in xavier
    assert "<b>machine</b>=xavier" in xavier
    assert "6.5 GiB of 8.0 GiB" in xavier and "81 %" in xavier  # two replicas of 3417969Ki
    assert 'class="seg wait w-82"' in xavier  # amber above 80 %
    assert "2 of 4 CPU" in xavier and 'class="seg ok w-50"' in xavier
    assert "measured 15.5 GiB" in xavier and "measured 8 CPU" in xavier  # the --capacity override
    assert re.search(r'data-label="Replicas" class="num">2<', xavier) and \
        re.search(r'data-label="Sessions" class="num">1<', xavier)
    assert 'aria-label="memory: 6.5 GiB of 8.0 GiB requested (81 %)"' in xavier
    tx2 = _row(html, "nodes-edge", "tx2-1")
    assert "3.3 GiB of 4.0 GiB" in tx2 and "1 of 4 CPU" in tx2 and "measured" not in tx2
    nano = _row(html, "nodes-edge", "nano-1")
    assert "OFFLINE" in nano and "0 B of 4.0 GiB" in nano and 'class="seg' not in nano  # an empty bar
    centre = _row(html, "nodes-centre", "centre-1")
    assert "3.3 GiB of 16.0 GiB" in centre and "1 of 8 CPU" in centre  # the failed replica holds nothing
    assert re.search(r'data-label="Replicas" class="num">1<', centre)

    # Service types: component@version, kind, requests/limits, affinity, sessions per replica, replicas.
    scalar = _row(html, "service-types", "<b>scalar</b>")
    for text in ("com.roost.ClusterScalar@1.0.0", "tabular", "40 rows", "memory 3.3 GiB, cpu 1",
                 "memory 3.7 GiB, cpu 2", "machine NotIn nano", "70: machine In xavier", "30: machine In tx2",
                 '<td data-label="Sessions / replica" class="num">1</td>', ">4 <span class=\"muted\">live",
                 "min 0 · max 64"):
        assert text in scalar, text
    image = _row(html, "service-types", "<b>image</b>")
    assert "com.roost.ClusterImage@1.0.0" in image and ">0 <span class=\"muted\">live" in image

    # Replicas: status badges coloured like other statuses, sessions/capacity, the failure's reason.
    ready = _row(html, "replicas", made.ready_replica[:8])
    assert '<span class="badge ok">READY</span>' in ready and "tx2-1" in ready and f">{port}<" in ready
    assert "1/1" in ready
    failed = _row(html, "replicas", made.failed_replica[:8])
    assert '<span class="badge bad">FAILED</span>' in failed and "centre" in failed and "0/1" in failed
    assert "replica lost: its endpoint 127.0.0.1:1 stopped answering &lt;b&gt;twice&lt;/b&gt;" in failed
    assert html.count('<span class="badge busy">STARTING</span>') == 3  # two on xavier-1, one on centre-1

    # Sessions: live ones with the offloaded badge; ended ones with their reasons, newest first.
    offloaded = _row(html, "live-sessions", made.live_centre[:8])
    assert 'centre <span class="badge wait">offloaded</span>' in offloaded and "centre-1" in offloaded
    for sid in made.live_edge:
        assert "offloaded" not in _row(html, "live-sessions", sid[:8])
    by_client = _row(html, "ended-sessions", made.ended_by_client[:8])
    assert "ended by the client" in by_client and "wine-client-1" in by_client
    lost = _row(html, "ended-sessions", made.ended_by_failure[:8])
    assert "offloaded" in lost and "stopped answering &lt;b&gt;twice" in lost
    ended = html.split('id="ended-sessions"', 1)[1]
    assert ended.index(made.ended_by_failure[:8]) < ended.index(made.ended_by_client[:8])

    # Everything from the database is escaped: labels, client ids, reasons.
    assert "&lt;script&gt;alert(&#39;label&#39;)&lt;/script&gt;" in nano
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in html
    assert "<script" not in html and "<img" not in html and "<b>twice" not in html
    # Starting replicas: the page refreshes itself.
    assert '<meta http-equiv="refresh" content="15">' in html


def test_an_empty_cluster_explains_how_to_add_nodes_and_types(hub_server: HubServer) -> None:
    with browser(hub_server) as client:
        sign_in(hub_server, client)
        html = client.get("/console/cluster").text
        assert 'id="cluster-empty"' in html and "No live session" in html
        assert (f"roost agent start --hub {hub_server.url} --enroll-token T --label machine=xavier "
                "--capacity memory=8Gi,cpu=4") in html
        assert "<code>--centre</code>" in html and "roost cluster service-type apply --samples" in html
        assert 'id="nodes-' not in html and "refresh" not in html

        # Nodes but no service type: the nodes show, and the types' section says how to add them.
        add_node(hub_server.store, "xavier-1", {"machine": "xavier"}, 8, 4)
        html = client.get("/console/cluster").text
        assert 'id="cluster-empty"' not in html and 'id="types-empty"' in html
        assert "0 B of 8.0 GiB" in _row(html, "nodes-edge", "xavier-1")
        assert "No centre node" in html and "roost cluster service-type apply --samples" in html
        assert "No replica" in html and "No session has ended yet" in html


def test_the_cluster_page_needs_a_session(hub_server: HubServer) -> None:
    with httpx.Client(base_url=hub_server.url, timeout=30, follow_redirects=False) as client:
        r = client.get("/console/cluster")
        assert r.status_code == 303 and r.headers["location"] == "/console/login?next=%2Fconsole%2Fcluster"
        r = client.get("/console/cluster", headers={"Authorization": f"Bearer {hub_server.token}"})
        assert r.status_code == 303  # an API token is not a console session
        assert client.post("/console/cluster").status_code == 405  # read-only
        sign_in(hub_server, client)
        assert client.get("/console/cluster").status_code == 200
        # After sign-in, the form sends you back to the Cluster page.
        client.cookies.clear()
        form = client.get("/console/login", params={"next": "/console/cluster"})
        token_form = {"token": hub_server.token, "next": "/console/cluster",
                      "csrf": re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)}  # type: ignore[union-attr]
        assert client.post("/console/login", data=token_form).headers["location"] == "/console/cluster"


# -- the presentation helpers -------------------------------------------------------------------------


def _node(name: str, tier: str, sessions: int) -> ClusterNode:
    capacity = NodeCapacity(memory_bytes=GI, cpu_millis=1000)
    return ClusterNode(name=name, tier=tier, address="127.0.0.1", online=True, allocatable=capacity,  # type: ignore[arg-type]
                       measured=capacity, requested=NodeCapacity.model_validate({}), sessions=sessions)


def _session(i: int, tier: str) -> ClusterSession:
    return ClusterSession.model_validate({
        "id": f"s{i}", "type": "scalar", "client_id": f"c{i}", "tier": tier, "offloaded": tier == "centre",
        "node": "n", "replica": "r", "endpoint": "ws://n:1/v1/stream", "port": 1, "status": "ACTIVE",
        "created_at": datetime(2030, 1, 1, tzinfo=UTC)})


def test_session_counts_stay_exact_beyond_the_listed_sessions() -> None:
    nodes = [_node("e1", "edge", 7), _node("e2", "edge", 2), _node("c1", "centre", 3)]
    listed = [_session(i, "edge") for i in range(3)] + [_session(9, "centre")]
    counts = view.session_counts(listed, nodes, limit=10)  # complete: counted from the list
    assert (counts.total, counts.edge, counts.centre) == (4, 3, 1)
    counts = view.session_counts(listed, nodes, limit=4)  # cut at the limit: counted from the nodes
    assert counts.summary == "12 sessions: 9 at the edge, 3 offloaded to the centre"
    assert view.session_counts([], nodes[:0], limit=4).summary == "No live session"
    assert view.SessionCounts(1, 0, 1).summary == "1 session: 0 at the edge, 1 offloaded to the centre"


def test_capacity_bars_round_up_and_mark_over_commitment() -> None:
    tiny = view.usage("memory", 1, GI)
    assert (tiny.width, tiny.percent, tiny.css) == (1, 0, "ok")  # something requested: never an empty bar
    full = view.usage("cpu", 4000, 4000)
    assert (full.text, full.width, full.percent, full.css) == ("4 of 4 CPU", 100, 100, "wait")
    over = view.usage("cpu", 5500, 4000)
    assert (over.text, over.width, over.css) == ("5.5 of 4 CPU", 100, "bad")
    none = view.usage("memory", 0, 0, measured=GI)
    assert (none.percent, none.width, none.measured) == (None, 0, "measured 1.0 GiB")
    assert "none allocatable" in none.label
    assert [view.cores(m) for m in (0, 250, 1000, 1500, 3417)] == ["0", "250m", "1", "1.5", "3.417"]
