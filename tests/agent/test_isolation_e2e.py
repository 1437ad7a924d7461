"""Components isolated from the agent and from each other (real users, real file modes, /proc).

An agent run as root runs every component step as an unprivileged user; these tests create real
users and check what a component can and cannot read. Where the tests are not root they cannot
create users: they skip through the service gate (a failure with ROOST_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import textwrap
import zipfile
from importlib import metadata
from pathlib import Path

import psutil
import pytest

from roost.agent.errors import PosixUserError
from roost.agent.users import Isolation, RunAs, lookup
from tests.agent.helpers import Workspace, wait_until
from tests.conftest import Cli, require_service

ALT_USER = "roost-test-alt"


def _root_only() -> None:
    require_service("root (to create component users)", os.geteuid() == 0, "the tests do not run as root")


@pytest.fixture(scope="module")
def alt_user() -> str:
    _root_only()
    try:
        pwd.getpwnam(ALT_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        ALT_USER], check=True, capture_output=True)
    return ALT_USER


PROBE = textwrap.dedent("""
    import json, os, sys
    root = os.environ["ROOST_ROOT"]
    def can_read(path):
        try:
            with open(path, "rb") as fh:
                fh.read(1)
            return True
        except OSError:
            return False
    def can_write(path):
        try:
            with open(path, "ab"):
                return True
        except OSError:
            return False
    def can_list(path):
        try:
            os.listdir(path)
            return True
        except OSError:
            return False
    def environ_of(pid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                return b"SVCUID" in fh.read()
        except OSError:
            return False
    others = [int(p) for p in os.environ["OTHER_PIDS"].split()]
    here = os.path.dirname(os.path.abspath(__file__))
    report = {
        "uid": os.getuid(), "euid": os.geteuid(), "groups": os.getgroups(),
        "state_db": can_read(os.path.join(root, "state.db")),
        "cli_token": can_read(os.path.join(root, "cli.token")),
        "agent_log": can_read(os.path.join(root, "logs", "agent.log")),
        "own_log": can_read(os.path.join(root, "logs", os.environ["ROOST_COMPONENT_NAME"] + ".log")),
        "list_root": can_list(root),
        "list_logs": can_list(os.path.join(root, "logs")),
        "artifact_read": can_read(os.path.abspath(__file__)),
        "artifact_write": can_write(os.path.abspath(__file__)),
        "artifact_dir_write": os.access(here, os.W_OK),
        "work_write": can_write(os.path.join(os.getcwd(), "probe.txt")),
        "agent_environ": environ_of(int(os.environ["AGENT_PID"])),
        "other_environ": [environ_of(p) for p in others],
        "python": sys.executable, "prefix": sys.prefix,
    }
    try:
        import roost.ipc.client  # noqa: F401
        report["sdk"] = True
    except ImportError:
        report["sdk"] = False
    try:
        import roost.agent  # noqa: F401
        report["agent_package"] = True
    except ImportError:
        report["agent_package"] = False
    with open("probe.json", "w") as fh:
        json.dump(report, fh)
    print("probe done", flush=True)
""")


def _agent_pid(cli: Cli) -> int:
    return int((cli.root / "agent.pid").read_text())


def _probe(cli: Cli, name: str) -> dict[str, object]:
    path = cli.root / "work" / name / "probe.json"
    wait_until(path.exists, timeout=30, what=f"{name}'s probe")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def _component_of(pid: int) -> str | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"ROOST_COMPONENT_NAME="):
            return item.split(b"=", 1)[1].decode()
    return None


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_components_run_as_unprivileged_users_and_cannot_reach_the_agents_secrets(
        agent: Cli, tmp_path: Path, alt_user: str) -> None:
    ws = Workspace(tmp_path / "ws")
    agent_pid = _agent_pid(agent)
    ws.component("com.test.Sleeper", "1.0.0", {"Run": "exec sleep 600"})
    first = agent.run("deployment", "create", *ws.deploy_args(), "--merge", "com.test.Sleeper=1.0.0", "--wait")
    assert first.returncode == 0, first.stdout
    sleeper = [p.pid for p in psutil.process_iter() if _component_of(p.pid) == "com.test.Sleeper"]
    ws.component("com.test.Probe", "1.0.0",
                 {"Setenv": {"AGENT_PID": str(agent_pid), "OTHER_PIDS": " ".join(map(str, sleeper))},
                  "Install": {"Script": "id -u > installed-by", "RequiresPrivilege": True},
                  "Run": "python3 {artifacts:path}/probe.py; exec sleep 600"},
                 files={"probe.py": PROBE})
    out = agent.run("deployment", "create", *ws.deploy_args(), "--merge", "com.test.Probe=1.0.0",
                    "--run-with", f"com.test.Probe:posixUser={alt_user}", "--wait", "--timeout", "120", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = _probe(agent, "com.test.Probe")
    alt = lookup(alt_user)
    default = lookup("roost-components")
    assert report["uid"] == alt.uid and report["euid"] == alt.uid and 0 not in report["groups"]  # type: ignore
    # RequiresPrivilege: the Install step ran as root; the work folder is the component's.
    assert (agent.root / "work" / "com.test.Probe" / "installed-by").read_text().strip() == "0"
    work = agent.root / "work" / "com.test.Probe"
    assert work.stat().st_uid == alt.uid and work.stat().st_mode & 0o777 == 0o700
    assert report["work_write"] is True
    # The agent's own files are out of reach; its own log too; the socket folder is not listable.
    for key in ("state_db", "cli_token", "agent_log", "own_log", "list_root", "list_logs"):
        assert report[key] is False, key
    # Artifacts: readable, not writable (root's files in a folder the component cannot write).
    assert report["artifact_read"] is True
    assert report["artifact_write"] is False and report["artifact_dir_write"] is False
    # Neither the agent's environment nor another component's SVCUID can be read.
    assert report["agent_environ"] is False
    assert report["other_environ"] and not any(report["other_environ"])  # type: ignore[arg-type]
    assert sleeper and all(_uid_of(p) == default.uid for p in sleeper)
    # Python: the component's own environment on the system interpreter, with roost.ipc and nothing else.
    assert str(report["prefix"]).startswith(str(agent.root / "envs" / "com.test.Probe"))
    assert report["sdk"] is True and report["agent_package"] is False
    assert (agent.root / "state.db").stat().st_mode & 0o077 == 0
    assert (agent.root / "cli.token").stat().st_mode & 0o077 == 0


def test_a_posix_user_that_cannot_be_honoured_fails_the_deployment_and_disturbs_nothing(
        agent: Cli, tmp_path: Path) -> None:
    _root_only()
    ws = Workspace(tmp_path / "ws")
    ws.component("com.test.Keep", "1.0.0", {"Run": "exec sleep 600"})
    ws.component("com.test.Who", "1.0.0", {"Run": "exec sleep 600"})
    ok = agent.run("deployment", "create", *ws.deploy_args(), "--merge", "com.test.Keep=1.0.0", "--wait", "--json")
    assert ok.returncode == 0, ok.stdout
    # Exit 1: the deployment failed; 3: it failed on invalid input (a *_INVALID cause, bc86f83).
    for spec, code, exit_code in (("nosuchuser-roost", "POSIX_USER_UNKNOWN", 1),
                                  ("root:nosuchgroup-roost", "POSIX_GROUP_UNKNOWN", 1),
                                  ("a:b:c", "POSIX_USER_INVALID", 3)):
        out = agent.run("deployment", "create", *ws.deploy_args(), "--merge", "com.test.Who=1.0.0",
                        "--run-with", f"com.test.Who:posixUser={spec}", "--wait", "--json")
        assert out.returncode == exit_code, out.stdout
        dep = json.loads(out.stdout)
        details = dep["deploymentStatusDetails"]
        assert details["detailedDeploymentStatus"] == "FAILED_NO_STATE_CHANGE"
        assert details["deploymentFailureCause"] == code and spec in details["deploymentErrorStack"][0]
    out = agent.run("deployment", "create", *ws.deploy_args(), "--merge", "com.test.Who=1.0.0",
                    "--run-with", "com.test.Nope:posixUser=nobody", "--wait", "--json")
    assert "componentToRunWithInfo names com.test.Nope" in out.stdout
    states = {c["componentName"]: c["state"] for c in agent.json("component", "list")}
    assert states == {"com.test.Keep": "RUNNING"}


def test_isolation_off_refuses_a_posix_user_it_cannot_honour() -> None:
    me = RunAs("me", 4242, 4242, (4242,), "/nonexistent")
    off = Isolation(False, None, me)
    assert off.resolve(None, "c") is None
    with pytest.raises(PosixUserError) as err:
        off.resolve("root", "com.test.C")
    assert err.value.code == "POSIX_USER_UNAVAILABLE" and "not root" in err.value.message
    with pytest.raises(PosixUserError) as bad:
        off.resolve("no such", "com.test.C")
    assert bad.value.code == "POSIX_USER_INVALID"


def _fake_wheel(folder: Path, name: str, version: str) -> Path:
    """A real (tiny) wheel of ``name`` at ``version``: enough for pip to install it offline."""
    dist = f"{name}-{version}.dist-info"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    files = {
        f"{name}/__init__.py": f"__version__ = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: roost-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as zf:
        for arc, text in files.items():
            zf.writestr(arc, text)
        zf.writestr(f"{dist}/RECORD", "".join(f"{arc},,\n" for arc in files) + f"{dist}/RECORD,,\n")
    return path


def test_a_recipe_that_pip_installs_old_pins_leaves_the_agents_packages_unchanged(agent: Cli, tmp_path: Path) -> None:
    """As real Greengrass recipes do (`pip3 install xgboost==1.6.2`), offline from a wheel artifact."""
    has_pip = shutil.which("python3", path="/usr/bin:/usr/local/bin") and subprocess.run(
        ["python3", "-c", "import pip"], capture_output=True, env={"PATH": "/usr/bin:/usr/local/bin"}).returncode == 0
    require_service("pip for the system python3", bool(has_pip), "the system python3 has no pip module")
    before = metadata.version("typer")
    ws = Workspace(tmp_path / "ws")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = _fake_wheel(wheels, "typer", "0.0.1")
    ws.component("com.test.Pins", "1.0.0",
                 {"Install": "pip3 install --no-index --no-cache-dir --find-links {artifacts:path} typer==0.0.1",
                  "Run": "python3 -c 'import sys, typer; print(\"typer\", typer.__version__, sys.prefix)'"},
                 files={})
    art = ws.artifacts / "com.test.Pins" / "1.0.0"
    shutil.copy(wheel, art / wheel.name)
    recipe_path = ws.recipes / "com.test.Pins-1.0.0.json"
    recipe = json.loads(recipe_path.read_text())
    recipe["Manifests"][0]["Artifacts"] = [{"URI": f"s3://b/{wheel.name}"}]
    recipe_path.write_text(json.dumps(recipe))
    out = agent.run("deployment", "create", *ws.deploy_args(), "--merge", "com.test.Pins=1.0.0", "--wait", "--json",
                    "--timeout", "180", timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    log = agent.root / "logs" / "com.test.Pins.log"
    line = wait_until(lambda: next((ln for ln in log.read_text().splitlines() if "typer 0.0.1" in ln), None),
                      timeout=30, what="the component's typer")
    assert str(agent.root / "envs" / "com.test.Pins") in line
    # The agent's environment (the one running these tests and the agent) still has its own typer.
    assert metadata.version("typer") == before != "0.0.1"
    check = subprocess.run([sys.executable, "-c", "import typer; print(typer.__version__)"], capture_output=True,
                           text=True, check=True)
    assert check.stdout.strip() == before
