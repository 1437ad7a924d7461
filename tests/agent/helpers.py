"""Writing throwaway components (recipe + artifacts) for the agent tests."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil


class Workspace:
    """A recipe dir and an artifact dir laid out as `roost deployment create` wants them."""

    def __init__(self, base: Path) -> None:
        self.recipes = base / "recipes"
        self.artifacts = base / "artifacts"
        self.recipes.mkdir(parents=True, exist_ok=True)
        self.artifacts.mkdir(parents=True, exist_ok=True)

    def component(self, name: str, version: str, lifecycle: dict[str, Any], *,
                  files: dict[str, str] | None = None, config: dict[str, Any] | None = None,
                  dependencies: dict[str, Any] | None = None, digest: dict[str, str] | None = None) -> None:
        files = files or {}
        art_dir = self.artifacts / name / version
        art_dir.mkdir(parents=True, exist_ok=True)
        artifacts = []
        for fname, text in files.items():
            (art_dir / fname).write_text(text)
            entry: dict[str, Any] = {"URI": f"s3://bucket/{name}/{version}/{fname}"}
            d = (digest or {}).get(fname)
            if d == "auto":
                entry["Digest"] = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
            elif d:
                entry["Digest"] = d
            artifacts.append(entry)
        recipe: dict[str, Any] = {
            "RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": version,
            "ComponentConfiguration": {"DefaultConfiguration": config or {}},
            "Manifests": [{"Platform": {"os": "*"}, "Lifecycle": lifecycle, "Artifacts": artifacts}],
        }
        if dependencies:
            recipe["ComponentDependencies"] = dependencies
        (self.recipes / f"{name}-{version}.json").write_text(json.dumps(recipe, indent=1))

    def deploy_args(self) -> list[str]:
        return ["--recipe-dir", str(self.recipes), "--artifact-dir", str(self.artifacts)]


def wait_until(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def procs_with(marker: str) -> list[psutil.Process]:
    """Live processes with ``marker`` as one of their arguments."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if marker in (p.info["cmdline"] or []):  # an exact argv element: not the `sh -c` wrapper
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out
