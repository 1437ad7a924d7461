"""The replica: one model served to streaming sessions over a websocket, plus its HTTP endpoints.

A replica is a component (``com.roost.ClusterScalar`` / ``com.roost.ClusterImage``) the hub deploys
onto an edge node; ``roost cluster replica`` runs it. One port serves both (websockets'
``process_request`` answers plain HTTP GETs before any upgrade):

- ``GET /healthz`` — 200 ``{"ready": true, "replica", "kind", "features", "sessions", "capacity"}``
  once the model is loaded and answered a self-test prediction; 503 ``{"ready": false, ...}`` before
  (with ``error`` when loading failed);
- ``GET /status`` (bearer token of audience ``status``) — the sessions, and the last 100 that ended;
- ``GET /claim`` (bearer token of audience ``claim``) — 204: one client of the original protocol may
  connect for the token's session within :attr:`ReplicaOptions.claim_ttl` seconds;
- ``/v1/stream`` — the Roost protocol (a session token); any other path — the original protocol,
  accepted only against an unexpired claim (one connection per claim).

Refusals come before the upgrade, as JSON ``{"error": {"code", "message"}}``: 401
``SESSION_TOKEN_INVALID`` / ``CLAIM_REQUIRED``, 409 ``SESSION_ALREADY_CONNECTED``, 503
``REPLICA_NOT_READY`` / ``REPLICA_FULL``. The protocol itself is :mod:`roost.cluster.protocol`.

The event loop owns the sockets; decoding, model calls and image decoding run in a thread pool of
one thread per session slot. Everything is bounded: sessions (``--sessions``), message size
(``maxFrameBytes``; larger closes with 1009), rows per window, pending claims, the ended list, and
websockets' receive queue (16 messages; a client that sends faster than the model answers is
slowed by TCP flow control, not buffered). A session without a window for ``idle_timeout`` seconds
is closed with 4000 ``idle timeout``; stopping (SIGTERM) closes every session with 1001.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import signal
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from roost.cluster.errors import (
    ReplicaConfigError,
    ReplicaFullError,
    ReplicaNotReadyError,
    SessionConflictError,
    SessionTokenError,
    StreamMessageError,
)
from roost.cluster.protocol import (
    CLOSE_IDLE,
    CLOSE_IDLE_REASON,
    DEFAULT_MAX_FRAME_BYTES,
    LEGACY_READY,
    MAX_ROWS_LIMIT,
    STREAM_PATH,
    ErrorReply,
    Hello,
    ImageLabel,
    ImageResult,
    Kind,
    TabularResult,
    decode_image_frame,
    decode_legacy_image,
    decode_legacy_row,
    decode_window,
    format_legacy_result,
)
from roost.cluster.served_model import ImageModel, ServedModel, TabularModel
from roost.cluster.tokens import Audience, TokenClaims, TokenVerifier
from roost.cluster.wire_bytes import CountingServerConnection
from roost.errors import RoostError
from roost.serve.errors import ModelError

__all__ = ["ENDED_KEPT", "Replica", "ReplicaOptions", "run_replica"]

log = logging.getLogger(__name__)

#: How many ended sessions ``/status`` lists (the most recent).
ENDED_KEPT: Final = 100
#: How many ended session ids a replica remembers, refusing their tokens (SESSION_ENDED).
ENDED_IDS_KEPT: Final = 4096
#: The longest request target (path and query) looked at.
_MAX_TARGET = 4096


@dataclass(frozen=True)
class ReplicaOptions:
    """What ``roost cluster replica`` takes (see ``--help``)."""

    kind: Kind
    model: Path
    replica_id: str
    public_key: str
    host: str = "127.0.0.1"
    port: int = 0
    sessions: int = 1
    window: int = 40
    #: Most rows one window may hold (default: ``window``).
    max_rows: int | None = None
    idle_timeout: float = 300.0
    engine: str = "auto"
    top_k: int = 5
    cache_dir: Path = Path(".roost-serve-cache")
    #: Largest message accepted (default per kind: :data:`~roost.cluster.protocol.DEFAULT_MAX_FRAME_BYTES`).
    max_frame_bytes: int | None = None
    #: Seconds a claim (``GET /claim``) waits for its original-protocol client.
    claim_ttl: float = 60.0
    max_claims: int = 64
    threads: int | None = None

    @property
    def rows_limit(self) -> int:
        return self.max_rows if self.max_rows is not None else self.window

    @property
    def frame_limit(self) -> int:
        return self.max_frame_bytes if self.max_frame_bytes is not None else DEFAULT_MAX_FRAME_BYTES[self.kind]

    def check(self) -> None:
        """:class:`ReplicaConfigError` naming the first unusable setting."""
        if self.kind not in ("tabular", "image"):
            raise ReplicaConfigError(f"--kind {self.kind!r}: choose tabular or image")
        problems = [
            (not self.replica_id or self.replica_id == "unassigned" or len(self.replica_id) > 128,
             f"--replica-id {self.replica_id!r}: the hub assigns each replica an id (replicaId in the "
             "component's configuration); 1 to 128 characters"),
            (not self.public_key or self.public_key == "unassigned",
             "--public-key: the hub's public key is needed to verify session tokens (publicKey in the "
             "component's configuration)"),
            (not 1 <= self.sessions <= 1000, f"--sessions {self.sessions}: 1 to 1000"),
            (not 1 <= self.window <= MAX_ROWS_LIMIT, f"--window {self.window}: 1 to {MAX_ROWS_LIMIT}"),
            (not 1 <= self.rows_limit <= MAX_ROWS_LIMIT, f"--max-rows {self.rows_limit}: 1 to {MAX_ROWS_LIMIT}"),
            (not 0 < self.idle_timeout <= 86400, f"--idle-timeout {self.idle_timeout}: above 0, at most 86400 s"),
            (not 1 <= self.top_k <= 1000, f"--top-k {self.top_k}: 1 to 1000"),
            (not 1024 <= self.frame_limit <= 256 * 1024 * 1024,
             f"--max-frame-bytes {self.frame_limit}: 1 KiB to 256 MiB"),
            (not 0 <= self.port <= 65535, f"--port {self.port}: 0 to 65535"),
            (not 0 < self.claim_ttl <= 3600, f"claim ttl {self.claim_ttl}: above 0, at most 3600 s"),
            (not 1 <= self.max_claims <= 10_000, f"max claims {self.max_claims}: 1 to 10000"),
        ]
        for bad, message in problems:
            if bad:
                raise ReplicaConfigError(message)
        if self.kind == "image" and not (self.model / "model.onnx").is_file():
            raise ReplicaConfigError(f"--model {self.model}: an image replica's model is a folder holding "
                                     "model.onnx and labels.json (as `roost serve --image-model`)")
        if self.kind == "tabular" and not self.model.is_file():
            raise ReplicaConfigError(f"--model {self.model}: no such model file (XGBoost JSON/UBJ)")


@dataclass
class _Session:
    id: str
    legacy: bool
    connection: _Connection
    connected_at: float = field(default_factory=time.time)
    last_activity: float = field(default_factory=time.time)
    windows: int = 0
    errors: int = 0
    started: bool = False

    def to_wire(self) -> dict[str, Any]:
        counter = self.connection.counter
        return {"id": self.id, "legacy": self.legacy, "connected_at": _iso(self.connected_at),
                "last_activity": _iso(self.last_activity), "windows": self.windows, "errors": self.errors,
                "bytes_in": counter.received, "bytes_out": counter.sent}


class _Connection(CountingServerConnection):
    """A connection that knows its session, and tells the replica when its socket is gone (also when
    it is lost during the upgrade, before any handler ran)."""

    session: _Session | None = None
    on_lost: Callable[[_Connection], None] | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.on_lost is not None:
            self.on_lost(self)


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _json_response(connection: ServerConnection, status: int, body: dict[str, Any] | None) -> Response:
    response = connection.respond(http.HTTPStatus(status), "" if body is None else json.dumps(body) + "\n")
    if body is not None:
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
    response.headers["Cache-Control"] = "no-store"
    return response


def _refusal(connection: ServerConnection, status: int, err: RoostError) -> Response:
    return _json_response(connection, status, {"error": err.to_dict()})


def _bearer(request: Request, query: dict[str, list[str]]) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if header and scheme.lower() == "bearer" and value.strip():
        return value.strip()
    tokens = query.get("token")
    return tokens[0] if tokens else ""


class Replica:
    """A running replica. ``await start()``, then ``await ready()``; ``await close()`` to stop."""

    def __init__(self, options: ReplicaOptions) -> None:
        options.check()
        self.options = options
        try:
            self._verifier = TokenVerifier(options.public_key)
        except SessionTokenError as err:
            raise ReplicaConfigError(f"--public-key: {err.message}") from err
        self._executor = ThreadPoolExecutor(max_workers=min(options.sessions, 8), thread_name_prefix="replica")
        self._model: ServedModel | None = None
        self._load_error: str | None = None
        self._loaded: asyncio.Future[None] | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._server: Server | None = None
        self._sessions: dict[str, _Session] = {}
        self._claims: OrderedDict[str, float] = OrderedDict()
        self._ended: deque[dict[str, Any]] = deque(maxlen=ENDED_KEPT)
        #: Ids of sessions that ended here (bounded): their tokens do not connect again, since the hub
        #: ends a session whose client went away and may give its slot to another client.
        self._ended_ids: OrderedDict[str, None] = OrderedDict()
        self._stopping = False

    # -- life ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen, and load the model in the background (``/healthz`` says 503 until it is ready)."""
        replica = self

        class Connection(_Connection):
            on_lost = staticmethod(replica._lost)

        loop = asyncio.get_running_loop()
        self._loaded = loop.create_future()
        self._server = await serve(self._handle, self.options.host, self.options.port,
                                   process_request=self._process_request, create_connection=Connection,
                                   max_size=self.options.frame_limit, max_queue=16, compression=None,
                                   ping_interval=20, ping_timeout=20, close_timeout=5, server_header=None)
        log.info("replica %s (%s) listening on %s:%d", self.options.replica_id, self.options.kind,
                 self.options.host, self.port)
        self._load_task = asyncio.create_task(self._load())

    async def _load(self) -> None:
        assert self._loaded is not None
        loop = asyncio.get_running_loop()
        try:
            model = await loop.run_in_executor(self._executor, self._build_model)
            await loop.run_in_executor(self._executor, model.self_test, self.options.window)
        except (RoostError, OSError) as err:
            self._load_error = str(err)
            log.error("replica %s: the model cannot be served: %s", self.options.replica_id, err)
            if not self._loaded.done():
                self._loaded.set_exception(err if isinstance(err, RoostError) else
                                           ModelError(f"cannot load {self.options.model}: {err}"))
            return
        self._model = model
        log.info("replica %s ready: %s", self.options.replica_id, model.description)
        if not self._loaded.done():
            self._loaded.set_result(None)

    def _build_model(self) -> ServedModel:
        if self.options.kind == "image":
            return ImageModel(self.options.model, top_k=self.options.top_k, threads=self.options.threads)
        return TabularModel(self.options.model, engine=self.options.engine, cache_dir=self.options.cache_dir)

    async def ready(self) -> None:
        """Wait until the model answered its self-test; raises the load's error if it failed."""
        assert self._loaded is not None, "start() first"
        await asyncio.shield(self._loaded)

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def is_ready(self) -> bool:
        return self._model is not None

    async def close(self) -> None:
        """Stop listening and close every session with 1001 (going away)."""
        self._stopping = True
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- HTTP, before any upgrade ----------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        assert isinstance(connection, _Connection)
        if len(request.path) > _MAX_TARGET:
            return _json_response(connection, 414, {"error": {"code": "INVALID_REQUEST",
                                                              "message": "the request target is too long"}})
        target = urlsplit(request.path)
        query = parse_qs(target.query, max_num_fields=8)
        if target.path == "/healthz":
            return _json_response(connection, 200 if self.is_ready else 503, self.health())
        if target.path == "/status":
            claims = self._authorise(connection, request, query, "status")
            return claims if isinstance(claims, Response) else _json_response(connection, 200, self.status())
        if target.path == "/claim":
            claims = self._authorise(connection, request, query, "claim")
            return claims if isinstance(claims, Response) else self._claim(connection, claims)
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            # Not an upgrade (a stray GET): refused before it could reserve a slot or use up a claim.
            return _json_response(connection, 426, {"error": {"code": "INVALID_REQUEST", "message": (
                f"{target.path} is a websocket endpoint (GET with Upgrade: websocket); plain HTTP serves "
                "/healthz, /status and /claim")}})
        if target.path == STREAM_PATH:
            claims = self._authorise(connection, request, query, "session")
            if isinstance(claims, Response):
                return claims
            return self._admit(connection, claims.session, legacy=False)
        return self._admit_legacy(connection)

    def _authorise(self, connection: ServerConnection, request: Request, query: dict[str, list[str]],
                   audience: Audience) -> TokenClaims | Response:
        try:
            return self._verifier.verify(_bearer(request, query), audience, self.options.replica_id)
        except SessionTokenError as err:
            log.info("replica %s refused a %s request: %s", self.options.replica_id, audience, err.message)
            return _refusal(connection, 401, err)

    def _refuse_admission(self, connection: ServerConnection, session: str) -> Response | None:
        if not self.is_ready:
            why = f": {self._load_error}" if self._load_error else "; retry"
            return _refusal(connection, 503, ReplicaNotReadyError(f"the replica's model is not ready{why}"))
        if session in self._sessions:
            return _refusal(connection, 409, SessionConflictError(
                f"session {session} is already connected to this replica; one connection per session"))
        if session in self._ended_ids:
            return _refusal(connection, 401, SessionTokenError(
                f"session {session} already ended on this replica; ask the hub for a new session",
                code="SESSION_ENDED"))
        if len(self._sessions) >= self.options.sessions:
            return _refusal(connection, 503, ReplicaFullError(
                f"the replica serves {len(self._sessions)} of {self.options.sessions} sessions; ask the hub "
                "for another replica"))
        return None

    def _admit(self, connection: _Connection, session: str, *, legacy: bool) -> Response | None:
        refused = self._refuse_admission(connection, session)
        if refused is not None:
            return refused
        record = _Session(session, legacy, connection)
        self._sessions[session] = record
        connection.session = record
        return None  # go on with the upgrade

    def _live_claims(self) -> OrderedDict[str, float]:
        now = time.monotonic()
        for sid in [sid for sid, expires in self._claims.items() if expires <= now]:
            del self._claims[sid]
        return self._claims

    def _claim(self, connection: ServerConnection, claims: TokenClaims) -> Response:
        pending = self._live_claims()
        if claims.session in self._sessions:
            return _refusal(connection, 409, SessionConflictError(
                f"session {claims.session} is already connected to this replica"))
        if claims.session not in pending and len(pending) >= self.options.max_claims:
            return _refusal(connection, 503, ReplicaFullError(
                f"the replica holds {len(pending)} pending claims, the most it keeps; retry later"))
        pending.pop(claims.session, None)
        pending[claims.session] = time.monotonic() + self.options.claim_ttl
        log.info("replica %s: claim for session %s (original protocol, %.0f s)", self.options.replica_id,
                 claims.session, self.options.claim_ttl)
        return _json_response(connection, 204, None)

    def _admit_legacy(self, connection: _Connection) -> Response | None:
        pending = self._live_claims()
        session = next((sid for sid in pending if sid not in self._sessions), None)
        if session is None:
            return _refusal(connection, 401, SessionTokenError(
                "no session token (path /v1/stream) and no claim: a client of the original protocol is "
                "accepted only after the hub claimed the replica for it", code="CLAIM_REQUIRED"))
        refused = self._refuse_admission(connection, session)
        if refused is not None:
            return refused
        del pending[session]
        return self._admit(connection, session, legacy=True)

    def health(self) -> dict[str, Any]:
        model = self._model
        body: dict[str, Any] = {"ready": model is not None, "replica": self.options.replica_id,
                                "kind": self.options.kind, "features": model.features if model else [],
                                "sessions": len(self._sessions), "capacity": self.options.sessions}
        if self._load_error:
            body["error"] = self._load_error
        return body

    def status(self) -> dict[str, Any]:
        return {"replica": self.options.replica_id, "kind": self.options.kind, "ready": self.is_ready,
                "capacity": self.options.sessions,
                "sessions": [s.to_wire() for s in self._sessions.values()], "ended": list(self._ended)}

    # -- sessions ----------------------------------------------------------------------------------
    def _lost(self, connection: _Connection) -> None:
        record = connection.session
        if record is not None and not record.started:
            self._end(record, "disconnected during the upgrade")

    def _end(self, record: _Session, reason: str) -> None:
        if self._sessions.get(record.id) is record:
            del self._sessions[record.id]
            self._ended_ids[record.id] = None
            while len(self._ended_ids) > ENDED_IDS_KEPT:
                self._ended_ids.popitem(last=False)
            self._ended.append({"id": record.id, "reason": reason, "at": _iso(time.time()),
                                "windows": record.windows, "legacy": record.legacy})
            log.info("replica %s: session %s ended (%s) after %d windows", self.options.replica_id, record.id,
                     reason, record.windows)

    async def _handle(self, connection: ServerConnection) -> None:
        assert isinstance(connection, _Connection) and connection.session is not None
        record = connection.session
        record.started = True
        reason = "closed by the client"
        try:
            if not record.legacy:
                await connection.send(self._hello(record.id).to_text())
            reason = await self._serve(connection, record)
        except ConnectionClosed as err:
            reason = self._closed_reason(err)
        finally:
            self._end(record, reason)

    def _closed_reason(self, err: ConnectionClosed) -> str:
        if self._stopping:
            return "replica stopped"
        if err.rcvd is None and err.sent is None:
            return "connection lost"
        if err.sent is not None and err.sent.code == 1009:
            return "frame too large"
        return "closed by the client"

    def _hello(self, session: str) -> Hello:
        assert self._model is not None
        return Hello.model_validate({"session": session, "replica": self.options.replica_id,
                                     "kind": self.options.kind, "features": self._model.features,
                                     "window": self.options.window, "maxRows": self.options.rows_limit,
                                     "maxFrameBytes": self.options.frame_limit})

    async def _serve(self, connection: _Connection, record: _Session) -> str:
        loop = asyncio.get_running_loop()
        model = self._model
        assert model is not None
        warm = False
        rows: list[list[float]] = []  # the original protocol's window being collected
        legacy_seq = 0
        while True:
            try:
                async with asyncio.timeout(self.options.idle_timeout):
                    message = await connection.recv()
            except TimeoutError:
                await connection.close(CLOSE_IDLE, CLOSE_IDLE_REASON)
                return CLOSE_IDLE_REASON
            except ConnectionClosed as err:
                return self._closed_reason(err)
            t0 = time.perf_counter()
            record.last_activity = time.time()
            reply: str | None
            try:
                if record.legacy and isinstance(model, TabularModel):
                    rows.append(decode_legacy_row(message, model.features))
                    if len(rows) < self.options.window:
                        continue
                    window, rows = rows, []
                    outcome = await loop.run_in_executor(self._executor, _predict_rows, model, window)
                    seconds = time.perf_counter() - t0
                    reply = LEGACY_READY if not warm else format_legacy_result(outcome.result, seconds,
                                                                               outcome.confidence)
                elif isinstance(model, TabularModel):
                    reply = await loop.run_in_executor(self._executor, _answer_window, model, message,
                                                       self.options.rows_limit, warm, t0)
                else:
                    if record.legacy:
                        image = decode_legacy_image(message, self.options.frame_limit)
                        seq, legacy_seq = legacy_seq, legacy_seq + 1
                    else:
                        seq, image = decode_image_frame(message)
                    reply = await loop.run_in_executor(self._executor, _answer_image, model, seq, image, warm, t0)
            except StreamMessageError as err:
                record.errors += 1
                await connection.send(ErrorReply.of(err).to_text())
                continue
            except ModelError as err:
                record.errors += 1
                log.warning("replica %s: session %s: %s", self.options.replica_id, record.id, err)
                await connection.send(ErrorReply(seq=None, code=err.code, message=err.message).to_text())
                continue
            warm = True
            record.windows += 1
            await connection.send(reply)


