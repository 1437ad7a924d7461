"""A small typed client for the hub's REST API (``/v1``, see ``docs/hub.md``).

Two halves:

* :class:`HubClient` (synchronous, ``httpx.Client``) — the admin API the CLI calls with an API
  token: enrolment tokens, devices, groups, components (multipart publish with a progress
  callback), deployments. :func:`enroll` redeems a one-time enrolment token (no auth header).
* :class:`DeviceClient` (asynchronous, ``httpx.AsyncClient``) — what the agent's sync loop calls
  with its device credential: the desired-state long poll, artifact downloads, report delivery.

The records it returns and the bodies it sends are the hub's own (:mod:`roost.hub.contract`);
so are the errors: the hub's answers (``{"error": {"code", "message"}}``) become the hub's error
classes (:mod:`roost.hub.errors`) through the contract's one status table
(:func:`roost.hub.contract.error_for`), keeping the hub's code: 401 → ``AuthenticationError``, 403 →
``ForbiddenError`` (both ``UnauthorizedError``: re-authenticate), 404 → ``HubNotFoundError``, 409 →
``HubConflictError``, 410 → ``GoneError``, other 4xx → ``HubInvalidInputError`` and its kin, 5xx →
``HubServerError`` (retryable). Only what a client alone can see is declared here: a hub that
cannot be reached is :class:`HubUnreachableError` (retryable), one that does not answer in time
:class:`HubTimeoutError` (retryable), an answer this client does not understand
:class:`HubProtocolError`, a download whose bytes differ from the hub's digest
:class:`DigestMismatchError`. Every call has a timeout. Credentials are sent in headers only and
never logged. This module imports nothing of FastAPI or Starlette.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from roost import __version__
from roost.errors import InvalidInputError, OperationTimeoutError, Retryable
from roost.hub.contract import (
    SHA256_HEADER,
    Artifact,
    BenchmarkRecord,
    Component,
    Deployment,
    DeploymentDevice,
    Desired,
    DesiredComponent,
    Device,
    Enrollment,
    EnrollToken,
    Group,
    ModelValidation,
    Recommendation,
    ReportedComponent,
    error_for,
)
from roost.hub.contract.cluster import ClusterNode, ClusterReplica, ClusterSession, Tier
from roost.hub.contract.federated import LearnJob, LearnJobIn
from roost.hub.contract.secrets import Secret
from roost.hub.errors import (
    AuthenticationError,
    ForbiddenError,
    GoneError,
    HubConflictError,
    HubError,
    HubInvalidInputError,
    HubNotFoundError,
    HubServerError,
)

if TYPE_CHECKING:
    from roost.hub.contract.cluster import ClusterSession

log = logging.getLogger(__name__)

#: Timeout (seconds) of an ordinary API call: connect, read, write and pool.
DEFAULT_TIMEOUT = 30.0
#: Connect timeout for every call: a hub that does not accept a connection within this is down.
CONNECT_TIMEOUT = 10.0
#: Extra read time allowed beyond the server-side wait of a long poll.
LONG_POLL_GRACE = 15.0
USER_AGENT = f"roost/{__version__}"


# -- errors only a client can see (the hub's own are roost.hub.errors) --------------------------------
class HubUnreachableError(Retryable, HubError):
    """No connection to the hub (refused, DNS, reset): retry later with backoff."""

    code = "HUB_UNREACHABLE"


class HubTimeoutError(OperationTimeoutError, HubError):
    """The hub did not answer within the call's timeout."""

    code = "HUB_TIMEOUT"


class HubProtocolError(HubError):
    """The hub answered something this client does not understand."""

    code = "HUB_PROTOCOL_ERROR"


class DigestMismatchError(HubError):
    """A downloaded artifact's SHA-256 differs from what the hub says it should be."""

    code = "ARTIFACT_DIGEST_MISMATCH"


def error_from_response(response: httpx.Response) -> HubError:
    """The hub's error for a non-2xx response (the response body must have been read)."""
    code: str | None = None
    message = ""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = err.get("code") if isinstance(err.get("code"), str) else None
            message = str(err.get("message") or "")
        elif isinstance(body.get("detail"), (str, list)):
            message = str(body["detail"])
    if not message:
        message = (response.text or response.reason_phrase or "").strip()[:500]
    status = response.status_code
    where = f"{response.request.method} {response.request.url.path}"
    return error_for(status, code, f"hub: {message or 'HTTP ' + str(status)} ({where} → {status})")


