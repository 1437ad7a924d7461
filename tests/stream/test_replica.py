"""The replica in this process on real sockets (127.0.0.1:0) with the real wine model, driven by the real
stream client or a raw websocket: readiness, windows, the warm-up order, the original protocol with
claims, the sessions cap, idle timeout, one connection per session, errors that keep the session,
tokens, and bytes counted on the socket."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from roost.cluster.errors import (
    ReplicaConfigError,
    ReplicaFullError,
    SessionConflictError,
    SessionTokenError,
)
from roost.cluster.protocol import (
    TABULAR_HEADER,
    TABULAR_MAGIC,
    encode_json_window,
    encode_tabular_window,
)
from roost.cluster.replica import ENDED_KEPT, Replica, ReplicaOptions
from roost.cluster.stream_client import StreamOptions, load_csv, stream
from roost.cluster.tokens import TokenSigner
from roost.cluster.wire_bytes import CountingClientConnection
from roost.serve.wine import DATA_CSV, FEATURES
from tests.stream.conftest import REPLICA_ID, http_get, running, session_token, status_when, stream_url


async def _open(replica: Replica, token: str | None, path: str = "/v1/stream") -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await connect(stream_url(replica, path), additional_headers=headers, compression=None,
                         create_connection=CountingClientConnection)


async def _refused(replica: Replica, token: str | None, path: str = "/v1/stream") -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as info:
        await _open(replica, token, path)
    response = info.value.response
    assert response.headers["Content-Type"] == "application/json"
    return response.status_code, json.loads(response.body or b"{}")["error"]


def _rows(n: int = 40, start: int = 0) -> np.ndarray:
    return load_csv(DATA_CSV, list(FEATURES))[start:start + n]


async def _reply(ws: ClientConnection) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), 10)
    assert isinstance(message, str)
    doc: dict[str, Any] = json.loads(message)
    return doc


def _direct(tabular_options: ReplicaOptions, replica: Replica, **kw: Any) -> StreamOptions:
    return StreamOptions(endpoint=stream_url(replica), data=DATA_CSV, duration=30, **kw)


# -- readiness ----------------------------------------------------------------------------------------


async def test_healthz_is_503_until_the_model_answered_then_200(tabular_options: ReplicaOptions,
                                                                signer: TokenSigner) -> None:
    replica = Replica(tabular_options)
    gate = threading.Event()
    # Hold the replica's model thread so the load waits behind it: "before ready", deterministically.
    replica._executor.submit(gate.wait, 30)
    await replica.start()
    try:
        status, body = await http_get(replica, "/healthz")
        assert (status, body["ready"], body["features"], body["capacity"]) == (503, False, [], 2)
        code, error = await _refused(replica, session_token(signer))
        assert (code, error["code"]) == (503, "REPLICA_NOT_READY")
        gate.set()
        await replica.ready()
        status, body = await http_get(replica, "/healthz")
        assert status == 200
        assert body == {"ready": True, "replica": REPLICA_ID, "kind": "tabular", "features": list(FEATURES),
                        "sessions": 0, "capacity": 2}
    finally:
        gate.set()
        await replica.close()


async def test_a_model_that_cannot_load_is_never_ready(tabular_options: ReplicaOptions, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not a model")
    async with asyncio.timeout(30):
        replica = Replica(ReplicaOptions(**{**tabular_options.__dict__, "model": broken}))
        await replica.start()
        try:
            with pytest.raises(Exception, match="cannot load XGBoost model"):
                await replica.ready()
            status, body = await http_get(replica, "/healthz")
            assert status == 503 and body["ready"] is False and "cannot load XGBoost model" in body["error"]
        finally:
            await replica.close()


@pytest.mark.parametrize(("change", "fragment"), [
    ({"kind": "video"}, "--kind 'video'"),
    ({"replica_id": "unassigned"}, "--replica-id"),
    ({"public_key": "unassigned"}, "--public-key"),
    ({"public_key": "not-a-key"}, "--public-key: the hub public key"),
    ({"sessions": 0}, "--sessions 0"),
    ({"window": 0}, "--window 0"),
    ({"idle_timeout": 0.0}, "--idle-timeout"),
    ({"model": Path("/nonexistent.json")}, "no such model file"),
    ({"kind": "image"}, "model.onnx and labels.json"),
    ({"max_frame_bytes": 10}, "--max-frame-bytes"),
])
def test_bad_settings_are_refused_by_name(tabular_options: ReplicaOptions, change: dict[str, Any],
                                          fragment: str) -> None:
    with pytest.raises(ReplicaConfigError) as info:
        Replica(ReplicaOptions(**{**tabular_options.__dict__, **change}))
    assert info.value.code == "REPLICA_CONFIG_INVALID" and fragment in info.value.message


# -- windows ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["binary", "json"])
async def test_windows_are_answered_with_the_models_mean(tabular: Replica, tabular_options: ReplicaOptions,
                                                         signer: TokenSigner, wine_model: Path, fmt: str) -> None:
    report = await stream(_direct(tabular_options, tabular, session_token=session_token(signer), format=fmt,
                                  max_windows=5))
    assert report.lost is None and report.errors == [] and len(report.windows) == 5
    assert report.warmup is not None and report.session == "s-1"
    x = _rows(6 * 40)
    booster = xgb.Booster(model_file=str(wine_model))
    # The warm-up is rows 0-39, then rows 40-79, 80-119, ... (the rows after the warm-up).
    expected = [float(np.mean(booster.inplace_predict(x[i * 40:(i + 1) * 40]).astype(np.float64)))
                for i in range(6)]
    got = [report.warmup.result["result"]] + [w.result["result"] for w in report.windows]
    assert got == pytest.approx(expected, rel=1e-5)
    assert all(w.result["confidence"] is None for w in report.windows)  # a regressor
    assert all(w.server_ms is not None and w.server_ms > 0 for w in report.windows)
    summary = report.summary()
    assert summary["windows"] == 5 and summary["e2e_ms"]["p50"] is not None


async def test_the_warm_up_is_answered_ready_after_the_model_ran_then_results(tabular: Replica,
                                                                              signer: TokenSigner) -> None:
    ws = await _open(tabular, session_token(signer))
    try:
        hello = await _reply(ws)
        assert hello == {"type": "hello", "session": "s-1", "replica": REPLICA_ID, "kind": "tabular",
                         "features": list(FEATURES), "window": 40, "maxRows": 40, "maxFrameBytes": 1024 * 1024}
        # An invalid first window does not use up the warm-up.
        await ws.send(encode_tabular_window(0, _rows()[:, :5]))
        assert (await _reply(ws))["type"] == "error"
        await ws.send(encode_tabular_window(1, _rows()))
        ready = await _reply(ws)
        assert ready["type"] == "ready" and ready["seq"] == 1 and len(ready["predictions"]) == 40
        await ws.send(encode_json_window(2, _rows(40, 40).tolist()))
        result = await _reply(ws)
        assert (result["type"], result["seq"]) == ("result", 2)
        assert set(result) == {"type", "seq", "result", "confidence", "predictions", "server_ms"}
    finally:
        await ws.close()


async def test_malformed_windows_get_errors_and_the_session_goes_on(tabular: Replica, signer: TokenSigner) -> None:
    ws = await _open(tabular, session_token(signer))
    try:
        await _reply(ws)
        nan = _rows().copy()
        nan[3, 2] = np.nan
        bad: list[tuple[bytes | str, str, int | None]] = [
            (b"XXXX" + bytes(8), "STREAM_FRAME_INVALID", None),
            (TABULAR_HEADER.pack(TABULAR_MAGIC, 11, 40, 13) + bytes(100), "STREAM_FRAME_INVALID", 11),
            (encode_tabular_window(12, _rows()[:, :12]), "WINDOW_INVALID", 12),
            (encode_tabular_window(13, nan), "WINDOW_INVALID", 13),
            (encode_tabular_window(14, _rows(41)), "WINDOW_INVALID", 14),
            ('{"type": "window", "seq": 15, "rows": [["x"]]}', "WINDOW_INVALID", 15),
            ("hello?", "STREAM_MESSAGE_INVALID", None),
        ]
        for frame, code, seq in bad:
            await ws.send(frame)
            reply = await _reply(ws)
            assert (reply["type"], reply["code"], reply["seq"]) == ("error", code, seq), reply
            assert reply["message"]
        await ws.send(encode_tabular_window(16, _rows()))
        assert (await _reply(ws))["type"] == "ready"
        _, status = await http_get(tabular, "/status", signer.sign("status", "-", REPLICA_ID, 60))
        [session] = status["sessions"]
        assert (session["windows"], session["errors"]) == (1, len(bad))
    finally:
        await ws.close()


async def test_an_oversized_frame_closes_with_1009_and_the_replica_serves_on(tabular_options: ReplicaOptions,
                                                                            signer: TokenSigner) -> None:
    async with running(tabular_options, max_frame_bytes=4096) as replica:
        ws = await _open(replica, session_token(signer))
        await _reply(ws)
        await ws.send(b"RSW1" + bytes(5000))
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        report = await stream(StreamOptions(endpoint=stream_url(replica), session_token=session_token(signer, "s-2"),
                                            data=DATA_CSV, max_windows=2, duration=30))
        assert len(report.windows) == 2
        status = await status_when(replica, signer, lambda st: len(st["ended"]) == 2)
        assert {"id": "s-1", "reason": "frame too large"} in [{"id": e["id"], "reason": e["reason"]}
                                                              for e in status["ended"]]


# -- sessions -----------------------------------------------------------------------------------------


async def test_an_ended_session_does_not_connect_again(tabular: Replica, signer: TokenSigner) -> None:
    token = session_token(signer, "once")
    report = await stream(StreamOptions(endpoint=stream_url(tabular), session_token=token, data=DATA_CSV,
                                        max_windows=1, duration=30))
    assert len(report.windows) == 1
    await status_when(tabular, signer, lambda st: any(e["id"] == "once" for e in st["ended"]))
    code, error = await _refused(tabular, token)
    assert (code, error["code"]) == (401, "SESSION_ENDED")


async def test_sessions_are_capped_and_one_id_connects_once(tabular: Replica, signer: TokenSigner) -> None:
    first = await _open(tabular, session_token(signer, "a"))
    try:
        code, error = await _refused(tabular, session_token(signer, "a"))
        assert (code, error["code"]) == (409, "SESSION_ALREADY_CONNECTED")
        with pytest.raises(SessionConflictError):
            await stream(StreamOptions(endpoint=stream_url(tabular), session_token=session_token(signer, "a"),
                                       data=DATA_CSV))
        second = await _open(tabular, session_token(signer, "b"))
        try:
            code, error = await _refused(tabular, session_token(signer, "c"))
            assert (code, error["code"]) == (503, "REPLICA_FULL")
            with pytest.raises(ReplicaFullError):
                await stream(StreamOptions(endpoint=stream_url(tabular), session_token=session_token(signer, "c"),
                                           data=DATA_CSV))
            status, health = await http_get(tabular, "/healthz")
            assert (status, health["sessions"], health["capacity"]) == (200, 2, 2)
        finally:
            await second.close()
    finally:
        await first.close()
    await status_when(tabular, signer, lambda st: not st["sessions"])
    report = await stream(StreamOptions(endpoint=stream_url(tabular), session_token=session_token(signer, "c"),
                                        data=DATA_CSV, max_windows=1))
    assert len(report.windows) == 1


async def test_an_idle_session_is_closed_with_4000(tabular_options: ReplicaOptions, signer: TokenSigner) -> None:
    async with running(tabular_options, idle_timeout=0.3) as replica:
        ws = await _open(replica, session_token(signer))
        await _reply(ws)
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "idle timeout")
        status = await status_when(replica, signer, lambda st: not st["sessions"])
        assert status["ended"][-1]["reason"] == "idle timeout"


async def test_a_client_vanishing_mid_stream_leaves_the_others_served(tabular: Replica, signer: TokenSigner) -> None:
    gone = await _open(tabular, session_token(signer, "gone"))
    await _reply(gone)
    await gone.send(encode_tabular_window(0, _rows()))
    await _reply(gone)
    gone.transport.abort()  # the socket drops: no close frame
    report = await stream(StreamOptions(endpoint=stream_url(tabular), session_token=session_token(signer, "stays"),
                                        data=DATA_CSV, max_windows=3))
    assert len(report.windows) == 3 and report.lost is None
    status = await status_when(tabular, signer, lambda st: len(st["ended"]) == 2)
    ended = {e["id"]: e["reason"] for e in status["ended"]}
    assert ended["gone"] == "connection lost" and ended["stays"] == "closed by the client"


async def test_a_replica_stopping_mid_session_is_session_lost_for_the_client(tabular_options: ReplicaOptions,
                                                                            signer: TokenSigner) -> None:
    replica = Replica(tabular_options)
    await replica.start()
    await replica.ready()
    seen = asyncio.Event()

    def on_window(_: Any) -> None:
        seen.set()

    task = asyncio.create_task(stream(StreamOptions(endpoint=stream_url(replica), session_token=session_token(signer),
                                                    data=DATA_CSV, duration=60, interval=0.01),
                                      on_window=on_window))
    await asyncio.wait_for(seen.wait(), 10)
    await replica.close()
    report = await asyncio.wait_for(task, 10)
    assert report.lost is not None and report.lost.code == "SESSION_LOST"
    assert "1001" in report.lost.message
    assert report.errors[-1]["code"] == "SESSION_LOST"


# -- bytes ------------------------------------------------------------------------------------------


async def test_bytes_are_counted_on_the_socket_websocket_framing_included(tabular: Replica,
                                                                          signer: TokenSigner) -> None:
    ws = await _open(tabular, session_token(signer))
    assert isinstance(ws, CountingClientConnection)
    try:
        handshake_sent = ws.counter.sent
        assert handshake_sent > 100  # the HTTP upgrade request
        hello = await _reply(ws)
        frame = encode_tabular_window(0, _rows())
        sent0, received0 = ws.counter.sent, ws.counter.received
        await ws.send(frame)
        reply_text = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(reply_text, str) and json.loads(reply_text)["type"] == "ready"
        # A client frame of 126..65535 bytes has a 2-byte header, a 2-byte length and a 4-byte mask;
        # a server frame the header and the length only.
        assert ws.counter.sent - sent0 == len(frame) + 8
        assert ws.counter.received - received0 == len(reply_text.encode()) + 4
        _, status = await http_get(tabular, "/status", signer.sign("status", "-", REPLICA_ID, 60))
        [session] = status["sessions"]
        assert session["bytes_in"] == ws.counter.sent  # both ends count the same TCP bytes
        assert session["bytes_out"] == ws.counter.received
        assert hello["type"] == "hello"
    finally:
        await ws.close()
    report = await stream(StreamOptions(endpoint=stream_url(tabular), session_token=session_token(signer, "s-2"),
                                        data=DATA_CSV, max_windows=2))
    assert all(w.sent == len(frame) + 8 for w in report.windows)
    assert report.summary()["bytes_per_window"]["sent"] == len(frame) + 8


# -- tokens -----------------------------------------------------------------------------------------


async def test_tokens_are_checked_before_the_upgrade(tabular: Replica, signer: TokenSigner,
                                                     tmp_path: Path) -> None:
    other_hub = TokenSigner.from_file(tmp_path / "other.key")
    cases = {
        "status audience": signer.sign("status", "s-1", REPLICA_ID, 60),
        "claim audience": signer.sign("claim", "s-1", REPLICA_ID, 60),
        "another replica": signer.sign("session", "s-1", "replica-2", 60),
        "expired": signer.sign("session", "s-1", REPLICA_ID, -5),
        "another hub": other_hub.sign("session", "s-1", REPLICA_ID, 60),
        "garbage": "garbage",
        "missing": "",
    }
    for what, token in cases.items():
        code, error = await _refused(tabular, token or None)
        assert (code, error["code"]) == (401, "SESSION_TOKEN_INVALID"), what
    code, error = await _refused(tabular, signer.sign("session", "s-1", "replica-2", 60))
    assert "not this replica" in error["message"]
    with pytest.raises(SessionTokenError, match="expired"):
        await stream(StreamOptions(endpoint=stream_url(tabular), session_token=cases["expired"], data=DATA_CSV))
    # ?token= works like the header.
    ws = await connect(stream_url(tabular, f"/v1/stream?token={session_token(signer)}"))
    assert (await _reply(ws))["type"] == "hello"
    await ws.close()
    # /status and /claim want their own audiences.
    for path, wrong in (("/status", session_token(signer)), ("/claim", signer.sign("status", "x", REPLICA_ID, 60)),
                        ("/status", None)):
        status, body = await http_get(tabular, path, wrong)
        assert (status, body["error"]["code"]) == (401, "SESSION_TOKEN_INVALID"), path
    status, body = await http_get(tabular, "/status", signer.sign("status", "-", REPLICA_ID, 60))
    assert status == 200 and set(body) >= {"replica", "sessions", "ended"}


# -- the original protocol --------------------------------------------------------------------------


async def test_the_original_protocol_needs_a_claim_one_connection_each(tabular: Replica, signer: TokenSigner,
                                                                       wine_model: Path) -> None:
    code, error = await _refused(tabular, None, "/")
    assert (code, error["code"]) == (401, "CLAIM_REQUIRED")
    with pytest.raises(SessionTokenError) as info:
        await stream(StreamOptions(endpoint=stream_url(tabular), data=DATA_CSV, format="legacy"))
    assert info.value.code == "CLAIM_REQUIRED"

    report = await stream(StreamOptions(endpoint=stream_url(tabular), data=DATA_CSV, format="legacy", max_windows=3,
                                        claim_token=signer.sign("claim", "legacy-1", REPLICA_ID, 60)))
    assert report.lost is None and report.errors == [] and len(report.windows) == 3
    assert report.warmup is not None and report.warmup.result == "Model ready"
    booster = xgb.Booster(model_file=str(wine_model))
    x = _rows(80)
    assert report.windows[0].result["result"] == pytest.approx(
        float(np.mean(booster.inplace_predict(x[40:80]).astype(np.float64))), rel=1e-5)
    assert all(w.server_ms is not None for w in report.windows)
    # Each window is 40 frames of about 300 bytes: the bytes show it.
    assert report.windows[0].sent > 40 * 250
    # The claim was used up by that connection.
    code, error = await _refused(tabular, None, "/")
    assert error["code"] == "CLAIM_REQUIRED"
    status = await status_when(tabular, signer, lambda st: not st["sessions"])
    assert next(e for e in status["ended"] if e["id"] == "legacy-1")["legacy"] is True


async def test_original_protocol_rows_by_name_and_bad_rows(tabular: Replica, signer: TokenSigner) -> None:
    status, _ = await http_get(tabular, "/claim", signer.sign("claim", "legacy-2", REPLICA_ID, 60))
    assert status == 204
    ws = await _open(tabular, None, "/")
    try:
        await ws.send('{"Class": "R"}')  # no features: refused, not counted in the window
        error = await _reply(ws)
        assert (error["type"], error["code"]) == ("error", "WINDOW_INVALID")
        assert "fixed acidity" in error["message"]
        x = _rows()
        for row in x.tolist():
            record: dict[str, Any] = dict(zip(FEATURES, row, strict=True))
            await ws.send(json.dumps({**record, "Class": "R", "timestamp": "2024-01-01 00:00:00"}))
        assert await asyncio.wait_for(ws.recv(), 10) == "Model ready"
        for row in x.tolist():
            await ws.send(json.dumps(dict(zip(FEATURES, row, strict=True))))
        text = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(text, str) and text.startswith("[ Output result : [") and "confidence : None ]" in text
    finally:
        await ws.close()


async def test_claims_are_bounded_and_refused_for_a_connected_session(tabular_options: ReplicaOptions,
                                                                      signer: TokenSigner) -> None:
    async with running(tabular_options, max_claims=2) as replica:
        for sid in ("c1", "c2"):
            assert (await http_get(replica, "/claim", signer.sign("claim", sid, REPLICA_ID, 60)))[0] == 204
        assert (await http_get(replica, "/claim", signer.sign("claim", "c1", REPLICA_ID, 60)))[0] == 204  # renewed
        status, body = await http_get(replica, "/claim", signer.sign("claim", "c3", REPLICA_ID, 60))
        assert (status, body["error"]["code"]) == (503, "REPLICA_FULL")
        ws = await _open(replica, session_token(signer, "live"))
        try:
            status, body = await http_get(replica, "/claim", signer.sign("claim", "live", REPLICA_ID, 60))
            assert (status, body["error"]["code"]) == (409, "SESSION_ALREADY_CONNECTED")
        finally:
            await ws.close()
        # A plain GET of the original protocol's path does not use a claim up.
        status, body = await http_get(replica, "/")
        assert (status, body["error"]["code"]) == (426, "INVALID_REQUEST")
        old = await _open(replica, None, "/")
        assert isinstance(old, CountingClientConnection)
        await old.close()


async def test_claims_expire(tabular_options: ReplicaOptions, signer: TokenSigner) -> None:
    async with running(tabular_options, claim_ttl=0.2) as replica:
        assert (await http_get(replica, "/claim", signer.sign("claim", "late", REPLICA_ID, 60)))[0] == 204
        await asyncio.sleep(0.4)
        code, error = await _refused(replica, None, "/")
        assert (code, error["code"]) == (401, "CLAIM_REQUIRED")


async def test_the_ended_list_keeps_the_last_100(tabular: Replica, signer: TokenSigner) -> None:
    for i in range(ENDED_KEPT + 5):
        ws = await _open(tabular, session_token(signer, f"short-{i}"))
        await _reply(ws)
        await ws.close()
    status = await status_when(tabular, signer, lambda st: st["ended"][-1]["id"] == f"short-{ENDED_KEPT + 4}")
    assert [e["id"] for e in status["ended"]] == [f"short-{i}" for i in range(5, ENDED_KEPT + 5)]

