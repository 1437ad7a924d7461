"""Bounded IPC resources and policy that IPC cannot change, against a real IpcServer.

Real Unix sockets, Roost's real client (and awsiotsdk's in a subprocess); MemoryCore stands in
for the agent behind the server (see conftest).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import struct
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import pytest

from roost.agent.errors import IpcNotAuthenticatedError
from roost.agent.ipc import IpcLimits, IpcServer, operations
from roost.agent.ipc.connection import PRECONNECT_BUFFER, _Connection
from roost.errors import InvalidInputError
from roost.ipc import rpc
from roost.ipc.client import IpcClient
from roost.ipc.errors import AgentBusyError, ServiceIpcError, UnauthorizedIpcError
from roost.ipc.eventstream import Message, MessageDecoder
from tests.conftest import require_module

from .conftest import COMP_A, COMP_B, ClientFactory, MemoryCore, ServerFactory


async def _read_until_eof(reader: asyncio.StreamReader, timeout: float = 5) -> list[Message]:
    data = await asyncio.wait_for(reader.read(), timeout)
    return MessageDecoder().feed(data)


# -- connection cap ---------------------------------------------------------------------------------


async def test_over_cap_connection_gets_ipc_busy_and_others_keep_working(make_server: ServerFactory) -> None:
    server = await make_server(max_connections=2)
    path = str(server.socket_path)
    a = await IpcClient.connect(path, "tok-a")
    b = await IpcClient.connect(path, "tok-b")
    try:
        sub = await b.subscribe("sensors/#")
        with pytest.raises(AgentBusyError, match=r"agent at its connection limit \(2\)") as info:
            await IpcClient.connect(path, "tok-a")
        assert info.value.code == "IPC_BUSY" and getattr(info.value, "retryable", False)
        assert server.connection_count == 2
        # The connections already there are untouched.
        await a.publish("sensors/1", b"still served")
        assert (await sub.get(2)).payload == b"still served"
        # A slot freed is a slot usable.
        await a.close()
        await asyncio.wait_for(_until(lambda: server.connection_count == 1), 5)
        c = await IpcClient.connect(path, "tok-a")
        await c.publish("sensors/2", b"new one")
        assert (await sub.get(2)).payload == b"new one"
        await c.close()
    finally:
        await a.close()
        await b.close()


async def test_over_cap_refusal_seen_raw_is_a_protocol_error_naming_the_limit(make_server: ServerFactory) -> None:
    server = await make_server(max_connections=1)
    held = await IpcClient.connect(str(server.socket_path), "tok-a")
    try:
        reader, writer = await asyncio.open_unix_connection(str(server.socket_path))
        writer.write(rpc.connect_message("tok-b"))  # the half-closed socket still takes the CONNECT
        msgs = await _read_until_eof(reader)
        assert [m.headers[":message-type"] for m in msgs] == [rpc.PROTOCOL_ERROR]
        doc = json.loads(msgs[0].payload)
        assert doc == {"message": "agent at its connection limit (1); retry later", "code": "IPC_BUSY"}
        writer.close()
        assert server.connection_count == 1
        await held.publish("sensors/x", b"fine")
    finally:
        await held.close()


AWSIOT_CONNECT = textwrap.dedent(
    """
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    try:
        GreengrassCoreIPCClientV2()
    except Exception as err:
        print("REFUSED", type(err).__name__, flush=True)
    else:
        print("CONNECTED", flush=True)
    """
)


async def test_awsiotsdk_client_sees_a_refused_connection_over_the_cap(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    require_module("awsiot.greengrasscoreipc.clientv2")
    server = await make_server(max_connections=1)
    held = await IpcClient.connect(str(server.socket_path), "tok-b")
    script = tmp_path / "connect.py"
    script.write_text(AWSIOT_CONNECT)
    env = dict(os.environ, AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT=str(server.socket_path),
               SVCUID="tok-a")
    try:
        proc = await asyncio.create_subprocess_exec(sys.executable, str(script), env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert out.decode().startswith("REFUSED"), (out, err[-2000:])
        await held.publish("sensors/x", b"unaffected")
    finally:
        await held.close()


def test_listen_backlog_is_sized_for_the_cap() -> None:
    assert IpcLimits(max_connections=1024).backlog == 1024
    assert IpcLimits(max_connections=4).backlog == 128
    with pytest.raises(InvalidInputError, match="max_connections must be at least 1") as info:
        IpcLimits(max_connections=0)
    assert info.value.code == "INVALID_IPC_LIMIT"


async def test_full_listen_backlog_is_a_busy_error_not_connection_lost(sock_dir: Path) -> None:
    import socket

    path = sock_dir / "full.socket"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)  # nobody accepts: the backlog fills up
    waiting: list[socket.socket] = []
    try:
        while True:  # fill the backlog (the kernel takes a few more than asked)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(str(path))
            except BlockingIOError:
                s.close()
                break
            waiting.append(s)
            assert len(waiting) < 64, "the backlog never filled"
        with pytest.raises(AgentBusyError, match="listen backlog is full"):
            await IpcClient.connect(str(path), "tok-a", timeout=2)
    finally:
        for s in waiting:
            s.close()
        listener.close()


# -- frames before CONNECT ------------------------------------------------------------------------------


def _prelude(total: int, headers: int = 0) -> bytes:
    head = struct.pack(">II", total, headers)
    return head + struct.pack(">I", zlib.crc32(head))


@pytest.mark.parametrize("claimed", [IpcLimits().preconnect_max_frame + 1, 1_400_000])
async def test_oversized_frame_before_connect_is_refused_and_closed(
    claimed: int, server: IpcServer, connect: ClientFactory
) -> None:
    a = await connect("tok-a")
    reader, writer = await asyncio.open_unix_connection(str(server.socket_path))
    writer.write(_prelude(claimed) + b"x" * 4096)  # a partial frame: the server must not wait for the rest
    msgs = await _read_until_eof(reader)
    assert [m.headers[":message-type"] for m in msgs] == [rpc.PROTOCOL_ERROR]
    assert "FRAME_TOO_LARGE" in msgs[0].payload.decode()
    assert f"{claimed} bytes exceeds the limit of {server.limits.preconnect_max_frame}" in msgs[0].payload.decode()
    writer.close()
    assert server.connection_count == 1
    await a.publish("sensors/x", b"unaffected")


async def test_after_connect_large_frames_are_accepted(server: IpcServer, connect: ClientFactory) -> None:
    a = await connect("tok-a")
    sub = await a.subscribe("sensors/big")
    payload = os.urandom(700 * 1024)  # ~930 KiB as base64: far above the pre-CONNECT cap
    await a.publish("sensors/big", payload)
    assert (await sub.get(5)).payload == payload


async def _until(pred: Any) -> None:
    while not pred():
        await asyncio.sleep(0.01)


async def test_read_buffers_start_small_grow_for_large_messages_and_are_trimmed_when_idle(
    server: IpcServer, connect: ClientFactory
) -> None:
    _, writer = await asyncio.open_unix_connection(str(server.socket_path))
    await asyncio.wait_for(_until(lambda: server.connection_count == 1), 5)
    (raw,) = server._connections
    assert raw.decoder.capacity == PRECONNECT_BUFFER  # an unauthenticated peer costs 2 KiB of buffer
    a = await connect("tok-a")
    sub = await a.subscribe("sensors/big")
    await a.publish("sensors/big", b"y" * (300 * 1024))
    await sub.get(5)
    (conn,) = (c for c in server._connections if c.principal == COMP_A)
    assert conn.decoder.capacity >= 64 * 1024  # grew for the large message (and for a busy peer)
    server._housekeep()  # the periodic pass: an idle connection gives its buffer back
    assert conn.decoder.capacity == PRECONNECT_BUFFER
    await a.publish("sensors/big", b"after the trim")
    assert (await sub.get(5)).payload == b"after the trim"
    writer.close()


# -- per-component stream cap -----------------------------------------------------------------------------


async def test_stream_cap_is_per_component_across_connections(make_server: ServerFactory) -> None:
    server = await make_server(max_streams_per_component=3)
    path = str(server.socket_path)
    a1 = await IpcClient.connect(path, "tok-a")
    a2 = await IpcClient.connect(path, "tok-a")
    b = await IpcClient.connect(path, "tok-b")
    try:
        s1 = await a1.subscribe("sensors/1")
        await a1.subscribe("sensors/2")
        await a2.subscribe("sensors/3")
        with pytest.raises(ServiceIpcError, match=f"too many open streams for {COMP_A} across its connections "
                                                  r"\(limit 3\)") as info:
            await a2.subscribe("sensors/4")
        assert info.value.payload["context"]["code"] == "IPC_STREAM_LIMIT"
        assert server.open_streams(COMP_A) == 3
        # Another component is not affected, and A's other streams keep delivering.
        bsub = await b.subscribe("sensors/#")
        await b.publish("sensors/1", b"to a1")
        assert (await s1.get(2)).payload == b"to a1"
        assert (await bsub.get(2)).payload == b"to a1"
        # Closing a stream (or a connection) frees capacity.
        s1.close()
        await asyncio.wait_for(_until(lambda: server.open_streams(COMP_A) == 2), 5)
        await a2.subscribe("sensors/4")
        await a2.close()
        await asyncio.wait_for(_until(lambda: server.open_streams(COMP_A) == 1), 5)
        assert server.open_streams(COMP_B) == 1
    finally:
        for c in (a1, a2, b):
            await c.close()


# -- policy cannot be changed over IPC ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_path", "value"),
    [
        (["accessControl"], {"aws.greengrass.Cli": {"x": {"operations": ["*"], "resources": ["*"]}}}),
        (["accessControl", "aws.greengrass.Cli"], {"x": {"operations": ["*"], "resources": ["*"]}}),
        ([], {"threshold": 0.9, "accessControl": {"aws.greengrass.Cli": {"x": {"operations": ["*"]}}}}),
        ([], {"accessControl": None}),
    ],
)
async def test_update_configuration_touching_access_control_is_refused_and_changes_nothing(
    key_path: list[str], value: Any, connect: ClientFactory, core: MemoryCore
) -> None:
    before = copy.deepcopy(core.config)
    acl_before = copy.deepcopy(core.acl)
    a = await connect("tok-a")
    with pytest.raises(UnauthorizedIpcError, match="may not change accessControl through UpdateConfiguration") as info:
        await a.update_configuration(key_path, value)
    assert info.value.payload["context"]["code"] == "POLICY_CHANGE_REFUSED"
    assert core.config == before and core.acl == acl_before  # atomic: not even "threshold" changed
    # Still allowed: everything that is not policy, including a nested key of the same name.
    await a.update_configuration(["model", "accessControl"], "just data")
    assert core.config[COMP_A]["model"]["accessControl"] == "just data"
    with pytest.raises(UnauthorizedIpcError):
        await a.call("ListComponents", {})


async def test_cli_principal_cannot_change_policy_over_ipc_either(connect: ClientFactory, core: MemoryCore) -> None:
    cli = await connect("tok-cli")
    with pytest.raises(UnauthorizedIpcError, match="policy changes only through a deployment") as info:
        await cli.update_configuration([], {"accessControl": {}})
    assert info.value.payload["context"]["code"] == "POLICY_CHANGE_REFUSED"


# -- every operation checks authentication for real -----------------------------------------------------


@pytest.mark.parametrize("operation", operations.registered_operations())
async def test_handlers_refuse_an_unauthenticated_connection(operation: str, server: IpcServer) -> None:
    conn = _Connection(server)  # never CONNECTed
    request: dict[str, Any] = {"topic": "sensors/x", "publishMessage": {"jsonMessage": {"message": 1}},
                               "valueToMerge": {}, "state": "RUNNING", "componentName": COMP_A,
                               "deploymentId": "d"}
    async def call() -> None:
        result = operations._HANDLERS[operation](conn, 1, operation, request)
        if asyncio.iscoroutine(result):
            await result

    with pytest.raises(IpcNotAuthenticatedError, match="has not completed CONNECT") as info:
        await call()
    assert info.value.code == "IPC_NOT_AUTHENTICATED"


# -- refusals are logged rate-limited ---------------------------------------------------------------------------


async def test_a_burst_of_refused_connects_logs_o1_lines(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="roost.agent.ipc")
    server = await make_server()
    n = 150
    for _ in range(n):
        reader, writer = await asyncio.open_unix_connection(str(server.socket_path))
        writer.write(rpc.connect_message("wrong-token"))
        await _read_until_eof(reader)
        writer.close()
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1
    assert "unknown or missing authToken" in lines[0].getMessage()
    assert server.refused_connections.total == n
    # The next summary (forced: the interval is 60 s) carries the count of the rest in one line.
    server.refused_connections._window_start -= server.limits.refusal_log_interval
    server._housekeep()
    summary = [r.getMessage() for r in caplog.records if "in the last" in r.getMessage()]
    assert len(summary) == 1
    assert summary[0].startswith(f"refused {n - 1} IPC connections in the last")
    assert summary[0].endswith(f"{n - 1} unknown or missing authToken")


async def test_unauthorised_operations_are_logged_rate_limited(
    connect: ClientFactory, server: IpcServer, caplog: pytest.LogCaptureFixture
) -> None:
    a = await connect("tok-a")
    for _ in range(30):
        with pytest.raises(UnauthorizedIpcError):
            await a.publish("secret/x", b"no")
    lines = [r.getMessage() for r in caplog.records if "IPC operations" in r.getMessage()]
    assert len(lines) == 1 and "PublishToTopic (UNAUTHORIZED)" in lines[0]
    assert server.refused_operations.total == 30
