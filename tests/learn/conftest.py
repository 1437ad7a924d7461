"""Fixtures of the learn tests: the real hub in a thread (tests/hub's fixtures) for publishing; the wine
classifiers of joint inference and a hub-style signing key for replica sessions."""

from pathlib import Path

import pytest

from roost.cluster.tokens import TokenSigner
from roost.learn.wine_classes import train_wine_classifier
from tests.hub.conftest import hub_server, hub_server_factory

__all__ = ["hub_server", "hub_server_factory"]


@pytest.fixture(scope="session")
def wine_classes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The edge classifier as shipped, and a centre classifier of 40 rounds (the real one takes 400: the
    tests check the pattern, bench/learn_joint.py measures the real pair)."""
    folder = tmp_path_factory.mktemp("wine-classes")
    return {"edge": train_wine_classifier(folder / "edge.json", "edge"),
            "centre": train_wine_classifier(folder / "centre.json", "centre", rounds=40)}


@pytest.fixture(scope="session")
def signer(tmp_path_factory: pytest.TempPathFactory) -> TokenSigner:
    return TokenSigner.from_file(tmp_path_factory.mktemp("learn-key") / "cluster-signing.key")
