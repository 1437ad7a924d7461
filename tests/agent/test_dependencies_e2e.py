"""Dependencies as Greengrass resolves them, through a real agent.

SOFT dependencies are installed like HARD ones; a deployment that restarts a component restarts
its HARD dependents, not its SOFT ones; AWS-provided components are built in (nothing installed,
named in the deployment notes); an unknown AWS catalogue component fails the deployment, naming
itself and how to publish a replacement.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from roost import GGC_COMPAT_VERSION
from tests.agent.helpers import Workspace, wait_until
from tests.conftest import Cli

pytestmark = pytest.mark.slow

# Each component prints its start; the pid tells one start from another.
RUN = "echo started $$; exec sleep 100000"


def _starts(agent: Cli, name: str) -> int:
    return (agent.root / "logs" / f"{name}.log").read_text().count("started ")


def _components(agent: Cli) -> dict[str, Any]:
    return {c["componentName"]: c for c in agent.json("component", "list")}


def test_soft_hard_and_builtin_dependencies(agent: Cli, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    # Lib's Run interpolates its configuration: a configuration change gives it a new spec (a restart).
    ws.component("com.test.Lib", "1.0.0", {"Run": RUN + " # {configuration:/level}"}, config={"level": 1})
    ws.component("com.test.Metrics", "1.0.0", {"Run": RUN})
    ws.component("com.test.App", "1.0.0", {"Run": RUN}, dependencies={
        "com.test.Lib": {"VersionRequirement": "^1.0.0", "DependencyType": "HARD"},
        "com.test.Metrics": {"VersionRequirement": "^1.0.0", "DependencyType": "SOFT"},
        "aws.greengrass.Nucleus": {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "SOFT"},
        "aws.greengrass.TokenExchangeService": {"VersionRequirement": "^2.0.0"},
        "aws.greengrass.DockerApplicationManager": {"VersionRequirement": "~2.0.0"},
    })
    ws.component("com.test.Watcher", "1.0.0", {"Run": RUN}, dependencies={
        "com.test.Lib": {"VersionRequirement": "^1.0.0", "DependencyType": "SOFT"}})
    out = agent.run("deployment", "create", *ws.deploy_args(), "--merge", "com.test.App=1.0.0",
                    "--merge", "com.test.Watcher=1.0.0", "--wait", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    comps = _components(agent)
    # The SOFT dependency is installed too; the built-ins are not components to run.
    assert {n: (c["state"], c["isRoot"]) for n, c in comps.items()} == {
        "com.test.App": ("RUNNING", True), "com.test.Watcher": ("RUNNING", True),
        "com.test.Lib": ("RUNNING", False), "com.test.Metrics": ("RUNNING", False)}
    deployment = json.loads(out.stdout)
    notes = deployment["deploymentStatusDetails"]["roostNotes"]
    assert f"aws.greengrass.Nucleus@{GGC_COMPAT_VERSION} is built into Roost" in "\n".join(notes), notes
    assert any(n.startswith("aws.greengrass.TokenExchangeService@") for n in notes), notes
    assert any("docker: artifacts are not supported yet" in n for n in notes), notes
    assert all(_starts(agent, n) == 1 for n in ("com.test.App", "com.test.Watcher", "com.test.Lib"))

    # A restart of Lib restarts App (HARD), not Watcher (SOFT), nor the unrelated Metrics.
    out = agent.run("deployment", "create", "--update-config", json.dumps({"com.test.Lib": {"MERGE": {"level": 2}}}),
                    "--wait", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _starts(agent, "com.test.Lib") == 2
    assert _starts(agent, "com.test.App") == 2
    assert _starts(agent, "com.test.Watcher") == 1 and _starts(agent, "com.test.Metrics") == 1
    assert all(c["state"] == "RUNNING" for c in _components(agent).values())
    # The same outside a deployment: restarting or stopping Lib restarts or stops App (HARD), not Watcher.
    out = agent.run("component", "restart", "com.test.Lib", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "with its HARD dependent(s) com.test.App" in json.loads(out.stdout)["message"]
    assert (_starts(agent, "com.test.Lib"), _starts(agent, "com.test.App"), _starts(agent, "com.test.Watcher")) \
        == (3, 3, 1)
    out = agent.run("component", "stop", "com.test.Lib", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    states = {n: c["state"] for n, c in _components(agent).items()}
    assert states["com.test.App"] != "RUNNING" and states["com.test.Lib"] != "RUNNING", states
    assert states["com.test.Watcher"] == "RUNNING" and states["com.test.Metrics"] == "RUNNING", states

    # greengrass-cli habits: configuring the nucleus, deploying the CLI as a root. Both are built in.
    out = agent.run("deployment", "create", "--merge", "aws.greengrass.Cli=2.12.0", "--update-config",
                    json.dumps({"aws.greengrass.Nucleus": {"MERGE": {"logging": {"level": "DEBUG"}}}}),
                    "--wait", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    notes = json.loads(out.stdout)["deploymentStatusDetails"]["roostNotes"]
    assert any(n.startswith("aws.greengrass.Cli@2.12.0 is built into Roost") and "deployment" in n for n in notes)
    assert "aws.greengrass.Nucleus: configuration of a built-in component is not applied" in "\n".join(notes)
    assert set(_components(agent)) == {"com.test.App", "com.test.Watcher", "com.test.Lib", "com.test.Metrics"}
    assert _starts(agent, "com.test.App") == 3  # nothing restarted


def test_unknown_aws_component_and_builtin_version_mismatch_fail_clearly(agent: Cli, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    ws.component("com.test.Classifier", "1.0.0", {"Run": RUN}, dependencies={
        "aws.greengrass.DLRImageClassification": {"VersionRequirement": "^2.1.0"}})
    ws.component("com.test.OldNucleus", "1.0.0", {"Run": RUN}, dependencies={
        "aws.greengrass.Nucleus": {"VersionRequirement": "<2.1.0"}})
    for root, code, says in (
        ("com.test.Classifier", "AWS_COMPONENT_UNAVAILABLE",
         "aws.greengrass.DLRImageClassification is a component of AWS's Greengrass catalogue that Roost does not "
         "provide (com.test.Classifier requires ^2.1.0)"),
        ("com.test.OldNucleus", "BUILTIN_VERSION_MISMATCH",
         f"aws.greengrass.Nucleus is built into Roost at version {GGC_COMPAT_VERSION}"),
    ):
        out = agent.run("deployment", "create", *ws.deploy_args(), "--merge", f"{root}=1.0.0", "--wait", "--json")
        assert out.returncode != 0, out.stdout
        record = json.loads(out.stdout)
        details = record["deploymentStatusDetails"]
        assert details["deploymentFailureCause"] == code, record
        assert says in details["deploymentErrorStack"][0], record
        if code == "AWS_COMPONENT_UNAVAILABLE":
            assert "roost component publish" in details["deploymentErrorStack"][0]
    assert _components(agent) == {}


def test_a_supervisor_restart_after_an_error_restarts_hard_dependents_only(agent: Cli, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    # Lib runs until a file named "crash" appears in its work folder, then fails (exit 1) once.
    ws.component("com.test.Lib", "1.0.0",
                 {"Run": "echo started $$; while [ ! -e crash ]; do sleep 0.05; done; rm -f crash; exit 1"})
    ws.component("com.test.App", "1.0.0", {"Run": RUN}, dependencies={
        "com.test.Lib": {"VersionRequirement": "^1.0.0", "DependencyType": "HARD"}})
    ws.component("com.test.Watcher", "1.0.0", {"Run": RUN}, dependencies={
        "com.test.Lib": {"VersionRequirement": "^1.0.0", "DependencyType": "SOFT"}})
    out = agent.run("deployment", "create", *ws.deploy_args(), "--merge", "com.test.App=1.0.0",
                    "--merge", "com.test.Watcher=1.0.0", "--wait", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert all(_starts(agent, n) == 1 for n in ("com.test.Lib", "com.test.App", "com.test.Watcher"))
    (agent.root / "work" / "com.test.Lib" / "crash").touch()
    # The supervisor restarts Lib (ERRORED -> RUNNING); App (HARD) restarts after it, Watcher (SOFT) does not.
    wait_until(lambda: _starts(agent, "com.test.App") == 2, timeout=30, what="App restarted after Lib recovered")
    assert _starts(agent, "com.test.Lib") == 2 and _starts(agent, "com.test.Watcher") == 1
    wait_until(lambda: all(c["state"] == "RUNNING" for c in _components(agent).values()), timeout=10,
               what="all RUNNING again")
    agent_log = (agent.root / "logs" / "agent.log").read_text()
    assert "restarting com.test.App (a HARD dependent) after com.test.Lib recovered" in agent_log
