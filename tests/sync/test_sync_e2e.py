"""Agent-hub sync end to end: a real `roost hub serve` process, real agents, the real CLI.

The tests of this module share one hub and two agents (enrolled into group `fleet`) and run in
order: each builds on the fleet state the previous one left.
"""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import httpx
import pytest

from tests.sync.conftest import Agent, Hub, roost, roost_json, wait_for, write_component

pytestmark = pytest.mark.slow

HELLO = "com.example.Hello"
OVER = "com.example.Overridden"
TAMPER = "com.example.Tampered"


def _deploy(hub: Hub, target: str, *components: str) -> tuple[int, dict[str, object], str]:
    args = ["deployment", "create", "--target", target]
    for comp in components:
        args += ["--component", comp]
    proc = roost(*hub.cli(*args, "--wait", "--wait-timeout", "60", "--json"), timeout=120)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


def _results(dep: dict[str, object]) -> dict[str, dict[str, object]]:
    devices = dep["devices"]
    assert isinstance(devices, list)
    return {d["device"]: d for d in devices}


def test_enrolled_agents_deploy_a_group(hub: Hub, agents: dict[str, Agent], tmp_path: Path) -> None:
    a, b = agents["edge-a"], agents["edge-b"]
    # Enrolment: credential kept 0600 on the device and never logged; labels detected + given.
    for agent in (a, b):
        cfg = agent.hub_config()
        assert cfg["device"] == agent.name and cfg["hub"] == hub.url
        assert stat.S_IMODE((agent.root / "hub.json").stat().st_mode) == 0o600
        assert cfg["credential"] not in agent.log.read_text()
    devices = {d["name"]: d for d in roost_json(*hub.cli("device", "list"))}
    assert set(devices) >= {"edge-a", "edge-b"}
    assert devices["edge-a"]["labels"]["machine"] == "xavier"
    assert {"arch", "os", "cpus", "memory_mb", "hostname"} <= set(devices["edge-a"]["labels"])
    assert devices["edge-a"]["groups"] == ["fleet"]
    groups = {g["name"]: g for g in roost_json(*hub.cli("group", "list"))}
    assert sorted(groups["fleet"]["devices"]) == ["edge-a", "edge-b"]

    # A Greengrass recipe (s3:// URI) publishes unchanged; the artifact is matched by file name.
    recipe, art = write_component(tmp_path, HELLO, "1.0.0")
    published = roost_json(*hub.cli("component", "publish", "--recipe", str(recipe), "--artifacts", str(art)))
    assert published["name"] == HELLO and published["artifacts"][0]["file"] == "main.py"
    again = roost(*hub.cli("component", "publish", "--recipe", str(recipe), "--artifacts", str(art), "--json"))
    assert again.returncode == 7, again.stdout  # versions are immutable: CONFLICT

    code, dep, err = _deploy(hub, "group:fleet", f"{HELLO}=1.0.0")
    assert code == 0, (dep, err)
    assert {n: r["status"] for n, r in _results(dep).items()} == {"edge-a": "SUCCEEDED", "edge-b": "SUCCEEDED"}
    for agent in (a, b):
        assert agent.components()[HELLO] == ("1.0.0", "RUNNING")
    # The device's reported component states reach the hub.
    wait_for(lambda: roost_json(*hub.cli("device", "show", "edge-b"))["components"].get(HELLO, {}).get("state")
             == "RUNNING", what="edge-b's reported state")
    status = roost_json(*hub.cli("deployment", "status", str(dep["id"])))
    assert status["status"] == "COMPLETED"
    listed = roost_json(*hub.cli("deployment", "list"))
    assert any(d["id"] == dep["id"] for d in listed)


