"""Docker container components on a real agent and a real OCI engine (Podman's Docker API).

The recipes are written as for AWS IoT Greengrass: a ``docker:`` artifact, a dependency on
``aws.greengrass.DockerApplicationManager``, and a Run step that calls the real ``docker`` CLI with
the IPC wiring passed by hand (socket bind mount, ``SVCUID``, ``AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT``).
"""

from __future__ import annotations

import grp
import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.helpers import wait_until
from tests.conftest import Cli, running_agent
from tests.docker_engine import IMAGE_MARKER, PodmanEngine, podman_engine  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

SOCKET = "$AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
DOCKER_IPC = f"-v {SOCKET}:{SOCKET} -e SVCUID -e AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"

# Inside the container: AWS's awsiotsdk client, as the original system's container subscriber used.
RESPONDER = textwrap.dedent("""
    import json, os, signal, threading
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from awsiot.greengrasscoreipc.model import BinaryMessage, PublishMessage

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # PID 1 of its container: `docker stop` ends it
    image = open("IMAGE_MARKER").read()
    ipc = GreengrassCoreIPCClientV2()

    def answer(request):
        reply = {"id": request["id"], "sum": sum(request["values"]), "image": image,
                 "svcuid_set": bool(os.environ.get("SVCUID"))}
        ipc.publish_to_topic(topic="test/reply", publish_message=PublishMessage(
            binary_message=BinaryMessage(message=json.dumps(reply).encode())))

    def on_request(event):
        message = event.json_message or event.binary_message  # Roost's client sends a dict as JSON
        request = message.message if event.json_message else json.loads(message.message)
        threading.Thread(target=answer, args=(request,)).start()

    ipc.subscribe_to_topic(topic="test/request", on_stream_event=on_request)
    print("responder subscribed", flush=True)
    threading.Event().wait()
""").replace("IMAGE_MARKER", IMAGE_MARKER)

# A process component on the host, with Roost's own client: asks until the container answers.
REQUESTER = textwrap.dedent("""
    import threading
    from roost.ipc.client import SyncIpcClient

    got = threading.Event()
    with SyncIpcClient() as ipc:
        def on_reply(message):
            print("reply", message.payload.decode(), flush=True)
            got.set()
        ipc.subscribe("test/reply", on_reply)
        n = 0
        while not got.is_set():  # pub/sub keeps nothing: ask again until the responder has subscribed
            ipc.publish("test/request", {"id": n, "values": [1, 2, 3, n]})
            got.wait(0.5)
            n += 1
        print("requester done", flush=True)
        threading.Event().wait()
""")

IDLE = "import os, signal, threading; signal.signal(15, lambda *_: os._exit(0)); print('up', flush=True); " \
       "threading.Event().wait()"


def _acl(component: str, **ops: str) -> dict[str, Any]:
    return {"aws.greengrass.ipc.pubsub": {
        f"{component}:{i}": {"operations": [f"aws.greengrass#{op}"], "resources": [topic]}
        for i, (op, topic) in enumerate(ops.items())}}


def _recipe(dest: Path, name: str, run: str | dict[str, Any], *, image: str | None = None,
            files: dict[str, str] | None = None, config: dict[str, Any] | None = None,
            install: str | None = None, extra_artifacts: list[dict[str, Any]] | None = None) -> None:
    """A Greengrass-style recipe (and its artifact files) under ``dest/recipes`` and ``dest/artifacts``."""
    art_dir = dest / "artifacts" / name / "1.0.0"
    art_dir.mkdir(parents=True, exist_ok=True)
    (dest / "recipes").mkdir(parents=True, exist_ok=True)
    artifacts: list[dict[str, Any]] = [{"URI": f"docker:{image}"}] if image else []
    for fname, text in (files or {}).items():
        (art_dir / fname).write_text(text)
        artifacts.append({"URI": f"s3://bucket/{name}/1.0.0/{fname}"})
    artifacts += extra_artifacts or []
    lifecycle: dict[str, Any] = {"Run": run}
    if install:
        lifecycle["Install"] = {"Script": install, "RequiresPrivilege": True}
    recipe = {"RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": "1.0.0",
              "ComponentConfiguration": {"DefaultConfiguration": config or {}},
              "ComponentDependencies": {"aws.greengrass.DockerApplicationManager": {"VersionRequirement": "~2.0.0"}},
              "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": lifecycle, "Artifacts": artifacts}]}
    (dest / "recipes" / f"{name}-1.0.0.json").write_text(json.dumps(recipe, indent=1))


