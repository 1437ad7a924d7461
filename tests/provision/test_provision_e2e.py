"""Registering devices over SSH end to end: a real sshd, real accounts, a real hub process, real Ansible.

One registration (module-scoped, the expensive part: the package install) is shared by the tests that
look at it: the device reports, a hub deployment runs on it, no secret was written, upgrade and
uninstall. The bad-input cases reuse the hub and sshd and fail before any install.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hub.conftest import free_port, hub_init
from tests.provision.conftest import Account, Sshd
from tests.sync.conftest import Hub, roost, roost_json, wait_for, write_component

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the module's device: wheelhouse, pip over SSH

COMPONENT = "com.example.Provisioned"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    base = tmp_path_factory.mktemp("hub")
    os.chmod(base, 0o755)
    token = hub_init(base / "root")
    server = Hub(base / "root", free_port(), token, base)
    # the devices (this machine's accounts) install from the hub alone: its wheelhouse, over HTTP
    built = roost("hub", "wheelhouse", "build", "--root", str(server.root), "--json", timeout=900)
    assert built.returncode == 0, built.stderr
    server.start()
    try:
        yield server
    finally:
        server.stop()


def add(hub: Hub, name: str, target: str, *extra: str, env: dict[str, str] | None = None,
        timeout: float = 900) -> tuple[int, dict[str, Any], str]:
    proc = roost(*hub.cli("device", "add", name, "--ssh", target, *extra, "--json"), env=env, timeout=timeout)
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        out = {}
    return proc.returncode, out, proc.stderr


def ssh_key(hub: Hub) -> str:
    proc = roost("hub", "ssh-key", "--root", str(hub.root))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def device(hub: Hub, sshd: Sshd, accounts: Callable[..., Account]) -> tuple[Account, dict[str, Any]]:
    account = accounts(ssh_key(hub))
    code, out, err = add(hub, "edge-ssh", account.target(sshd), "--group", "ssh-fleet", "--label", "site=lab",
                         "--wheelhouse")
    assert code == 0, f"{out} {err} {sshd.log[-2000:]}"
    return account, out


def test_the_hub_key_is_served_and_kept_private(hub: Hub) -> None:
    line = ssh_key(hub)
    assert line.startswith("ssh-ed25519 ")
    with hub.api() as api:
        served = api.get("/v1/ssh-key").json()
    assert served["public_key"] == line and served["fingerprint"].startswith("SHA256:")
    private = hub.root / "ssh" / "id_ed25519"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    with hub.api() as api:  # never served: not under /v1/dist, and no route answers it
        assert api.get("/v1/dist/id_ed25519").status_code == 404


def test_device_add_provisions_an_agent_that_reports(hub: Hub, sshd: Sshd, device: tuple[Account, dict[str, Any]]
                                                     ) -> None:
    account, out = device
    assert out["device"] == "edge-ssh" and out["status"] == "SUCCEEDED"
    steps = {s["name"]: s for s in out["steps"]}
    assert list(steps)[:3] == ["connect", "facts", "wheel"] and list(steps)[-1] == "report"
    assert {"create venv", "fetch wheel", "install roost", "agent root", "service unit", "start agent"} <= set(steps)
    assert all(s["status"] in ("OK", "CHANGED", "SKIPPED") for s in steps.values()), steps
    assert all(s["seconds"] is not None for s in steps.values() if s["status"] != "SKIPPED")
    # The service unit is written (a user unit: the account is not root); systemd does not run in this
    # container, so the agent started detached stays the one that runs, and the step says why.
    unit = account.home / ".config" / "systemd" / "user" / "roost-agent.service"
    assert f'agent start --root "{account.home / ".roost"}"' in unit.read_text()
    # the host key was pinned on first use, with the fingerprint OpenSSH shows
    shown = subprocess.run(["ssh-keygen", "-lf", str(sshd.folder / "host_ed25519.pub")], capture_output=True,
                           text=True, check=True).stdout.split()[1]
    assert out["host_key_fingerprint"] == shown
    pinned = roost_json(*hub.cli("device", "pin-host-key", "127.0.0.1", "--port", str(sshd.port), "--host-key",
                                 sshd.host_key))  # re-pinning the same key is allowed
    assert pinned["fingerprint"] == shown
    # the agent runs as the registered account, enrolled with the facts as labels
    dev = roost_json(*hub.cli("device", "show", "edge-ssh"))
    assert dev["status"] == "ONLINE" and dev["groups"] == ["ssh-fleet"]
    assert dev["labels"]["site"] == "lab" and dev["labels"]["accelerator"] == "none"
    assert dev["labels"]["arch"] == os.uname().machine and dev["labels"]["distro"].startswith("debian")
    venv_roost = account.home / ".local/share/roost/venv/bin/roost"
    status = subprocess.run(["runuser", "-u", account.name, "--", str(venv_roost), "agent", "status", "--root",
                             str(account.home / ".roost"), "--json"], capture_output=True, text=True, check=False)
    assert json.loads(status.stdout)["running"] is True
    # registered once: a second add of the name is refused, nothing new is started
    code, again, _err = add(hub, "edge-ssh", account.target(sshd))
    assert code == 7 and again["error"]["code"] == "DEVICE_EXISTS"


def test_a_hub_deployment_runs_on_the_new_device(hub: Hub, device: tuple[Account, dict[str, Any]],
                                                 tmp_path: Path) -> None:
    recipe, art = write_component(tmp_path, COMPONENT, "1.0.0")
    roost_json(*hub.cli("component", "publish", "--recipe", str(recipe), "--artifacts", str(art)))
    proc = roost(*hub.cli("deployment", "create", "--target", "device:edge-ssh", "--component",
                          f"{COMPONENT}=1.0.0", "--wait", "--wait-timeout", "120", "--json"), timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["status"] in ("COMPLETED", "SUCCEEDED")
    wait_for(lambda: roost_json(*hub.cli("device", "show", "edge-ssh"))["components"].get(COMPONENT, {})
             .get("state") == "RUNNING", 60, "the component RUNNING on the provisioned device")


def _written(hub: Hub, secret: str) -> list[str]:
    """Files of the hub (root: DB, runner data dirs; logs) holding ``secret``."""
    out = []
    for path in [*hub.root.rglob("*"), *hub.log_dir.glob("*.log")]:
        if path.is_file() and not {"wheelhouse", "dist"} & set(path.parts) and secret.encode() in path.read_bytes():
            out.append(str(path))
    return out


def test_the_inventory_reaches_the_device_with_its_pinned_host_key(
        hub: Hub, sshd: Sshd, device: tuple[Account, dict[str, Any]], tmp_path: Path) -> None:
    """`roost inventory` is what an operator's Ansible uses: a real `ansible -m ping` through it succeeds with
    the hub's key, checking the host key the hub pinned; a known_hosts file with another key fails it."""
    known, inventory = tmp_path / "known_hosts", tmp_path / "inventory.yml"
    proc = roost(*hub.cli("inventory", "--known-hosts", str(known), "--output", str(inventory), "--json"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"output": str(inventory), "hosts": 1, "ssh_hosts": 1, "known_hosts": str(known)}
    listing = json.loads(roost(*hub.cli("inventory", "--json")).stdout)
    assert listing["roost_ssh"]["hosts"] == ["edge-ssh"] and listing["roost_ssh_fleet"]["hosts"] == ["edge-ssh"]
    hv = listing["_meta"]["hostvars"]["edge-ssh"]
    assert (hv["ansible_host"], hv["ansible_port"], hv["ansible_user"]) == ("127.0.0.1", sshd.port, device[0].name)
    assert hv["roost_labels"]["site"] == "lab" and hv["roost_host_key"].startswith("ssh-ed25519 ")
    assert known.read_text() == f"[127.0.0.1]:{sshd.port} {hv['roost_host_key']}\n"

    def ping() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(Path(sys.executable).parent / "ansible"), "-i", str(inventory), "roost_ssh",
                               "-m", "ansible.builtin.ping", "--private-key", str(hub.root / "ssh" / "id_ed25519")],
                              capture_output=True, text=True, timeout=120, check=False,
                              env={**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_NOCOLOR": "1",
                                   # a fresh connection each time: a persisted master would skip the key check
                                   "ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o ControlPersist=no"})

    ok = ping()
    assert ok.returncode == 0 and '"ping": "pong"' in ok.stdout, ok.stdout + ok.stderr
    other = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
                           capture_output=True, check=True)
    assert other.returncode == 0
    known.write_text(f"[127.0.0.1]:{sshd.port} {(tmp_path / 'other.pub').read_text().split(' ', 2)[0]} "
                     f"{(tmp_path / 'other.pub').read_text().split(' ', 2)[1]}\n")
    refused = ping()
    assert refused.returncode != 0 and "UNREACHABLE" in refused.stdout, refused.stdout + refused.stderr