def test_enrolment_errors_fail_the_start(hub: Hub, tmp_path: Path) -> None:
    # A used token: refused (410 → CONFLICT exit code), nothing stored, no agent started.
    token = roost_json(*hub.cli("device", "enroll-token"))["token"]
    first = roost("agent", "start", "--root", str(tmp_path / "one"), "--detach", "--hub", hub.url,
                  "--enroll-token", token, "--thing-name", "edge-once")
    assert first.returncode == 0, first.stderr
    try:
        reused = roost("agent", "start", "--root", str(tmp_path / "two"), "--detach", "--hub", hub.url,
                       "--enroll-token", token, "--thing-name", "edge-twice")
        assert reused.returncode == 7, reused.stdout + reused.stderr
        assert "ENROLL_TOKEN_USED" in reused.stderr
        assert not (tmp_path / "two" / "hub.json").exists()
        assert roost("agent", "status", "--root", str(tmp_path / "two")).returncode == 5
    finally:
        assert roost("agent", "stop", "--root", str(tmp_path / "one")).returncode == 0
    # A later start of an enrolled root needs no token.
    restart = roost("agent", "start", "--root", str(tmp_path / "one"), "--detach", "--hub", hub.url)
    assert restart.returncode == 0, restart.stderr
    assert roost("agent", "stop", "--root", str(tmp_path / "one")).returncode == 0
    # An expired token.
    short = roost_json(*hub.cli("device", "enroll-token", "--ttl", "1"))["token"]
    time.sleep(1.5)
    expired = roost("agent", "start", "--root", str(tmp_path / "three"), "--detach", "--hub", hub.url,
                    "--enroll-token", short, "--thing-name", "edge-late")
    assert expired.returncode == 8, expired.stdout + expired.stderr
    assert "EXPIRED" in expired.stderr
    # A hub that is not there.
    from tests.hub.conftest import free_port

    down = roost("agent", "start", "--root", str(tmp_path / "four"), "--detach",
                 "--hub", f"http://127.0.0.1:{free_port()}", "--enroll-token", "rst_enroll_x")
    assert down.returncode == 1 and "HUB_UNREACHABLE" in down.stderr, down.stderr
    # No token on a first start with --hub: a usage error that says what to do.
    missing = roost("agent", "start", "--root", str(tmp_path / "five"), "--detach", "--hub", hub.url)
    assert missing.returncode == 3 and "enroll-token" in missing.stderr


def test_tampered_artifact_fails_with_the_digest_reason(hub: Hub, agents: dict[str, Agent], tmp_path: Path) -> None:
    a = agents["edge-a"]
    recipe, art = write_component(tmp_path, TAMPER, "1.0.0")
    roost_json(*hub.cli("component", "publish", "--recipe", str(recipe), "--artifacts", str(art)))
    stored = hub.root / "artifacts" / TAMPER / "1.0.0" / "main.py"
    assert stored.is_file(), list((hub.root / "artifacts").rglob("*"))
    stored.write_text(stored.read_text() + "import os; os.system('echo pwned')\n")

    code, dep, _ = _deploy(hub, "device:edge-a", f"{TAMPER}=1.0.0")
    assert code == 1
    result = _results(dep)["edge-a"]
    assert result["status"] == "FAILED"
    assert result["reason_code"] == "ARTIFACT_DIGEST_MISMATCH"
    assert "main.py" in str(result["message"]) and "altered" in str(result["message"])
    # Nothing changed on the device: the group's component still runs, the tampered one is absent.
    comps = a.components()
    assert comps[HELLO] == ("1.0.0", "RUNNING") and TAMPER not in comps
    # An empty deployment to the device removes its device-level set; the device converges again.
    code, dep, err = _deploy(hub, "device:edge-a")
    assert code == 0, (dep, err)
    assert a.components()[HELLO] == ("1.0.0", "RUNNING")