def _docker_run(name: str, image: str, command: str, *, ipc: bool = False, options: str = "") -> dict[str, Any]:
    # The engine's socket is root's: the step runs privileged, as Greengrass recipes do when the
    # component user is not in the docker group (docs/containers.md).
    wiring = " ".join(x for x in (DOCKER_IPC if ipc else "", options) if x)
    return {"Script": f"docker run --rm --name {name} {wiring} {image} {command}", "RequiresPrivilege": True}


def _deploy(agent: Cli, ws: Path, *args: str) -> dict[str, Any]:
    proc = agent.run("deployment", "create", "--recipe-dir", str(ws / "recipes"), "--artifact-dir",
                     str(ws / "artifacts"), *args, "--wait", "--timeout", "180", "--json", timeout=240)
    assert proc.stdout, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _containers(engine: PodmanEngine) -> str:
    return engine.docker("ps", "-a", "--format", "{{.Names}}").stdout


@pytest.fixture
def docker_agent(podman_engine: PodmanEngine, tmp_path: Path) -> Iterator[tuple[Cli, PodmanEngine]]:  # noqa: F811
    with running_agent(tmp_path / "root", "test-device", "--docker-host", podman_engine.host) as agent:
        yield agent, podman_engine


def test_container_component_answers_a_process_components_request(docker_agent: tuple[Cli, PodmanEngine],
                                                                     tmp_path: Path) -> None:
    agent, engine = docker_agent
    ws = tmp_path / "ws"
    image = engine.image  # built on the device (no registry here): used as it is, not pulled
    _recipe(ws, "com.test.ContainerResponder",
            _docker_run("roost-test-responder", image, "python3 -u /app/responder.py", ipc=True,
                        options="-v {artifacts:path}:/app:ro"),
            image=image, files={"responder.py": RESPONDER},
            config={"accessControl": _acl("com.test.ContainerResponder", SubscribeToTopic="test/request",
                                          PublishToTopic="test/reply")})
    _recipe(ws, "com.test.Requester", "python3 -u {artifacts:path}/requester.py", files={"requester.py": REQUESTER},
            config={"accessControl": _acl("com.test.Requester", SubscribeToTopic="test/reply",
                                          PublishToTopic="test/request")})
    out = _deploy(agent, ws, "--merge", "com.test.ContainerResponder=1.0.0", "--merge", "com.test.Requester=1.0.0")
    assert out["status"] == "SUCCEEDED", out
    notes = out["deploymentStatusDetails"]["roostNotes"]
    assert any("aws.greengrass.DockerApplicationManager" in n for n in notes), notes

    requester_log = agent.root / "logs" / "com.test.Requester.log"
    wait_until(lambda: "requester done" in _text(requester_log), timeout=90,
               what="the container component's reply")
    line = next(ln for ln in requester_log.read_text().splitlines() if "reply {" in ln)
    reply = json.loads(line.split("reply ", 1)[1])
    # Computed inside the container (it names the image it ran in), over the bind-mounted IPC socket.
    assert reply["sum"] == 6 + reply["id"] and reply["image"] == image and reply["svcuid_set"] is True
    assert "roost-test-responder" in _containers(engine)
    assert "responder subscribed" in (agent.root / "logs" / "com.test.ContainerResponder.log").read_text()

    # Removing the component stops its container (the CLI passes SIGTERM on); the image stays: Roost did not pull it.
    out = _deploy(agent, ws, "--remove", "com.test.ContainerResponder", "--remove", "com.test.Requester")
    assert out["status"] == "SUCCEEDED", out
    wait_until(lambda: "roost-test-responder" not in _containers(engine), timeout=60, what="the container to go")
    assert engine.has_image(image)


def test_pulled_image_is_removed_with_the_last_component_using_it(docker_agent: tuple[Cli, PodmanEngine],
                                                                  tmp_path: Path) -> None:
    agent, engine = docker_agent
    pulled = engine.publish("roost-test/pulled", "v1", tmp_path)  # in the registry only
    local = engine.tag("localhost/roost-test/local:v1")  # on the device, not pulled by Roost
    ws = tmp_path / "ws"
    command = f'python3 -c "{IDLE}"'
    _recipe(ws, "com.test.A", _docker_run("roost-test-a", pulled, command), image=pulled)
    _recipe(ws, "com.test.B", _docker_run("roost-test-b", pulled, command), image=pulled)
    _recipe(ws, "com.test.Local", _docker_run("roost-test-local", local, command), image=local)
    before = len(engine.registry.requests)
    out = _deploy(agent, ws, "--merge", "com.test.A=1.0.0", "--merge", "com.test.B=1.0.0",
                  "--merge", "com.test.Local=1.0.0")
    assert out["status"] == "SUCCEEDED", out
    assert engine.has_image(pulled)
    assert any("/manifests/v1" in r for r in engine.registry.requests[before:])  # a real pull
    wait_until(lambda: {"roost-test-a", "roost-test-b", "roost-test-local"} <= set(_containers(engine).split()),
               timeout=60, what="the three containers")

    out = _deploy(agent, ws, "--remove", "com.test.A")
    assert out["status"] == "SUCCEEDED", out
    assert "roost-test-a" not in _containers(engine)
    assert engine.has_image(pulled), "com.test.B still uses the image"

    out = _deploy(agent, ws, "--remove", "com.test.B", "--remove", "com.test.Local")
    assert out["status"] == "SUCCEEDED", out
    wait_until(lambda: not engine.has_image(pulled), timeout=30, what="the pulled image to be removed")
    assert engine.has_image(local), "an image Roost did not pull is never removed"
    engine.podman("rmi", local)


