"""Registering and provisioning devices over SSH on the wire (:mod:`roost.provision`).

=========================================  ===========================  ======================================
Route                                      Request                      Response
=========================================  ===========================  ======================================
``GET /v1/ssh-key``                                                     :class:`SshKey`
``POST /v1/devices/ssh``                   :class:`RegistrationCreate`  :class:`Registration` (202)
``GET /v1/devices/ssh/{id}``                                            :class:`Registration`
``GET /v1/registrations``                                               list of :class:`Registration`
``POST /v1/devices/{name}/upgrade``        :class:`ProvisionRun`        :class:`Registration` (202)
``POST /v1/devices/{name}/uninstall``      :class:`ProvisionRun`        :class:`Registration` (202)
``GET /v1/ssh-host-keys``                                               list of :class:`PinnedHostKey`
``PUT /v1/ssh-host-keys/{host}/{port}``    :class:`HostKeyPin`          :class:`PinnedHostKey`
``GET /v1/dist/{file}``                    (no credentials)             the hub's Roost wheel, wheelhouse
=========================================  ===========================  ======================================

A become password is accepted in a request body only, held in memory for the one run, and never
stored, logged or answered.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class RegistrationStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class StepStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    OK = "OK"
    CHANGED = "CHANGED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"


ENDED_REGISTRATION = (RegistrationStatus.SUCCEEDED, RegistrationStatus.FAILED)


class SshKey(BaseModel):
    public_key: str = Field(description="The hub's public key, one authorized_keys line.")
    fingerprint: str = Field(description="SHA256:... as ssh-keygen -l shows it.")


class Step(BaseModel):
    name: str
    status: StepStatus = StepStatus.PENDING
    started_at: datetime | None = None
    ended_at: datetime | None = None
    seconds: float | None = None
    message: str | None = None


#: Pip settings a device may be given (its index, extra indexes, local wheel folders, CA bundle).
PIP_KEYS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST", "PIP_CERT",
            "PIP_DEFAULT_TIMEOUT", "PIP_CONSTRAINT")


class RegistrationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=128)
    ssh: str = Field(max_length=300, description="user@host[:port] of the account to register.")
    hub_url: str = Field(max_length=2048, description="The hub's URL as the device reaches it.")
    host_key: str | None = Field(default=None, max_length=16384,
                                 description="The device's host key (TYPE BASE64), checked instead of "
                                             "trusting it on first use.")
    group: str | None = Field(default=None, max_length=128)
    labels: dict[str, str] = Field(default_factory=dict)
    become: bool = False
    become_password: SecretStr | None = Field(default=None, description="sudo password for --become; "
                                                                        "never stored.")
    pip: dict[str, str] = Field(default_factory=dict, description="PIP_* settings for the device's install.")
    wheelhouse: bool = Field(default=False, description="Install dependencies from the hub's wheelhouse "
                                                        "(no package index needed on the device).")


class ProvisionRun(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hub_url: str | None = Field(default=None, max_length=2048)
    become_password: SecretStr | None = None
    pip: dict[str, str] = Field(default_factory=dict)
    wheelhouse: bool = False


class Registration(BaseModel):
    id: str
    device: str
    kind: str = Field(description="add, upgrade or uninstall")
    target: str
    become: bool
    status: RegistrationStatus
    steps: list[Step]
    host_key_fingerprint: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    error_code: str | None = None
    message: str | None = None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None


class PinnedHostKey(BaseModel):
    host: str
    port: int
    key: str
    fingerprint: str
    pinned_at: datetime


class HostKeyPin(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host_key: str = Field(max_length=16384)