def test_hub_overrides_a_local_deployment_and_says_so(hub: Hub, agents: dict[str, Agent], tmp_path: Path) -> None:
    a, b = agents["edge-a"], agents["edge-b"]
    # A local deployment on edge-b of OVER 0.9.0 (recipe dir + artifacts/<name>/<version>/).
    recipe, art = write_component(tmp_path / "local", OVER, "0.9.0", s3=False)
    recipes = tmp_path / "local-recipes"
    recipes.mkdir()
    recipe.rename(recipes / recipe.name)
    artifacts = tmp_path / "local-artifacts" / OVER / "0.9.0"
    artifacts.mkdir(parents=True)
    (artifacts / "main.py").write_text((art / "main.py").read_text())
    local = roost("deployment", "create", "--root", str(b.root), "--recipe-dir", str(recipes), "--artifact-dir",
                  str(tmp_path / "local-artifacts"), "--merge", f"{OVER}=0.9.0", "--wait", "--json")
    assert local.returncode == 0, local.stdout + local.stderr
    assert b.components()[OVER] == ("0.9.0", "RUNNING")

    recipe, art = write_component(tmp_path / "hub", OVER, "1.0.0")
    roost_json(*hub.cli("component", "publish", "--recipe", str(recipe), "--artifacts", str(art)))
    code, dep, err = _deploy(hub, "group:fleet", f"{HELLO}=1.0.0", f"{OVER}=1.0.0")
    assert code == 0, (dep, err)
    results = _results(dep)
    assert "overrides the local deployment" in str(results["edge-b"]["message"])
    assert f"{OVER}@0.9.0" in str(results["edge-b"]["message"])
    assert not results["edge-a"]["message"]
    assert b.components()[OVER] == ("1.0.0", "RUNNING")
    assert a.components()[OVER] == ("1.0.0", "RUNNING")
    # The local deployment record on the device says so too, once the hub's revision applied.
    local_list = roost_json("deployment", "list", "--root", str(b.root))
    notes = [n for d in local_list for n in d.get("deploymentStatusDetails", {}).get("roostNotes", [])]
    assert any("overrides the local deployment" in n for n in notes)
    # Human status output shows per-device rows.
    human = roost(*hub.cli("deployment", "status", str(dep["id"])))
    assert human.returncode == 0 and "edge-b" in human.stdout and "SUCCEEDED" in human.stdout


def test_hub_outage_spools_and_delivers_exactly_once_in_order(hub: Hub, agents: dict[str, Agent]) -> None:
    a = agents["edge-a"]
    wait_for(lambda: not a.spooled(), what="edge-a's spool to drain before the outage")
    hub.kill()
    # The device keeps running what it has, and notices the state changes it makes meanwhile.
    assert a.components()[OVER] == ("1.0.0", "RUNNING")
    assert roost("component", "stop", OVER, "--root", str(a.root)).returncode == 0
    wait_for(lambda: any('"state":"FINISHED"' in p.read_text() or '"state":"INSTALLED"' in p.read_text()
                         for p in a.spooled()), what="a spooled report of the stopped component")
    assert roost("component", "restart", OVER, "--root", str(a.root)).returncode == 0
    wait_for(lambda: json.loads(a.spooled()[-1].read_text())["components"][OVER]["state"] == "RUNNING",
             what="a spooled report of the restarted component")
    # The spool survives an agent restart (the restart needs no hub: hub.json is reused).
    assert roost("agent", "stop", "--root", str(a.root)).returncode == 0
    before_restart = [p.name for p in a.spooled()]
    restart = roost("agent", "start", "--root", str(a.root), "--detach")
    assert restart.returncode == 0, restart.stderr
    assert [p.name for p in a.spooled()][:len(before_restart)] == before_restart
    wait_for(lambda: a.components().get(OVER) == ("1.0.0", "RUNNING"), what="OVER running after the restart")
    time.sleep(1.5)
    assert a.components()[HELLO] == ("1.0.0", "RUNNING")
    spooled = [json.loads(p.read_text()) for p in a.spooled()]
    assert len(spooled) >= 3
    seqs = [int(p.name.split("-", 1)[0]) for p in a.spooled()]
    assert seqs == sorted(seqs)
    log_before = a.log.read_text()

    hub.start()
    wait_for(lambda: not a.spooled(), timeout=30, what="edge-a's spool to drain after the hub came back")
    # In order: the last report (component RUNNING again) is the state the hub holds.
    with hub.api() as api:
        device = api.get("/v1/devices/edge-a").json()
    assert device["components"][OVER]["state"] == "RUNNING"
    assert device["status"] == "ONLINE"
    # Exactly once: every spooled id was stored; sending them again changes nothing.
    credential = a.hub_config()["credential"]
    replay = httpx.post(hub.url + "/v1/device/reports", json={"reports": spooled},
                        headers={"Authorization": f"Bearer {credential}"}, timeout=30)
    assert replay.status_code == 200, replay.text
    assert replay.json()["accepted"] == [] and sorted(replay.json()["duplicates"]) == sorted(r["id"] for r in spooled)
    log = a.log.read_text()
    # The outage was logged once per agent process (before and after the restart), the recovery once.
    assert log.count("unavailable") == 2 and log.count("reachable again") == 1, log[len(log_before) - 2000:]


