"""The wine model, trained once per test session, and one compile cache the serve tests share.

Training is cheap (0.2 s) but tl2cgen's compile costs seconds on this machine (3.7 s quiet), so the
backends, the engine choice and the end-to-end server all use one cache where each model is compiled
once per session. Component Install steps inside real agents still train and compile on their own:
that is what they test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.serve.wine import train_wine
from tests.conftest import require_seed_data

SEED_MODEL_NAME = "xgboost_wine_quality.json"


@pytest.fixture(scope="session")
def wine_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session folder holding ``wine.json`` (``roost samples train-wine``'s model, seed 0) and ``cache/``."""
    work = tmp_path_factory.mktemp("wine")
    train_wine(work / "wine.json")
    (work / "cache").mkdir()
    (work / "cache").chmod(0o755)  # components of a real agent run as another user and read it
    return work


@pytest.fixture(scope="session")
def wine_model(wine_work: Path) -> Path:
    return wine_work / "wine.json"


@pytest.fixture(scope="session")
def serve_cache(wine_work: Path) -> Path:
    """The shared compile cache (compiled libraries and ONNX files, keyed by model digest)."""
    return wine_work / "cache"


@pytest.fixture(scope="session")
def seed_model() -> Path:
    """The upstream seed model, ``../shared/seed-data/xgboost_wine_quality.json`` (through the gate)."""
    return require_seed_data(SEED_MODEL_NAME) / SEED_MODEL_NAME


@pytest.fixture(scope="session")
def seed_cache(seed_model: Path, serve_cache: Path) -> Path:
    """:func:`serve_cache` with the seed model compiled and converted to ONNX: a ``roost serve
    --cache-dir`` pointed at it starts without compiling (and without writing, as another user)."""
    from roost.serve.backends import compile_model, onnx_model

    for built in (compile_model(seed_model, serve_cache), onnx_model(seed_model, serve_cache)):
        built.chmod(0o644)
    return serve_cache
