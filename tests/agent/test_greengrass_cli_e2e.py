"""`greengrass-cli` (AWS's spellings) against a real agent: scripts written for Greengrass run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.agent.helpers import Workspace, wait_until
from tests.conftest import Cli


def ggc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "roost.cli.greengrass", "--ggcRootPath", str(root), *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_greengrass_cli_scripts_run_against_the_agent(agent: Cli, tmp_path: Path) -> None:
    assert (Path(sys.executable).parent / "greengrass-cli").exists()  # the installed entry point
    ws = Workspace(tmp_path / "ws")
    ws.component("com.example.Hello", "1.0.0", {"Run": "echo hi from {configuration:/who}; exec sleep 600"},
                 config={"who": "nobody"})
    conf = tmp_path / "conf.json"
    conf.write_text('{"com.example.Hello": {"MERGE": {"who": "greengrass-cli"}}}')
    out = ggc(agent.root, "deployment", "create", "--recipeDir", str(ws.recipes), "--artifactDir",
              str(ws.artifacts), "--merge", "com.example.Hello=1.0.0", "--update-config", str(conf))
    assert out.returncode == 0, out.stderr
    found = re.search(r"Local deployment submitted! Deployment Id: (\S+)", out.stdout)
    assert found, out.stdout
    dep_id = found.group(1)
    wait_until(lambda: f"{dep_id}: SUCCEEDED" in ggc(agent.root, "deployment", "status", "-i", dep_id).stdout,
               timeout=60, what="the deployment to succeed")
    assert f"{dep_id}: SUCCEEDED" in ggc(agent.root, "deployment", "list").stdout
    listing = ggc(agent.root, "component", "list").stdout
    assert "Component Name: com.example.Hello\n    Version: 1.0.0\n    State: RUNNING" in listing
    details = ggc(agent.root, "component", "details", "--name", "com.example.Hello").stdout
    assert '"who": "greengrass-cli"' in details
    log = agent.root / "logs" / "com.example.Hello.log"
    assert ggc(agent.root, "component", "restart", "--names", "com.example.Hello").returncode == 0
    wait_until(lambda: log.read_text().count("hi from greengrass-cli") == 2, what="the restart")
    assert ggc(agent.root, "component", "stop", "--names", "com.example.Hello").returncode == 0
    assert "State: RUNNING" not in ggc(agent.root, "component", "list").stdout
    out = ggc(agent.root, "deployment", "create", "--remove", "com.example.Hello")
    assert out.returncode == 0 and "Deployment Id:" in out.stdout


def test_greengrass_cli_bad_input_gets_a_named_error(agent: Cli) -> None:
    out = ggc(agent.root, "deployment", "create", "--merge", "com.example.Hello")
    assert out.returncode == 3 and "expected NAME=VERSION" in out.stderr
    out = ggc(agent.root, "component", "details", "--name", "com.example.Missing")
    assert out.returncode == 4 and "com.example.Missing" in out.stderr
    out = ggc(agent.root, "deployment", "create", "--update-config", str(agent.root / "missing.json"))
    assert out.returncode == 3 and "--update-config" in out.stderr
    out = ggc(agent.root, "component", "frobnicate")
    assert out.returncode == 2 and "invalid choice" in out.stderr
    nothing = subprocess.run([sys.executable, "-m", "roost.cli.greengrass", "--ggcRootPath",
                              str(agent.root / "nope"), "component", "list"], capture_output=True, text=True,
                             timeout=60, check=False)
    assert nothing.returncode == 5 and "no agent is running" in nothing.stderr
