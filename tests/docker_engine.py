"""A real OCI engine for the container tests: Podman's Docker-compatible API on a temp socket.

:func:`podman_engine` (a module fixture, through :func:`tests.conftest.require_service`) starts
``podman system service --time=0 unix://SOCK`` with the ``containers.conf`` that
``scripts/setup-podman`` writes (``CONTAINERS_CONF``: runc, no default ulimits, as this machine kind
needs), its image store under ``build/podman/`` (gitignored; images are cached across runs), and
stops it at the end. No image registry is reachable here, so:

* the test image is built locally: a rootfs holding the system ``python3`` (its stdlib and the
  shared libraries ``ldd`` lists), AWS's ``awsiotsdk`` + ``awscrt`` and Roost's ``roost.ipc`` client,
  ``podman import``-ed as ``localhost/roost-test/ipc-python:<hash of its inputs>``;
* a small registry (:class:`Registry`: the read side of the OCI distribution API, over HTTP on
  127.0.0.1) serves images saved as OCI layouts, so pulls are real pulls; ``registries.conf``
  marks it insecure (plain HTTP) for the engine.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO, require_service

BUILD = REPO / "build" / "podman"
IMAGE_REPO = "localhost/roost-test/ipc-python"
#: Marker file baked into the test image: what a process inside it reads back proves where it ran.
IMAGE_MARKER = "/roost-test-image"


def containers_conf() -> Path:
    return Path(os.environ.get("CONTAINERS_CONF") or REPO / ".venv" / "containers.conf")


def _missing() -> str | None:
    """What is missing for the container tests, or None."""
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            return (f"`{tool}` is not on PATH (scripts/setup-podman installs Debian's podman and runc; "
                    "make pytest runs it)")
    if shutil.which("docker") is None:
        return "the `docker` CLI is not on PATH (the recipes under test run `docker run` / `docker load`)"
    conf = containers_conf()
    if not conf.is_file():
        return f"{conf} is missing (scripts/setup-podman writes it: runc, default_ulimits = [])"
    return None


# -- the registry ----------------------------------------------------------------------------------
@dataclass
class Registry:
    """The pull side of the OCI distribution API (``/v2/``), serving OCI image layouts from disk."""

    images: dict[tuple[str, str], Path] = field(default_factory=dict)  # (name, tag) -> OCI layout dir
    requests: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add(self, name: str, tag: str, layout: Path) -> str:
        self.images[(name, tag)] = layout
        return f"{self.host}/{name}:{tag}"

    def _manifest(self, name: str, ref: str) -> tuple[bytes, str, str] | None:
        for (image, tag), layout in self.images.items():
            if image != name:
                continue
            index = json.loads((layout / "index.json").read_text())
            entry = index["manifests"][0]
            if ref in (tag, entry["digest"]):
                blob = layout / "blobs" / Path(*entry["digest"].split(":", 1))
                return blob.read_bytes(), entry["mediaType"], entry["digest"]
        return None

    def _blob(self, name: str, digest: str) -> Path | None:
        for (image, _), layout in self.images.items():
            path = layout / "blobs" / Path(*digest.split(":", 1))
            if image == name and ":" in digest and "/" not in digest and path.is_file():
                return path
        return None

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def _answer(self, head: bool) -> None:
                registry.requests.append(f"{self.command} {self.path}")
                path = self.path.split("?", 1)[0]
                if path in ("/v2/", "/v2"):
                    return self._send(200, b"{}", "application/json", head)
                parts = path[len("/v2/"):].rsplit("/", 2) if path.startswith("/v2/") else []
                if len(parts) == 3 and parts[1] == "manifests":
                    found = registry._manifest(parts[0], parts[2])
                    if found is not None:
                        body, media, digest = found
                        return self._send(200, body, media, head, {"Docker-Content-Digest": digest})
                if len(parts) == 3 and parts[1] == "blobs":
                    blob = registry._blob(parts[0], parts[2])
                    if blob is not None:
                        return self._send(200, blob.read_bytes(), "application/octet-stream", head,
                                          {"Docker-Content-Digest": parts[2]})
                error = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": f"no {path} here"}]}
                self._send(404, json.dumps(error).encode(), "application/json", head)

            def _send(self, status: int, body: bytes, media: str, head: bool,
                      headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", media)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer(False)

            def do_HEAD(self) -> None:
                self._answer(True)

        return Handler


# -- the engine ------------------------------------------------------------------------------------
@dataclass
class PodmanEngine:
    socket: Path
    storage: Path
    runroot: Path
    env: dict[str, str]
    registry: Registry
    image: str = ""  # the locally built test image (a reference)

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def podman(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        cmd = ["podman", "--root", str(self.storage), "--runroot", str(self.runroot), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr or proc.stdout}")
        return proc

    def docker(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The real docker CLI against this engine."""
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False,
                              env={**os.environ, "DOCKER_HOST": self.host})

    def has_image(self, ref: str) -> bool:
        return self.podman("image", "exists", ref, check=False).returncode == 0

    def tag(self, ref: str) -> str:
        """A new name for the test image (removing it later leaves the cached original)."""
        self.podman("tag", self.image, ref)
        return ref

    def publish(self, name: str, tag: str, tmp: Path) -> str:
        """Put the test image into the registry as ``name:tag`` (not in the engine's store); its reference."""
        layout = tmp / f"oci-{name.replace('/', '-')}-{tag}"
        if not layout.exists():
            self.podman("save", "--format", "oci-dir", "-o", str(layout), self.image)
        ref = self.registry.add(name, tag, layout)
        assert not self.has_image(ref)
        return ref


