"""`roost lambda run` end to end: unchanged AWS Lambda handlers hosted as components of a real agent.

One agent for the module: the sample com.roost.WineLambda (pandas + XGBRegressor, with the model
com.roost.WineQuality trains at Install) beside the WineQuality server, and a throwaway handler
component that raises, overruns its timeout or reports its Lambda context on request.
"""

from __future__ import annotations

import asyncio
import base64
import json
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from roost.samples import ARTIFACTS, RECIPES
from roost.serve.wine import FEATURES, sample_records
from tests.agent.helpers import Workspace
from tests.conftest import Cli
from tests.serve.agent_ipc import agent_client, running_agent, until_serving

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

HANDLERS = "com.test.LambdaHandlers"
REQ, RES = "test/lambda/request", "test/lambda/result"
MEMORY_MB = 64

# An ordinary Lambda handler: knows nothing of Roost. The request body says what to do.
HANDLER_PY = textwrap.dedent("""
    import json, os, time

    CALLS = {"n": 0}  # module state lives as long as the execution environment (the worker)

    class CorkedBottleError(Exception):
        pass

    def handler(event, context):
        CALLS["n"] += 1
        request = json.loads(event["body"])
        action = request.get("action")
        if action == "allocate":  # hold that many MiB, touched, for the rest of the invocation
            block = bytearray(request["mib"] * 1024 * 1024)
            block[::4096] = b"x" * len(block[::4096])
            return {"statusCode": 200, "body": json.dumps({"allocated": len(block), "pid": os.getpid(),
                                                           "calls": CALLS["n"]})}
        if action == "raise":
            raise CorkedBottleError("the bottle is corked")
        if action == "sleep":
            time.sleep(request["seconds"])
        if action == "context":
            first = context.get_remaining_time_in_millis()
            time.sleep(0.05)
            second = context.get_remaining_time_in_millis()
            return {"statusCode": 200, "body": json.dumps({
                "function_name": context.function_name, "aws_request_id": context.aws_request_id,
                "memory_limit_in_mb": context.memory_limit_in_mb, "remaining": [first, second]})}
        return {"statusCode": 201, "body": json.dumps({
            "calls": CALLS["n"], "pid": os.getpid(), "event_keys": sorted(event), "request": request})}
""")