def _transport_error(err: httpx.TransportError, base_url: str) -> HubError:
    if isinstance(err, httpx.TimeoutException):
        return HubTimeoutError(f"the hub at {base_url} did not answer in time ({type(err).__name__})")
    reason = str(err) or type(err).__name__
    return HubUnreachableError(f"cannot reach the hub at {base_url}: {reason}")


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], data: Any, what: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise HubProtocolError(f"unexpected answer from the hub for {what}: {err.errors()[0]['msg']} at "
                               f"{'.'.join(str(p) for p in err.errors()[0]['loc'])}") from err


def _parse_list(model: type[M], data: Any, what: str) -> list[M]:
    if isinstance(data, dict):  # tolerate {"items": [...]} / {"<what>": [...]} envelopes
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else data
    if not isinstance(data, list):
        raise HubProtocolError(f"unexpected answer from the hub for {what}: expected a list")
    return [_parse(model, item, what) for item in data]


def _headers(token: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise InvalidInputError(f"hub URL {url!r} must start with http:// or https://", code="INVALID_HUB_URL")
    return url


# -- enrolment (no credential yet) ----------------------------------------------------------------
def enroll(hub: str, token: str, name: str, labels: Mapping[str, Any], *,
           timeout: float = DEFAULT_TIMEOUT) -> Enrollment:
    """Redeem a one-time enrolment token: ``POST /v1/enroll`` → the device's name and credential."""
    base = normalize_url(hub)
    try:
        with httpx.Client(base_url=base, headers=_headers(None),
                          timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT)) as client:
            response = client.post("/v1/enroll", json={"token": token, "name": name, "labels": dict(labels)})
    except httpx.TransportError as err:
        raise _transport_error(err, base) from err
    if response.status_code >= 400:
        raise error_from_response(response)
    return _parse(Enrollment, response.json(), "enrol")


# -- admin client ------------------------------------------------------------------------------
ProgressCallback = Callable[[int], None]


class _ProgressReader:
    """A binary file wrapper reporting every chunk httpx reads while streaming a multipart body."""

    def __init__(self, fh: IO[bytes], on_read: ProgressCallback) -> None:
        self._fh = fh
        self._on_read = on_read

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        if data:
            self._on_read(len(data))
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def fileno(self) -> int:
        return self._fh.fileno()

    def __iter__(self) -> _ProgressReader:
        return self

    def __next__(self) -> bytes:
        data = self.read(64 * 1024)
        if not data:
            raise StopIteration
        return data


