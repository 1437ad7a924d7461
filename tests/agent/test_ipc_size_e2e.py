"""Greengrass' message size limit through a real agent with an awsiotsdk component: a publish
over the agent's IPC message limit is refused alone (IPC_MESSAGE_TOO_LARGE, naming the sizes) and
the same client connection goes on working."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from roost.ipc import rpc
from tests.agent.helpers import Workspace, wait_until
from tests.conftest import Cli, require_module

pytestmark = pytest.mark.slow

NAME = "com.test.BigPublisher"
PUBLISHER = textwrap.dedent("""
    import threading
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import BinaryMessage, InvalidArgumentsError, PublishMessage

    ipc = GreengrassCoreIPCClientV2()
    got = threading.Event()
    ipc.subscribe_to_topic(topic="big/#", on_stream_event=lambda e: (
        print("received", e.binary_message.context.topic, len(e.binary_message.message), flush=True), got.set()))
    try:
        ipc.publish_to_topic(topic="big/one", publish_message=PublishMessage(
            binary_message=BinaryMessage(message=b"x" * (2 * 1024 * 1024))))
        print("big accepted", flush=True)
    except InvalidArgumentsError as err:
        print("big refused:", err.message, flush=True)
    ipc.publish_to_topic(topic="big/small", publish_message=PublishMessage(
        binary_message=BinaryMessage(message=b"y" * 1000)))
    got.wait(20)
    print("small done", flush=True)
    threading.Event().wait()
""")
POLICY = {"aws.greengrass.ipc.pubsub": {f"{NAME}:pubsub:1": {
    "operations": ["aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic"], "resources": ["big/#"]}}}


def test_oversized_publish_is_refused_alone(agent: Cli, tmp_path: Path) -> None:
    require_module("awsiot.greengrasscoreipc.clientv2")
    ws = Workspace(tmp_path / "ws")
    ws.component(NAME, "1.0.0", {"Run": f"exec {sys.executable} -u {{artifacts:path}}/p.py"},
                 files={"p.py": PUBLISHER}, config={"accessControl": POLICY})
    out = agent.run("deployment", "create", *ws.deploy_args(), "--merge", f"{NAME}=1.0.0", "--wait", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    log_path = agent.root / "logs" / f"{NAME}.log"
    log = wait_until(lambda: log_path.exists() and "small done" in log_path.read_text() and log_path.read_text(),
                     timeout=60, what="the publisher")
    assert "big refused: the PublishToTopic request is" in log, log
    assert f"over the agent's IPC message size limit of {rpc.MAX_FRAME_SIZE} bytes" in log, log
    assert "received big/small 1000" in log and "received big/one" not in log, log
