"""Docker images of ``docker:`` artifacts, through a Docker-compatible engine (Docker, Podman).

What the Greengrass Docker application manager does for a component with ``docker:`` artifacts,
Roost's agent does itself (``aws.greengrass.DockerApplicationManager`` is built in):

* **Engine.** ``--docker-host`` (``roost agent start --docker-host unix://PATH``), else the agent's
  ``DOCKER_HOST``, else ``unix:///var/run/docker.sock``; ``unix://`` and ``tcp://`` (plain HTTP)
  hosts are understood. When the host was given (option or ``DOCKER_HOST``), components get it as
  their ``DOCKER_HOST``, so the ``docker`` CLI in their lifecycle talks to the same engine.
* **Before anything changes** (a deployment's prepare phase), for every image of the deployment:
  the engine is pinged (``GET /_ping``; no answer: ``DOCKER_UNAVAILABLE``, naming the host and
  where it came from); an image already present is used as it is, except a floating one (tag
  ``latest`` or none), which is pulled again as the nucleus does, falling back to the local copy
  when the pull fails; a missing image is pulled (``POST /images/create``; failure:
  ``DOCKER_PULL_FAILED`` with the engine's own message).
* **Removal.** An image Roost pulled is removed (``DELETE /images/{name}``) once no deployed
  component names it any more (after each applied deployment or rollback). Images Roost did not
  pull (built or loaded on the device, or there before) are never removed: no registry may hold
  them. An image still used by a container (``409``) is kept and tried again after the next
  deployment. The record of pulled images is kept in the agent's store (meta ``docker.pulled``).

The engine API is spoken with httpx over the engine's socket rather than through the ``docker``
CLI: one connection per deployment instead of a process per call, HTTP status codes to tell "not
there" (404) from "in use" (409), and the pull's progress stream read line by line, bounded, for
its error. Recipes still use the real CLI for ``docker run`` / ``docker load``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import urllib.parse
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # imported where an engine is contacted: the agent's memory stays small without docker: artifacts
    import httpx

from roost.agent.errors import ArtifactError
from roost.errors import InvalidInputError, RoostError
from roost.recipe import Recipe
from roost.recipe.docker import DockerImage, parse_image_uri

log = logging.getLogger(__name__)

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
#: Seconds the engine has to answer a ping.
PING_TIMEOUT = 5.0
#: Seconds without a byte from the engine while it pulls (its progress stream keeps coming).
PULL_IDLE_TIMEOUT = 300.0
#: The longest line of a pull's progress stream that is kept (the error line is short).
MAX_PROGRESS_LINE = 64 * 1024
_META_KEY = "docker.pulled"


@dataclass(frozen=True)
class DockerHost:
    """Where the engine is: ``url`` as given, and who said so (for error messages)."""

    url: str
    source: str  # "--docker-host", "DOCKER_HOST" or "default"

    @classmethod
    def resolve(cls, option: str | None, environ: Mapping[str, str] | None = None) -> DockerHost:
        env = os.environ if environ is None else environ
        if option:
            host = cls(option, "--docker-host")
        elif env.get("DOCKER_HOST"):
            host = cls(env["DOCKER_HOST"], "DOCKER_HOST")
        else:
            host = cls(DEFAULT_DOCKER_HOST, "default")
        host.endpoint()  # a malformed host is refused at start, not at the first deployment (no httpx yet)
        return host

    @property
    def explicit(self) -> bool:
        """Whether the host was given (then components get it as ``DOCKER_HOST``)."""
        return self.source != "default"

    def describe(self) -> str:
        return self.url + {"--docker-host": " (from --docker-host)", "DOCKER_HOST": " (from DOCKER_HOST)",
                           "default": " (the default; set DOCKER_HOST or --docker-host for another)"}[self.source]

    def endpoint(self) -> tuple[str | None, str]:
        """(the Unix socket path or None for TCP, the base URL); InvalidInputError if not understood."""
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme == "unix" and parsed.path:
            return parsed.path, "http://docker"
        if parsed.scheme == "tcp" and parsed.hostname and parsed.port:
            return None, f"http://{parsed.hostname}:{parsed.port}"
        raise InvalidInputError(
            f"docker host {self.url!r} ({self.source}) is not understood: expected unix:///path/to/socket or "
            "tcp://host:port (plain HTTP; TLS and ssh:// engines are not supported)", code="DOCKER_HOST_INVALID")

    def transport(self) -> tuple[httpx.AsyncBaseTransport, str]:
        """An httpx transport and base URL for this host."""
        import httpx

        uds, base = self.endpoint()
        return (httpx.AsyncHTTPTransport(uds=uds) if uds is not None else httpx.AsyncHTTPTransport()), base


class DockerEngine:
    """The engine API calls Roost needs, over one httpx client (``async with`` it)."""

    def __init__(self, host: DockerHost) -> None:
        import httpx
        self.host = host
        transport, base = host.transport()
        self._client = httpx.AsyncClient(transport=transport, base_url=base,
                                         timeout=httpx.Timeout(30.0, connect=PING_TIMEOUT))

    async def __aenter__(self) -> DockerEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    def _unavailable(self, detail: str) -> ArtifactError:
        return ArtifactError(f"no Docker-compatible engine answers at {self.host.describe()}: {detail}; start the "
                             "engine (Docker, or `podman system service`) or point the agent at it with "
                             "`roost agent start --docker-host unix://PATH`", code="DOCKER_UNAVAILABLE")

    async def ping(self) -> None:
        """``GET /_ping``; :class:`ArtifactError` ``DOCKER_UNAVAILABLE`` unless the engine answers OK."""
        import httpx
        try:
            response = await self._client.get("/_ping", timeout=PING_TIMEOUT)
        except httpx.HTTPError as err:
            raise self._unavailable(f"{type(err).__name__}: {err}") from err
        if response.status_code != 200:
            raise self._unavailable(f"/_ping answered HTTP {response.status_code}")

    async def image_present(self, image: DockerImage) -> bool:
        """``GET /images/{reference}/json``: whether the engine has the image."""
        response = await self._call("GET", f"/images/{image.reference}/json")
        if response.status_code == 404:
            return False
        self._check(response, f"inspecting image {image.reference}")
        return True

    async def pull(self, image: DockerImage) -> None:
        """``POST /images/create``: pull the image; :class:`ArtifactError` ``DOCKER_PULL_FAILED`` with the
        engine's message when it fails (the progress stream says so even under HTTP 200)."""
        import httpx
        params = {"fromImage": image.repository, "tag": image.digest or image.tag or "latest"}
        error: str | None = None
        try:
            async with self._client.stream("POST", "/images/create", params=params,
                                           timeout=httpx.Timeout(PULL_IDLE_TIMEOUT, connect=PING_TIMEOUT)) as response:
                if response.status_code != 200:
                    body = (await response.aread())[:MAX_PROGRESS_LINE]
                    error = f"HTTP {response.status_code}: {_message(body)}"
                else:
                    async for line in _bounded_lines(response):
                        event = _json(line)
                        if isinstance(event, dict) and event.get("error"):
                            error = str(event.get("error"))
        except httpx.HTTPError as err:
            error = f"{type(err).__name__}: {err}"
        if error is not None:
            raise ArtifactError(f"pulling {image.reference} (artifact {image.uri}) through the engine at "
                                f"{self.host.url} failed: {error}", code="DOCKER_PULL_FAILED")

    async def remove(self, reference: str) -> str:
        """``DELETE /images/{reference}``: ``"removed"``, ``"gone"`` (404) or ``"in use"`` (409)."""
        response = await self._call("DELETE", f"/images/{reference}")
        if response.status_code == 404:
            return "gone"
        if response.status_code == 409:
            return "in use"
        self._check(response, f"removing image {reference}")
        return "removed"

    async def _call(self, method: str, path: str) -> httpx.Response:
        import httpx
        try:
            return await self._client.request(method, path)
        except httpx.HTTPError as err:
            raise self._unavailable(f"{type(err).__name__}: {err}") from err

    def _check(self, response: httpx.Response, doing: str) -> None:
        if response.status_code >= 400:
            raise ArtifactError(f"{doing} on the engine at {self.host.url}: HTTP {response.status_code}: "
                                f"{_message(response.content[:MAX_PROGRESS_LINE])}", code="DOCKER_ENGINE_ERROR")