class HubClient:
    """The admin API with an API token (``--token`` / ``ROOST_TOKEN``). Use as a context manager."""

    def __init__(self, hub: str, token: str | None, *, timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = normalize_url(hub)
        self._client = httpx.Client(base_url=self.base_url, headers=_headers(token),
                                    timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT), transport=transport)

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call; the decoded JSON body (``None`` for an empty body); HubError on failure."""
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as err:
            raise _transport_error(err, self.base_url) from err
        if response.status_code >= 400:
            raise error_from_response(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as err:
            raise HubProtocolError(f"the hub answered {method} {path} with a body that is not JSON") from err

    # enrolment tokens
    def create_enroll_token(self, group: str | None = None, ttl_seconds: int | None = None) -> EnrollToken:
        body: dict[str, Any] = {}
        if group:
            body["group"] = group
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        return _parse(EnrollToken, self.request("POST", "/v1/enroll-tokens", json=body), "enroll token")

    # devices
    def devices(self) -> list[Device]:
        return _parse_list(Device, self.request("GET", "/v1/devices"), "devices")

    def device(self, name: str) -> Device:
        return _parse(Device, self.request("GET", f"/v1/devices/{_seg(name)}"), "device")

    def revoke_device(self, name: str) -> Any:
        return self.request("POST", f"/v1/devices/{_seg(name)}/revoke")

    def set_labels(self, name: str, labels: Mapping[str, Any]) -> Any:
        return self.request("PUT", f"/v1/devices/{_seg(name)}/labels", json={"labels": dict(labels)})

    # groups
    def add_members(self, group: str, devices: Iterable[str]) -> Any:
        return self.request("POST", f"/v1/groups/{_seg(group)}/members", json={"devices": list(devices)})

    def remove_member(self, group: str, device: str) -> Any:
        return self.request("DELETE", f"/v1/groups/{_seg(group)}/members/{_seg(device)}")

    def groups(self) -> list[Group]:
        return _parse_list(Group, self.request("GET", "/v1/groups"), "groups")

    # components
    def publish_component(self, recipe: Path, artifacts: Mapping[str, Path],
                          on_progress: ProgressCallback | None = None, *, timeout: float = 3600.0) -> Component:
        """``POST /v1/components`` (multipart): the recipe file plus each artifact, streamed from disk.

        ``artifacts`` maps each file's relative path in the version's artifact folder (``hello.py``,
        ``lib/greet.py``; the files the recipe's URIs name are at the top) to the local file; the
        path is sent as the part's filename. ``on_progress`` is called with the number of artifact
        bytes sent so far.
        """
        handles: list[IO[bytes]] = []
        try:
            files: list[tuple[str, tuple[str, Any, str]]] = [
                ("recipe", (recipe.name, recipe.read_bytes(), _recipe_type(recipe)))]
            for file_name, path in artifacts.items():
                fh = path.open("rb")
                handles.append(fh)
                body: Any = _ProgressReader(fh, on_progress) if on_progress else fh
                files.append(("artifacts", (file_name, body, "application/octet-stream")))
            return _parse(Component, self.request("POST", "/v1/components", files=files,
                                                  timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT)),
                          "publish")
        except OSError as err:
            raise InvalidInputError(f"cannot read {err.filename}: {err.strerror}", code="FILE_UNREADABLE") from err
        finally:
            for handle in handles:
                handle.close()

    def components(self) -> list[dict[str, Any]]:
        data = self.request("GET", "/v1/components")
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            data = lists[0] if len(lists) == 1 else data
        if not isinstance(data, list):
            raise HubProtocolError("unexpected answer from the hub for components: expected a list")
        return [dict(item) for item in data if isinstance(item, dict)]

    def component(self, name: str, version: str) -> dict[str, Any]:
        data = self.request("GET", f"/v1/components/{_seg(name)}/{_seg(version)}")
        if not isinstance(data, dict):
            raise HubProtocolError("unexpected answer from the hub for a component")
        return data

    def download_artifact(self, name: str, version: str, file_name: str, dest: Path, *,
                          max_bytes: int = 1 << 30) -> str:
        """Fetch one artifact to ``dest`` (at most ``max_bytes``), checked against the hub's sha256 header."""
        path = f"/v1/artifacts/{_seg(name)}/{_seg(version)}/{'/'.join(_seg(p) for p in file_name.split('/'))}"
        digest = hashlib.sha256()
        size = 0
        try:
            with self._client.stream("GET", path) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                expected = response.headers.get(SHA256_HEADER, "").strip().lower()
                with dest.open("wb") as out:
                    for chunk in response.iter_bytes(256 * 1024):
                        size += len(chunk)
                        if size > max_bytes:
                            raise HubProtocolError(f"artifact {name}/{version}/{file_name} is over {max_bytes} bytes")
                        digest.update(chunk)
                        out.write(chunk)
        except httpx.TransportError as err:
            dest.unlink(missing_ok=True)
            raise _transport_error(err, self.base_url) from err
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        actual = digest.hexdigest()
        if expected != actual:
            dest.unlink(missing_ok=True)
            raise DigestMismatchError(f"artifact {name}/{version}/{file_name}: sha256 {actual} is not the hub's "
                                      f"{expected or '(none)'}")
        return actual

    # federated learning jobs
    def create_learn_job(self, body: LearnJobIn) -> LearnJob:
        return _parse(LearnJob, self.request("POST", "/v1/learn/jobs", json=body.model_dump(mode="json")), "learn job")

    def learn_jobs(self) -> list[LearnJob]:
        return _parse_list(LearnJob, self.request("GET", "/v1/learn/jobs"), "learn jobs")

    def learn_job(self, job: str) -> LearnJob:
        return _parse(LearnJob, self.request("GET", f"/v1/learn/jobs/{_seg(job)}"), "learn job")

    # model versions: validation reports, benchmarks, recommendation
    def set_validation(self, name: str, version: str, report: ModelValidation) -> ModelValidation:
        return _parse(ModelValidation, self.request("PUT", f"/v1/components/{_seg(name)}/{_seg(version)}/validation",
                                                    json=report.model_dump(mode="json")), "validation")

    def validation(self, name: str, version: str) -> ModelValidation:
        return _parse(ModelValidation, self.request("GET", f"/v1/components/{_seg(name)}/{_seg(version)}/validation"),
                      "validation")

    def benchmarks(self, device_class: str | None = None) -> list[BenchmarkRecord]:
        params = {"device_class": device_class} if device_class else None
        return _parse_list(BenchmarkRecord, self.request("GET", "/v1/models/benchmarks", params=params), "benchmarks")

    def recommend(self, device: str, *, max_latency_ms: float | None = None, min_metric: float | None = None,
                  components: Iterable[str] = ()) -> Recommendation:
        params: dict[str, Any] = {"device": device, "component": list(components)}
        if max_latency_ms is not None:
            params["max_latency_ms"] = max_latency_ms
        if min_metric is not None:
            params["min_metric"] = min_metric
        return _parse(Recommendation, self.request("GET", "/v1/models/recommend", params=params), "recommendation")

    # deployments
    def create_deployment(self, body: Mapping[str, Any]) -> Deployment:
        return _parse(Deployment, self.request("POST", "/v1/deployments", json=dict(body)), "deployment")

    def deployment(self, deployment_id: str) -> Deployment:
        return _parse(Deployment, self.request("GET", f"/v1/deployments/{_seg(deployment_id)}"), "deployment")

    def deployments(self) -> list[Deployment]:
        return _parse_list(Deployment, self.request("GET", "/v1/deployments"), "deployments")

    def cancel_deployment(self, deployment_id: str) -> Deployment:
        return _parse(Deployment, self.request("POST", f"/v1/deployments/{_seg(deployment_id)}/cancel"),
                      "deployment")

    # secrets (values go in, never come out)
    # -- the edge cluster ----------------------------------------------------------------------------
    def cluster_nodes(self) -> list[ClusterNode]:
        return [_parse(ClusterNode, item, "cluster node") for item in self.request("GET", "/v1/cluster/nodes")]

    def service_types(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/cluster/service-types"))

    def apply_service_type(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Create or replace a service type (its camelCase wire form)."""
        name = str(spec.get("name", ""))
        return dict(self.request("PUT", f"/v1/cluster/service-types/{_seg(name)}", json=dict(spec)))

    def cluster_sessions(self, *, active: bool = False) -> list[ClusterSession]:
        return [_parse(ClusterSession, item, "cluster session")
                for item in self.request("GET", "/v1/cluster/sessions", params={"active": str(active).lower()})]

    def cluster_replicas(self) -> list[ClusterReplica]:
        return [_parse(ClusterReplica, item, "cluster replica") for item in self.request("GET", "/v1/cluster/replicas")]

    def put_secret(self, name: str, value: bytes, *, binary: bool) -> Secret:
        body = ({"secret_binary": base64.b64encode(value).decode()} if binary
                else {"secret_string": value.decode("utf-8")})
        return _parse(Secret, self.request("PUT", f"/v1/secrets/{_path(name)}", json=body), "secret")

    def secrets(self) -> list[Secret]:
        return _parse_list(Secret, self.request("GET", "/v1/secrets"), "secrets")

    def delete_secret(self, name: str) -> Secret:
        return _parse(Secret, self.request("DELETE", f"/v1/secrets/{_path(name)}"), "secret")

    # edge-cluster sessions (roost stream)
    def create_cluster_session(self, type: str, client_id: str, wait_seconds: float = 30.0,
                               tier: Tier | None = None) -> ClusterSession:
        """``POST /v1/cluster/sessions``: admit a session of service type ``type`` (edge, else centre;
        ``tier`` admits into that tier only, as joint inference asks for the centre).

        The answer carries the endpoint to stream to and the session token (shown only here). The
        read timeout covers the hub's wait for a new replica to become ready."""
        from roost.hub.contract.cluster import ClusterSession, SessionCreate

        body = SessionCreate(type=type, client_id=client_id, wait_seconds=wait_seconds, tier=tier)
        timeout = httpx.Timeout(max(DEFAULT_TIMEOUT, wait_seconds + LONG_POLL_GRACE), connect=CONNECT_TIMEOUT)
        return _parse(ClusterSession, self.request("POST", "/v1/cluster/sessions",
                                                   json=body.model_dump(mode="json", exclude_none=True),
                                                   timeout=timeout), "cluster session")

    def end_cluster_session(self, session_id: str, reason: str | None = None) -> ClusterSession:
        """``DELETE /v1/cluster/sessions/{id}``: end a session (its replica may then be stopped); ``reason``
        is recorded beside "ended by the client" (a lost session says why)."""
        from roost.hub.contract.cluster import ClusterSession

        params = {"reason": reason[:500]} if reason else None
        return _parse(ClusterSession, self.request("DELETE", f"/v1/cluster/sessions/{_seg(session_id)}",
                                                   params=params), "cluster session")

    # devices registered over SSH (roost.provision); bodies are roost.hub.contract.provision's
    def ssh_key(self) -> Any:
        from roost.hub.contract.provision import SshKey

        return _parse(SshKey, self.request("GET", "/v1/ssh-key"), "ssh key")

    def inventory(self) -> dict[str, Any]:
        """``GET /v1/inventory``: Ansible's JSON inventory of the fleet (roost.provision.inventory)."""
        body = self.request("GET", "/v1/inventory")
        if not isinstance(body, dict) or "_meta" not in body:
            raise HubProtocolError("the hub's inventory is not an Ansible JSON inventory")
        return body

    def register_ssh(self, body: Mapping[str, Any]) -> Any:
        from roost.hub.contract.provision import Registration

        return _parse(Registration, self.request("POST", "/v1/devices/ssh", json=dict(body)), "registration")

    def registration(self, registration_id: str) -> Any:
        from roost.hub.contract.provision import Registration

        return _parse(Registration, self.request("GET", f"/v1/devices/ssh/{_seg(registration_id)}"), "registration")

    def provision_again(self, name: str, kind: str, body: Mapping[str, Any]) -> Any:
        """``kind`` is ``upgrade`` or ``uninstall``."""
        from roost.hub.contract.provision import Registration

        return _parse(Registration, self.request("POST", f"/v1/devices/{_seg(name)}/{_seg(kind)}", json=dict(body)),
                      "registration")

    def pin_host_key(self, host: str, port: int, key: str) -> Any:
        from roost.hub.contract.provision import PinnedHostKey

        return _parse(PinnedHostKey, self.request("PUT", f"/v1/ssh-host-keys/{_seg(host)}/{port}",
                                                  json={"host_key": key}), "host key")

    def host_keys(self) -> list[Any]:
        from roost.hub.contract.provision import PinnedHostKey

        return _parse_list(PinnedHostKey, self.request("GET", "/v1/ssh-host-keys"), "host keys")


def _seg(value: str) -> str:
    """One URL path segment, percent-encoded."""
    from urllib.parse import quote

    return quote(value, safe="")


def _path(value: str) -> str:
    """A value that may hold ``/`` (a secret name) as the tail of a URL path, percent-encoded otherwise."""
    from urllib.parse import quote

    return quote(value, safe="/:")


def _recipe_type(path: Path) -> str:
    return "application/json" if path.suffix.lower() == ".json" else "application/yaml"

__all__ = [
    "SHA256_HEADER", "Artifact", "AuthenticationError", "Component", "Deployment", "DeploymentDevice", "Desired",
    "DesiredComponent", "Device", "DigestMismatchError", "EnrollToken", "Enrollment",
    "ForbiddenError", "GoneError", "Group", "HubClient", "HubConflictError", "HubError", "HubInvalidInputError",
    "HubNotFoundError", "HubProtocolError", "HubServerError", "HubTimeoutError", "HubUnreachableError",
    "ReportedComponent", "enroll", "error_from_response", "normalize_url",
]