def test_no_enrolment_token_is_written(hub: Hub, device: tuple[Account, dict[str, Any]]) -> None:
    runs = list((hub.root / "provision" / "runs").iterdir())
    assert runs and all(stat.S_IMODE(r.parent.stat().st_mode) == 0o700 for r in runs)
    assert (runs[0] / "known_hosts").is_file()
    assert [p for r in runs if (r / "env").is_dir() for p in (r / "env").iterdir()] == []  # no passwords file
    assert _written(hub, "rst_enroll_") == []


def test_bad_targets_are_refused_before_anything_is_registered(hub: Hub) -> None:
    for target, why in [("no-at-sign", "user@host"), ("user@", "no host"), ("u@host:99999", "port"),
                        ("u@host:abc", "port"), ("bad user@host", "user name"), ("u@::1", "brackets"),
                        ("u@ho_st!", "host name")]:
        code, out, _err = add(hub, "edge-bad", target)
        assert code == 3 and out["error"]["code"] == "SSH_TARGET_INVALID", (target, out)
        assert why in out["error"]["message"], (target, out)
    code, out, _err = add(hub, "edge-bad", "u@127.0.0.1", "--host-key", "not a key")
    assert code == 3 and out["error"]["code"] == "HOST_KEY_INVALID"
    with hub.api() as api:
        assert api.get("/v1/registrations", params={"device": "edge-bad"}).json() == []


