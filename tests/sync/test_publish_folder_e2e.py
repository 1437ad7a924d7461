"""AWS's "create your first component" flow through a hub: a recipe WITHOUT an Artifacts section whose
Run reads ``{artifacts:path}/hello.py``, which imports ``lib/greet.py`` from a subfolder, published
from a ``DIR/NAME/VERSION/`` folder with the real CLI, deployed through a real `roost hub serve`
process to a real enrolled agent, and run there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.sync.conftest import Agent, Hub, roost, roost_json, wait_for

pytestmark = pytest.mark.slow

NAME = "com.example.FolderHello"
GREETING = "Hello from a published folder"


def _workspace(base: Path, version: str) -> tuple[Path, Path]:
    """The AWS tutorial's layout: recipes/NAME-VERSION.yaml and artifacts/NAME/VERSION/..."""
    recipe = base / "recipes" / f"{NAME}-{version}.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    recipe.write_text(
        'RecipeFormatVersion: "2020-01-25"\n'
        f"ComponentName: {NAME}\nComponentVersion: \"{version}\"\n"
        "ComponentDescription: My first component, its code in a folder of files.\n"
        "Manifests:\n  - Platform:\n      os: linux\n"
        "    Lifecycle:\n      Run: python3 -u {artifacts:path}/hello.py\n")
    folder = base / "artifacts" / NAME / version
    (folder / "lib").mkdir(parents=True, exist_ok=True)
    (folder / "hello.py").write_text(
        "import time\n\nfrom lib.greet import greet\n\nprint(greet(), flush=True)\n"
        "while True:\n    time.sleep(1)\n")
    (folder / "lib" / "greet.py").write_text(f"def greet():\n    return {GREETING + ' ' + version!r}\n")
    return recipe, base / "artifacts"


def test_a_folder_without_an_artifacts_section_runs_through_the_hub(hub: Hub, agents: dict[str, Agent],
                                                                    tmp_path: Path) -> None:
    a = agents["edge-a"]
    recipe, artifacts = _workspace(tmp_path, "1.0.0")
    proc = roost(*hub.cli("component", "publish", "--recipe", str(recipe), "--artifacts", str(artifacts), "--json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    published = json.loads(proc.stdout)
    assert sorted(f["file"] for f in published["artifacts"]) == ["hello.py", "lib/greet.py"]
    assert "layout DIR/NAME/VERSION/" in proc.stderr

    proc = roost(*hub.cli("deployment", "create", "--target", "device:edge-a", "--component", f"{NAME}=1.0.0",
                          "--wait", "--wait-timeout", "60", "--json"), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {d["device"]: d for d in json.loads(proc.stdout)["devices"]}
    assert rows["edge-a"]["status"] == "SUCCEEDED", rows
    assert a.components()[NAME] == ("1.0.0", "RUNNING")
    log = a.root / "logs" / f"{NAME}.log"
    wait_for(lambda: log.is_file() and f"{GREETING} 1.0.0" in log.read_text(), what="the greeting in the log")
    installed = a.root / "packages" / "artifacts" / NAME / "1.0.0"
    assert (installed / "lib" / "greet.py").is_file() and (installed / "hello.py").is_file()

    # A new version of the folder replaces the old one on the device, subfolder included.
    recipe, artifacts = _workspace(tmp_path, "1.1.0")
    roost_json(*hub.cli("component", "publish", "--recipe", str(recipe), "--artifacts", str(artifacts)))
    proc = roost(*hub.cli("deployment", "create", "--target", "device:edge-a", "--component", f"{NAME}=1.1.0",
                          "--wait", "--wait-timeout", "60", "--json"), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert a.components()[NAME] == ("1.1.0", "RUNNING")
    wait_for(lambda: f"{GREETING} 1.1.0" in log.read_text(), what="the new version's greeting")
