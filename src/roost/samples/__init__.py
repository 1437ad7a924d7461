"""Sample components (recipes + artifacts) used by `roost demo` and the tests.

Laid out the way `roost deployment create` expects: ``recipes/`` and ``artifacts/<name>/<version>/``.
"""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).parent
RECIPES = SAMPLES / "recipes"
ARTIFACTS = SAMPLES / "artifacts"
