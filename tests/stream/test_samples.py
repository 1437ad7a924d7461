"""The cluster sample components: their recipes parse with Roost's parser, the hub's configuration
MERGE interpolates into the Run line expected, and the artifact folders assemble."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

import pytest

from roost.agent.configuration import apply_update
from roost.errors import NotFoundError
from roost.recipe import InterpolationContext, interpolate, load_recipe
from roost.recipe.platform import current_platform
from roost.samples import ARTIFACTS
from roost.samples.cluster import cluster_sample

#: What the hub merges into a replica's configuration (roost.hub.store.cluster, _deploy_node).
MERGE = {"MERGE": {"port": 31007, "host": "10.0.0.5", "replicaId": "r-42", "publicKey": "A" * 43,
                   "sessionsPerReplica": 2, "window": 40, "idleTimeoutSeconds": 120.0}}


def _run_line(name: str, tmp_path: Path) -> list[str]:
    recipe_path, folder = cluster_sample(name, tmp_path / "artifacts")
    recipe = load_recipe(recipe_path)
    configuration = apply_update(recipe.default_configuration, recipe.default_configuration, MERGE, recipe.name)
    ctx = InterpolationContext(component=recipe.name, configuration=configuration, artifacts_path=str(folder),
                               decompressed_path=str(folder), work_path="/root/work/" + recipe.name,
                               kernel_root="/root", thing_name="node-1")
    run = recipe.select(current_platform()).lifecycle.run
    assert run is not None
    return shlex.split(interpolate(run.script, ctx))


def test_cluster_scalar_recipe_and_run_line(tmp_path: Path) -> None:
    recipe = load_recipe(cluster_sample("scalar", tmp_path)[0])
    assert (recipe.name, recipe.version) == ("com.roost.ClusterScalar", "1.0.0")
    assert set(recipe.default_configuration) >= {"port", "host", "replicaId", "publicKey", "sessionsPerReplica",
                                                 "window", "idleTimeoutSeconds"}
    lifecycle = recipe.select(current_platform()).lifecycle
    assert lifecycle.install is None  # the model is an artifact: nothing to train on the node
    folder = tmp_path / "artifacts" / "com.roost.ClusterScalar" / "1.0.0"
    assert _run_line("com.roost.ClusterScalar", tmp_path) == [
        "roost", "cluster", "replica", "--kind", "tabular", "--model", f"{folder}/wine-quality.json",
        "--host", "10.0.0.5", "--port", "31007", "--replica-id", "r-42", "--public-key",
        "A" * 43, "--sessions", "2", "--window", "40", "--idle-timeout", "120.0", "--engine", "xgboost",
        "--cache-dir", "/root/work/com.roost.ClusterScalar/cache"]
    assert (folder / "wine-quality.json").stat().st_size > 100_000  # the trained model


def test_cluster_image_recipe_run_line_and_assembled_artifacts(tmp_path: Path) -> None:
    line = _run_line("image", tmp_path)
    folder = tmp_path / "artifacts" / "com.roost.ClusterImage" / "1.0.0"
    assert line == ["roost", "cluster", "replica", "--kind", "image", "--model", str(folder), "--host", "10.0.0.5",
                    "--port", "31007", "--replica-id", "r-42", "--public-key", "A" * 43, "--sessions", "2",
                    "--window", "40", "--idle-timeout", "120.0", "--top-k", "5"]
    source = ARTIFACTS / "com.roost.ImageClassifier" / "1.0.0"
    for name in ("model.onnx", "labels.json", "PROVENANCE.md"):
        assert hashlib.sha256((folder / name).read_bytes()).digest() == \
            hashlib.sha256((source / name).read_bytes()).digest()
    recipe = load_recipe(cluster_sample("image", tmp_path / "again")[0])
    assert [a.uri.rsplit("/", 1)[-1] for a in recipe.manifests[0].artifacts] == ["model.onnx", "labels.json"]
    assert not (ARTIFACTS / "com.roost.ClusterImage").exists()  # the model is in the repository once


def test_the_defaults_keep_a_replica_from_starting_unconfigured(tmp_path: Path) -> None:
    recipe = load_recipe(cluster_sample("scalar", tmp_path)[0])
    assert recipe.default_configuration["replicaId"] == "unassigned"
    assert recipe.default_configuration["publicKey"] == "unassigned"  # ReplicaOptions.check refuses these
    with pytest.raises(NotFoundError, match="no cluster sample 'video'"):
        cluster_sample("video", tmp_path)
