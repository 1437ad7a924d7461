"""GetSecretValue through the real IPC server, called by awsiotsdk's GreengrassCoreIPCClientV2 unchanged.

The core is the in-memory double of tests/ipc/conftest.py plus the agent's real sealed
:class:`~roost.agent.secrets.DeviceSecretStore`; the component runs as a subprocess (awscrt threads).
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from roost.agent.ipc import IpcServer
from roost.agent.secrets import DeviceSecretStore
from roost.hub.contract.secrets import DeviceSecret, DeviceSecrets, DeviceSecretVersion
from tests.conftest import require_module

from .conftest import ACL, COMP_A, MemoryCore

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"
T0 = datetime(2030, 1, 1, tzinfo=UTC)

COMPONENT = textwrap.dedent("""
    import sys
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import ResourceNotFoundError, ServiceError, UnauthorizedError

    ipc = GreengrassCoreIPCClientV2()
    arn = sys.argv[1]
    for label, kwargs in (("short", {"secret_id": "db"}),
                          ("previous", {"secret_id": arn, "version_stage": "AWSPREVIOUS"}),
                          ("byid", {"secret_id": arn, "version_id": "v1"}), ("binary", {"secret_id": "blob"}),
                          ("denied", {"secret_id": "other"}), ("missing", {"secret_id": "missing-one"}),
                          ("both", {"secret_id": arn, "version_id": "v1", "version_stage": "AWSCURRENT"}),
                          ("noid", {"secret_id": ""})):
        try:
            r = ipc.get_secret_value(**kwargs)
            value = r.secret_value.secret_string
            if value is None:
                value = r.secret_value.secret_binary
            print(label, "OK", r.secret_id, r.version_id, ",".join(r.version_stage), repr(value), flush=True)
        except UnauthorizedError as err:
            print(label, "UnauthorizedError", err.message, flush=True)
        except ResourceNotFoundError as err:
            print(label, "ResourceNotFoundError", err.message, flush=True)
        except ServiceError as err:
            print(label, "ServiceError", err.message, flush=True)
    print("DONE", flush=True)
""")


class SecretCore(MemoryCore):
    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.acl = {**ACL, COMP_A: {**ACL[COMP_A], "aws.greengrass.SecretManager": {
            "com.example.Sensor:secrets:1": {"operations": ["aws.greengrass#GetSecretValue"],
                                             "resources": [ARN, "blob", "missing-*"]}}}}
        self.secrets = DeviceSecretStore(folder)

    def secret_store(self) -> DeviceSecretStore:
        return self.secrets


@pytest.fixture
def core(tmp_path: Path) -> SecretCore:
    core = SecretCore(tmp_path / "secrets")
    core.secrets.replace(DeviceSecrets(secrets=[
        DeviceSecret(name=ARN, versions=[
            DeviceSecretVersion(version_id="v2", stages=["AWSCURRENT"], created_at=T0, secret_string="new-pass"),
            DeviceSecretVersion(version_id="v1", stages=["AWSPREVIOUS"], created_at=T0, secret_string="old-pass")]),
        DeviceSecret(name="blob", versions=[DeviceSecretVersion(version_id="b1", stages=["AWSCURRENT"], created_at=T0,
                                                                binary=True, secret_binary="AP8B")]),
        DeviceSecret(name="other", versions=[DeviceSecretVersion(version_id="o1", stages=["AWSCURRENT"],
                                                                 created_at=T0, secret_string="not-yours")])]))
    return core


async def test_awsiotsdk_get_secret_value(server: IpcServer, core: Any, tmp_path: Path) -> None:
    require_module("awsiot.greengrasscoreipc.clientv2")
    script = tmp_path / "component.py"
    script.write_text(COMPONENT)
    env = {**os.environ, "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": str(server.socket_path),
           "SVCUID": "tok-a"}
    proc = await asyncio.create_subprocess_exec(sys.executable, str(script), ARN, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "DONE" in out.decode(), out.decode() + err.decode()[-3000:]
    lines = dict(line.split(" ", 1) for line in out.decode().splitlines() if " " in line)
    assert lines["short"] == f"OK {ARN} v2 AWSCURRENT 'new-pass'"
    assert lines["previous"] == f"OK {ARN} v1 AWSPREVIOUS 'old-pass'"
    assert lines["byid"] == f"OK {ARN} v1 AWSPREVIOUS 'old-pass'"
    assert lines["binary"] == "OK blob b1 AWSCURRENT b'\\x00\\xff\\x01'"
    assert lines["denied"].startswith("UnauthorizedError principal com.example.Sensor is not authorized to perform "
                                      "aws.greengrass.SecretManager:aws.greengrass#GetSecretValue on resource other")
    assert lines["missing"] == ("ResourceNotFoundError secret missing-one is not on this device: deploy "
                                "aws.greengrass.SecretManager with it in cloudSecrets (docs/secrets.md)")
    assert lines["both"] == "ServiceError versionId and versionStage are both set: give at most one"
    assert lines["noid"] == "ServiceError secretId is required: the secret's ARN or name"
    assert "not-yours" not in out.decode()
