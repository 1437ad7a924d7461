"""The device as a cluster node: ROOT/node.json from `roost agent start`'s options, measured capacity,
overrides, accelerators, the address towards the hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from roost.agent.node import (
    NodeSettings,
    accelerators,
    local_address_towards,
    measure,
    node_report,
    settings_from_options,
)
from roost.errors import InvalidInputError

GI = 2**30


def test_options_are_kept_and_later_starts_keep_what_they_do_not_give(tmp_path: Path) -> None:
    first = settings_from_options(tmp_path, {"machine": "xavier"}, "memory=8Gi,cpu=4", True, "10.0.0.7", "32000-32010")
    first.save(tmp_path)
    again = settings_from_options(tmp_path, {"zone": "lab"}, None, None, None, None)
    assert again.labels == {"machine": "xavier", "zone": "lab"}
    assert again.capacity == {"memory": 8 * GI, "cpu": 4000}
    assert again.tier == "centre" and again.address == "10.0.0.7" and (again.port_min, again.port_max) == (32000, 32010)
    assert settings_from_options(tmp_path, {}, None, False, None, None).tier == "edge"


@pytest.mark.parametrize(("option", "words"), [({"port_range": "31000"}, None), ({"port_range": "9-8"}, "1024"),
                                               ({"port_range": "a-b"}, "LOW-HIGH"),
                                               ({"address": "bad host"}, "host name"),
                                               ({"capacity": "memory=lots"}, "not a quantity")])
def test_bad_node_options_are_refused(tmp_path: Path, option: dict[str, str], words: str | None) -> None:
    args = {"capacity": None, "address": None, "port_range": None, **option}
    if words is None:  # a single port is a range of one
        settings = settings_from_options(tmp_path, {}, args["capacity"], None, args["address"], args["port_range"])
        assert (settings.port_min, settings.port_max) == (31000, 31000)
        return
    with pytest.raises(InvalidInputError, match=words):
        settings_from_options(tmp_path, {}, args["capacity"], None, args["address"], args["port_range"])


def test_a_corrupt_node_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "node.json").write_text("{not json")
    with pytest.raises(InvalidInputError) as err:
        NodeSettings.load(tmp_path)
    assert err.value.code == "NODE_SETTINGS_INVALID" and "node.json" in err.value.message


def test_measured_capacity_is_this_machine_and_overrides_win(tmp_path: Path) -> None:
    measured = measure()
    assert measured.memory_bytes > 0 and measured.cpu_millis >= 1000
    assert measured.cpu_millis <= (os.cpu_count() or 1) * 1000
    settings = NodeSettings(labels={"machine": "tx2"}, capacity={"memory": 4 * GI, "nvidia.com/gpu": 1})
    report = node_report(settings, "http://127.0.0.1:9", measured)
    assert report.allocatable.memory_bytes == 4 * GI and report.allocatable.cpu_millis == measured.cpu_millis
    assert report.allocatable.accelerators["nvidia.com/gpu"] == 1 and report.measured == measured
    assert report.address == "127.0.0.1" and report.labels == {"machine": "tx2"} and report.tier == "edge"


def test_accelerators_are_found_under_dev(tmp_path: Path) -> None:
    dev, etc = tmp_path / "dev", tmp_path / "etc"
    dev.mkdir()
    etc.mkdir()
    assert accelerators(dev, etc) == {}
    for name in ("nvidia0", "nvidia1", "nvidiactl", "apex_0"):
        (dev / name).touch()
    assert accelerators(dev, etc) == {"nvidia.com/gpu": 2, "google.com/edgetpu": 1}
    jetson_dev = tmp_path / "jetson"
    jetson_dev.mkdir()
    (etc / "nv_tegra_release").write_text("# R35\n")
    assert accelerators(jetson_dev, etc) == {"nvidia.com/gpu": 1}


def test_the_address_towards_the_hub_is_the_route_s_local_address() -> None:
    assert local_address_towards("http://127.0.0.1:8080") == "127.0.0.1"
    assert local_address_towards("http://[::1]:8080") in ("::1", "127.0.0.1")


def test_agent_start_refuses_bad_node_options_before_starting(tmp_path: Path) -> None:
    root = tmp_path / "dev1"
    bad = subprocess.run([sys.executable, "-m", "roost", "agent", "start", "--root", str(root), "--capacity",
                          "memory=sixteen", "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 3, bad.stdout + bad.stderr
    assert json.loads(bad.stdout)["error"]["code"] == "QUANTITY_INVALID"
    assert not (root / "node.json").exists()
