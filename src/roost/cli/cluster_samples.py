"""Publishing the sample cluster components (`roost cluster service-type apply --samples`).

``com.roost.ClusterScalar`` (the wine model, trained when assembled) and ``com.roost.ClusterImage``
(the EfficientNet-Lite0 classifier of ``com.roost.ImageClassifier``): :mod:`roost.samples.cluster`
assembles their artifact folders.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

from roost.hub.client import HubClient
from roost.hub.errors import HubConflictError
from roost.samples.cluster import CLUSTER_SAMPLES, VERSION, cluster_sample


def publish_cluster_samples(client: HubClient) -> Iterator[str]:
    """Publish each sample cluster component unless that version is already there; a line per component."""
    published = {(c["name"], c["version"]) for c in client.components()}
    for name in CLUSTER_SAMPLES:
        if (name, VERSION) in published:
            yield f"{name} {VERSION} is already published"
            continue
        with tempfile.TemporaryDirectory(prefix="roost-cluster-sample-") as tmp:
            recipe, folder = cluster_sample(name, Path(tmp))
            files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
            try:
                client.publish_component(recipe, files)
            except HubConflictError as err:
                if err.code != "VERSION_EXISTS":
                    raise
                yield f"{name} {VERSION} is already published"
                continue
        yield f"published {name} {VERSION} ({len(files)} artifact file(s))"


__all__ = ["publish_cluster_samples"]
