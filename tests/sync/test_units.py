"""Unit tests of the pieces around the sync loop: error mapping, hub.json, outcome mapping."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest

from roost.agent.enrolment import HubConfig, detect_labels, ensure_enrolled
from roost.agent.paths import AgentPaths
from roost.agent.store import DeploymentRecord
from roost.agent.sync import _outcome
from roost.cli.output import EXIT_CONFLICT, EXIT_INVALID, EXIT_NOT_FOUND, EXIT_UNAUTHORIZED, exit_code_for
from roost.errors import ConflictError, InvalidInputError, NotFoundError, UnauthorizedError
from roost.hub.client import HubClient, HubServerError, HubUnreachableError


def _client(status: int, body: object) -> HubClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    return HubClient("http://hub.invalid", "rst_admin_x", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(("status", "cls", "exit_code"), [
    (401, UnauthorizedError, EXIT_UNAUTHORIZED), (403, UnauthorizedError, EXIT_UNAUTHORIZED),
    (404, NotFoundError, EXIT_NOT_FOUND), (409, ConflictError, EXIT_CONFLICT), (410, ConflictError, EXIT_CONFLICT),
    (422, InvalidInputError, EXIT_INVALID), (413, InvalidInputError, EXIT_INVALID),
])
def test_hub_errors_keep_their_code_and_map_to_exit_codes(status: int, cls: type[Exception], exit_code: int) -> None:
    with _client(status, {"error": {"code": "SOME_CODE", "message": "what went wrong"}}) as client, \
            pytest.raises(cls) as info:
        client.devices()
    err = info.value
    assert err.code == "SOME_CODE"  # type: ignore[attr-defined]
    assert "what went wrong" in str(err)
    assert exit_code_for(err) == exit_code  # type: ignore[arg-type]


def test_server_errors_are_retryable_and_unreachable_hub_is_named() -> None:
    with _client(503, {"error": {"code": "DB_DOWN", "message": "x"}}) as client, pytest.raises(HubServerError) as info:
        client.groups()
    assert getattr(info.value, "retryable", False)
    with HubClient("http://127.0.0.1:9", "t") as client, pytest.raises(HubUnreachableError) as unreachable:
        client.groups()
    assert "127.0.0.1:9" in str(unreachable.value) and getattr(unreachable.value, "retryable", False)


def test_hub_json_is_private_and_round_trips(tmp_path: Path) -> None:
    paths = AgentPaths.at(tmp_path / "root")
    paths.ensure()
    config = HubConfig("http://127.0.0.1:1", "dev-1", "rst_dev_secret")
    config.save(paths)
    assert stat.S_IMODE(HubConfig.path(paths).stat().st_mode) == 0o600
    assert HubConfig.load(paths) == config
    assert "rst_dev_secret" not in repr(config)
    # Reused without a token; a different name for an enrolled root is refused.
    assert ensure_enrolled(paths, "http://127.0.0.1:1/", None, None) == config
    with pytest.raises(ConflictError):
        ensure_enrolled(paths, None, None, "other-name")
    # A first start with --hub but no token says what to do.
    other = AgentPaths.at(tmp_path / "fresh")
    with pytest.raises(InvalidInputError, match="enroll-token"):
        ensure_enrolled(other, "http://127.0.0.1:1", None, None)
    HubConfig.path(paths).write_text(json.dumps({"hub": "x"}))
    with pytest.raises(InvalidInputError):
        HubConfig.load(paths)


def test_labels_are_detected() -> None:
    labels = detect_labels()
    assert {"arch", "os", "cpus", "memory_mb", "hostname"} <= set(labels)
    assert int(labels["cpus"]) >= 1 and int(labels["memory_mb"]) > 0


def _record(status: str, detailed: str | None = None, cause: str | None = None) -> DeploymentRecord:
    return DeploymentRecord(id="x", seq=1, created_at=0, updated_at=0, status=status, request={},
                            detailed_status=detailed, errors=["boom"] if cause else [], failure_cause=cause)


def test_outcome_mapping() -> None:
    assert _outcome(_record("SUCCEEDED", "SUCCESSFUL")) == ("SUCCEEDED", None, None)
    assert _outcome(_record("FAILED", "FAILED_ROLLBACK_COMPLETE", "COMPONENT_FAILED")) == (
        "ROLLED_BACK", "COMPONENT_FAILED", "boom")
    assert _outcome(_record("FAILED", "FAILED_NO_STATE_CHANGE", "ARTIFACT_DIGEST_MISMATCH")) == (
        "FAILED", "ARTIFACT_DIGEST_MISMATCH", "boom")
    assert _outcome(_record("IN_PROGRESS"))[0] == "TIMED_OUT"
