"""Publishing the sample cluster components (`roost cluster service-type apply --samples`).

``com.roost.ClusterScalar`` (the wine model, trained at install) and ``com.roost.ClusterImage`` (the
EfficientNet-Lite0 classifier: its artifact files are the ones of ``com.roost.ImageClassifier``, so
the repository holds the 4.9 MB model once).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from roost.hub.client import HubClient
from roost.hub.errors import HubConflictError
from roost.samples import ARTIFACTS, RECIPES

VERSION = "1.0.0"
#: Sample cluster component -> the sample whose artifact folder it publishes (None: its own, if any).
CLUSTER_SAMPLES: dict[str, str | None] = {"com.roost.ClusterScalar": None,
                                          "com.roost.ClusterImage": "com.roost.ImageClassifier"}


def sample_files(name: str) -> tuple[Path, dict[str, Path]]:
    """The recipe file of a sample cluster component and its artifact files by relative path."""
    folder = ARTIFACTS / (CLUSTER_SAMPLES[name] or name) / VERSION
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()} \
        if folder.is_dir() else {}
    return RECIPES / f"{name}-{VERSION}.yaml", files


def publish_cluster_samples(client: HubClient) -> Iterator[str]:
    """Publish each sample cluster component unless that version is already there; a line per component."""
    for name in CLUSTER_SAMPLES:
        recipe, files = sample_files(name)
        try:
            client.publish_component(recipe, files)
        except HubConflictError as err:
            if err.code != "VERSION_EXISTS":
                raise
            yield f"{name} {VERSION} is already published"
            continue
        yield f"published {name} {VERSION} ({len(files)} artifact file(s))"


__all__ = ["CLUSTER_SAMPLES", "VERSION", "publish_cluster_samples", "sample_files"]
