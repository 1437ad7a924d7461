"""The edge-cluster sample components: ``com.roost.ClusterScalar`` and ``com.roost.ClusterImage`` 1.0.0.

Their recipes are in ``recipes/``; their artifact folders are assembled, not committed:

- ``com.roost.ClusterScalar`` serves the wine model, trained here (deterministically, from the vendored
  UCI data, by :func:`roost.serve.wine.train_wine`) into its folder as ``wine-quality.json``: replicas
  start at once, with no training on the node;
- ``com.roost.ClusterImage`` serves ``com.roost.ImageClassifier``'s EfficientNet-Lite0 (4.9 MB), so its
  folder is a copy of that component's ``model.onnx``, ``labels.json`` and ``PROVENANCE.md``, made when
  it is published or deployed rather than a second copy in the repository.

:func:`cluster_sample` gives ``(recipe file, artifact folder)`` for either, the folder laid out as
``DEST/<name>/1.0.0/`` so ``DEST`` also serves as a local deployment's ``--artifact-dir``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Final

from roost.errors import NotFoundError
from roost.samples import ARTIFACTS, RECIPES

__all__ = ["CLUSTER_SAMPLES", "SERVICE_COMPONENTS", "cluster_sample"]

VERSION: Final = "1.0.0"
#: The component of each shipped service type (:data:`roost.cluster.service_types.SHIPPED`).
SERVICE_COMPONENTS: Final[dict[str, str]] = {"scalar": "com.roost.ClusterScalar", "image": "com.roost.ClusterImage"}
#: Each cluster sample and the files of its artifact folder: ``(source folder, file names)``.
CLUSTER_SAMPLES: Final[dict[str, tuple[Path | None, tuple[str, ...]]]] = {
    "com.roost.ClusterScalar": (None, ("wine-quality.json",)),
    "com.roost.ClusterImage": (ARTIFACTS / "com.roost.ImageClassifier" / VERSION,
                               ("model.onnx", "labels.json", "PROVENANCE.md")),
}


def cluster_sample(name: str, dest: Path) -> tuple[Path, Path]:
    """``(recipe path, artifact folder)`` of a cluster sample (a component name, or the service type
    ``scalar``/``image``), its artifact folder assembled at ``dest/<name>/1.0.0/`` (made afresh)."""
    component = SERVICE_COMPONENTS.get(name, name)
    if component not in CLUSTER_SAMPLES:
        raise NotFoundError(f"no cluster sample {name!r}; there are {', '.join(CLUSTER_SAMPLES)} "
                            f"(service types {', '.join(SERVICE_COMPONENTS)})", code="COMPONENT_NOT_FOUND")
    recipe = RECIPES / f"{component}-{VERSION}.yaml"
    folder = Path(dest) / component / VERSION
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    source, files = CLUSTER_SAMPLES[component]
    if source is None:
        from roost.serve.wine import train_wine

        train_wine(folder / "wine-quality.json")
        return recipe, folder
    for file_name in files:
        shutil.copyfile(source / file_name, folder / file_name)
    return recipe, folder
