"""``docker:`` artifact URIs: the image reference a recipe names, checked as the nucleus checks it.

A ``docker:`` artifact is ``docker:[registry/]name[:tag|@digest]`` (Greengrass' Docker application
manager form, which follows Docker's reference grammar):

* ``registry``: present when the reference has a ``/``; everything before the first ``/``, a
  host name of dot-separated labels (letters, digits, inner hyphens) with an optional ``:port``
  (``123456789012.dkr.ecr.us-east-1.amazonaws.com``, ``public.ecr.aws``, ``localhost:5000``,
  ``library``). Without one the engine's default registry (Docker Hub) is meant.
* ``name``: lower-case path components (``[a-z0-9]+`` joined by ``.``, ``_``, ``__`` or hyphens),
  separated by ``/``.
* ``tag``: ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``; or ``digest``: ``algorithm:hex`` with at least 32
  hex digits (``sha256:...``). Without either, ``latest`` is meant (and the nucleus warns: such a
  component is not immutable).

:func:`parse_image_uri` turns a URI into a :class:`DockerImage` or says what is wrong with it;
recipe validation calls it on every ``docker:`` artifact, so a bad one fails with the field path
(``Manifests[0].Artifacts[0].URI``) before anything is deployed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DOCKER_URI_FORM", "DockerImage", "parse_image_uri"]

#: How a valid ``docker:`` URI looks, for error messages.
DOCKER_URI_FORM = "docker:[registry/]name[:tag|@digest], e.g. docker:public.ecr.aws/org/app:1.2.0"

_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY = re.compile(rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?")
_PATH_PART = r"[a-z0-9]+(?:(?:[_.]|__|-*)[a-z0-9]+)*"
_NAME = re.compile(rf"{_PATH_PART}(?:/{_PATH_PART})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*:[0-9a-fA-F]{32,}")
LATEST = "latest"


@dataclass(frozen=True)
class DockerImage:
    """One image a recipe names. :attr:`reference` is what the engine is given (``name:tag`` or
    ``name@digest``, with the registry when the URI has one)."""

    uri: str
    registry: str | None
    name: str
    tag: str | None
    digest: str | None

    @property
    def repository(self) -> str:
        """``registry/name`` (or ``name``): the image without its tag or digest."""
        return f"{self.registry}/{self.name}" if self.registry else self.name

    @property
    def reference(self) -> str:
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or LATEST}"

    @property
    def floating(self) -> bool:
        """Whether the reference can move (tag ``latest``, as the nucleus treats it): pulled every time."""
        return self.digest is None and (self.tag or LATEST) == LATEST


def parse_image_uri(uri: str) -> DockerImage:
    """The image of a ``docker:`` URI; :class:`ValueError` saying which part is wrong otherwise."""
    scheme, colon, rest = uri.partition(":")
    if scheme.lower() != "docker" or not colon:
        raise ValueError(f"{uri!r} is not a docker: URI")
    if not rest:
        raise ValueError("the image reference after docker: is empty")
    if rest != rest.strip() or any(c.isspace() for c in rest):
        raise ValueError("an image reference has no spaces")
    registry: str | None = None
    remainder = rest
    if "/" in rest:
        registry, _, remainder = rest.partition("/")
        if not remainder:
            raise ValueError(f"nothing follows the registry {registry!r}/")
        if not _REGISTRY.fullmatch(registry):
            raise ValueError(f"{registry!r} is not a registry host[:port]")
    tag: str | None = None
    digest: str | None = None
    if "@" in remainder:
        name, _, digest = remainder.partition("@")
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"{digest!r} is not a digest (algorithm:hex, e.g. sha256:<64 hex digits>)")
    elif ":" in remainder:
        name, _, tag = remainder.partition(":")
        if not _TAG.fullmatch(tag):
            raise ValueError(f"{tag!r} is not a tag (letters, digits, _ . -; at most 128; not starting with . or -)")
    else:
        name = remainder
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not an image name (lower-case letters and digits, "
                         "separated by '.', '_', '__', '-' or '/')")
    return DockerImage(uri=uri, registry=registry, name=name, tag=tag, digest=digest)
