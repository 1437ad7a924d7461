"""`roost serve` in joint mode end to end: a real agent runs the edge component, a real `roost cluster
replica` process serves the centre classifier; requests over the agent's IPC get the edge's answer or,
for the hard examples, the centre's, checked against both models run locally. Bad filters and
thresholds fail the component at start-up with their code in its log; a request of the wrong width is
answered with an error naming the missing feature while the component keeps serving."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from roost.cluster.tokens import TokenSigner
from roost.learn.joint import XGBoostEdgeModel
from roost.serve.wine import FEATURES, holdout
from tests.agent.helpers import Workspace, wait_until
from tests.conftest import Cli
from tests.learn.replicas import ReplicaProcess, free_port
from tests.serve.agent_ipc import agent_client, running_agent, until_serving

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

JOINT = "com.test.WineJoint"
REQ, RES = "test/joint/request", "test/joint/result"
ROWS = 60
THRESHOLD = 0.1  # the margin filter: a row is hard when its top two classes are within 0.1


def _acl(component: str, *topics: str) -> dict[str, Any]:
    return {"aws.greengrass.ipc.pubsub": {f"{component}:pubsub:1": {
        "operations": ["aws.greengrass#SubscribeToTopic", "aws.greengrass#PublishToTopic"],
        "resources": [*topics, "roost/reply/*"]}}}


def _records(x: np.ndarray) -> list[dict[str, float | int]]:
    return [{name: (int(v) if name.startswith("color_") else float(v)) for name, v in zip(FEATURES, row, strict=True)}
            for row in x]


def _component(ws: Workspace, name: str, model: Path, endpoint: str, token_file: Path, *extra: str,
               topics: tuple[str, str] = (REQ, RES)) -> None:
    ws.component(name, "1.0.0", {
        "Run": f"roost serve --model {model} --name wine-joint --version 1.0.0 --joint-centre {endpoint} "
               f"--joint-centre-token-file {token_file} --request-topic {topics[0]} --result-topic {topics[1]} "
               + " ".join(extra)},
        config={"accessControl": _acl(name, *topics)})


@pytest.fixture(scope="module")
def joint(wine_classes: dict[str, Path], signer: TokenSigner,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, ReplicaProcess, Path]]:
    base = tmp_path_factory.mktemp("joint-serve")
    base.chmod(0o755)
    replica = ReplicaProcess(wine_classes["centre"], "centre-serve", signer, base).start()
    token_file = base / "centre.token"
    token_file.write_text(str(replica.target().token))
    token_file.chmod(0o644)  # the component runs as another user when the tests run as root
    try:
        with running_agent(base / "root", "joint-device") as cli:
            ws = Workspace(base / "ws")
            _component(ws, JOINT, wine_classes["edge"], replica.endpoint, token_file,
                       "--joint-filter margin", f"--joint-threshold {THRESHOLD}")
            out = cli.run("deployment", "create", *ws.deploy_args(), "--merge", f"{JOINT}=1.0.0", "--wait",
                          "--json", timeout=120)
            assert out.returncode == 0, out.stdout + out.stderr
            yield cli, replica, token_file
    finally:
        replica.stop()


def test_the_edge_answers_easy_rows_and_the_centre_the_hard_ones(
        joint: tuple[Cli, ReplicaProcess, Path], wine_classes: dict[str, Path]) -> None:
    cli, _, _ = joint
    x, _ = holdout()
    x = x[:ROWS]
    records = _records(x)
    edge_pred, edge_probs = XGBoostEdgeModel(wine_classes["edge"]).predict(x)
    centre_pred = XGBoostEdgeModel(wine_classes["centre"]).predict(x)[0]
    assert edge_probs is not None
    top2 = np.sort(edge_probs, axis=1)[:, -2:]
    hard = (top2[:, 1] - top2[:, 0]) < THRESHOLD
    assert 0 < hard.sum() < ROWS  # both models answer some of these rows

    async def main() -> tuple[dict[str, Any], list[dict[str, Any]], Any, dict[str, Any], dict[str, Any]]:
        async with agent_client(cli) as ipc:
            batch = await until_serving(ipc, REQ, {"records": records}, timeout=60)
            singles = list(await asyncio.gather(*(ipc.request(REQ, r, timeout=30) for r in records[:20])))
            results = await ipc.subscribe(RES)
            await ipc.publish(REQ, records[:3])
            published = (await results.get(timeout=10)).json
            results.close()
            narrow = {"columns": list(FEATURES[:-1]), "data": [row[:-1] for row in x[:2].tolist()]}
            bad = await ipc.request(REQ, narrow, timeout=10)
            after = await ipc.request(REQ, records[0], timeout=10)
            return batch, singles, published, bad, after

    batch, singles, published, bad, after = asyncio.run(main())
    assert "error" not in batch, batch
    want_by = ["centre" if h else "edge" for h in hard]
    want = [float(c) if h else float(e) for h, e, c in zip(hard, edge_pred, centre_pred, strict=True)]
    assert batch["answered_by"] == want_by
    assert batch["predictions"] == want
    assert batch["model"] == "wine-joint@1.0.0" and batch["centre_error"] is None
    assert batch["edge_ms"] > 0 and batch["centre_ms"] > 0
    for i, reply in enumerate(singles):
        assert reply["answered_by"] == [want_by[i]], (i, reply)
        assert reply["predictions"] == [want[i]], (i, reply)
        assert (reply["centre_ms"] is not None) == bool(hard[i]), (i, reply)
    assert published == want[:3]
    assert bad["error"]["code"] != "INFERENCE_FAILED" and "color_white" in bad["error"]["message"], bad
    assert after["predictions"] == [want[0]]


@pytest.mark.parametrize(("args", "code"), [
    ("--joint-filter bogus", "FILTER_UNKNOWN"),
    ("--joint-filter margin --joint-threshold 1.5", "FILTER_THRESHOLD_INVALID"),
])
def test_a_bad_filter_fails_the_component_at_start_up_with_its_code(
        joint: tuple[Cli, ReplicaProcess, Path], wine_classes: dict[str, Path], args: str, code: str,
        tmp_path: Path) -> None:
    cli, replica, token_file = joint
    name = f"com.test.BadJoint{code.title().replace('_', '')}"
    tmp_path.chmod(0o755)
    ws = Workspace(tmp_path / "ws")
    _component(ws, name, wine_classes["edge"], replica.endpoint, token_file, args)
    cli.run("deployment", "create", *ws.deploy_args(), "--merge", f"{name}=1.0.0", "--json", timeout=60)
    log_file = cli.root / "logs" / f"{name}.log"
    wait_until(lambda: log_file.exists() and code in log_file.read_text(), timeout=60,
               what=f"{code} in the component's log")
    assert str(token_file.read_text()) not in log_file.read_text()


def test_an_unreachable_centre_leaves_the_edge_answering_flagged(
        joint: tuple[Cli, ReplicaProcess, Path], wine_classes: dict[str, Path], tmp_path: Path) -> None:
    cli, _, token_file = joint
    name, topics = "com.test.WineJointDown", ("test/joint-down/request", "test/joint-down/result")
    tmp_path.chmod(0o755)
    ws = Workspace(tmp_path / "ws")
    _component(ws, name, wine_classes["edge"], f"ws://127.0.0.1:{free_port()}/v1/stream", token_file,
               "--joint-filter margin", "--joint-threshold 1.0", topics=topics)  # every row hard
    out = cli.run("deployment", "create", *ws.deploy_args(), "--merge", f"{name}=1.0.0", "--wait", "--json",
                  timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    x, _ = holdout()
    edge_pred = XGBoostEdgeModel(wine_classes["edge"]).predict(x[:5])[0]

    async def main() -> Any:
        async with agent_client(cli) as ipc:
            return await until_serving(ipc, topics[0], {"records": _records(x[:5])}, timeout=60)

    reply = asyncio.run(main())
    assert reply["answered_by"] == ["edge"] * 5, reply
    assert reply["predictions"] == [float(v) for v in edge_pred]
    assert reply["centre_error"]["code"] == "CENTRE_UNREACHABLE" and reply["centre_ms"] is None
    assert str(token_file.read_text()) not in (cli.root / "logs" / f"{name}.log").read_text()
