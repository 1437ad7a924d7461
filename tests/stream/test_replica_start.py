"""A replica process starts without scikit-learn (xgboost would import it, 1.6 s, for nothing) and its
model still loads and predicts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from roost.serve.wine import train_wine

CHECK = """
import sys
from pathlib import Path
from roost.cli.replica import _without_sklearn
_without_sklearn()
import numpy as np
from roost.serve.engine import load_tabular
loaded = load_tabular(Path(sys.argv[1]), "xgboost", cache_dir=Path(sys.argv[2]))
out = loaded.backend.predict(np.zeros((3, len(loaded.feature_names)), dtype=np.float32))
assert out.shape[0] == 3, out.shape
assert sys.modules.get("sklearn") is None
print("ok", loaded.engine)
"""


def test_a_replica_loads_its_model_without_scikit_learn(tmp_path: Path) -> None:
    model = train_wine(tmp_path / "wine.json")
    proc = subprocess.run([sys.executable, "-c", CHECK, str(model), str(tmp_path / "cache")], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok", "xgboost"]
