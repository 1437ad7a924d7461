"""The agent's side of the sync protocol: the hub client a device uses, with its device credential.

Desired state by long poll, reports, artifacts (digest-checked), secrets, the node report, metrics
snapshots and benchmark records. The operator's client and the helpers both share are
:mod:`roost.hub.client`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import httpx

from roost.hub.client import (
    CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    LONG_POLL_GRACE,
    DigestMismatchError,
    HubProtocolError,
    _headers,
    _parse,
    _parse_list,
    _seg,
    _transport_error,
    error_from_response,
    normalize_url,
)
from roost.hub.contract import (
    SHA256_HEADER,
    BenchmarkIn,
    BenchmarkRecord,
    Desired,
)
from roost.hub.contract.cluster import ClusterNode, NodeReport
from roost.hub.contract.metrics import MetricsSnapshot
from roost.hub.contract.secrets import DeviceSecrets

__all__ = ["DeviceClient"]

class DeviceClient:
    """The agent's side of the sync protocol, with the device credential."""

    def __init__(self, hub: str, credential: str, *, timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = normalize_url(hub)
        self.timeout = timeout
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=_headers(credential),
                                         timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
                                         transport=transport)

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TransportError as err:
            # A request cancelled as its timeout fires can come out of httpcore's (anyio's) timeout scope as
            # a timeout: the caller was cancelled, so that is what it gets, never a HubError it retries on
            # (the agent's poll loop did, and outlived `agent stop`).
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError(f"{method} {path} cancelled") from err
            raise _transport_error(err, self.base_url) from err
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    async def desired(self, after: int, wait: float) -> Desired | None:
        """Long poll: the desired state once its revision is above ``after``; ``None`` on 204."""
        timeout = httpx.Timeout(wait + LONG_POLL_GRACE, connect=CONNECT_TIMEOUT)
        response = await self._call("GET", "/v1/device/desired", params={"after": after, "wait": int(wait)},
                                    timeout=timeout)
        if response.status_code == 204 or not response.content:
            return None
        try:
            data = response.json()
        except ValueError as err:
            raise HubProtocolError("the hub's desired state is not JSON") from err
        return _parse(Desired, data, "desired state")

    async def send_reports(self, reports: list[dict[str, Any]]) -> Any:
        response = await self._call("POST", "/v1/device/reports", json={"reports": reports})
        try:
            return response.json() if response.content else None
        except ValueError:
            return None

    async def report_node(self, report: NodeReport) -> ClusterNode:
        """Tell the hub this device's capacity, labels, tier and replica address (``PUT /v1/device/node``)."""
        response = await self._call("PUT", "/v1/device/node", json=report.model_dump(mode="json"))
        try:
            data = response.json()
        except ValueError as err:
            raise HubProtocolError("the hub's node answer is not JSON") from err
        return _parse(ClusterNode, data, "cluster node")

    async def send_benchmarks(self, body: BenchmarkIn) -> list[BenchmarkRecord]:
        """What the benchmark component measured on this device (``POST /v1/device/benchmarks``)."""
        response = await self._call("POST", "/v1/device/benchmarks", json=body.model_dump(mode="json"))
        try:
            data = response.json()
        except ValueError as err:
            raise HubProtocolError("the hub's benchmark answer is not JSON") from err
        return _parse_list(BenchmarkRecord, data, "benchmarks")

    async def send_metrics(self, snapshot: MetricsSnapshot) -> None:
        """This device's metrics snapshot (``PUT /v1/device/metrics``; roost.observe.snapshot)."""
        await self._call("PUT", "/v1/device/metrics", content=snapshot.model_dump_json(exclude_none=True),
                         headers={"Content-Type": "application/json"})

    async def secrets(self) -> DeviceSecrets:
        """The secrets this device's deployments name, with their values (never logged)."""
        response = await self._call("GET", "/v1/device/secrets")
        try:
            data = response.json()
        except ValueError as err:
            raise HubProtocolError("the hub's secrets answer is not JSON") from err
        return _parse(DeviceSecrets, data, "secrets")

    async def download_artifact(self, name: str, version: str, file_name: str, dest: Path) -> str:
        """Stream one artifact to ``dest``; return its SHA-256 (hex).

        ``file_name`` is the file's relative path in the version's folder (``lib/greet.py``); each
        segment is percent-encoded. Raises :class:`DigestMismatchError` when the bytes do not match
        the hub's ``X-Roost-Sha256`` header (``dest`` is removed then).
        """
        path = f"/v1/artifacts/{_seg(name)}/{_seg(version)}/{'/'.join(_seg(p) for p in file_name.split('/'))}"
        digest = hashlib.sha256()
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            async with self._client.stream("GET", path) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(response)
                expected = response.headers.get(SHA256_HEADER, "").strip().lower()
                with tmp.open("wb") as out:
                    async for chunk in response.aiter_bytes(256 * 1024):
                        digest.update(chunk)
                        await asyncio.to_thread(out.write, chunk)
        except httpx.TransportError as err:
            tmp.unlink(missing_ok=True)
            raise _transport_error(err, self.base_url) from err
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        actual = digest.hexdigest()
        if expected and expected != actual:
            tmp.unlink(missing_ok=True)
            raise DigestMismatchError(f"{name}-{version}: artifact {file_name} downloaded from the hub has SHA-256 "
                                      f"{actual}, but the hub's {SHA256_HEADER} header says {expected}: the file "
                                      "was altered or corrupted")
        os.replace(tmp, dest)
        return actual