def test_docker_load_from_a_tarball_artifact(docker_agent: tuple[Cli, PodmanEngine], tmp_path: Path) -> None:
    """Greengrass' "image in S3" form: no docker: artifact; Install runs `docker load -i {artifacts:path}/x.tar`."""
    agent, engine = docker_agent
    ws = tmp_path / "ws"
    name = "com.test.Loaded"
    art_dir = ws / "artifacts" / name / "1.0.0"
    art_dir.mkdir(parents=True)
    saved = "localhost/roost-test/loaded:v1"
    engine.tag(saved)
    engine.podman("save", "--format", "docker-archive", "-o", str(art_dir / "loaded.tar"), saved)
    engine.podman("rmi", saved)
    assert not engine.has_image(saved)
    _recipe(ws, name, _docker_run("roost-test-loaded", saved, f'python3 -c "{IDLE}"'),
            install="docker load -i {artifacts:path}/loaded.tar",
            extra_artifacts=[{"URI": f"s3://bucket/{name}/1.0.0/loaded.tar"}])
    out = _deploy(agent, ws, "--merge", f"{name}=1.0.0")
    assert out["status"] == "SUCCEEDED", out
    assert engine.has_image(saved)
    wait_until(lambda: "up" in _text(agent.root / "logs" / f"{name}.log"), timeout=60,
               what="the loaded image's container to start")
    out = _deploy(agent, ws, "--remove", name)
    assert out["status"] == "SUCCEEDED", out
    engine.podman("rmi", saved)


def test_image_that_cannot_be_pulled_fails_before_any_change(docker_agent: tuple[Cli, PodmanEngine],
                                                             tmp_path: Path) -> None:
    agent, engine = docker_agent
    ws = tmp_path / "ws"
    missing = f"{engine.registry.host}/roost-test/nowhere:v1"
    _recipe(ws, "com.test.Missing", "true", image=missing)
    out = _deploy(agent, ws, "--merge", "com.test.Missing=1.0.0")
    assert out["status"] == "FAILED", out
    details = out["deploymentStatusDetails"]
    assert details["detailedDeploymentStatus"] == "FAILED_NO_STATE_CHANGE"
    assert details["deploymentFailureCause"] == "DOCKER_PULL_FAILED"
    assert missing in details["deploymentErrorStack"][0] and engine.host in details["deploymentErrorStack"][0]
    assert agent.json("component", "list") == []


# The variables a container component passes on; the token itself is never logged.
ENV_PRINT = ("env | grep -E '^(DOCKER_HOST|SVCUID|AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT|"
             "AWS_CONTAINER_[A-Z_]+)=' | sed 's/^SVCUID=.*/SVCUID=(set)/' | sort; exec sleep 600")


