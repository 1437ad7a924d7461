"""The shadow and metric operations against a real IpcServer (MemoryCore behind it): policy
spellings, bad payloads, the CLI-only metrics read, and a server without the stores."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest

from roost.agent.component_metrics import ComponentMetrics
from roost.agent.ipc import IpcServer
from roost.agent.shadow_store import LocalShadows, ShadowStore
from roost.ipc.errors import InvalidArgumentsIpcError, ServiceErrorResponse, ServiceIpcError, UnauthorizedIpcError

from .conftest import COMP_A, COMP_B, ClientFactory


def _code(err: ServiceErrorResponse) -> Any:
    return err.payload.get("context", {}).get("code") if isinstance(err.payload, dict) else None


@pytest.fixture
def stores(server: IpcServer, tmp_path: Path) -> LocalShadows:
    core: Any = server.core
    core.shadows = LocalShadows(ShadowStore(tmp_path / "shadows.db"))
    core.component_metrics = ComponentMetrics()
    acl = copy.deepcopy(core.acl)
    acl[COMP_A]["aws.greengrass.ShadowManager"] = {"p": {
        "operations": ["aws.greengrass#GetThingShadow", "aws.greengrass#UpdateThingShadow",
                       "aws.greengrass#ListNamedShadowsForThing"],
        # The classic shadow as Greengrass' documentation spells it (trailing slash); the thing for lists.
        "resources": ["$aws/things/dev/shadow/", "$aws/things/dev"]}}
    acl[COMP_A]["aws.greengrass.ipc.componentmetric"] = {"m": {
        "operations": ["aws.greengrass#PutComponentMetric"], "resources": ["rows*"]}}
    core.acl = acl
    shadows: LocalShadows = core.shadows
    return shadows


async def test_policy_spellings_and_bad_payloads(stores: LocalShadows, connect: ClientFactory) -> None:
    a = await connect("tok-a")
    doc = base64.b64encode(b'{"state": {"reported": {"on": true}}}').decode()
    answer = await a.call("UpdateThingShadow", {"thingName": "dev", "payload": doc})
    assert base64.b64decode(answer["payload"]).startswith(b'{"state":{"reported":{"on":true}}')
    assert (await a.call("ListNamedShadowsForThing", {"thingName": "dev"}))["results"] == []
    with pytest.raises(UnauthorizedIpcError, match=r"\$aws/things/dev/shadow/name/x"):
        await a.call("GetThingShadow", {"thingName": "dev", "shadowName": "x"})
    with pytest.raises(UnauthorizedIpcError, match="DeleteThingShadow"):
        await a.call("DeleteThingShadow", {"thingName": "dev"})
    for payload, words in (("!!!", "not valid base64"), (5, "must be base64 text"), (None, "payload is missing")):
        with pytest.raises(InvalidArgumentsIpcError, match=words) as err:
            await a.call("UpdateThingShadow", {"thingName": "dev", "payload": payload})
        assert _code(err.value) == "SHADOW_INVALID_DOCUMENT"
    b = await connect("tok-b")  # no shadow policy at all
    with pytest.raises(UnauthorizedIpcError, match=f"{COMP_B} is not authorized"):
        await b.call("GetThingShadow", {"thingName": "dev"})


async def test_metrics_put_by_components_read_by_the_cli_only(stores: LocalShadows, connect: ClientFactory) -> None:
    a = await connect("tok-a")
    await a.call("PutComponentMetric", {"metrics": [{"name": "rows_in", "unit": "Count", "value": 4}]})
    with pytest.raises(UnauthorizedIpcError, match="on resource other"):
        await a.call("PutComponentMetric", {"metrics": [{"name": "rows_in", "unit": "COUNT", "value": 1},
                                                        {"name": "other", "unit": "COUNT", "value": 1}]})
    with pytest.raises(UnauthorizedIpcError, match=r"aws\.greengrass\.Cli"):
        await a.call("GetComponentMetrics", {})
    cli = await connect("tok-cli")
    got = (await cli.call("GetComponentMetrics", {"componentName": COMP_A}))["components"]
    assert got[COMP_A]["rows_in"]["count"] == 1 and got[COMP_A]["rows_in"]["unit"] == "COUNT"  # all-or-nothing
    with pytest.raises(InvalidArgumentsIpcError, match="componentName must be a non-empty string"):
        await cli.call("GetComponentMetrics", {"componentName": 3})


async def test_a_server_without_the_stores_says_so(server: IpcServer, connect: ClientFactory) -> None:
    cli = await connect("tok-cli")
    with pytest.raises(ServiceIpcError, match="local shadows are not available") as err:
        await cli.call("GetThingShadow", {"thingName": "dev"})
    assert _code(err.value) == "SHADOWS_UNAVAILABLE"
    with pytest.raises(ServiceIpcError, match="not kept by this agent") as err:
        await cli.call("GetComponentMetrics", {})
    assert _code(err.value) == "METRICS_UNAVAILABLE"
