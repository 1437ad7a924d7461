"""`roost secret put|list|delete` through the real CLI (in process) against a real hub in a thread."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from roost.cli.main import app
from tests.hub.conftest import HubServer

runner = CliRunner()
ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:mqtt/password-Qw3rTy"
VALUE = "cli-value-9c8b7a"


def run(*args: str, stdin: bytes | None = None, env: dict[str, str | None] | None = None) -> Any:
    return runner.invoke(app, list(args), input=stdin, env=env, catch_exceptions=False)


def hub_args(hub: HubServer) -> list[str]:
    return ["--hub", hub.url, "--token", hub.token]


def test_put_list_delete_never_print_the_value(hub_server: HubServer, tmp_path: Path) -> None:
    value_file = tmp_path / "value.txt"
    value_file.write_text(VALUE)
    put = run("secret", "put", ARN, "--value-file", str(value_file), *hub_args(hub_server))
    assert put.exit_code == 0, put.output
    assert "is AWSCURRENT" in put.output and VALUE not in put.output
    again = run("secret", "put", ARN, "--value-stdin", *hub_args(hub_server), "--json", stdin=b"second-value")
    assert again.exit_code == 0, again.output
    info = json.loads(again.output)
    assert [v["stages"] for v in info["versions"]] == [["AWSCURRENT"], ["AWSPREVIOUS"]]
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x00\xff\xfe")
    put_binary = run("secret", "put", "tls/key", "--value-file", str(binary), "--binary", *hub_args(hub_server))
    assert put_binary.exit_code == 0
    listed = run("secret", "list", *hub_args(hub_server), "--json")
    assert listed.exit_code == 0
    secrets = {s["name"]: s for s in json.loads(listed.output)}
    assert set(secrets) == {ARN, "tls/key"} and secrets["tls/key"]["versions"][0]["binary"] is True
    table = run("secret", "list", *hub_args(hub_server))
    assert table.exit_code == 0 and "Secrets" in table.output
    assert VALUE not in table.output and "second-value" not in table.output
    deleted = run("secret", "delete", "tls/key", *hub_args(hub_server))
    assert deleted.exit_code == 0 and "deleted" in deleted.output
    missing = run("secret", "delete", "tls/key", *hub_args(hub_server), "--json")
    assert missing.exit_code == 4 and json.loads(missing.output)["error"]["code"] == "SECRET_NOT_FOUND"


def test_bad_input_is_refused_with_its_code(hub_server: HubServer, tmp_path: Path) -> None:
    neither = run("secret", "put", "x", *hub_args(hub_server), "--json")
    assert neither.exit_code == 3 and json.loads(neither.output)["error"]["code"] == "INVALID_ARGUMENT"
    both = run("secret", "put", "x", "--value-file", str(tmp_path / "f"), "--value-stdin", *hub_args(hub_server))
    assert both.exit_code == 3 and "exactly one" in both.output
    unreadable = run("secret", "put", "x", "--value-file", str(tmp_path / "absent"), *hub_args(hub_server), "--json")
    assert json.loads(unreadable.output)["error"]["code"] == "FILE_UNREADABLE"
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    not_text = run("secret", "put", "x", "--value-file", str(tmp_path / "bin"), *hub_args(hub_server), "--json")
    assert not_text.exit_code == 3 and "--binary" in json.loads(not_text.output)["error"]["message"]
    (tmp_path / "big").write_bytes(b"z" * 65537)
    big = run("secret", "put", "x", "--value-file", str(tmp_path / "big"), *hub_args(hub_server), "--json")
    assert json.loads(big.output)["error"]["code"] == "INVALID_SECRET_VALUE"
    (tmp_path / "ok").write_text("v")
    bad_name = run("secret", "put", "no spaces", "--value-file", str(tmp_path / "ok"), *hub_args(hub_server),
                   "--json")
    assert bad_name.exit_code == 3 and json.loads(bad_name.output)["error"]["code"] == "INVALID_SECRET_NAME"
    no_hub = run("secret", "list", "--token", "t", "--json", env={"ROOST_HUB": None})
    assert json.loads(no_hub.output)["error"]["code"] == "HUB_REQUIRED"