def test_no_engine_fails_the_deployment_naming_the_host(tmp_path: Path) -> None:
    """No podman needed: the agent is pointed at a socket nobody serves; components still get DOCKER_HOST."""
    host = f"unix://{tmp_path}/no-engine.sock"
    with running_agent(tmp_path / "root", "test-device", "--docker-host", host) as agent:
        ws = tmp_path / "ws"
        _recipe(ws, "com.test.Env", ENV_PRINT)
        out = _deploy(agent, ws, "--merge", "com.test.Env=1.0.0")  # no image: the engine is not needed
        assert out["status"] == "SUCCEEDED", out
        log = agent.root / "logs" / "com.test.Env.log"
        wait_until(lambda: "SVCUID=(set)" in _text(log), what="the component's environment")
        env = dict(ln.split("] ", 1)[1].split("=", 1) for ln in _text(log).splitlines() if "=" in ln)
        # What Greengrass gives a container component to pass on, and the engine the agent uses;
        # no AWS_CONTAINER_* (Roost serves no AWS credentials: docs/containers.md).
        assert env == {"DOCKER_HOST": host, "SVCUID": "(set)",
                       "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": str(agent.root / "ipc.socket")}

        _recipe(ws, "com.test.Container", _docker_run("roost-test-never", "nginx:1.25", ""), image="nginx:1.25")
        out = _deploy(agent, ws, "--merge", "com.test.Container=1.0.0")
        details = out["deploymentStatusDetails"]
        assert out["status"] == "FAILED" and details["detailedDeploymentStatus"] == "FAILED_NO_STATE_CHANGE", out
        assert details["deploymentFailureCause"] == "DOCKER_UNAVAILABLE"
        said = details["deploymentErrorStack"][0]
        assert f"no Docker-compatible engine answers at {host} (from --docker-host)" in said, said
        assert {c["componentName"]: c["state"] for c in agent.json("component", "list")} == {"com.test.Env": "RUNNING"}

        # A malformed docker: URI is refused when the deployment is submitted, naming the file and field.
        bad_ws = tmp_path / "bad"
        _recipe(bad_ws, "com.test.BadUri", "true", image="Registry.Example.com:5000/UPPER:1")
        proc = agent.run("deployment", "create", "--recipe-dir", str(bad_ws / "recipes"), "--merge",
                         "com.test.BadUri=1.0.0", "--json")
        said = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "RECIPE_INVALID" in said, said
        assert "com.test.BadUri-1.0.0.json" in said and "Manifests[0].Artifacts[0].URI" in said
        assert "'UPPER' is not an image name" in said

    bad = Cli(tmp_path / "other").run("agent", "start", "--detach", "--docker-host", "ssh://me@engine")
    assert bad.returncode != 0 and "DOCKER_HOST_INVALID" in bad.stdout + bad.stderr, bad
    assert "ssh://me@engine" in bad.stdout + bad.stderr


def test_floating_tag_is_pulled_again_and_falls_back_to_the_local_copy(docker_agent: tuple[Cli, PodmanEngine],
                                                                        tmp_path: Path) -> None:
    """``latest`` (or no tag) may move: pulled every time, as on Greengrass; offline, the device's copy is used."""
    agent, engine = docker_agent
    local = engine.tag("localhost/roost-test/floating:latest")
    ws = tmp_path / "ws"
    _recipe(ws, "com.test.Floating", {"Script": "docker image inspect localhost/roost-test/floating >/dev/null && "
                                                "echo image-here; exec sleep 600", "RequiresPrivilege": True},
            image="localhost/roost-test/floating")
    out = _deploy(agent, ws, "--merge", "com.test.Floating=1.0.0")
    assert out["status"] == "SUCCEEDED", out
    notes = "\n".join(out["deploymentStatusDetails"]["roostNotes"])
    assert f"com.test.Floating: {local} could not be refreshed" in notes and "the copy on the device is used" in notes
    wait_until(lambda: "image-here" in _text(agent.root / "logs" / "com.test.Floating.log"),
               what="the component's docker CLI to see the image")
    out = _deploy(agent, ws, "--remove", "com.test.Floating")
    assert out["status"] == "SUCCEEDED", out
    assert engine.has_image(local), "not pulled by Roost: kept"
    engine.podman("rmi", local)


def test_unprivileged_component_user_in_the_engine_sockets_group(podman_engine: PodmanEngine,  # noqa: F811
                                                                  tmp_path: Path) -> None:
    """AWS's documented form (no RequiresPrivilege): the component's user reaches the engine through its group."""
    group = "roost-test-engine"
    if subprocess.run(["getent", "group", group], capture_output=True, check=False).returncode != 0:
        subprocess.run(["groupadd", "--system", group], check=True)
    os.chown(podman_engine.socket, 0, grp.getgrnam(group).gr_gid)
    os.chmod(podman_engine.socket, 0o660)
    try:
        with running_agent(tmp_path / "root", "test-device", "--docker-host", podman_engine.host,
                           "--component-default-user", f"roost-components:{group}") as agent:
            ws = tmp_path / "ws"
            image = podman_engine.image
            _recipe(ws, "com.test.Unprivileged",
                    f"docker run --rm --name roost-test-unprivileged {image} python3 -c "
                    "\"import os; print('container uid', os.getuid(), flush=True)\"; echo host user $(id -un)",
                    image=image)
            out = _deploy(agent, ws, "--merge", "com.test.Unprivileged=1.0.0")
            assert out["status"] == "SUCCEEDED", out
            log = agent.root / "logs" / "com.test.Unprivileged.log"
            wait_until(lambda: "host user" in _text(log), timeout=60, what="the container to run and exit")
            assert "container uid 0" in _text(log) and "host user roost-components" in _text(log), _text(log)
    finally:
        os.chown(podman_engine.socket, 0, 0)
        os.chmod(podman_engine.socket, 0o600)