def _image_inputs() -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files of the test image: the interpreter, its libraries and stdlib; the packages to copy."""
    import awscrt
    import awsiot

    python = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))  # not the venv's link
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site = Path(awscrt.__file__).parent.parent
    packages = [(Path(awscrt.__file__).parent, "awscrt"), (Path(awsiot.__file__).parent, "awsiot"),
                *[(p, p.name) for p in site.glob("_awscrt*.so")],
                *[(REPO / "src" / "roost" / part, f"roost/{part}") for part in ("ipc", "errors.py", "__init__.py")]]
    return [python, stdlib], packages


def _libraries(binaries: list[Path]) -> set[Path]:
    libs: set[Path] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            words = line.split()
            if "=>" in words and len(words) > words.index("=>") + 1 and words[words.index("=>") + 1].startswith("/"):
                libs.add(Path(words[words.index("=>") + 1]))
            elif words and words[0].startswith("/"):
                libs.add(Path(words[0]))
    return libs


_SKIP_STDLIB = {"test", "idlelib", "tkinter", "ensurepip", "lib2to3", "turtledemo", "pydoc_data", "site-packages",
                "dist-packages"}


def build_test_image(engine: PodmanEngine) -> str:
    """``localhost/roost-test/ipc-python:<hash>``, built once (and kept in build/podman) per set of inputs."""
    (python, stdlib), packages = _image_inputs()
    digest = hashlib.sha256(f"{python}:{sys.version}:{importlib.metadata.version('awsiotsdk')}:"
                            f"{importlib.metadata.version('awscrt')}".encode())
    for src, _ in packages:
        for path in sorted(src.rglob("*.py")) if src.is_dir() else [src]:
            digest.update(path.read_bytes())
    ref = f"{IMAGE_REPO}:{digest.hexdigest()[:12]}"
    if engine.has_image(ref):
        return ref
    binaries = [python, *(stdlib / "lib-dynload").glob("*.so"), *[p for p, _ in packages if p.suffix == ".so"]]
    with tempfile.TemporaryDirectory(dir=BUILD) as tmp:
        tar_path = Path(tmp) / "rootfs.tar"
        with tarfile.open(tar_path, "w") as tar:
            def add(src: Path, dest: str) -> None:
                tar.add(src, arcname=dest, filter=lambda ti: None if Path(ti.name).name in _SKIP_STDLIB
                        and ti.isdir() else ti)
            for lib in sorted(_libraries(binaries)):
                tar.add(os.path.realpath(lib), arcname=str(lib).lstrip("/"))
            add(python, "usr/bin/python3")
            add(stdlib, str(stdlib).lstrip("/"))
            site = f"usr/local/lib/python{sys.version_info.major}.{sys.version_info.minor}/dist-packages"
            for src, dest in packages:
                add(src, f"{site}/{dest}")
            marker = Path(tmp) / "marker"
            marker.write_text(ref)
            tar.add(marker, arcname=IMAGE_MARKER.lstrip("/"))
            tmp_dir = tarfile.TarInfo("tmp")
            tmp_dir.type, tmp_dir.mode = tarfile.DIRTYPE, 0o1777
            tar.addfile(tmp_dir)
        engine.podman("import", "--change", "ENV PYTHONPATH=/" + site, "--change", 'CMD ["/usr/bin/python3"]',
                      str(tar_path), ref)
    return ref


def _serve_registry() -> tuple[Registry, http.server.ThreadingHTTPServer]:
    registry = Registry()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), registry.handler())
    registry.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, name="test-registry", daemon=True).start()
    return registry, server


def _ping(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(str(path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
            return b" 200 " in sock.recv(1024)
    except OSError:
        return False


@pytest.fixture(scope="module")
def podman_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanEngine]:
    """Podman's Docker-compatible API on a temp socket with the locally built test image; stopped after the
    module (not the session: later tests check that the test process has no child processes left)."""
    missing = _missing()
    require_service("podman", missing is None, missing or "")
    BUILD.mkdir(parents=True, exist_ok=True)
    run = tmp_path_factory.mktemp("podman")
    registry, server = _serve_registry()
    registries = run / "registries.conf"
    registries.write_text(f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
    env = {**os.environ, "CONTAINERS_CONF": str(containers_conf()), "CONTAINERS_REGISTRIES_CONF": str(registries)}
    env.pop("DOCKER_HOST", None)
    # Podman's database remembers its runroot: one per store, short (conmon's socket paths live under it).
    runroot = Path(tempfile.gettempdir()) / f"roost-podman-{hashlib.sha256(str(BUILD).encode()).hexdigest()[:8]}"
    engine = PodmanEngine(socket=run / "engine.sock", storage=BUILD / "storage", runroot=runroot, env=env,
                          registry=registry)
    log = (run / "service.log").open("w")
    service = subprocess.Popen(["podman", "--root", str(engine.storage), "--runroot", str(engine.runroot), "system",
                                "service", "--time=0", engine.host], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not _ping(engine.socket):
            assert service.poll() is None, f"podman system service exited: {(run / 'service.log').read_text()}"
            assert time.monotonic() < deadline, "podman system service did not answer /_ping within 60 s"
            time.sleep(0.1)
        engine.image = build_test_image(engine)
        yield engine
    finally:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            engine.podman("rm", "--force", "--all", check=False, timeout=120)
        service.terminate()
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait(10)
        log.close()
        server.shutdown()
        server.server_close()