def _predict_rows(model: TabularModel, rows: list[list[float]]) -> Any:
    import numpy as np

    return model.predict_window(np.asarray(rows, dtype=np.float32))


def _answer_window(model: TabularModel, message: str | bytes, max_rows: int, warm: bool, t0: float) -> str:
    """Decode, predict and answer one Roost-protocol window (runs in the executor)."""
    window = decode_window(message, model.features, max_rows)
    outcome = model.predict_window(window.matrix)
    return TabularResult(type="result" if warm else "ready", seq=window.seq, result=outcome.result,
                         confidence=outcome.confidence, predictions=outcome.predictions,
                         server_ms=(time.perf_counter() - t0) * 1000.0).to_text()


def _answer_image(model: ImageModel, seq: int, image: bytes, warm: bool, t0: float) -> str:
    labels = model.classify(image, seq)
    return ImageResult(type="result" if warm else "ready", seq=seq,
                       labels=[ImageLabel(label=label, score=score) for label, score in labels],
                       server_ms=(time.perf_counter() - t0) * 1000.0).to_text()


async def run_replica(options: ReplicaOptions, *, on_ready: Callable[[Replica], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT; raises (non-zero exit) when the model cannot be served."""
    replica = Replica(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await replica.start()
    try:
        ready = asyncio.ensure_future(replica.ready())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([ready, stopped], return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            ready.result()  # raises the load error
            if on_ready is not None:
                on_ready(replica)
            await stopped
        else:
            ready.cancel()
        log.info("replica %s stopping", options.replica_id)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await replica.close()
