"""Request bodies (pydantic). Responses are the store's dataclasses (:mod:`roost.hub.store`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

INT32 = 2**31 - 1
Label = str | int | float | bool
#: Free text stored in the database: no NUL (PostgreSQL refuses it).
_TEXT = r"^[^\x00]*$"
_ID = r"^[^\x00-\x1f]+$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EnrollTokenCreate(_Body):
    group: str | None = Field(None, max_length=128, description="Group the device joins when it enrols.")
    ttl_seconds: int = Field(3600, ge=1, le=365 * 86400)


class EnrollRequest(_Body):
    token: str = Field(..., max_length=256, pattern=_TEXT)
    name: str = Field(..., max_length=128)
    labels: dict[str, Label] = Field(default_factory=dict, max_length=128)


class LabelsUpdate(_Body):
    labels: dict[str, Label] = Field(default_factory=dict, max_length=128)


class MembersAdd(_Body):
    devices: list[str] = Field(..., max_length=10000)


ConfigUpdate = dict[str, Any]


class DeploymentCreate(_Body):
    target: str = Field(..., max_length=140, description="device:NAME or group:NAME")
    components: dict[str, str] = Field(default_factory=dict, max_length=1000,
                                       description="{name: version}; omitted components are removed")
    configuration: dict[str, ConfigUpdate] = Field(default_factory=dict,
                                                   description='{name: {"MERGE": {...}, "RESET": ["/ptr"]}}')
    failure_policy: Literal["ROLLBACK", "DO_NOTHING"] = "ROLLBACK"
    max_per_minute: int | None = Field(None, ge=1, le=INT32)
    abort_failure_percent: int | None = Field(None, ge=0, le=100)
    abort_min_devices: int = Field(1, ge=1, le=INT32)
    timeout_minutes: int = Field(60, ge=1, le=525600)


DeviceStatus = Literal["QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "ROLLED_BACK", "TIMED_OUT", "CANCELED"]


class ReportIn(_Body):
    id: str = Field(..., min_length=1, max_length=128, pattern=_ID)
    deployment_id: str | None = Field(None, max_length=64, pattern=_ID)
    revision: int | None = Field(None, ge=0, le=INT32)
    status: DeviceStatus | None = None
    reason_code: str | None = Field(None, max_length=64, pattern=_TEXT)
    message: str | None = Field(None, max_length=2000, pattern=_TEXT)
    components: dict[str, dict[str, Any]] | None = Field(None, description="{name: {version, state}}")
    at: datetime | None = None


class ReportsIn(_Body):
    reports: list[ReportIn] = Field(..., max_length=1000)
