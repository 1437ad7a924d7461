"""The newcomer's snags of issue 9, each through the real CLI (in process) and a real hub."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from roost.cli import deployment as deployment_cli
from roost.cli import output
from roost.cli.logs import parse_line
from roost.cli.main import app
from roost.cli.serve import JsonLogFormatter
from tests.hub.conftest import HubServer, enroll_device, make_recipe

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def hub_args(hub: HubServer) -> list[str]:
    return ["--hub", hub.url, "--token", hub.token]


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            out += _commands(cmd, (*prefix, name))
        else:
            out.append(((*prefix, name), cmd))
    return out


def test_every_command_takes_json() -> None:
    commands = _commands(typer.main.get_command(app))
    assert len(commands) > 20
    missing = [" ".join(path) for path, cmd in commands
               if not any("--json" in getattr(p, "opts", ()) for p in cmd.params)]
    assert missing == []


# -- component publish: the local-deployment artifact layout ------------------------------------


def test_publish_finds_artifacts_in_the_local_deployment_layout(hub_server: HubServer, tmp_path: Path) -> None:
    recipe = tmp_path / "recipes" / "hello.yaml"
    recipe.parent.mkdir()
    recipe.write_bytes(make_recipe("com.example.Layout", "1.0.0", ("hello.py",)))
    layout = tmp_path / "artifacts" / "com.example.Layout" / "1.0.0"
    layout.mkdir(parents=True)
    (layout / "hello.py").write_text("print('hi')\n")
    ok = run("component", "publish", *hub_args(hub_server), "--recipe", str(recipe),
             "--artifacts", str(tmp_path / "artifacts"), "--json")
    assert ok.exit_code == 0, ok.output
    assert [a["file"] for a in json.loads(ok.stdout)["artifacts"]] == ["hello.py"]

    recipe.write_bytes(make_recipe("com.example.Layout", "2.0.0", ("hello.py",)))
    missing = run("component", "publish", *hub_args(hub_server), "--recipe", str(recipe),
                  "--artifacts", str(tmp_path / "artifacts"))
    assert missing.exit_code == 3
    assert "ARTIFACT_MISSING" in missing.output and "com.example.Layout/2.0.0" in missing.output
    assert "DIR/NAME/VERSION" in missing.output and "hello.py" in missing.output


def test_roost_hub_and_token_come_from_the_environment(hub_server: HubServer, tmp_path: Path) -> None:
    env = {"ROOST_HUB": hub_server.url, "ROOST_TOKEN": hub_server.token}
    assert json.loads(run("device", "list", "--json", env=env).stdout) == []
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(make_recipe("com.example.Env", "1.0.0", ()))
    assert run("component", "publish", "--recipe", str(recipe), "--json", env=env).exit_code == 0
    helped = run("device", "list", "--help")
    assert "ROOST_HUB" in helped.output


# -- deployments: unknown groups, id prefixes, whole ids in the table ---------------------------


def test_unknown_group_is_refused_unless_created_and_ids_work_by_prefix(hub_server: HubServer,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    enroll_device(hub_server, "cli-dev", group="line")
    typo = run("deployment", "create", *hub_args(hub_server), "--target", "group:nogroup")
    assert typo.exit_code == 4 and "GROUP_NOT_FOUND" in typo.output and "--create-group" in typo.output
    groups = json.loads(run("group", "list", *hub_args(hub_server), "--json").stdout)
    assert [g["name"] for g in groups] == ["line"]
    made = run("deployment", "create", *hub_args(hub_server), "--target", "group:nogroup", "--create-group",
               "--json")
    assert made.exit_code == 0, made.output
    dep = json.loads(made.stdout)
    wrong = run("deployment", "create", *hub_args(hub_server), "--target", "device:cli-dev", "--create-group")
    assert wrong.exit_code == 3 and "INVALID_ARGUMENT" in wrong.output

    status = run("deployment", "status", dep["id"][:8], *hub_args(hub_server), "--json")
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["id"] == dep["id"]
    monkeypatch.setattr(output.console, "width", 80)
    listed = run("deployment", "list", *hub_args(hub_server))
    assert listed.exit_code == 0 and dep["id"] in listed.stdout, listed.stdout
    short = run("deployment", "status", "zz", *hub_args(hub_server))
    assert short.exit_code == 4 and "DEPLOYMENT_NOT_FOUND" in short.output


def test_local_deployment_ids_by_unique_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = ["4a72266b-0000-4000-8000-000000000001", "4a72266b-0000-4000-8000-000000000002",
           "5b000000-0000-4000-8000-000000000003"]
    calls: list[tuple[str, dict[str, Any]]] = []

    def call(_root: str | None, operation: str, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        calls.append((operation, request))
        if operation == "ListLocalDeployments":
            return {"localDeployments": [{"deploymentId": i, "status": "SUCCEEDED"} for i in ids]}
        return {"deployment": {"deploymentId": request["deploymentId"], "status": "SUCCEEDED"}}

    monkeypatch.setattr(deployment_cli.local, "call", call)
    assert deployment_cli.local_deployment_id(None, "5B00") == ids[2]
    assert deployment_cli.local_deployment_id(None, ids[0]) == ids[0]
    out = run("deployment", "status", "5b000000", "--json")
    assert out.exit_code == 0 and json.loads(out.stdout)["deploymentId"] == ids[2]
    assert calls[-1] == ("GetLocalDeploymentStatus", {"deploymentId": ids[2]})
    ambiguous = run("deployment", "status", "4a72266b")
    assert ambiguous.exit_code == 3 and "DEPLOYMENT_ID_AMBIGUOUS" in ambiguous.output
    assert ids[0] in ambiguous.output.replace("\n", "") and ids[1] in ambiguous.output.replace("\n", "")
    cancel = run("deployment", "cancel", "4a72266b", "--json")
    assert cancel.exit_code == 3 and json.loads(cancel.stdout)["error"]["code"] == "DEPLOYMENT_ID_AMBIGUOUS"
    unknown = run("deployment", "status", "ffff")
    assert unknown.exit_code == 4 and "DEPLOYMENT_NOT_FOUND" in unknown.output


def test_tables_keep_whole_ids_at_80_columns(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    monkeypatch.setattr(output.console, "width", 80)
    long_id = "4a72266b-0000-4000-8000-000000000001"
    output.table("Deployments", ["id", "target", "components", "status"],
                 [(long_id, "group:line-a-with-a-long-name", "com.example.WineQuality@1.1.0, com.example.Sensor@0.3.0",
                   "ACTIVE")])
    text = capsys.readouterr().out
    assert long_id in text and "…" not in text  # the id whole; the other cells fold, nothing is cut
    assert "com.example.Sensor@0.3.0" in "".join(line.split("│")[3].strip() for line in text.splitlines()
                                                   if line.count("│") == 5)


def test_failure_causes_map_to_exit_codes() -> None:
    assert output.exit_code_for_cause("RECIPE_INVALID") == output.EXIT_INVALID
    assert output.exit_code_for_cause("INVALID_DEPLOYMENT") == output.EXIT_INVALID
    assert output.exit_code_for_cause("COMPONENT_FAILED") == output.EXIT_FAILED
    assert output.exit_code_for_cause("LIFECYCLE_TIMEOUT") == output.EXIT_FAILED
    assert output.exit_code_for_cause(None) == output.EXIT_FAILED


# -- hub init twice ------------------------------------------------------------------------------


def test_hub_init_refuses_to_run_twice_without_force(tmp_path: Path) -> None:
    from roost.hub.app import HubConfig, open_store

    root = tmp_path / "hub"
    first = run("hub", "init", "--root", str(root), "--json")
    assert first.exit_code == 0, first.output
    token = json.loads(first.stdout)["token"]
    again = run("hub", "init", "--root", str(root))
    assert again.exit_code == 7
    assert "HUB_ALREADY_INITIALISED" in again.output and "--force" in again.output
    as_json = run("hub", "init", "--root", str(root), "--json")
    assert as_json.exit_code == 7 and json.loads(as_json.stdout)["error"]["code"] == "HUB_ALREADY_INITIALISED"
    forced = run("hub", "init", "--root", str(root), "--force", "--name", "second", "--json")
    assert forced.exit_code == 0, forced.output
    second = json.loads(forced.stdout)["token"]
    store = open_store(HubConfig(root=root))
    try:
        assert store.authenticate(token).name == "admin" and store.authenticate(second).name == "second"
        assert store.admin_token_names() == ["admin", "second"]
    finally:
        store.db.dispose()
    assert "--force" in run("hub", "init", "--help").output


# -- logs --json, serve --json -------------------------------------------------------------------


def test_logs_json_lines(tmp_path: Path) -> None:
    logs = tmp_path / "root" / "logs"
    logs.mkdir(parents=True)
    (logs / "com.test.App.log").write_text("2026-01-02T03:04:05.123Z [stdout] hello world\n"
                                          "2026-01-02T03:04:06.000Z [stderr] oops\n"
                                          "  continuation\n")
    (logs / "agent.log").write_text("2026-01-02 03:04:05,123 INFO roost.agent.agent: agent started\n")
    out = run("logs", "com.test.App", "--root", str(tmp_path / "root"), "--json")
    assert out.exit_code == 0
    assert [json.loads(line) for line in out.stdout.splitlines()] == [
        {"time": "2026-01-02T03:04:05.123Z", "stream": "stdout", "line": "hello world"},
        {"time": "2026-01-02T03:04:06.000Z", "stream": "stderr", "line": "oops"},
        {"time": None, "stream": None, "line": "  continuation"}]
    agent = run("logs", "agent", "--root", str(tmp_path / "root"), "--json", "-n", "1")
    assert json.loads(agent.stdout) == {"time": "2026-01-02T03:04:05.123", "stream": "agent",
                                        "line": "INFO roost.agent.agent: agent started"}
    missing = run("logs", "com.test.Nope", "--root", str(tmp_path / "root"), "--json")
    assert missing.exit_code == 4 and json.loads(missing.stdout)["error"]["code"] == "LOG_NOT_FOUND"
    assert parse_line("") == {"time": None, "stream": None, "line": ""}


def test_serve_json_log_lines() -> None:
    record = logging.LogRecord("roost.serve", logging.WARNING, __file__, 1, "model %s loaded", ("wine",), None)
    doc = json.loads(JsonLogFormatter().format(record))
    assert doc["level"] == "WARNING" and doc["logger"] == "roost.serve" and doc["message"] == "model wine loaded"
    assert doc["time"]
