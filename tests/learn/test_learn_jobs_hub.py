"""The hub's record of federated learning jobs: /v1/learn/jobs on a real hub, through HubClient."""

from __future__ import annotations

import httpx
import pytest

from roost.hub.client import HubClient
from roost.hub.contract import LearnJobIn
from roost.hub.errors import HubError
from tests.agent.helpers import wait_until
from tests.hub.conftest import HubServer, enroll_device


def test_a_job_is_recorded_pending_with_its_groups_devices(hub_server: HubServer) -> None:
    for name in ("fl-a", "fl-b"):
        enroll_device(hub_server, name, group="vineyard")
    with HubClient(hub_server.url, hub_server.token) as hub:
        job = hub.create_learn_job(LearnJobIn(target="group:vineyard", task="wine", rounds=2))
        assert job.status == "PENDING" and job.devices == ["fl-a", "fl-b"] and job.min_participants == 2
        assert job.strategy == "fedavg" and job.rounds_planned == 2 and job.rounds == []
        assert job.serving_component == "com.roost.WineQuality" and job.component is None  # nothing published yet
        assert [j.job for j in hub.learn_jobs()] == [job.job]
        # the runner takes it at once: without the SuperNode component published it cannot deploy, and says so
        ended = wait_until(lambda: (j := hub.learn_job(job.job)).status == "FAILED" and j, timeout=60,
                           what="the job to fail")
        assert ended.devices == job.devices and "com.roost.FlowerSuperNode" in (ended.reason or "")


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"target": "group:vineyard", "task": "beer", "rounds": 2}, 400, "LEARN_TASK_UNKNOWN"),
    ({"target": "group:vineyard", "task": "wine", "strategy": "fedsgd", "rounds": 2}, 400, "LEARN_STRATEGY_UNKNOWN"),
    ({"target": "group:vineyard", "task": "wine", "rounds": 0}, 400, "LEARN_ROUNDS_OUT_OF_RANGE"),
    ({"target": "group:vineyard", "task": "wine", "rounds": 2, "min_participants": 2}, 400,
     "LEARN_PARTICIPANTS_INVALID"),
    ({"target": "group:empty", "task": "wine", "rounds": 2}, 400, "LEARN_TARGET_EMPTY"),
    ({"target": "group:nowhere", "task": "wine", "rounds": 2}, 404, "GROUP_NOT_FOUND"),
    ({"target": "device:x", "task": "wine", "rounds": 2}, 422, "VALIDATION_ERROR"),
    ({"target": "group:vineyard", "task": "wine", "rounds": 2, "component": "com.example.Nowhere"}, 400,
     "LEARN_COMPONENT_UNKNOWN"),
    ({"target": "group:vineyard", "task": "wine", "rounds": 2, "component": "a/b"}, 422, "VALIDATION_ERROR"),
])
def test_bad_jobs_are_refused_with_their_code(hub_server: HubServer, body: dict[str, object], status: int,
                                              code: str) -> None:
    enroll_device(hub_server, "fl-only", group="vineyard")
    enroll_device(hub_server, "fl-gone", group="empty")
    with hub_server.client() as admin:
        assert admin.delete("/v1/groups/empty/members/fl-gone").status_code < 300  # the group stays, empty
        r = admin.post("/v1/learn/jobs", json=body)
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text


def test_jobs_need_the_admin_token_and_unknown_ids_are_named(hub_server: HubServer) -> None:
    r = httpx.get(hub_server.url + "/v1/learn/jobs")
    assert r.status_code == 401
    with HubClient(hub_server.url, hub_server.token) as hub, pytest.raises(HubError) as info:
        hub.learn_job("fl-missing")
    assert info.value.code == "LEARN_JOB_NOT_FOUND" and "fl-missing" in info.value.message
