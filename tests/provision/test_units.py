"""The parts of provisioning that need no device: targets, host keys, the hub's key, facts, the playbook."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from roost.provision.errors import HostKeyError, ProvisionError, SshTargetError
from roost.provision.facts import parse_facts
from roost.provision.host_keys import HostKey, check_host_key, parse_host_key
from roost.provision.identity import ensure_identity, fingerprint, load_identity
from roost.provision.runner import PlaybookRun, playbook_tasks
from roost.provision.target import SshTarget, parse_target


@pytest.mark.parametrize(("text", "want"), [
    ("pi@192.168.1.20", SshTarget("pi", "192.168.1.20", 22)),
    ("pi@jetson.local:2222", SshTarget("pi", "jetson.local", 2222)),
    ("ubuntu@Edge-1.Example.com.", SshTarget("ubuntu", "edge-1.example.com", 22)),
    ("u@[::1]:22022", SshTarget("u", "::1", 22022)),
    ("u@[fe80::1]", SshTarget("u", "fe80::1", 22)),
])
def test_targets_parse(text: str, want: SshTarget) -> None:
    assert parse_target(text) == want


def test_targets_print_as_ssh_names_them() -> None:
    assert str(SshTarget("u", "::1", 2222)) == "u@[::1]:2222" and SshTarget("u", "h").known_hosts_name == "h"
    assert SshTarget("u", "h", 2222).known_hosts_name == "[h]:2222"


@pytest.mark.parametrize(("text", "why"), [
    ("host", "user@host"), ("@host", "not a valid user name"), ("u@", "no host"), ("u@h:0", "port"),
    ("u@h:65536", "port"), ("u@h:", "port"), ("u@[::1", "closing"), ("u@[::1]x", ":PORT"), ("u@[nope]", "IPv6"),
    ("u@a:b:c", "brackets"), ("u@-bad-", "host name"), ("u@a b", "host name"), ("r@@h", "host name"),
])
def test_malformed_targets_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(SshTargetError) as err:
        parse_target(text)
    assert why in err.value.message and err.value.code == "SSH_TARGET_INVALID"


def test_fingerprints_are_the_ones_openssh_shows(tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    line = (tmp_path / "k.pub").read_text()
    shown = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True, text=True,
                           check=True).stdout.split()[1]
    assert fingerprint(line) == shown == parse_host_key(line).fingerprint
    assert parse_host_key(f"[h]:22 {line}").line == " ".join(line.split()[:2])  # a known_hosts line


@pytest.mark.parametrize("text", ["", "ssh-ed25519", "ssh-dss AAAA", "ssh-ed25519 !!!notbase64"])
def test_malformed_host_keys_are_refused(text: str) -> None:
    with pytest.raises(SshTargetError) as err:
        parse_host_key(text)
    assert err.value.code == "HOST_KEY_INVALID"


def test_host_keys_are_checked_against_the_given_then_the_pinned_key() -> None:
    target = SshTarget("u", "h", 2222)
    a, b = HostKey("ssh-ed25519", "QUFBQQ=="), HostKey("ssh-ed25519", "QkJCQg==")
    check_host_key(target, a, None, None)  # first use
    check_host_key(target, a, a, None)
    check_host_key(target, b, a, b)  # given up front: re-pins
    with pytest.raises(HostKeyError) as err:
        check_host_key(target, b, a, None)
    assert err.value.code == "HOST_KEY_CHANGED" and a.fingerprint in err.value.message
    with pytest.raises(HostKeyError) as err:
        check_host_key(target, a, None, b)
    assert err.value.code == "HOST_KEY_MISMATCH"
    assert a.known_hosts(target) == "[h]:2222 ssh-ed25519 QUFBQQ==\n"


def test_the_hub_key_is_made_once_and_private(tmp_path: Path) -> None:
    first = ensure_identity(tmp_path)
    assert stat.S_IMODE(first.private_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.private_key.parent.stat().st_mode) == 0o700
    assert ensure_identity(tmp_path) == first and first.public_key.startswith("ssh-ed25519 ")
    shown = subprocess.run(["ssh-keygen", "-lf", str(first.private_key)], capture_output=True, text=True,
                           check=True).stdout.split()[1]
    assert first.fingerprint == shown  # OpenSSH reads the private key too
    first.private_key.chmod(0o644)
    with pytest.raises(ProvisionError) as err:
        load_identity(tmp_path)
    assert err.value.code == "SSH_KEY_INVALID"
    with pytest.raises(ProvisionError) as err:
        load_identity(tmp_path / "none")
    assert err.value.code == "SSH_IDENTITY_MISSING"


def test_facts_become_labels() -> None:
    found = parse_facts("arch=aarch64\ndistro=ubuntu-20.04\nkernel=linux\ncpus=6\nmemory_kb=7989396\n"
                        "accel_nvidia=1\naccel_jetson=1\npython=/usr/bin/python3\npython_version=3.11\n"
                        "garbage line\nbad key!=1\n")
    assert found.labels() == {"arch": "aarch64", "os": "linux", "cpus": "6", "distro": "ubuntu-20.04",
                              "memory_mb": "7802", "accelerator": "nvidia,jetson"}
    assert found.python_version == (3, 11) and "bad key!" not in found.values
    assert parse_facts("arch=x86_64\n").labels()["accelerator"] == "none"


def test_the_playbook_names_its_steps_and_masks_secrets(tmp_path: Path) -> None:
    assert playbook_tasks() == ["become", "stop agent", "create venv", "fetch wheel", "install roost", "agent root",
                                "start agent", "service unit", "remove service unit", "uninstall"]
    run = PlaybookRun("x", SshTarget("u", "h"), HostKey("ssh-ed25519", "QUFBQQ=="), ensure_identity(tmp_path),
                      "/usr/bin/python3", {}, tmp_path, enroll_token="rst_enroll_abc", become_password="pw1")
    assert run.mask("token rst_enroll_abc and pw1") == "token *** and ***"


def test_the_playbook_passes_ansibles_syntax_check(tmp_path: Path) -> None:
    import sys

    from roost.provision.runner import playbook_text

    (tmp_path / "device.yml").write_text(playbook_text())
    (tmp_path / "hosts").write_text("[device]\nedge ansible_host=127.0.0.1\n")
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "--syntax-check", "-i",
                           str(tmp_path / "hosts"), str(tmp_path / "device.yml")], capture_output=True, text=True,
                          timeout=120, check=False, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                                         "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")})
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_hub_serves_plain_wheel_names_from_its_folders_only(tmp_path: Path) -> None:
    from roost.provision import dist
    from roost.provision.errors import DistNotFoundError

    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "roost-0.1.0-py3-none-any.whl").write_bytes(b"PK")
    (tmp_path / "secret.whl").write_bytes(b"no")
    assert dist.dist_file(tmp_path, "roost-0.1.0-py3-none-any.whl").read_bytes() == b"PK"
    for name in ("../secret.whl", "..whl", "id_ed25519", "a/b.whl", "roost-0.2.0-py3-none-any.whl", ".x.whl"):
        with pytest.raises(DistNotFoundError):
            dist.dist_file(tmp_path, name)
    with pytest.raises(DistNotFoundError):
        dist.dist_file(tmp_path, "roost-0.1.0-py3-none-any.whl", wheelhouse=True)
    (tmp_path / "wheelhouse").mkdir()
    (tmp_path / "wheelhouse" / "a_b-1.0-py3-none-any.whl").write_bytes(b"PK")
    assert '<a href="a_b-1.0-py3-none-any.whl">' in dist.wheelhouse_index(tmp_path)
    assert not dist.has_wheelhouse(tmp_path)  # no Roost wheel in it


def test_pip_from_here_hands_over_the_index_settings_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from roost.cli.device_ssh import pip_settings
    from roost.hub.contract.provision import PIP_KEYS

    monkeypatch.setenv("PIP_INDEX_URL", "https://pypi.example/simple")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    found = pip_settings()
    assert found["PIP_INDEX_URL"] == "https://pypi.example/simple"
    assert set(found) <= set(PIP_KEYS) and "PIP_NO_CACHE_DIR" not in found
