"""The package store: normalised recipes under ``ROOT/packages/recipes``.

Recipes are stored as ``<name>@<version>.json`` in Greengrass' PascalCase form, so the store can be
read back by any tool and a restarted agent knows every version it has.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from roost.agent.paths import AgentPaths, safe_join
from roost.errors import NotFoundError
from roost.recipe import Recipe, load_recipe, recipe_to_dict

log = logging.getLogger(__name__)


class PackageStore:
    def __init__(self, paths: AgentPaths) -> None:
        self.paths = paths

    def _recipe_path(self, name: str, version: str) -> Path:
        return safe_join(self.paths.recipes, f"{name}@{version}.json")

    def put(self, recipes: Iterable[Recipe]) -> None:
        for recipe in recipes:
            path = self._recipe_path(recipe.name, recipe.version)
            tmp = path.with_name(path.name + ".part")
            tmp.write_text(json.dumps(recipe_to_dict(recipe), indent=2, sort_keys=True))
            os.replace(tmp, path)

    def get(self, name: str, version: str) -> Recipe:
        path = self._recipe_path(name, version)
        if not path.is_file():
            raise NotFoundError(f"no recipe for {name}@{version} in the package store", code="RECIPE_NOT_FOUND")
        return load_recipe(path)

    def available(self) -> dict[str, list[Recipe]]:
        out: dict[str, list[Recipe]] = {}
        for path in sorted(self.paths.recipes.glob("*.json")):
            recipe = load_recipe(path)
            out.setdefault(recipe.name, []).append(recipe)
        return out
