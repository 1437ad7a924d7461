"""Real `roost cluster replica` processes for the joint and parallel inference tests, and the session
tokens to reach them (signed as the hub signs them)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from roost.cluster.replica_session import ReplicaTarget
from roost.cluster.tokens import TokenSigner


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ReplicaProcess:
    """``python -m roost cluster replica`` on 127.0.0.1, started by :meth:`start` (ready on /healthz)."""

    def __init__(self, model: Path, replica_id: str, signer: TokenSigner, log_dir: Path, *, sessions: int = 4,
                 window: int = 40) -> None:
        self.model, self.replica_id, self.signer = model, replica_id, signer
        self.log_path = log_dir / f"{replica_id}.log"
        self.sessions, self.window = sessions, window
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._sessions = 0

    @property
    def endpoint(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    def start(self, timeout: float = 60.0) -> ReplicaProcess:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "roost", "cluster", "replica", "--kind", "tabular", "--model", str(self.model),
                 "--replica-id", self.replica_id, "--public-key", self.signer.public_key(), "--host", "127.0.0.1",
                 "--port", str(self.port), "--sessions", str(self.sessions), "--window", str(self.window),
                 "--engine", "xgboost", "--idle-timeout", "60", "--cache-dir", str(self.log_path.parent / "cache")],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as response:
                    if json.loads(response.read())["ready"]:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            assert time.monotonic() < deadline, f"replica {self.replica_id} did not become ready"
            time.sleep(0.05)

    def target(self) -> ReplicaTarget:
        """A new session on this replica (a token connects once)."""
        self._sessions += 1
        session = f"{self.replica_id}-s{self._sessions}"
        return ReplicaTarget(self.endpoint, self.signer.sign("session", session, self.replica_id, 300),
                             name=self.replica_id)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
