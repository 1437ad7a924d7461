"""Components written with awsiotsdk's GreengrassCoreIPCClientV2 run unchanged against Roost.

awsiotsdk runs native (awscrt) threads, so the component runs as a subprocess; the server and a
Roost client run in the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from roost.agent.ipc import IpcServer
from roost.ipc.client import IpcClient
from tests.conftest import require_module

from .conftest import COMP_A, MemoryCore

require_module("awsiot.greengrasscoreipc.clientv2")  # awsiotsdk: skipped through the gate if absent

COMPONENT = textwrap.dedent(
    """
    import datetime, json, sys, threading
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import (
        BinaryMessage, JsonMessage, PublishMessage, ResourceNotFoundError, UnauthorizedError,
    )

    ipc = GreengrassCoreIPCClientV2()
    received = []
    got = threading.Event()

    def on_event(event):
        if event.json_message is not None:
            m = event.json_message
            received.append(["json", m.message, m.context.topic])
        else:
            m = event.binary_message
            received.append(["binary", m.message.decode(), m.context.topic])
        if len(received) == 2:
            got.set()

    _, op = ipc.subscribe_to_topic(topic="local/+", on_stream_event=on_event)
    print("SUBSCRIBED", flush=True)
    ipc.publish_to_topic(topic="sensors/out",
                         publish_message=PublishMessage(json_message=JsonMessage(message={"n": 1})))
    ipc.publish_to_topic(topic="sensors/out",
                         publish_message=PublishMessage(binary_message=BinaryMessage(message=b"bin")))
    print("PUBLISHED", flush=True)
    print("RECEIVED", got.wait(5) and json.dumps(received), flush=True)
    cfg = ipc.get_configuration(key_path=["model"])
    print("CONFIG", cfg.component_name, json.dumps(cfg.value, sort_keys=True), flush=True)
    try:
        ipc.get_configuration(key_path=["missing"])
    except ResourceNotFoundError as err:
        print("NOTFOUND", err.message, flush=True)
    ipc.update_configuration(key_path=["model"], value_to_merge={"version": "9"},
                             timestamp=datetime.datetime.now(datetime.timezone.utc))
    ipc.update_state(state="RUNNING")
    print("STATE ok", flush=True)
    try:
        ipc.publish_to_topic(topic="secret/x",
                             publish_message=PublishMessage(json_message=JsonMessage(message={})))
        print("UNAUTHORIZED not raised", flush=True)
    except UnauthorizedError as err:
        print("UNAUTHORIZED", err.message, flush=True)
    op.close()
    ipc.close()
    print("DONE", flush=True)
    """
)


async def _read_line(proc: asyncio.subprocess.Process, lines: list[str]) -> str:
    assert proc.stdout is not None
    raw = await asyncio.wait_for(proc.stdout.readline(), 15)
    line = raw.decode().rstrip("\n")
    lines.append(line)
    return line


async def test_awsiotsdk_v2_component(server: IpcServer, core: MemoryCore, tmp_path: Path) -> None:
    script = tmp_path / "component.py"
    script.write_text(COMPONENT)
    env = dict(os.environ)
    env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"] = str(server.socket_path)
    env["SVCUID"] = "tok-a"
    roost = await IpcClient.connect(str(server.socket_path), "tok-b")
    out = await roost.subscribe("sensors/out")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    lines: list[str] = []
    try:
        assert await _read_line(proc, lines) == "SUBSCRIBED"
        await roost.publish("local/in", {"hello": "from roost"})
        await roost.publish("local/bin", b"raw from roost")
        assert await _read_line(proc, lines) == "PUBLISHED"
        first, second = await out.get(5), await out.get(5)
        assert (first.topic, first.json) == ("sensors/out", {"n": 1})
        assert second.payload == b"bin"
        received = (await _read_line(proc, lines)).split(" ", 1)[1]
        assert json.loads(received) == [
            ["json", {"hello": "from roost"}, "local/in"],
            ["binary", "raw from roost", "local/bin"],
        ]
        assert await _read_line(proc, lines) == f'CONFIG {COMP_A} {{"name": "wine", "version": "1.0.0"}}'
        assert (await _read_line(proc, lines)).startswith("NOTFOUND key path missing")
        assert await _read_line(proc, lines) == "STATE ok"
        assert (await _read_line(proc, lines)).startswith("UNAUTHORIZED principal com.example.Sensor is not authorized")
        assert await _read_line(proc, lines) == "DONE"
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    except (AssertionError, TimeoutError):
        proc.kill()
        _, err = await proc.communicate()
        pytest.fail(f"component output: {lines!r}\nstderr:\n{err.decode()[-3000:]}")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await roost.close()
    assert core.states == {COMP_A: "RUNNING"}
    assert core.config[COMP_A]["model"]["version"] == "9"
