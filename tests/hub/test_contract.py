"""The hub's one contract: the status table reads the same both ways; the wire models are the server's."""

from __future__ import annotations

import httpx
import pytest

from roost.errors import UnauthorizedError
from roost.hub import contract
from roost.hub.client import error_from_response
from roost.hub.contract import STATUS_BY_CLASS, class_for, status_for
from roost.hub.errors import (
    GoneError,
    HubError,
    HubInvalidInputError,
    HubServerError,
    ReportForbiddenError,
    RevisionNotGivenError,
)


@pytest.mark.parametrize(("cls", "status"), STATUS_BY_CLASS)
def test_the_status_table_round_trips(cls: type[HubError], status: int) -> None:
    assert status_for(cls("x")) == status
    assert class_for(status, cls.code) is cls


@pytest.mark.parametrize(("status", "code", "cls"), [
    (403, "DEPLOYMENT_NOT_FOR_DEVICE", ReportForbiddenError), (409, "REVISION_NOT_GIVEN", RevisionNotGivenError),
    (410, "ENROLL_TOKEN_USED", GoneError), (405, "METHOD_NOT_ALLOWED", HubInvalidInputError),
    (503, "DB_DOWN", HubServerError),
])
def test_the_client_raises_the_servers_class(status: int, code: str, cls: type[HubError]) -> None:
    request = httpx.Request("POST", "http://hub.invalid/v1/device/reports")
    err = error_from_response(httpx.Response(status, json={"error": {"code": code, "message": "m"}},
                                             request=request))
    assert type(err) is cls and err.code == code and err.status == status


def test_refused_credentials_say_reauthenticate() -> None:
    assert issubclass(class_for(401), UnauthorizedError) and issubclass(class_for(403), UnauthorizedError)


def test_the_servers_response_models_are_the_contracts() -> None:
    from roost.hub.api import admin, components, device

    models = {getattr(r, "response_model", None) for m in (admin, components, device) for r in m.router.routes}
    for model in (contract.Device, contract.Group, contract.Component, contract.Deployment, contract.Desired,
                  contract.EnrollToken, contract.Enrollment, contract.ReportResult):
        assert model in models or list[model] in models  # type: ignore[valid-type]