async def _bounded_lines(response: httpx.Response) -> AsyncIterator[bytes]:
    """The lines of a streamed body; each cut to :data:`MAX_PROGRESS_LINE` bytes (nothing else is kept)."""
    pending = b""
    async for chunk in response.aiter_bytes():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line[:MAX_PROGRESS_LINE]
        pending = pending[-MAX_PROGRESS_LINE:]
    if pending.strip():
        yield pending


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _message(body: bytes) -> str:
    data = _json(body)
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return body.decode("utf-8", "replace").strip() or "(no message)"


def images_of(recipe: Recipe, platform: Mapping[str, str]) -> list[DockerImage]:
    """The images of the ``docker:`` artifacts of ``recipe``'s manifest for ``platform``."""
    return [parse_image_uri(a.uri) for a in recipe.select(platform).artifacts if a.scheme == "docker"]


class MetaStore(Protocol):
    """What :class:`ImageManager` needs of the agent's store (:class:`roost.agent.store.Store`)."""

    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...


class ImageManager:
    """Ensures a deployment's images before it changes anything; removes the images it pulled once unused."""

    def __init__(self, host: DockerHost, store: MetaStore) -> None:
        self.host = host
        self.store = store

    # -- the record of pulled images: reference -> components it was pulled for ----------------
    def pulled(self) -> dict[str, list[str]]:
        raw = self.store.get_meta(_META_KEY)
        data = _json(raw.encode()) if raw else None
        if not isinstance(data, dict):
            return {}
        return {str(k): [str(c) for c in v] for k, v in data.items() if isinstance(v, list)}

    def _save(self, pulled: Mapping[str, list[str]]) -> None:
        self.store.set_meta(_META_KEY, json.dumps({k: sorted(set(v)) for k, v in sorted(pulled.items())}))

    async def ensure(self, wanted: Mapping[str, Iterable[DockerImage]], timeout: float) -> list[str]:
        """Make every image of ``wanted`` (component -> images) present; the deployment's notes.

        Raises :class:`ArtifactError`: ``DOCKER_UNAVAILABLE`` (no engine), ``DOCKER_PULL_FAILED``
        (an image that is not on the device could not be pulled, or pulls took over ``timeout`` s).
        """
        todo = {name: list(images) for name, images in sorted(wanted.items()) if images}
        if not todo:
            return []
        try:
            async with asyncio.timeout(timeout):
                return await self._ensure(todo)
        except TimeoutError as err:
            raise ArtifactError(f"getting the deployment's Docker images took over {timeout:g} s (the "
                                "deployment's timeout)", code="DOCKER_PULL_FAILED") from err

    async def _ensure(self, todo: Mapping[str, list[DockerImage]]) -> list[str]:
        notes: list[str] = []
        done: dict[str, str] = {}  # reference -> how (each image once, whoever names it)
        async with DockerEngine(self.host) as engine:
            await engine.ping()
            for name, images in todo.items():
                for image in images:
                    ref = image.reference
                    if ref not in done:
                        done[ref] = await self._one(engine, name, image, notes)
                    if done[ref] == "pulled":
                        pulled = self.pulled()
                        pulled.setdefault(ref, []).append(name)
                        self._save(pulled)
        return notes

    async def _one(self, engine: DockerEngine, name: str, image: DockerImage, notes: list[str]) -> str:
        present = await engine.image_present(image)
        if present and not image.floating:
            log.info("%s: image %s is on the device", name, image.reference)
            return "present"
        try:
            log.info("%s: pulling image %s", name, image.reference)
            await engine.pull(image)
        except ArtifactError as err:
            if not present:
                raise
            notes.append(f"{name}: {image.reference} could not be refreshed ({err.message}); the copy on the "
                         "device is used")
            log.warning("%s", notes[-1])
            return "present"
        # Roost's to remove later: an image that was not on the device, or one Roost pulled before.
        return "pulled" if not present or image.reference in self.pulled() else "present"

    async def release_unused(self, in_use: Iterable[str] | None) -> None:
        """Remove the pulled images no deployed component names (``in_use``: references; None: not
        known now, nothing is removed); never raises."""
        pulled = self.pulled()
        if in_use is None:
            return
        keep = set(in_use)
        unused = [ref for ref in pulled if ref not in keep]
        if not unused:
            return
        try:
            async with DockerEngine(self.host) as engine:
                for ref in unused:
                    outcome = await engine.remove(ref)
                    if outcome == "in use":
                        log.warning("image %s (pulled for %s) is no longer needed but a container still uses it; "
                                    "it is removed after a later deployment", ref, ", ".join(pulled[ref]))
                        continue
                    log.info("image %s (pulled for %s) %s", ref, ", ".join(pulled[ref]),
                             "removed" if outcome == "removed" else "was already gone")
                    current = self.pulled()
                    current.pop(ref, None)
                    self._save(current)
        except ArtifactError as err:
            log.warning("unused Docker images are not removed now (tried again after the next deployment): %s",
                        err.message)


def references_in_use(recipes: Iterable[Recipe], platform: Mapping[str, str]) -> set[str]:
    """Image references the ``docker:`` artifacts of ``recipes`` name (recipes that fail to select add none)."""
    refs: set[str] = set()
    for recipe in recipes:
        try:
            refs.update(image.reference for image in images_of(recipe, platform))
        except (RoostError, ValueError) as err:  # a recipe that no longer selects here names nothing
            log.debug("%s: no images: %s", recipe.name, err)
    return refs