def test_hub_resolves_component_dependencies(hub: Hub, agents: dict[str, Agent], tmp_path: Path) -> None:
    base, app, orphan = "com.example.Base", "com.example.App", "com.example.Orphan"
    needs = lambda dep, rng: f"ComponentDependencies:\n  {dep}:\n    VersionRequirement: '{rng}'\n"  # noqa: E731
    catalogue = ((base, "1.0.0", ""), (base, "1.1.0", ""), (base, "2.0.0", ""),
                 (app, "1.0.0", needs(base, "^1.0.0")), (orphan, "1.0.0", needs("com.example.Gone", "*")))
    for name, version, extra in catalogue:
        recipe, art = write_component(tmp_path, name, version, extra=extra)
        roost_json(*hub.cli("component", "publish", "--recipe", str(recipe), "--artifacts", str(art)))
    code, dep, err = _deploy(hub, "device:edge-a", f"{app}=1.0.0")
    assert code == 0, (dep, err)
    # The newest version that satisfies the recipe's range, installed beside the root.
    assert dep["dependencies"] == {base: "1.1.0"}
    shown = roost(*hub.cli("deployment", "status", str(dep["id"])))
    assert shown.returncode == 0 and f"dependencies: {base}@1.1.0" in shown.stdout
    assert _results(dep)["edge-a"]["status"] == "SUCCEEDED"
    components = agents["edge-a"].components()
    assert components[app] == ("1.0.0", "RUNNING") and components[base] == ("1.1.0", "RUNNING")
    assert components[HELLO][1] == "RUNNING"  # the group's deployment still applies beside it
    # A dependency nobody published: refused at creation, naming what is missing.
    proc = roost(*hub.cli("deployment", "create", "--target", "device:edge-a", "--component", f"{orphan}=1.0.0",
                          "--json"))
    assert proc.returncode != 0
    assert "DEPENDENCY_MISSING" in proc.stdout + proc.stderr and "com.example.Gone" in proc.stdout + proc.stderr


def test_revoked_device_is_cut_off_and_says_so_once(hub: Hub, agents: dict[str, Agent]) -> None:
    b = agents["edge-b"]
    out = roost_json(*hub.cli("device", "revoke", "edge-b"))
    assert out["revoked"] is True
    wait_for(lambda: "refused this device's credential" in b.log.read_text(), timeout=20,
             what="edge-b to log the refused credential")
    time.sleep(4)  # several more polls and sends, all refused
    log = b.log.read_text()
    assert log.count("refused this device's credential") == 1
    assert b.hub_config()["credential"] not in log
    # The device keeps running what it has.
    assert b.components()[HELLO] == ("1.0.0", "RUNNING")
    devices = {d["name"]: d for d in roost_json(*hub.cli("device", "list"))}
    assert devices["edge-b"]["revoked"] is True
