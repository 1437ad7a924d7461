"""`roost inventory`'s content: groups, hostvars, pinned keys, checked by Ansible's own ansible-inventory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from roost.hub.contract import Device, DeviceHealth, DeviceStatus, Group
from roost.provision.inventory import SshEndpoint, as_yaml_inventory, group_name, inventory, with_known_hosts
from tests.conftest import require_service

NOW = datetime(2026, 12, 2, tzinfo=UTC)
ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"


def _device(name: str, groups: list[str], revoked: bool = False, **labels: str) -> Device:
    return Device(name=name, labels=labels, groups=groups, created_at=NOW, revoked=revoked,
                  status=DeviceStatus.REVOKED if revoked else DeviceStatus.ONLINE, health=DeviceHealth.HEALTHY)


def _fleet() -> dict[str, Any]:
    devices = [_device("jetson-1", ["cameras", "line-a.b"], machine="xavier"), _device("jetson-2", ["cameras"]),
               _device("by-hand", []), _device("gone", ["cameras"], revoked=True), _device("odd", ["ssh"])]
    groups = [Group(name="cameras", devices=["jetson-1", "jetson-2", "gone"]),
              Group(name="line-a.b", devices=["jetson-1"]), Group(name="ssh", devices=["odd"])]
    endpoints = {"jetson-1": SshEndpoint("pi", "10.0.0.5", 22, "ssh-ed25519 AAAAone"),
                 "jetson-2": SshEndpoint("pi", "fe80::1", 2222, "ssh-ed25519 AAAAtwo"),
                 "odd": SshEndpoint("ops", "odd.local", 22, None)}
    return inventory(devices, groups, endpoints)


def test_groups_hosts_and_hostvars() -> None:
    inv = _fleet()
    assert group_name("line-a.b") == "roost_line_a_b"
    assert inv["roost_cameras"] == {"hosts": ["jetson-1", "jetson-2"], "vars": {"roost_group": "cameras"}}
    assert inv["roost_line_a_b"]["hosts"] == ["jetson-1"]
    assert inv["roost_ssh_"] == {"hosts": ["odd"], "vars": {"roost_group": "ssh"}}  # not the inventory's roost_ssh
    assert inv["roost_ssh"]["hosts"] == ["jetson-1", "jetson-2", "odd"]
    assert inv["roost_no_ssh"]["hosts"] == ["by-hand"] and inv["ungrouped"]["hosts"] == ["by-hand"]
    assert "gone" not in inv["_meta"]["hostvars"]  # revoked devices are left out
    hv = inv["_meta"]["hostvars"]
    assert hv["jetson-1"] == {"roost_status": "ONLINE", "roost_groups": ["cameras", "line-a.b"],
                              "roost_labels": {"machine": "xavier"}, "ansible_host": "10.0.0.5", "ansible_port": 22,
                              "ansible_user": "pi", "roost_host_key": "ssh-ed25519 AAAAone"}
    assert "ansible_host" not in hv["by-hand"]


def test_known_hosts_checks_every_ssh_host() -> None:
    inv, lines = with_known_hosts(_fleet(), "/etc/roost/known hosts")
    assert lines == "10.0.0.5 ssh-ed25519 AAAAone\n[fe80::1]:2222 ssh-ed25519 AAAAtwo\n"
    hv = inv["_meta"]["hostvars"]
    assert hv["jetson-2"]["ansible_ssh_common_args"] == ("-o StrictHostKeyChecking=yes "
                                                         "-o UserKnownHostsFile='/etc/roost/known hosts'")
    assert "ansible_ssh_common_args" in hv["odd"] and "ansible_ssh_common_args" not in hv["by-hand"]
    assert "ansible_ssh_common_args" not in _fleet()["_meta"]["hostvars"]["jetson-1"]  # the input is not changed


def _ansible_inventory(source: Path) -> dict[str, Any]:
    require_service("ansible-inventory", ANSIBLE_INVENTORY.exists(), f"{ANSIBLE_INVENTORY} is missing "
                    "(ansible-core is a dependency: make install)")
    done = subprocess.run([str(ANSIBLE_INVENTORY), "-i", str(source), "--list"], capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True"})
    assert done.returncode == 0, done.stderr
    assert "[WARNING]" not in done.stderr, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def test_ansible_reads_the_yaml_form_and_the_dynamic_script_form_alike(tmp_path: Path) -> None:
    listing, _ = with_known_hosts(_fleet(), str(tmp_path / "known_hosts"))
    static = tmp_path / "fleet.yml"
    static.write_text(yaml.safe_dump(as_yaml_inventory(listing), sort_keys=False))
    script = tmp_path / "fleet.py"
    script.write_text(f"#!{sys.executable}\nimport sys\nprint({json.dumps(json.dumps(listing))} "
                      "if sys.argv[1:] == ['--list'] else '{}')\n")
    script.chmod(0o755)
    for parsed in (_ansible_inventory(static), _ansible_inventory(script)):
        assert sorted(parsed["roost_cameras"]["hosts"]) == ["jetson-1", "jetson-2"]
        assert sorted(parsed["roost_ssh"]["hosts"]) == ["jetson-1", "jetson-2", "odd"]
        hv = parsed["_meta"]["hostvars"]
        assert hv["jetson-2"]["ansible_host"] == "fe80::1" and hv["jetson-2"]["ansible_port"] == 2222
        assert hv["jetson-1"]["roost_labels"] == {"machine": "xavier"}
        assert hv["jetson-1"]["roost_group"] in ("cameras", "line-a.b")  # group vars reach their hosts


def test_cli_refuses_a_bad_format_and_a_missing_hub(tmp_path: Path) -> None:
    from tests.conftest import InProcessCli

    cli = InProcessCli(tmp_path)
    bad = cli.run("inventory", "--hub", "http://127.0.0.1:9", "--token", "t", "--format", "ini", root=False)
    assert bad.returncode == 3 and "--format 'ini': use yaml or json" in bad.stderr
    nohub = cli.run("inventory", root=False, env={"ROOST_HUB": "", "ROOST_TOKEN": ""})
    assert nohub.returncode == 3 and "HUB_REQUIRED" in nohub.stderr
