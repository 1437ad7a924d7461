"""The SuperNode as a Roost component deployed by a local deployment: a job's TLS SuperLink here and
com.roost.FlowerSuperNode on real agents. The successful path (two agents, each on its own part of
the non-IID wine split) runs through the hub in tests/learn/test_learn_hub_e2e.py; here, a device
whose data path is missing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from roost.learn.errors import FlowerMissingError, JoinTimeoutError
from roost.learn.federated_job import JobSpec, JoinInfo, run_joined_job
from roost.learn.superlink import flower_bin
from roost.samples import ARTIFACTS, RECIPES
from tests.agent.helpers import wait_until
from tests.conftest import Cli, require_service, running_agent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

NODE = "com.roost.FlowerSuperNode"

try:
    flower_bin()
    _FLOWER, _WHY = True, ""
except FlowerMissingError as err:
    _FLOWER, _WHY = False, str(err)


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Cli]]:
    require_service("the Flower venv (make flower)", _FLOWER, _WHY)
    base = tmp_path_factory.mktemp("fl-agents")
    with ExitStack() as stack:
        yield [stack.enter_context(running_agent(base / f"root-{i}", f"fl-edge-{i}")) for i in range(2)]


def _deploy(cli: Cli, config: dict[str, object], *extra: str) -> tuple[int, dict[str, object]]:
    return cli.deploy("--recipe-dir", str(RECIPES), "--artifact-dir", str(ARTIFACTS), "--merge", f"{NODE}=1.0.0",
                      "--update-config", json.dumps({NODE: {"MERGE": config}}), *extra)


def _remove(cli: Cli) -> None:
    out = cli.run("deployment", "create", "--remove", NODE, "--wait", "--json")
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_missing_data_path_breaks_the_component_and_the_job_times_out_joining(agents: list[Cli],
                                                                                tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "wine.csv"

    def join(info: JoinInfo) -> None:
        assert info.ca_cert is not None
        # The deployment fails when the SuperNode exits within the deployer's settle window (1 s), or succeeds and
        # the component breaks just after (a slow start on a loaded machine): either way it ends BROKEN/ERRORED.
        _deploy(agents[0], {"job": info.job, "superlink": info.superlink, "dataPath": str(missing),
                            "caCert": str(info.ca_cert)}, "--failure-policy", "DO_NOTHING")
        wait_until(lambda: {c["componentName"]: c["state"] for c in agents[0].json("component", "list")}.get(NODE)
                   in ("BROKEN", "ERRORED"), timeout=60, what="the SuperNode component BROKEN")

    try:
        with pytest.raises(JoinTimeoutError, match="0 of 1 SuperNodes joined"):
            run_joined_job("fl-missing", JobSpec("wine", "fedavg", 1, min_participants=1), 1, tmp_path / "run", join,
                           join_timeout=2)
        log = agents[0].log(NODE)
        assert "LEARN_DATA_MISSING" in log and str(missing) in log
    finally:
        _remove(agents[0])
