"""docker: artifact URIs, engine discovery and the engine API client, without a real engine.

The end-to-end tests against Podman are in test_docker_e2e.py; these use real unix sockets that
answer (or do not) like an engine that is broken or absent.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.agent.docker import DEFAULT_DOCKER_HOST, DockerEngine, DockerHost, ImageManager
from roost.agent.errors import ArtifactError
from roost.agent.store import Store
from roost.errors import InvalidInputError
from roost.recipe import RecipeError, parse_recipe
from roost.recipe.docker import parse_image_uri

SHA = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("uri", "reference", "registry", "floating"), [
    ("docker:nginx", "nginx:latest", None, True),
    ("docker:nginx:1.25", "nginx:1.25", None, False),
    ("docker:library/ubuntu:22.04", "library/ubuntu:22.04", "library", False),
    ("docker:123456789012.dkr.ecr.us-east-1.amazonaws.com/team/serve:v1.2.0",
     "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/serve:v1.2.0", "123456789012.dkr.ecr.us-east-1.amazonaws.com",
     False),
    ("docker:public.ecr.aws/org/app@" + SHA, "public.ecr.aws/org/app@" + SHA, "public.ecr.aws", False),
    ("docker:localhost:5000/a_b/c-d:latest", "localhost:5000/a_b/c-d:latest", "localhost:5000", True),
])
def test_image_uris_the_nucleus_accepts(uri: str, reference: str, registry: str | None, floating: bool) -> None:
    image = parse_image_uri(uri)
    assert (image.reference, image.registry, image.floating) == (reference, registry, floating)


@pytest.mark.parametrize(("uri", "problem"), [
    ("docker:", "empty"),
    ("docker:Nginx:1", "'Nginx' is not an image name"),
    ("docker:nginx:", "'' is not a tag"),
    ("docker:nginx:-bad", "'-bad' is not a tag"),
    ("docker:nginx@sha256:abc", "'sha256:abc' is not a digest"),
    ("docker:bad_host!/x:1", "'bad_host!' is not a registry"),
    ("docker:registry.example.com/", "nothing follows the registry"),
    ("docker:nginx 1", "no spaces"),
])
def test_bad_docker_uri_fails_recipe_validation_with_the_field_path(tmp_path: Path, uri: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_image_uri(uri)
    doc = {"RecipeFormatVersion": "2020-01-25", "ComponentName": "com.test.C", "ComponentVersion": "1.0.0",
           "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "true"},
                          "Artifacts": [{"URI": "s3://b/run.py"}, {"URI": uri}]}]}
    with pytest.raises(RecipeError) as info:
        parse_recipe(json.dumps(doc), source="c.json", fmt="json")
    assert info.value.code == "RECIPE_INVALID"
    text = str(info.value)
    assert "c.json" in text and "Manifests[0].Artifacts[1].URI" in text and problem in text


def test_docker_host_option_then_environment_then_default() -> None:
    assert DockerHost.resolve("unix:///a.sock", {"DOCKER_HOST": "unix:///b.sock"}) == \
        DockerHost("unix:///a.sock", "--docker-host")
    assert DockerHost.resolve(None, {"DOCKER_HOST": "tcp://127.0.0.1:2375"}) == \
        DockerHost("tcp://127.0.0.1:2375", "DOCKER_HOST")
    default = DockerHost.resolve(None, {})
    assert default == DockerHost(DEFAULT_DOCKER_HOST, "default") and not default.explicit
    for bad in ("ssh://me@host", "unix://", "tcp://host", "/var/run/docker.sock"):
        with pytest.raises(InvalidInputError, match="not understood") as info:
            DockerHost.resolve(bad, {})
        assert info.value.code == "DOCKER_HOST_INVALID"


def _engine_call(host: DockerHost, coro_name: str) -> None:
    async def main() -> None:
        async with DockerEngine(host) as engine:
            await getattr(engine, coro_name)()

    asyncio.run(main())


def test_no_engine_at_the_socket_is_docker_unavailable_naming_it(tmp_path: Path) -> None:
    host = DockerHost(f"unix://{tmp_path}/absent.sock", "--docker-host")
    with pytest.raises(ArtifactError) as info:
        _engine_call(host, "ping")
    assert info.value.code == "DOCKER_UNAVAILABLE"
    assert f"{tmp_path}/absent.sock (from --docker-host)" in info.value.message


@pytest.fixture
def broken_engine(tmp_path: Path) -> Iterator[tuple[DockerHost, list[str]]]:
    """A unix socket that answers every request HTTP 503, as an engine that is up but not serving."""
    path = tmp_path / "broken.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    seen: list[str] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                seen.append(conn.recv(65536).split(b"\r\n", 1)[0].decode())
                body = b'{"message": "engine is shutting down"}'
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield DockerHost(f"unix://{path}", "DOCKER_HOST"), seen
    finally:
        server.close()


def test_an_engine_that_answers_ping_with_an_error_is_unavailable(broken_engine: tuple[DockerHost, list[str]]
                                                                   ) -> None:
    host, seen = broken_engine
    with pytest.raises(ArtifactError, match="/_ping answered HTTP 503") as info:
        _engine_call(host, "ping")
    assert info.value.code == "DOCKER_UNAVAILABLE" and "(from DOCKER_HOST)" in info.value.message
    assert seen == ["GET /_ping HTTP/1.1"]  # detected by asking it, not assumed


def test_ensure_pings_first_and_nothing_is_recorded_without_an_engine(tmp_path: Path) -> None:
    images = ImageManager(DockerHost(f"unix://{tmp_path}/absent.sock", "--docker-host"), Store(tmp_path / "state.db"))
    assert asyncio.run(images.ensure({"com.test.NoImages": []}, 10)) == []  # no image: the engine is not needed
    with pytest.raises(ArtifactError) as info:
        asyncio.run(images.ensure({"com.test.C": [parse_image_uri("docker:nginx:1.25")]}, 10))
    assert info.value.code == "DOCKER_UNAVAILABLE"
    assert images.pulled() == {}


def test_release_keeps_images_in_use_and_tolerates_an_absent_engine(tmp_path: Path) -> None:
    meta = Store(tmp_path / "state.db")
    images = ImageManager(DockerHost(f"unix://{tmp_path}/absent.sock", "--docker-host"), meta)
    meta.set_meta("docker.pulled", json.dumps({"a:1": ["com.test.A"], "b:1": ["com.test.B"]}))
    asyncio.run(images.release_unused({"a:1", "b:1"}))  # both in use: the engine is not even asked
    asyncio.run(images.release_unused(None))  # not known: nothing removed
    asyncio.run(images.release_unused({"a:1"}))  # b:1 unused, but no engine: kept for a later try, no error
    assert images.pulled() == {"a:1": ["com.test.A"], "b:1": ["com.test.B"]}
