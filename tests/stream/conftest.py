"""The streaming tests' fixtures: the wine model (trained once per session by the sample trainer), a
hub signing key in a temp file, replicas running in this process on real sockets, and small HTTP and
websocket helpers."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from roost.cluster.replica import Replica, ReplicaOptions
from roost.cluster.tokens import TokenSigner
from roost.serve.image import SAMPLE_MODEL_DIR
from roost.serve.wine import train_wine

REPLICA_ID = "replica-1"


@pytest.fixture(scope="session")
def wine_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_wine(tmp_path_factory.mktemp("stream-wine") / "wine-quality.json")


@pytest.fixture(scope="session")
def signer(tmp_path_factory: pytest.TempPathFactory) -> TokenSigner:
    return TokenSigner.from_file(tmp_path_factory.mktemp("stream-key") / "cluster-signing.key")


@pytest.fixture
def tabular_options(wine_model: Path, signer: TokenSigner, tmp_path: Path) -> ReplicaOptions:
    return ReplicaOptions(kind="tabular", model=wine_model, replica_id=REPLICA_ID, public_key=signer.public_key(),
                          sessions=2, window=40, idle_timeout=30.0, engine="xgboost", cache_dir=tmp_path / "cache")


@pytest.fixture
def image_options(signer: TokenSigner) -> ReplicaOptions:
    return ReplicaOptions(kind="image", model=SAMPLE_MODEL_DIR, replica_id=REPLICA_ID, public_key=signer.public_key(),
                          sessions=2, window=1, idle_timeout=30.0, threads=1)


@asynccontextmanager
async def running(options: ReplicaOptions, **changes: Any) -> AsyncIterator[Replica]:
    """A replica on 127.0.0.1:0, ready, closed at the end."""
    replica = Replica(replace(options, **changes))
    await replica.start()
    try:
        await replica.ready()
        yield replica
    finally:
        await replica.close()


@pytest.fixture
async def tabular(tabular_options: ReplicaOptions) -> AsyncIterator[Replica]:
    async with running(tabular_options) as replica:
        yield replica


def stream_url(replica: Replica, path: str = "/v1/stream") -> str:
    return f"ws://127.0.0.1:{replica.port}{path}"


def _get(url: str, token: str | None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            return response.status, json.loads(body) if body else None
    except urllib.error.HTTPError as err:
        body = err.read()
        return err.code, json.loads(body) if body else None


async def http_get(replica: Replica, path: str, token: str | None = None) -> tuple[int, Any]:
    """``GET path`` on the replica's port: (status, decoded JSON body or None)."""
    return await asyncio.to_thread(_get, f"http://127.0.0.1:{replica.port}{path}", token)


async def status_when(replica: Replica, signer: TokenSigner, ready: Any, timeout: float = 10.0) -> dict[str, Any]:
    """The replica's ``/status`` once ``ready(status)`` holds (sessions end a moment after their socket
    closes), polled for at most ``timeout`` seconds."""
    token = signer.sign("status", "-", REPLICA_ID, 60)
    async with asyncio.timeout(timeout):
        while True:
            _, status = await http_get(replica, "/status", token)
            if ready(status):
                return dict(status)
            await asyncio.sleep(0.02)


def session_token(signer: TokenSigner, session: str = "s-1", replica: str = REPLICA_ID, ttl: float = 60.0) -> str:
    return signer.sign("session", session, replica, ttl)
