"""The vendored wine data and the deterministic sample model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from roost.serve.wine import DATA_CSV, FEATURES, load_wine, sample_records, train_wine
from tests.conftest import require_seed_data


def test_vendored_data_and_attribution() -> None:
    assert hashlib.sha256(DATA_CSV.read_bytes()).hexdigest() == (
        "275a9e55f0b578ac146fdce6cba46faa1aa9dc2e8886d44dbf156960c90b25ea"
    )
    attribution = (DATA_CSV.parent / "ATTRIBUTION.md").read_text()
    assert "10.1016/j.dss.2009.05.016" in attribution and "CC BY 4.0" in attribution
    x, y = load_wine()
    assert x.shape == (5320, 13) and x.dtype == np.float32 and y.shape == (5320,)
    assert int(x[:, 11].sum()) == 1359 and int(x[:, 12].sum()) == 3961
    assert len(FEATURES) == 13 and FEATURES[-2:] == ("color_red", "color_white")


def test_sample_records_match_upstream() -> None:
    records = sample_records()
    assert [list(r) for r in records] == [list(FEATURES)] * 2
    samples = require_seed_data("samples.json") / "samples.json"
    assert records == json.loads(samples.read_text())


def test_training_is_deterministic(tmp_path: Path, wine_model: Path) -> None:
    a = wine_model  # the session's model (tests/serve/conftest.py), trained the same way
    b = train_wine(tmp_path / "b.json")
    assert a.read_bytes() == b.read_bytes()
    model = json.loads(a.read_bytes())
    assert model["learner"]["feature_names"] == list(FEATURES)
    assert len(model["learner"]["gradient_booster"]["model"]["trees"]) == 400
    assert train_wine(tmp_path / "c.json", seed=3).read_bytes() != a.read_bytes()


def test_the_consumer_sample_ships_the_upstream_records() -> None:
    """The WineConsumer component carries its records as an artifact (it needs only roost.ipc)."""
    shipped = Path(__file__).resolve().parents[2] / "src/roost/samples/artifacts/com.roost.WineConsumer/1.0.0"
    assert json.loads((shipped / "records.json").read_text()) == sample_records()
    assert "roost.serve" not in (shipped / "consumer.py").read_text()
