"""Joint inference's centre through the hub: the admission asks for the centre tier (HubClient's
request checked on httpx's MockTransport, as tests/stream/test_hub_sessions.py checks the others)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from roost.hub.client import HubClient

SESSION = {"id": "sess-1", "type": "wine-big", "client_id": "joint-x", "tier": "centre", "offloaded": True,
           "node": "centre-1", "replica": "rep-9", "endpoint": "ws://10.0.0.1:31000/v1/stream", "port": 31000,
           "token": "tok", "status": "ACTIVE", "created_at": "2026-01-01T00:00:00Z"}


def test_a_centre_session_is_admitted_in_the_centre_tier() -> None:
    seen: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=SESSION)

    with HubClient("http://hub.invalid", "rst_admin_x", transport=httpx.MockTransport(handler)) as client:
        session = client.create_cluster_session("wine-big", "joint-x", 5.0, tier="centre")
        client.create_cluster_session("wine-big", "joint-x", 5.0)
    assert session.tier == "centre" and session.token == "tok"
    assert seen == [{"type": "wine-big", "client_id": "joint-x", "wait_seconds": 5.0, "tier": "centre"},
                    {"type": "wine-big", "client_id": "joint-x", "wait_seconds": 5.0}]
