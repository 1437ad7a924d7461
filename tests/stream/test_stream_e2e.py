"""End to end: `roost cluster replica` as a real process, started with the Run line of the
com.roost.ClusterScalar recipe (as a deployment's configuration MERGE sets it), and `roost stream` as
a real process against it: the JSON summary, the plot, the original protocol, and SIGTERM on the
replica mid-stream (the client exits non-zero with SESSION_LOST)."""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from roost.agent.configuration import apply_update
from roost.cluster.tokens import TokenSigner
from roost.recipe import InterpolationContext, interpolate, load_recipe
from roost.recipe.platform import current_platform
from roost.samples.cluster import cluster_sample
from roost.serve.wine import DATA_CSV
from tests.stream.conftest import REPLICA_ID

ROOST = [sys.executable, "-m", "roost"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


@pytest.fixture
def replica_process(tmp_path: Path, wine_model: Path, signer: TokenSigner) -> Iterator[tuple[subprocess.Popen[str],
                                                                                                int]]:
    """`roost cluster replica` from the recipe's Run line, ready (its /healthz says 200)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "wine-quality.json").write_bytes(wine_model.read_bytes())  # what Install would have trained
    recipe_path, folder = cluster_sample("scalar", tmp_path / "artifacts")
    recipe = load_recipe(recipe_path)
    port = _free_port()
    merge = {"MERGE": {"port": port, "host": "127.0.0.1", "replicaId": REPLICA_ID, "publicKey": signer.public_key(),
                       "sessionsPerReplica": 2, "window": 40, "idleTimeoutSeconds": 60, "engine": "xgboost"}}
    configuration = apply_update(recipe.default_configuration, recipe.default_configuration, merge, recipe.name)
    run = recipe.select(current_platform()).lifecycle.run
    assert run is not None
    ctx = InterpolationContext(component=recipe.name, configuration=configuration, artifacts_path=str(folder),
                               decompressed_path=str(folder), work_path=str(work), kernel_root=str(tmp_path),
                               thing_name="node-1")
    argv = shlex.split(interpolate(run.script, ctx))
    assert argv[:3] == ["roost", "cluster", "replica"]
    log = (tmp_path / "replica.log").open("w")
    proc = subprocess.Popen([*ROOST, *argv[1:]], stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "replica.log").read_text()
            try:
                if _get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "the replica did not become ready"
            time.sleep(0.1)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)
        log.close()


def test_roost_stream_json_summary_and_plot(replica_process: tuple[subprocess.Popen[str], int],
                                            signer: TokenSigner, tmp_path: Path) -> None:
    _, port = replica_process
    plot = tmp_path / "x.png"
    out = subprocess.run([*ROOST, "stream", "--endpoint", f"ws://127.0.0.1:{port}/v1/stream", "--session-token",
                          signer.sign("session", "e2e-1", REPLICA_ID, 120), "--type", "scalar", "--data",
                          str(DATA_CSV), "--window", "40", "--duration", "2", "--json", "--plot", str(plot)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    [line] = out.stdout.strip().splitlines()  # exactly one JSON object
    doc = json.loads(line)
    assert list(doc) == ["type", "endpoint", "offloaded", "windows", "e2e_ms", "server_ms", "bytes_per_window",
                         "errors"]
    assert (doc["type"], doc["offloaded"], doc["errors"]) == ("scalar", False, [])
    assert doc["windows"] > 0
    assert set(doc["e2e_ms"]) == set(doc["server_ms"]) == {"mean", "p50", "p99"}
    assert doc["e2e_ms"]["p50"] >= doc["server_ms"]["p50"] > 0
    assert doc["bytes_per_window"]["sent"] == 40 * 13 * 4 + 12 + 8  # the binary window on the socket
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    legacy = subprocess.run([*ROOST, "stream", "--endpoint", f"ws://127.0.0.1:{port}/v1/stream", "--claim-token",
                             signer.sign("claim", "e2e-legacy", REPLICA_ID, 120), "--format", "legacy", "--data",
                             str(DATA_CSV), "--windows", "3", "--json"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert legacy.returncode == 0, legacy.stdout + legacy.stderr
    old = json.loads(legacy.stdout)
    assert old["windows"] == 3 and old["bytes_per_window"]["sent"] > 5 * doc["bytes_per_window"]["sent"]


def test_sigterm_on_the_replica_mid_stream_is_session_lost(replica_process: tuple[subprocess.Popen[str], int],
                                                           signer: TokenSigner) -> None:
    replica, port = replica_process
    client = subprocess.Popen([*ROOST, "stream", "--endpoint", f"ws://127.0.0.1:{port}/v1/stream",
                               "--session-token", signer.sign("session", "e2e-2", REPLICA_ID, 120), "--data",
                               str(DATA_CSV), "--duration", "60", "--interval", "0.01", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status_token = signer.sign("status", "-", REPLICA_ID, 120)
        deadline = time.monotonic() + 60
        while True:
            _, status = _get(f"http://127.0.0.1:{port}/status", status_token)
            if any(s["id"] == "e2e-2" and s["windows"] >= 3 for s in status["sessions"]):
                break
            assert client.poll() is None, client.communicate()
            assert time.monotonic() < deadline, "the client never streamed"
            time.sleep(0.1)
        replica.send_signal(signal.SIGTERM)
        assert replica.wait(timeout=20) == 0
        stdout, stderr = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 1, stdout + stderr
    doc = json.loads(stdout)
    assert doc["windows"] >= 2
    assert doc["errors"][-1]["code"] == "SESSION_LOST" and "1001" in doc["errors"][-1]["message"]
