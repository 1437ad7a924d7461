"""The store's own records: what never goes on the wire as it is.

Everything the store returns that the REST layer serialises is a contract model
(:mod:`roost.hub.contract.models`: ``Device``, ``Group``, ``Component``, ``Deployment``, ...),
declared once for the server and the client; deployments are created from the contract's
``DeploymentCreate``. Only the authenticated principal and an artifact's location on disk are
the store's alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.hub.contract import PrincipalKind


@dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    id: int
    name: str


@dataclass(frozen=True)
class ArtifactLocation:
    path: str
    sha256: str
    size: int
    file_name: str
    #: The file itself when it is small (at most INLINE_ARTIFACT_BYTES), read with the access check.
    content: bytes | None = None
