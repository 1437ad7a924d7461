"""Reading another component's configuration through a real agent, as on Greengrass.

By default any component reads (GetConfiguration with componentName) and watches
(SubscribeToConfigurationUpdate of another component) any component's configuration; an agent
started with ``--strict-config-reads`` refuses both with UnauthorizedError unless the reader's
``accessControl`` grants ``aws.greengrass.ipc.config`` on ``<component>:<keyPath>``.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.helpers import Workspace, wait_until
from tests.conftest import Cli, require_module, running_agent

pytestmark = pytest.mark.slow

HOLDER = "com.test.Holder"

# A reader written against Roost's client: reads the holder's settings, watches them, tries to write.
READER = textwrap.dedent("""
    import sys, threading
    from roost.ipc.client import SyncIpcClient
    from roost.ipc.errors import UnauthorizedIpcError

    holder = sys.argv[1]
    with SyncIpcClient() as ipc:
        try:
            print("read", ipc.get_configuration(["model"], component_name=holder), flush=True)
        except UnauthorizedIpcError as err:
            print("read denied:", err, flush=True)
        try:
            print("read all", ipc.get_configuration(component_name=holder), flush=True)
        except UnauthorizedIpcError as err:
            print("read all denied:", err, flush=True)
        try:
            ipc.subscribe_to_configuration_update(
                lambda u: print("update", u.component_name, u.key_path, flush=True), ["model"], holder)
            print("watching", flush=True)
        except UnauthorizedIpcError as err:
            print("watch denied:", err, flush=True)
        # Writes stay own-component only: this lands in the reader's own configuration.
        ipc.update_configuration(["model"], {"threshold": 0.1})
        print("own", ipc.get_configuration(["model"]), flush=True)
        threading.Event().wait()
