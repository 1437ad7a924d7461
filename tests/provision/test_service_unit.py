"""The agent's and the hub's systemd units: rendered, verified by systemd itself, installed.

``systemd-analyze verify`` (Debian's ``systemd``) checks every unit Roost writes, with
``--man=no``: an unknown option, a relative path or a bad quote is a warning there, and any
output fails the test. Installing writes real files (``/etc/systemd/system/<unique>.service``, a
real system user); systemd is not the init system in this container, so enabling is reported as
not done, with the reason: the detection, not a skip.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.errors import InvalidInputError
from roost.provision import service_unit as su
from tests.conftest import InProcessCli, require_service

ROOST = Path("/usr/local/bin/roost")  # any absolute path: verify checks the executable exists, see _verify


def _verify(tmp_path: Path, unit: su.ServiceUnit) -> str:
    require_service("systemd-analyze", shutil.which("systemd-analyze") is not None,
                    "Debian's systemd package is not installed (systemd-analyze)")
    path = tmp_path / unit.name
    # verify refuses an ExecStart whose program is missing: point it at this environment's real roost.
    path.write_text(unit.text.replace(f'"{ROOST}"', f'"{su.roost_executable()}"'))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    return (done.stdout + done.stderr).strip() + ("" if done.returncode == 0 else f" (exit {done.returncode})")


def settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize("options", [{}, {"harden": True}, {"user": "roost-agent"}], ids=["root", "harden", "user"])
def test_agent_units_pass_systemd_analyze_verify(tmp_path: Path, options: dict[str, object]) -> None:
    unit = su.agent_unit(tmp_path / "agent root", scope="system", roost=ROOST, **options)  # type: ignore[arg-type]
    assert _verify(tmp_path, unit) == ""
    s = settings(unit.text)
    assert s["ExecStart"] == [f'"{ROOST}" agent start --root "{tmp_path / "agent root"}"']
    assert s["Restart"] == ["on-failure"] and s["KillMode"] == ["mixed"] and s["Delegate"] == ["yes"]
    assert s["NoNewPrivileges"] == ["yes"]
    if options.get("user"):
        assert s["User"] == ["roost-agent"] and s["ProtectSystem"] == ["strict"] and s["CapabilityBoundingSet"] == [""]
        assert s["ReadWritePaths"] == [f'"{tmp_path / "agent root"}"']
    else:
        # Isolation of components needs root; a root agent keeps /usr and /etc writable unless --harden.
        assert s["User"] == ["root"]
        assert s.get("ProtectSystem") == (["full"] if options.get("harden") else None)


def test_hub_unit_is_hardened_and_keeps_the_database_url_out_of_the_unit(tmp_path: Path) -> None:
    url = "postgresql+psycopg://roost:s3cret-pw@db.example/roost"
    unit = su.hub_unit(tmp_path / "hub", db_url=url, port=8443, scope="system", roost=ROOST)
    assert _verify(tmp_path, unit) == ""
    assert "s3cret-pw" not in unit.text
    s = settings(unit.text)
    assert s["User"] == ["roost-hub"]
    for key, value in [("ProtectSystem", "strict"), ("PrivateTmp", "yes"), ("PrivateDevices", "yes"),
                       ("ProtectControlGroups", "yes"), ("CapabilityBoundingSet", ""), ("UMask", "0077")]:
        assert s[key] == [value], key
    assert s["EnvironmentFile"] == [f"{tmp_path / 'hub'}/hub.env"]
    assert unit.environment_file == (tmp_path / "hub" / "hub.env", f"ROOST_HUB_DB={url}\n")
    low = su.hub_unit(tmp_path / "hub", port=443, scope="system", roost=ROOST)
    assert settings(low.text)["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]


def test_a_percent_or_a_quote_in_the_root_survives_systemd_unquoting(tmp_path: Path) -> None:
    root = tmp_path / 'odd "name" 100%'
    unit = su.hub_unit(root, db_url="sqlite:///x", scope="system", roost=ROOST)
    assert _verify(tmp_path, unit) == ""
    assert '--root "' + str(root).replace('"', '\\"').replace("%", "%%") + '"' in unit.text
    assert f"EnvironmentFile={str(root).replace('%', '%%')}/hub.env" in unit.text


@pytest.mark.parametrize(("call", "needle"), [
    (lambda p: su.agent_unit(p / "a\nb", scope="system", roost=ROOST), "control character"),
    (lambda p: su.agent_unit(p, name="roost agent", scope="system", roost=ROOST), "not a systemd service name"),
    (lambda p: su.agent_unit(p, name="x.timer", scope="system", roost=ROOST), "not a systemd service name"),
    (lambda p: su.agent_unit(p, user="Bad User", scope="system", roost=ROOST), "not a valid dedicated user"),
    (lambda p: su.agent_unit(p, user="root", scope="system", roost=ROOST), "not a valid dedicated user"),
    (lambda p: su.agent_unit(p, user="svc", scope="user", roost=ROOST), "--user needs a system unit"),
    (lambda p: su.hub_unit(p, port=70000, scope="system", roost=ROOST), "not a TCP port"),
    (lambda p: su.hub_unit(p, scope="user", roost=ROOST), "system unit with a dedicated user"),
    (lambda p: su.hub_unit(p, db_url="sqlite:///a\nExecStartPre=/bin/evil", scope="system", roost=ROOST),
     "line break"),
], ids=["newline-root", "space-name", "timer-name", "bad-user", "root-user", "user-scope-user", "port",
        "hub-user-scope", "db-injection"])
def test_bad_options_are_refused_with_a_specific_error(tmp_path: Path, call: object, needle: str) -> None:
    with pytest.raises(InvalidInputError, match=needle) as err:
        call(tmp_path)  # type: ignore[operator]
    assert err.value.code == "SERVICE_UNIT_INVALID"


@pytest.fixture
def system_user() -> Iterator[str]:
    name = f"rsvc{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["userdel", name], capture_output=True, check=False)


def test_install_writes_the_unit_creates_the_user_and_says_why_it_is_not_enabled(
        tmp_path: Path, system_user: str) -> None:
    require_service("root", os.geteuid() == 0, "installing a system unit and creating its user need root")
    root = tmp_path / "hub"
    (root / "keys").mkdir(parents=True)
    (root / "keys" / "k").write_text("key")
    name = f"roost-test-{system_user}.service"
    unit = su.hub_unit(root, name=name, user=system_user, db_url="sqlite:////x", scope="system")
    try:
        result = su.install(unit)
        assert result.unit == Path("/etc/systemd/system") / name and result.unit.read_text() == unit.text
        assert oct(result.unit.stat().st_mode & 0o777) == "0o644"
        if not su.SYSTEMD_RUNNING.is_dir():
            assert (result.enabled, result.started) == (False, False)
            assert result.reason is not None and "not the init system" in result.reason
        uid = pwd.getpwnam(system_user).pw_uid
        assert all(p.stat().st_uid == uid for p in [root, root / "keys", root / "keys" / "k", root / "hub.env"])
        assert oct((root / "hub.env").stat().st_mode & 0o777) == "0o600"
        assert (root / "hub.env").read_text() == "ROOST_HUB_DB=sqlite:////x\n"
    finally:
        gone = su.uninstall(name, "system")
    assert not gone.unit.exists()


def test_cli_prints_and_installs_a_user_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli = InProcessCli(tmp_path / "agent")
    printed = cli.run("agent", "install-service", "--print")
    assert printed.returncode == 0, printed.stderr
    assert f'agent start --root "{tmp_path / "agent"}"' in printed.stdout
    assert printed.stdout.startswith("# Written by Roost")
    hub = InProcessCli(tmp_path / "hub").run("hub", "install-service", "--print", "--db", "sqlite:///h.db")
    assert hub.returncode == 0 and "hub serve" in hub.stdout and "h.db" not in hub.stdout
    bad = cli.run("agent", "install-service", "--name", "no spaces.service", "--json")
    assert bad.returncode == 3 and json.loads(bad.stdout)["error"]["code"] == "SERVICE_UNIT_INVALID"
    # A user unit (what a non-root account gets; the provisioning playbook's case): written, and
    # not enabled here, with the reason, so the caller starts the agent another way.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr(su, "default_scope", lambda: "user")
    out = cli.json("agent", "install-service")
    assert out["unit"] == str(tmp_path / "config" / "systemd" / "user" / "roost-agent.service")
    assert Path(out["unit"]).read_text().count("WantedBy=default.target") == 1
    if not su.SYSTEMD_RUNNING.is_dir():
        assert out == {**out, "enabled": False, "started": False} and "not the init system" in out["reason"]
    removed = cli.json("agent", "uninstall-service")
    assert removed["unit"] == out["unit"] and not Path(out["unit"]).exists()


def test_uninstall_refuses_the_unit_of_another_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    unit = su.agent_unit(tmp_path / "one", scope="user", roost=ROOST)
    su.install(unit)
    with pytest.raises(Exception, match="does not run") as err:
        su.uninstall(unit.name, "user", root=tmp_path / "two")
    assert getattr(err.value, "code", None) == "SERVICE_UNIT_OTHER_ROOT" and unit.path.exists()
    su.uninstall(unit.name, "user", root=tmp_path / "one")
    assert not unit.path.exists()


def _exposure(tmp_path: Path, unit: su.ServiceUnit) -> float:
    """systemd's own score of a unit's sandboxing (0 = locked down, 10 = fully exposed)."""
    assert _verify(tmp_path, unit) == ""
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(tmp_path / unit.name)],
                          capture_output=True, text=True, timeout=60, check=False)
    found = [line for line in done.stdout.splitlines() if "Overall exposure level" in line]
    assert found, done.stdout + done.stderr
    return float(found[-1].split(":")[1].split()[0])


def test_systemd_scores_the_units_sandboxing(tmp_path: Path) -> None:
    """The hub and an agent run as a dedicated user are sandboxed (systemd calls <= 4.0 'OK'); a root agent,
    which component isolation needs, is exposed by design, and --harden lowers that a little."""
    hub = _exposure(tmp_path, su.hub_unit(tmp_path / "hub", scope="system", roost=ROOST))
    user = _exposure(tmp_path, su.agent_unit(tmp_path / "a", user="roost-agent", scope="system", roost=ROOST))
    root = _exposure(tmp_path, su.agent_unit(tmp_path / "a", scope="system", roost=ROOST))
    hardened = _exposure(tmp_path, su.agent_unit(tmp_path / "a", harden=True, scope="system", roost=ROOST))
    assert hub <= 4.0 and user <= 4.0, (hub, user)
    assert hardened < root, (hardened, root)