def _failed_at(out: dict[str, Any]) -> str:
    assert out["status"] == "FAILED", out
    failed = [s for s in out["steps"] if s["status"] == "FAILED"]
    assert len(failed) == 1 and failed[0]["message"], json.dumps(out)
    return str(failed[0]["name"])


def test_unreachable_unknown_and_refusing_hosts_fail_at_their_step(hub: Hub, sshd: Sshd,
                                                                   accounts: Callable[..., Account]) -> None:
    code, out, _err = add(hub, "edge-unknown", "u@no-such-host.invalid")
    assert code == 1 and out["error"]["code"] == "SSH_UNREACHABLE" and _failed_at(out) == "connect"
    assert "unknown host" in out["error"]["message"]
    code, out, _err = add(hub, "edge-closed", f"u@127.0.0.1:{free_port()}")
    assert code == 1 and out["error"]["code"] == "SSH_UNREACHABLE" and _failed_at(out) == "connect"
    stranger = accounts(None)  # the hub's key is not in its authorized_keys
    code, out, _err = add(hub, "edge-refused", stranger.target(sshd))
    assert code == 8 and out["error"]["code"] == "SSH_AUTH_REFUSED" and _failed_at(out) == "facts"
    assert "authorized_keys" in out["error"]["message"]
    # each says so in its status: FAILED, not half-registered
    with hub.api() as api:
        for name in ("edge-unknown", "edge-closed", "edge-refused"):
            (run,) = api.get("/v1/registrations", params={"device": name}).json()
            assert run["status"] == "FAILED" and run["error_code"]
            assert api.get(f"/v1/devices/{name}").status_code == 404