def _deploy(cli: Cli, *args: str) -> None:
    out = cli.run("deployment", "create", *args, "--wait", "--json", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr


def _event(doc: Any) -> dict[str, Any]:
    return {"body": json.dumps(doc), "isBase64Encoded": False}


@pytest.fixture(scope="module")
def magent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    with running_agent(tmp_path_factory.mktemp("lambda-e2e") / "root", "lambda-device") as cli:
        yield cli


@pytest.fixture(scope="module")
def handlers(magent: Cli, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    ws = Workspace(tmp_path_factory.mktemp("lambda-ws"))
    ws.component(HANDLERS, "1.0.0", {
        "Run": "roost lambda run --handler handlers.handler --path {artifacts:path} --timeout 1 "
               f"--memory-mb {MEMORY_MB} --function-name test-fn --request-topic {REQ} --result-topic {RES}"},
        files={"handlers.py": HANDLER_PY},
        config={"accessControl": {"aws.greengrass.ipc.pubsub": {f"{HANDLERS}:pubsub:1": {
            "operations": ["aws.greengrass#SubscribeToTopic", "aws.greengrass#PublishToTopic"],
            "resources": [REQ, RES, "roost/reply/*"]}}}})
    _deploy(magent, *ws.deploy_args(), "--merge", f"{HANDLERS}=1.0.0")
    return magent


async def test_sample_wine_lambda_matches_the_model_server(magent: Cli) -> None:
    _deploy(magent, "--recipe-dir", str(RECIPES), "--artifact-dir", str(ARTIFACTS),
            "--merge", "com.roost.WineLambda=1.0.0")
    records = sample_records()
    model_file = magent.root / "work" / "com.roost.WineQuality" / "wine-quality.json"
    booster = xgb.Booster()
    booster.load_model(str(model_file))
    x = np.array([[r[f] for f in FEATURES] for r in records], dtype=np.float32)
    expected = pytest.approx([float(v) for v in booster.inplace_predict(x)], abs=1e-5)

    async with agent_client(magent) as ipc:
        results = await ipc.subscribe("local/lambda/result")
        reply = await until_serving(ipc, "local/lambda/inference", _event(records))
        assert "error" not in reply, reply
        assert reply["result"] == expected
        assert reply["statusCode"] == 200 and reply["function"] == "wine-quality"
        assert isinstance(reply["requestId"], str) and reply["requestId"]
        assert isinstance(reply["elapsed_us"], int)
        # The result topic gets the handler's body as the plain JSON list, as the original did.
        published = None
        deadline = time.monotonic() + 10
        while published is None or published.json != reply["result"]:  # earlier retries may have landed too
            assert time.monotonic() < deadline
            published = await results.get(timeout=10)
        assert isinstance(published.json, list) and published.json == expected
        results.close()
        results = await ipc.subscribe("local/lambda/result")  # without the results of earlier retries

        # A base64 body reaches the handler as is (it decodes it, as Lambda handlers do).
        b64 = {"body": base64.b64encode(json.dumps(records).encode()).decode(), "isBase64Encoded": True}
        assert (await ipc.request("local/lambda/inference", b64))["result"] == expected

        # The original interface: a published event, no reply path.
        await ipc.publish("local/lambda/inference", _event(records))
        assert (await results.get(timeout=10)).json == expected

        # The model server gives the same predictions for the same event.
        served = await until_serving(ipc, "local/inference", _event(records))
        assert served["predictions"] == expected
        assert served["model"] == "wine-quality@1.0.0"
        results.close()


async def test_handler_errors_timeouts_and_context(handlers: Cli) -> None:
    async with agent_client(handlers) as ipc:
        first = await until_serving(ipc, REQ, _event({"action": "echo"}))
        assert "error" not in first, first
        assert first["statusCode"] == 201 and first["function"] == "test-fn"
        assert first["result"]["event_keys"] == ["body", "isBase64Encoded"]
        pid = first["result"]["pid"]

        # A plain document (no Lambda envelope) becomes the event body.
        plain = await ipc.request(REQ, {"action": "echo", "n": 1})
        assert plain["result"]["request"] == {"action": "echo", "n": 1}

        # An exception becomes an error reply naming it; the same worker keeps its state.
        raised = await ipc.request(REQ, _event({"action": "raise"}))
        assert raised["error"]["code"] == "HANDLER_ERROR", raised
        assert "CorkedBottleError" in raised["error"]["message"]
        assert "the bottle is corked" in raised["error"]["message"]
        again = await ipc.request(REQ, _event({"action": "echo"}))
        assert again["result"]["pid"] == pid and again["result"]["calls"] > first["result"]["calls"]

        # Past --timeout 1: HANDLER_TIMEOUT, and a fresh execution environment takes the next event.
        slow = await ipc.request(REQ, _event({"action": "sleep", "seconds": 5}), timeout=30)
        assert slow["error"]["code"] == "HANDLER_TIMEOUT", slow
        assert "1 s" in slow["error"]["message"]
        fresh = await ipc.request(REQ, _event({"action": "echo"}), timeout=60)
        assert "error" not in fresh, fresh
        assert fresh["result"]["pid"] != pid and fresh["result"]["calls"] == 1

        # A short sleep within the timeout is fine.
        quick = await ipc.request(REQ, _event({"action": "sleep", "seconds": 0.1}), timeout=30)
        assert quick["statusCode"] == 201, quick

        # The Lambda context.
        ctx = await ipc.request(REQ, _event({"action": "context"}))
        assert "error" not in ctx, ctx
        assert ctx["result"]["function_name"] == "test-fn"
        assert ctx["result"]["memory_limit_in_mb"] == str(MEMORY_MB)
        assert ctx["result"]["aws_request_id"] == ctx["requestId"]
        first_ms, second_ms = ctx["result"]["remaining"]
        assert 0 < second_ms < first_ms <= 1000

        # Without a reply path a failure goes to the result topic: never silent.
        results = await ipc.subscribe(RES)
        await ipc.publish(REQ, _event({"action": "raise"}))
        err = (await results.get(timeout=10)).json
        assert err["error"]["code"] == "HANDLER_ERROR", err
        results.close()

        # Concurrent events queue on the single worker; all are answered.
        replies = await asyncio.gather(*(ipc.request(REQ, _event({"action": "echo", "i": i}), timeout=30)
                                         for i in range(10)))
        assert sorted(r["result"]["request"]["i"] for r in replies) == list(range(10))
    states = {c["componentName"]: c["state"] for c in handlers.json("component", "list")}
    assert states[HANDLERS] == "RUNNING"


async def test_memory_limit_is_enforced_and_the_host_keeps_serving(handlers: Cli) -> None:
    async with agent_client(handlers) as ipc:
        first = await until_serving(ipc, REQ, _event({"action": "echo"}))
        assert "error" not in first, first
        # Below the limit: the memory is really there (touched) and the same worker goes on.
        below = await ipc.request(REQ, _event({"action": "allocate", "mib": MEMORY_MB // 2}), timeout=30)
        assert "error" not in below, below
        assert below["result"]["allocated"] == MEMORY_MB // 2 * 1024 * 1024
        pid = below["result"]["pid"]
        # Over it: a Lambda-style out-of-memory error naming the limit, not a crash of the host.
        over = await ipc.request(REQ, _event({"action": "allocate", "mib": 4 * MEMORY_MB}), timeout=30)
        assert over["error"]["code"] == "HANDLER_OUT_OF_MEMORY", over
        assert f"--memory-mb {MEMORY_MB}" in over["error"]["message"]
        assert "MemoryError" in over["error"]["message"] and over["requestId"] in over["error"]["message"]
        # The next invocation runs in a fresh execution environment, and succeeds.
        fresh = await ipc.request(REQ, _event({"action": "echo"}), timeout=60)
        assert "error" not in fresh, fresh
        assert fresh["result"]["pid"] != pid and fresh["result"]["calls"] == 1
        again = await ipc.request(REQ, _event({"action": "allocate", "mib": MEMORY_MB // 2}), timeout=30)
        assert "error" not in again and again["result"]["pid"] == fresh["result"]["pid"], again
        # Allocations that each fit, one after the other (each freed at the end of its invocation).
        for _ in range(3):
            fits = await ipc.request(REQ, _event({"action": "allocate", "mib": MEMORY_MB // 2}), timeout=30)
            assert "error" not in fits and fits["result"]["pid"] == fresh["result"]["pid"], fits
    states = {c["componentName"]: c["state"] for c in handlers.json("component", "list")}
    assert states[HANDLERS] == "RUNNING"
