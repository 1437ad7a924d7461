"""`roost serve` end to end: a real agent, real component processes, requests over its IPC socket.

One agent per module (starting servers and compiling models costs seconds on a small machine):
a tabular server on the upstream seed model, an image server on the bundled classifier, and the
sample components. The test process talks to the agent as the privileged local CLI principal.
The hot-swap test changes the tabular server's model, so it runs after the other tabular tests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from roost.ipc.client import IpcClient
from roost.samples import ARTIFACTS, RECIPES
from roost.serve.backends import compiled_name, model_digest, onnx_name
from roost.serve.image import SAMPLE_MODEL_DIR
from roost.serve.wine import FEATURES, load_wine, sample_records, train_wine
from tests.agent.helpers import Workspace, procs_with, wait_until
from tests.conftest import Cli, require_seed_data
from tests.serve.agent_ipc import agent_client, running_agent, until_serving

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
SEED = SHARED / "seed-data"
SEED_MODEL = SEED / "xgboost_wine_quality.json"
#: What the upstream seed model predicts for its two sample records (samples.json).
SEED_PREDICTIONS = [6.573914, 4.869720]
# How far a correct float32 evaluation may be from a published value: the summation-order bound of
# the seed model on the seed records (tests/serve/test_backends.py) plus the published 6-decimal
# rounding; from the model and float32 arithmetic, not from any CPU.
SEED_TOLERANCE = 4e-4

WINE = "com.test.WineServe"
WINE_REQ, WINE_RES = "test/wine/request", "test/wine/result"
IMAGE = "com.test.ImageServe"
IMAGE_REQ, IMAGE_RES = "test/image/request", "test/image/result"


def _acl(component: str, *topics: str) -> dict[str, Any]:
    return {"aws.greengrass.ipc.pubsub": {f"{component}:pubsub:1": {
        "operations": ["aws.greengrass#SubscribeToTopic", "aws.greengrass#PublishToTopic"],
        "resources": [*topics, "roost/reply/*"]}}}


def _deploy(cli: Cli, *args: str) -> dict[str, Any]:
    out = cli.run("deployment", "create", *args, "--wait", "--json", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def _states(cli: Cli) -> dict[str, str]:
    return {c["componentName"]: c["state"] for c in cli.json("component", "list")}


def _event(records: Any, *, b64: bool = False) -> dict[str, Any]:
    body = json.dumps(records)
    if b64:
        return {"body": base64.b64encode(body.encode()).decode(), "isBase64Encoded": True}
    return {"body": body, "isBase64Encoded": False}


def _predict(model: Path, records: list[dict[str, Any]]) -> list[float]:
    booster = xgb.Booster()
    booster.load_model(str(model))
    x = np.array([[r[f] for f in FEATURES] for r in records], dtype=np.float32)
    return [float(v) for v in booster.inplace_predict(x)]


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def magent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    """One real agent for the whole module."""
    with running_agent(tmp_path_factory.mktemp("serve-e2e") / "root", "serve-device") as cli:
        yield cli


@pytest.fixture(scope="module")
def samples() -> list[dict[str, Any]]:
    require_seed_data("xgboost_wine_quality.json", "samples.json")
    records = json.loads((SEED / "samples.json").read_text())
    assert isinstance(records, list) and len(records) == 2
    return records


@pytest.fixture(scope="module")
def wine_server(magent: Cli, samples: list[dict[str, Any]], seed_cache: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """`roost serve` on the upstream seed model (engine auto), DEBUG logs (batch counters).

    Its cache starts with the session's compiled seed model (tests/serve/conftest.py: compiled once
    per session); the hot-swap test's new model is compiled there by the server itself.
    """
    cache = tmp_path_factory.mktemp("wine-cache")
    digest = model_digest(SEED_MODEL)
    for name in (compiled_name(digest), onnx_name(digest)):
        shutil.copy2(seed_cache / name, cache / name)
    cache.chmod(0o777)  # the component runs as another user when the tests run as root
    ws = Workspace(tmp_path_factory.mktemp("wine-ws"))
    ws.component(WINE, "1.0.0", {
        "Run": "roost serve --model {artifacts:path}/xgboost_wine_quality.json --name wine-seed --version 1.0.0 "
               f"--request-topic {WINE_REQ} --result-topic {WINE_RES} --cache-dir {cache} "
               "--max-request-bytes 65536 --log-level DEBUG"},
        files={"xgboost_wine_quality.json": SEED_MODEL.read_text()},
        config={"accessControl": _acl(WINE, WINE_REQ, WINE_RES)})
    _deploy(magent, *ws.deploy_args(), "--merge", f"{WINE}=1.0.0")

    async def ready() -> Any:
        async with agent_client(magent) as ipc:
            return await until_serving(ipc, WINE_REQ, _event(samples))

    reply = asyncio.run(ready())
    assert "predictions" in reply, reply
    return magent


@pytest.fixture(scope="module")
def image_server(magent: Cli, tmp_path_factory: pytest.TempPathFactory) -> tuple[Cli, Path]:
    """`roost serve --image-model` on the bundled classifier, allowed to read one test folder."""
    require_seed_data("pelican.jpeg", "macaw.jpg")
    base = tmp_path_factory.mktemp("images")
    allowed = base / "allowed"
    allowed.mkdir()
    for name in ("pelican.jpeg", "macaw.jpg"):
        shutil.copy(SEED / name, allowed / name)
    (base / "outside").mkdir()
    shutil.copy(SEED / "pelican.jpeg", base / "outside" / "pelican.jpeg")
    ws = Workspace(tmp_path_factory.mktemp("image-ws"))
    ws.component(IMAGE, "1.0.0", {
        "Run": f"roost serve --image-model {SAMPLE_MODEL_DIR} --allowed-dir {allowed} --name lite0 --version 1.0.0 "
               f"--top-k 3 --request-topic {IMAGE_REQ} --result-topic {IMAGE_RES}"},
        config={"accessControl": _acl(IMAGE, IMAGE_REQ, IMAGE_RES)})
    _deploy(magent, *ws.deploy_args(), "--merge", f"{IMAGE}=1.0.0")

    async def ready() -> Any:
        async with agent_client(magent) as ipc:
            return await until_serving(ipc, IMAGE_REQ, {"image_dir": str(allowed), "fname": "pelican.jpeg"})

    reply = asyncio.run(ready())
    assert "label" in reply, reply
    return magent, allowed


# -- 1. request shapes ----------------------------------------------------------------------------


async def test_wine_request_shapes_give_the_seed_predictions(wine_server: Cli, samples: list[dict[str, Any]]) -> None:
    expected = pytest.approx(SEED_PREDICTIONS, abs=SEED_TOLERANCE)
    async with agent_client(wine_server) as ipc:
        results = await ipc.subscribe(WINE_RES)

        # The original interface: a Lambda event published, the plain list on the result topic.
        await ipc.publish(WINE_REQ, _event(samples))
        published = (await results.get(timeout=10)).json
        assert isinstance(published, list) and published == expected

        # A request (replyTo + correlationId) gets the rich reply, and the result topic still the list.
        reply = await ipc.request(WINE_REQ, _event(samples))
        assert set(reply) == {"predictions", "model", "engine", "elapsed_us", "correlationId"}, reply
        assert reply["predictions"] == expected
        assert reply["model"] == "wine-seed@1.0.0"
        assert reply["engine"] in ("xgboost", "compiled", "onnx")
        assert isinstance(reply["elapsed_us"], int) and reply["elapsed_us"] >= 0
        assert (await results.get(timeout=10)).json == expected

        # A plain list of records without the envelope (no reply path for a list: the result topic).
        await ipc.publish(WINE_REQ, samples)
        assert (await results.get(timeout=10)).json == expected

        shuffled_cols = list(reversed(FEATURES))
        variants: dict[str, tuple[dict[str, Any], Any]] = {
            "base64 event": (_event(samples, b64=True), expected),
            "records object": ({"records": samples}, expected),
            "single record": (dict(samples[0]), pytest.approx(SEED_PREDICTIONS[:1], abs=SEED_TOLERANCE)),
            "single record in an event": (_event(samples[1]), pytest.approx(SEED_PREDICTIONS[1:], abs=SEED_TOLERANCE)),
            "columns + data, shuffled columns": (
                {"columns": shuffled_cols, "data": [[r[c] for c in shuffled_cols] for r in samples]}, expected),
            "records with shuffled key order": (
                _event([dict(reversed(list(r.items()))) for r in samples]), expected),
        }
        for what, (payload, want) in variants.items():
            reply = await ipc.request(WINE_REQ, payload)
            assert "error" not in reply, (what, reply)
            assert reply["predictions"] == want, what
            assert reply["model"] == "wine-seed@1.0.0", what
        results.close()


# -- 2. bad input -----------------------------------------------------------------------------------


async def test_wine_bad_requests_get_named_errors_and_the_server_keeps_serving(
        wine_server: Cli, samples: list[dict[str, Any]]) -> None:
    good = _event(samples)
    missing = [{k: v for k, v in r.items() if k != "alcohol"} for r in samples]
    unknown = [{**r, "colour": 1} for r in samples]
    nan = [{**samples[0], "pH": float("nan")}]
    text = [{**samples[0], "sulphates": "high"}]
    cases: list[tuple[str, dict[str, Any], str, list[str]]] = [
        ("invalid JSON body", {"body": '[{"pH": 3.2,', "isBase64Encoded": False}, "INVALID_JSON", ["JSON"]),
        ("bad base64", {"body": "@@not base64@@", "isBase64Encoded": True}, "INVALID_BASE64", ["base64"]),
        ("missing feature", _event(missing), "FEATURE_MISMATCH", ["missing", "alcohol"]),
        ("unknown feature", _event(unknown), "FEATURE_MISMATCH", ["unknown", "colour"]),
        ("NaN", {"body": json.dumps(nan), "isBase64Encoded": False}, "NON_FINITE", ["pH"]),
        ("NaN as text", _event([{**samples[0], "pH": "NaN"}]), "NON_FINITE", ["pH"]),
        ("wrong type", _event(text), "WRONG_TYPE", ["sulphates", "string"]),
        ("oversize", {"body": json.dumps(samples) + " " * 65536, "isBase64Encoded": False},
         "PAYLOAD_TOO_LARGE", ["limit"]),
        ("empty list", _event([]), "EMPTY_REQUEST", ["no rows"]),
        ("image request to the tabular server", {"image_dir": "/tmp", "fname": "pelican.jpeg"}, "WRONG_TYPE",
         ["tabular", "wine-seed@1.0.0"]),
    ]
    async with agent_client(wine_server) as ipc:
        for what, payload, code, words in cases:
            reply = await ipc.request(WINE_REQ, payload, timeout=20)
            assert set(reply) == {"error", "correlationId"}, (what, reply)
            assert set(reply["error"]) >= {"code", "message"}, (what, reply)
            assert reply["error"]["code"] == code, (what, reply)
            for word in words:
                assert word in reply["error"]["message"], (what, word, reply)
            after = await ipc.request(WINE_REQ, good)
            assert after["predictions"] == pytest.approx(SEED_PREDICTIONS, abs=SEED_TOLERANCE), (what, after)

        # Without a reply path the error goes to the result topic: never silent.
        results = await ipc.subscribe(WINE_RES)
        await ipc.publish(WINE_REQ, {"body": "not json", "isBase64Encoded": False})
        err = (await results.get(timeout=10)).json
        assert err["error"]["code"] == "INVALID_JSON", err
        results.close()
    assert _states(wine_server)[WINE] == "RUNNING"


# -- 3. micro-batching ----------------------------------------------------------------------------


def _batch_counter(log_file: Path) -> int:
    found = re.findall(r"batcher: (\d+) batch\(es\)", log_file.read_text())
    return int(found[-1]) if found else 0


async def test_wine_concurrent_single_rows_are_micro_batched(wine_server: Cli) -> None:
    x, _ = load_wine()
    rows = x[:64]
    records = [{name: (int(v) if name.startswith("color_") else float(v)) for name, v in zip(FEATURES, row,
                                                                                             strict=True)}
               for row in rows]
    expected = _predict(SEED_MODEL, records)
    log_file = wine_server.root / "logs" / f"{WINE}.log"
    before = _batch_counter(log_file)
    async with agent_client(wine_server) as ipc:
        await ipc.request(WINE_REQ, records[0])  # the reply subscription exists before the burst
        before = _batch_counter(log_file)
        replies = await asyncio.gather(*(ipc.request(WINE_REQ, rec, timeout=30) for rec in records))
    for i, reply in enumerate(replies):
        assert reply["predictions"] == pytest.approx([expected[i]], abs=SEED_TOLERANCE), (i, reply)
    batches = wait_until(lambda: _batch_counter(log_file) - before if "batcher" in log_file.read_text() else 0,
                         what="the batch counter in the server log")
    print(f"64 concurrent single-row requests ran in {batches} batch(es)")
    assert 1 <= batches <= 64


# -- 5. the sample components ----------------------------------------------------------------------


def test_sample_wine_consumer_and_image_requester(magent: Cli) -> None:
    update = {"com.roost.WineConsumer": {"MERGE": {"msgCountLimit": 2, "intervalSeconds": 0.2}},
              "com.roost.ImageRequester": {"MERGE": {"msgCountLimit": 1, "intervalSeconds": 0.2}}}
    _deploy(magent, "--recipe-dir", str(RECIPES), "--artifact-dir", str(ARTIFACTS),
            "--merge", "com.roost.WineQuality=1.0.0", "--merge", "com.roost.WineConsumer=1.0.0",
            "--merge", "com.roost.ImageClassifier=1.0.0", "--merge", "com.roost.ImageRequester=1.0.0",
            "--update-config", json.dumps(update))

    consumer_log = magent.root / "logs" / "com.roost.WineConsumer.log"

    def logged(kind: str) -> list[str]:  # lines are "<timestamp> [stdout] result: ..."
        return re.findall(rf"\[stdout\] {kind}: (.*)$", consumer_log.read_text(), re.M) if consumer_log.is_file() \
            else []

    results = wait_until(lambda: len(logged("result")) >= 2 and logged("result"), timeout=120,
                         what="two results in the consumer log")
    requests = logged("request")
    assert requests and json.loads(requests[0]) == sample_records()
    model = magent.root / "work" / "com.roost.WineQuality" / "wine-quality.json"
    expected = _predict(model, sample_records())
    for line in results:
        values = json.loads(line)
        assert isinstance(values, list) and len(values) == 2 and all(isinstance(v, float) for v in values), line
        assert values == pytest.approx(expected, abs=SEED_TOLERANCE)

    requester_log = magent.root / "logs" / "com.roost.ImageRequester.log"
    wait_until(lambda: requester_log.is_file() and "result: espresso" in requester_log.read_text(), timeout=120,
               what="the requester to log the label")
    # msgCountLimit reached: the samples exit on their own.
    wait_until(lambda: _states(magent)["com.roost.WineConsumer"] == "FINISHED", timeout=30,
               what="the consumer to finish after msgCountLimit results")


# -- 6. the image server ----------------------------------------------------------------------------


async def test_image_server_labels_refuses_paths_and_bad_images(image_server: tuple[Cli, Path]) -> None:
    agent, allowed = image_server
    async with agent_client(agent) as ipc:
        results = await ipc.subscribe(IMAGE_RES)
        for fname, label in (("pelican.jpeg", "pelican"), ("macaw.jpg", "macaw")):
            reply = await ipc.request(IMAGE_REQ, {"image_dir": str(allowed), "fname": fname}, timeout=30)
            assert reply.get("label") == label, reply
            assert reply["model"] == "lite0@1.0.0"
            top = reply["labels"]
            assert len(top) == 3 and top[0]["label"] == label
            scores = [t["score"] for t in top]
            assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
            published = await results.get(timeout=10)
            assert published.payload.decode().strip('"') == label

        inline = base64.b64encode((allowed / "macaw.jpg").read_bytes()).decode()
        reply = await ipc.request(IMAGE_REQ, {"image": inline}, timeout=30)
        assert reply["label"] == "macaw" and reply["source"] == "inline"

        bad: list[tuple[str, dict[str, Any], str]] = [
            ("../ traversal", {"image_dir": str(allowed), "fname": "../outside/pelican.jpeg"}, "PATH_NOT_ALLOWED"),
            ("file outside", {"image_dir": str(allowed.parent / "outside"), "fname": "pelican.jpeg"},
             "PATH_NOT_ALLOWED"),
            ("absolute fname", {"image_dir": str(allowed), "fname": str(SEED / "pelican.jpeg")}, "PATH_NOT_ALLOWED"),
            ("corrupt inline image", {"image": base64.b64encode(b"\xff\xd8\xff\xe0" + b"garbage" * 50).decode()},
             "UNREADABLE_IMAGE"),
            ("records to the image server", {"records": [{"pH": 3.0}]}, "INVALID_REQUEST"),
        ]
        for what, payload, code in bad:
            reply = await ipc.request(IMAGE_REQ, payload, timeout=30)
            assert "error" in reply, (what, reply)
            assert reply["error"]["code"] == code, (what, reply)
            assert reply["error"]["message"], what
            good = await ipc.request(IMAGE_REQ, {"image_dir": str(allowed), "fname": "pelican.jpeg"}, timeout=30)
            assert good["label"] == "pelican", (what, good)
        results.close()


# -- 4. hot swap (last: it changes the tabular server's model) -----------------------------------------


async def test_wine_hot_swap_under_load_drops_nothing_and_keeps_the_process(
        wine_server: Cli, samples: list[dict[str, Any]], tmp_path: Path) -> None:
    model_v2 = train_wine(tmp_path / "wine-v2.json", seed=7)
    old = _predict(SEED_MODEL, samples)
    new = _predict(model_v2, samples)
    assert max(abs(a - b) for a, b in zip(old, new, strict=True)) > 1e-3  # the swap is visible
    argv_model = str(wine_server.root / "packages" / "artifacts" / WINE / "1.0.0" / "xgboost_wine_quality.json")
    procs = procs_with(argv_model)
    assert len(procs) == 1, procs
    pid = procs[0].pid

    # An update naming a model that cannot load is refused: the server keeps serving the old one.
    log_file = wine_server.root / "logs" / f"{WINE}.log"
    broken = {WINE: {"MERGE": {"modelPath": str(tmp_path / "missing.json"), "modelVersion": "1.5.0"}}}
    _deploy(wine_server, "--update-config", json.dumps(broken))
    wait_until(lambda: "refused, still serving wine-seed@1.0.0" in log_file.read_text(), timeout=60,
               what="the refused model update in the server log")
    async with agent_client(wine_server) as ipc:
        still = await ipc.request(WINE_REQ, _event(samples))
    assert still["model"] == "wine-seed@1.0.0" and still["predictions"] == pytest.approx(old, abs=SEED_TOLERANCE)

    stop = asyncio.Event()
    seen: list[list[tuple[str, list[float]]]] = [[] for _ in range(3)]

    async def sender(ipc: IpcClient, out: list[tuple[str, list[float]]]) -> None:
        while not stop.is_set():
            reply = await ipc.request(WINE_REQ, _event(samples), timeout=30)  # a drop would time out
            assert "error" not in reply, reply
            out.append((reply["model"], reply["predictions"]))
            await asyncio.sleep(0.02)  # continuous, but leaves the 2 cores some room for loading the new model

    async with agent_client(wine_server) as ipc:
        senders = [asyncio.create_task(sender(ipc, out)) for out in seen]
        await asyncio.sleep(0.3)
        update = {WINE: {"MERGE": {"modelPath": str(model_v2), "modelVersion": "2.0.0"}}}
        deployed = asyncio.create_task(asyncio.to_thread(
            wine_server.run, "deployment", "create", "--update-config", json.dumps(update), "--wait", "--json",
            timeout=300))
        deadline = time.monotonic() + 120
        while not any(m == "wine-seed@2.0.0" for out in seen for m, _ in out[-1:]):
            assert time.monotonic() < deadline, "the server never switched to the new model"
            for task in senders:
                if task.done():
                    task.result()  # a failed sender fails the test now
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*senders)
        out = await deployed
        assert out.returncode == 0, out.stdout + out.stderr

        for per_sender in seen:
            models = [m for m, _ in per_sender]
            assert models, "a sender got no reply at all"
            assert set(models) <= {"wine-seed@1.0.0", "wine-seed@2.0.0"}
            # Sequential requests of one sender: once the new model answers, the old one never does.
            switch = models.index("wine-seed@2.0.0") if "wine-seed@2.0.0" in models else len(models)
            assert all(m == "wine-seed@2.0.0" for m in models[switch:]), models
            for model, preds in per_sender:  # every reply says truthfully which model computed it
                wanted = old if model == "wine-seed@1.0.0" else new
                assert preds == pytest.approx(wanted, abs=SEED_TOLERANCE), (model, preds)
        assert any(m == "wine-seed@1.0.0" for out_ in seen for m, _ in out_), "no request before the swap"
        print(f"hot swap: {sum(len(s) for s in seen)} requests, all answered")

        after = await ipc.request(WINE_REQ, _event(samples))
        assert after["model"] == "wine-seed@2.0.0" and after["predictions"] == pytest.approx(new, abs=SEED_TOLERANCE)

    assert [p.pid for p in procs_with(argv_model)] == [pid], "the server process was restarted"
    assert _states(wine_server)[WINE] == "RUNNING"