""")

GRANT = {"aws.greengrass.ipc.config": {"com.test.Granted:config:1": {
    "operations": ["aws.greengrass#GetConfiguration", "aws.greengrass#SubscribeToConfigurationUpdate"],
    "resources": [f"{HOLDER}:/model/*", f"{HOLDER}:/model"]}}}


def _workspace(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.component(HOLDER, "1.0.0", {"Run": "exec sleep 100000"}, config={"model": {"threshold": 0.7}})
    for name, config in (("com.test.Reader", {}), ("com.test.Granted", {"accessControl": GRANT})):
        ws.component(name, "1.0.0", {"Run": f"python3 -u {{artifacts:path}}/reader.py {HOLDER}"},
                     files={"reader.py": READER}, config=config,
                     dependencies={HOLDER: {"VersionRequirement": "^1.0.0"}})
    return ws


def _deploy(agent: Cli, ws: Workspace) -> None:
    out = agent.run("deployment", "create", *ws.deploy_args(), "--merge", "com.test.Reader=1.0.0",
                    "--merge", "com.test.Granted=1.0.0", "--wait", "--json")
    assert out.returncode == 0, out.stdout + out.stderr


def _log(agent: Cli, name: str) -> str:
    return (agent.root / "logs" / f"{name}.log").read_text()


def _ready(agent: Cli, name: str) -> Any:
    return wait_until(lambda: "own {'threshold': 0.1}" in _log(agent, name), what=f"{name} to finish its reads")


def _update_holder(agent: Cli) -> None:
    out = agent.run("deployment", "create", "--update-config",
                    json.dumps({HOLDER: {"MERGE": {"model": {"threshold": 0.9}}}}), "--wait", "--json")
    assert out.returncode == 0, out.stdout + out.stderr


def test_any_component_reads_and_watches_another_by_default(agent: Cli, tmp_path: Path) -> None:
    _deploy(agent, _workspace(tmp_path))
    for name in ("com.test.Reader", "com.test.Granted"):
        _ready(agent, name)
        log = _log(agent, name)
        assert "read {'threshold': 0.7}" in log and "read all {'model': {'threshold': 0.7}}" in log, log
        assert "watching" in log and "denied" not in log, log
    _update_holder(agent)
    for name in ("com.test.Reader", "com.test.Granted"):
        wait_until(lambda n=name: f"update {HOLDER} [" in _log(agent, n), what=f"{name}: update event")
    # The reader's write went to its own configuration, never to the holder's.
    details = {c["componentName"]: c for c in agent.json("component", "list")}
    assert details["com.test.Reader"]["configuration"]["model"] == {"threshold": 0.1}
    assert details[HOLDER]["configuration"]["model"] == {"threshold": 0.9}


@pytest.fixture
def strict_agent(cli: Cli) -> Iterator[Cli]:
    with running_agent(cli.root, "test-device", "--strict-config-reads") as running:
        yield running


def test_strict_mode_refuses_reads_of_others_unless_granted(strict_agent: Cli, tmp_path: Path) -> None:
    agent = strict_agent
    _deploy(agent, _workspace(tmp_path))
    _ready(agent, "com.test.Reader")
    log = _log(agent, "com.test.Reader")
    for what in ("read", "read all", "watch"):
        assert f"{what} denied:" in log, log
    assert "com.test.Reader is not authorized to perform aws.greengrass.ipc.config:aws.greengrass#GetConfiguration " \
           f"on resource {HOLDER}:/model" in log, log
    assert f"SubscribeToConfigurationUpdate on resource {HOLDER}:/model" in log, log
    assert "own {'threshold': 0.1}" in log  # its own configuration needs no policy

    _ready(agent, "com.test.Granted")
    granted = _log(agent, "com.test.Granted")
    assert "read {'threshold': 0.7}" in granted and "watching" in granted, granted
    assert "read all denied:" in granted, granted  # the grant covers /model, not the whole document
    _update_holder(agent)
    wait_until(lambda: f"update {HOLDER} [" in _log(agent, "com.test.Granted"), what="granted update event")
    assert f"update {HOLDER}" not in _log(agent, "com.test.Reader")


# The same configuration-holder pattern written for AWS IoT Greengrass with awsiotsdk; runs unchanged.
SDK_READER = textwrap.dedent("""
    import sys, threading
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import UnauthorizedError

    holder = sys.argv[1]
    ipc = GreengrassCoreIPCClientV2()
    try:
        answer = ipc.get_configuration(component_name=holder, key_path=["model"])
        print("sdk read", answer.component_name, answer.value, flush=True)
    except UnauthorizedError as err:
        print("sdk read denied:", err.message, flush=True)
    try:
        ipc.subscribe_to_configuration_update(component_name=holder, key_path=["model"],
                                              on_stream_event=lambda e: print("sdk update", flush=True))
        print("sdk watching", flush=True)
    except UnauthorizedError as err:
        print("sdk watch denied:", err.message, flush=True)
    print("sdk done", flush=True)
    threading.Event().wait()
""")


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_awsiotsdk_reader(cli: Cli, tmp_path: Path, strict: bool) -> None:
    require_module("awsiot.greengrasscoreipc.clientv2")
    ws = Workspace(tmp_path / "ws")
    ws.component(HOLDER, "1.0.0", {"Run": "exec sleep 100000"}, config={"model": {"threshold": 0.7}})
    # awsiotsdk is installed in the test environment, not in the component's own: name that interpreter.
    ws.component("com.test.SdkReader", "1.0.0", {"Run": f"exec {sys.executable} -u {{artifacts:path}}/r.py {HOLDER}"},
                 files={"r.py": SDK_READER}, dependencies={HOLDER: {"VersionRequirement": "^1.0.0"}})
    start = cli.run("agent", "start", "--detach", "--thing-name", "test-device",
                    *(["--strict-config-reads"] if strict else []))
    assert start.returncode == 0, start.stderr + start.stdout
    try:
        out = cli.run("deployment", "create", *ws.deploy_args(), "--merge", "com.test.SdkReader=1.0.0", "--wait",
                      "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        wait_until(lambda: "sdk done" in _log(cli, "com.test.SdkReader"), what="the awsiotsdk reader")
        log = _log(cli, "com.test.SdkReader")
        if strict:
            assert "sdk read denied:" in log and "sdk watch denied:" in log, log
            assert f"on resource {HOLDER}:/model" in log, log
        else:
            assert f"sdk read {HOLDER} {{'threshold': 0.7}}" in log and "sdk watching" in log, log
    finally:
        stop = cli.run("agent", "stop")
        assert stop.returncode == 0, stop.stderr
