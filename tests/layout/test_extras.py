"""A device installs only Roost's core; the hub's extra is for the hub and the operator's tools.

Each check runs in a fresh interpreter in which every module of the ``hub`` extra is marked absent
(``None`` in ``sys.modules``, which makes ``import`` raise ModuleNotFoundError as if the package
were not installed): every module a device runs imports, the CLI's device commands work, and a hub
command fails with ``EXTRA_NOT_INSTALLED`` instead of a traceback. The provisioning e2e test
(tests/provision) installs the core alone on a device and runs a deployment there.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from roost.extras import HUB_EXTRA_MODULES

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

#: The modules that run only in the hub (or the operator's provisioning), by prefix.
HUB_SIDE = ("roost.hub.api", "roost.hub.app", "roost.hub.console", "roost.hub.db", "roost.hub.desired",
            "roost.hub.migrate", "roost.hub.migrations", "roost.hub.models", "roost.hub.presence",
            "roost.hub.reports", "roost.hub.rollout", "roost.hub.store", "roost.observe.discovery",
            "roost.provision.facts", "roost.provision.registration")

BLOCK = f"import sys\nfor name in {sorted(HUB_EXTRA_MODULES)!r}:\n    sys.modules[name] = None\n"


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=300, check=False)


def _distribution(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+(\[[^\]]*\])?", requirement)
    assert match, requirement
    return match.group(0).lower()


def test_the_module_map_names_every_distribution_of_the_hub_extra() -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    hub = {_distribution(r) for r in project["optional-dependencies"]["hub"]}
    assert set(HUB_EXTRA_MODULES.values()) == hub
    core = {_distribution(r) for r in project["dependencies"]}
    assert not core & hub, "a distribution is in both the core and the hub extra"


def test_every_device_side_module_imports_without_the_hub_extra() -> None:
    proc = _run(f"""
        import importlib, pkgutil
        import roost
        failed = []
        for info in pkgutil.walk_packages(roost.__path__, "roost."):
            if info.name.endswith("__main__") or info.name.startswith({HUB_SIDE!r}):
                continue
            try:
                importlib.import_module(info.name)
            except ImportError as err:
                failed.append(f"{{info.name}}: {{err}}")
        print("\\n".join(failed))
        """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"modules a device runs need the hub extra:\n{proc.stdout}"


def test_a_hub_command_without_the_extra_names_it(tmp_path: Path) -> None:
    main = "from roost.cli.main import main\nmain()\n"
    proc = _run(main, "hub", "init", "--root", str(tmp_path / "hub"), "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert error["code"] == "EXTRA_NOT_INSTALLED" and "pip install 'roost[hub]'" in error["message"]
    assert "fastapi" in error["message"] and "Traceback" not in proc.stderr
    proc = _run(main, "hub", "init", "--root", str(tmp_path / "hub"))
    assert proc.returncode == 1 and "roost[hub]" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "hub").exists()


def test_device_commands_work_without_the_extra(tmp_path: Path) -> None:
    main = "from roost.cli.main import main\nmain()\n"
    proc = _run(main, "samples", "train-wine", "--out", str(tmp_path / "wine.json"), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "wine.json").stat().st_size > 0
    # the hub client too: a malformed SSH target is refused before any hub is asked
    proc = _run(main, "device", "add", "edge", "--ssh", "user@bad host", "--hub", "http://127.0.0.1:9",
                "--token", "t", "--json")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["error"]["code"] == "SSH_TARGET_INVALID"
