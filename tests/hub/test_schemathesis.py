"""Schemathesis against the live OpenAPI document: no input makes the hub fail with a 5xx."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.hub.conftest import HubServer, enroll_device

MAX_EXAMPLES = 20


def _fuzz(operation: Any, base_url: str, token: str, failures: list[str]) -> Callable[[], None]:
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        if operation.path == "/v1/device/desired" and isinstance(case.query, dict) and "wait" in case.query:
            case.query["wait"] = 0.2  # a long poll legitimately holds the request for up to 30 s
        response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=15)
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except Exception as err:
            failures.append(f"{operation.method.upper()} {operation.path}: {str(err)[:500]}")

    return run  # type: ignore[no-any-return]


@pytest.mark.timeout(170)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_no_server_errors(backend: str, request: pytest.FixtureRequest,
                          hub_server_factory: Callable[..., HubServer]) -> None:
    import schemathesis

    db_url = request.getfixturevalue("db_url_pg_clean") if backend == "postgresql" else None
    hub_server = hub_server_factory(db_url=db_url)
    credential = enroll_device(hub_server, "fuzz-device")
    schema = schemathesis.openapi.from_url(hub_server.url + "/openapi.json")
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        token = credential if operation.path.startswith("/v1/device/") else hub_server.token
        _fuzz(operation, hub_server.url, token, failures)()
        tested += 1
    assert tested >= 15
    assert failures == []
    assert httpx.get(hub_server.url + "/healthz").status_code == 200