def test_a_wrong_or_changed_host_key_is_refused(hub: Hub, sshd: Sshd, accounts: Callable[..., Account],
                                                tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    account = accounts(ssh_key(hub))
    code, out, _err = add(hub, "edge-wrongkey", account.target(sshd), "--host-key", other)
    assert code == 7 and out["error"]["code"] == "HOST_KEY_MISMATCH" and _failed_at(out) == "connect"
    # a pinned key that differs from what the host now shows (a reinstalled device, or a spoof)
    roost_json(*hub.cli("device", "pin-host-key", "127.0.0.1", "--port", str(sshd.port), "--host-key", other))
    try:
        code, out, _err = add(hub, "edge-changed", account.target(sshd))
        assert code == 7 and out["error"]["code"] == "HOST_KEY_CHANGED" and _failed_at(out) == "connect"
        assert "re-pin" in out["error"]["message"]
    finally:
        roost_json(*hub.cli("device", "pin-host-key", "127.0.0.1", "--port", str(sshd.port), "--host-key",
                            sshd.host_key))


def test_a_failing_step_names_the_step_the_host_and_ansibles_message(hub: Hub, sshd: Sshd,
                                                                     accounts: Callable[..., Account]) -> None:
    account = accounts(ssh_key(hub))
    # the device is told a hub URL it cannot reach: the wheel download fails half-way through the playbook
    code, out, _err = add(hub, "edge-halfway", account.target(sshd), "--device-hub-url",
                          f"http://127.0.0.1:{free_port()}")
    assert code == 1 and out["error"]["code"] == "PROVISION_STEP_FAILED" and _failed_at(out) == "fetch wheel"
    message = out["error"]["message"]
    assert "fetch wheel" in message and account.target(sshd) in message and "Connection refused" in message
    steps = {s["name"]: s["status"] for s in out["steps"]}
    assert steps["create venv"] == "CHANGED" and steps["install roost"] == "PENDING"
    # run again, it resumes: what was done is found done (the venv is not made again), nothing else changes
    code, out, _err = add(hub, "edge-halfway", account.target(sshd), "--device-hub-url",
                          f"http://127.0.0.1:{free_port()}")
    assert code == 1 and _failed_at(out) == "fetch wheel"
    assert {s["name"]: s["status"] for s in out["steps"]}["create venv"] == "OK"


def test_a_bad_become_password_is_refused_and_written_nowhere(hub: Hub, sshd: Sshd,
                                                              accounts: Callable[..., Account]) -> None:
    require_sudo()
    account = accounts(ssh_key(hub), sudo_password="right-Pa55-word")
    wrong = "wrong-Pa55-word-7f3a"
    code, out, _err = add(hub, "edge-become", account.target(sshd), "--become", env={"ROOST_BECOME_PASSWORD": wrong})
    assert code == 8 and out["error"]["code"] == "BECOME_FAILED" and _failed_at(out) == "become", out
    assert _written(hub, wrong) == []
    # the right password passes the become step (the wheel step then fails on purpose: no install here; the
    # system-wide folders it made are removed)
    right = account.sudo_password or ""
    made = not Path("/opt/roost").exists()
    try:
        code, out, _err = add(hub, "edge-become", account.target(sshd), "--become", "--device-hub-url",
                              f"http://127.0.0.1:{free_port()}", env={"ROOST_BECOME_PASSWORD": right})
    finally:
        if made:
            shutil.rmtree("/opt/roost", ignore_errors=True)
    assert _failed_at(out) == "fetch wheel", out
    assert {s["name"]: s["status"] for s in out["steps"]}["become"] == "OK"
    assert _written(hub, right) == []


def require_sudo() -> None:
    from tests.conftest import require_service

    require_service("sudo", os.path.exists("/usr/bin/sudo"), "/usr/bin/sudo is missing (make sshd installs it)")


def test_upgrade_then_uninstall(hub: Hub, device: tuple[Account, dict[str, Any]]) -> None:
    account, _out = device
    proc = roost(*hub.cli("device", "upgrade", "edge-ssh", "--wheelhouse", "--json"), timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    steps = {s["name"]: s["status"] for s in out["steps"]}
    assert out["kind"] == "upgrade" and steps["stop agent"] == "CHANGED" and steps["start agent"] == "CHANGED"
    assert roost_json(*hub.cli("device", "show", "edge-ssh"))["status"] == "ONLINE"
    proc = roost(*hub.cli("device", "remove", "edge-ssh", "--uninstall", "--json"), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (account.home / ".roost").exists() and not (account.home / ".local/share/roost").exists()
    assert not (account.home / ".config" / "systemd" / "user" / "roost-agent.service").exists()
    assert roost_json(*hub.cli("device", "show", "edge-ssh"))["revoked"] is True
