"""Training parameters the federated wine task and its central baseline share (the Flower App keeps a copy:
it runs in the Flower venv and imports nothing from Roost; tests/learn/test_wine_task.py checks they agree)."""

from __future__ import annotations

from typing import Any, Final

XGB_PARAMS: Final[dict[str, Any]] = {"objective": "reg:squarederror", "base_score": 5.8, "max_depth": 4, "eta": 0.05,
                                     "subsample": 0.8, "colsample_bytree": 0.9, "tree_method": "hist", "nthread": 1,
                                     "seed": 2}
