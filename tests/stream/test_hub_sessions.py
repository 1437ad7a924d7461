"""HubClient's cluster-session calls: the request they make and the answer they parse.

The hub's ``/v1/cluster/sessions`` routes are built on another branch, so this checks the client
against httpx's MockTransport (the wire the contract describes), as tests/sync/test_units.py does for
error mapping; the routes' own tests cover the server side.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from roost.hub.client import HubClient

SESSION = {"id": "sess-1", "type": "scalar", "client_id": "cli-1", "tier": "centre", "offloaded": True,
           "node": "hub", "replica": "rep-1", "endpoint": "ws://10.0.0.1:31000/v1/stream", "port": 31000,
           "token": "tok", "status": "ACTIVE", "created_at": "2026-01-01T00:00:00Z"}


def test_create_and_end_cluster_sessions() -> None:
    seen: list[tuple[str, str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.raw_path.decode(), body))
        return httpx.Response(200, json=SESSION if request.method == "POST" else {**SESSION, "status": "ENDED"})

    with HubClient("http://hub.invalid", "rst_admin_x", transport=httpx.MockTransport(handler)) as client:
        session = client.create_cluster_session("scalar", "cli-1", wait_seconds=12.5)
        ended = client.end_cluster_session("sess/1")
    assert (session.offloaded, session.endpoint, session.token) == (True, SESSION["endpoint"], "tok")
    assert ended.status == "ENDED"
    assert seen == [("POST", "/v1/cluster/sessions", {"type": "scalar", "client_id": "cli-1", "wait_seconds": 12.5}),
                    ("DELETE", "/v1/cluster/sessions/sess%2F1", None)]
