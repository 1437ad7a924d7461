"""The stream client behind ``roost stream``: admission (or a direct endpoint), windows, measurements.

:func:`stream` connects to a replica's endpoint, reads the replica's hello (the features its model
expects), and sends windows until ``duration`` seconds passed (or ``max_windows`` were answered):

- tabular data comes from a CSV, read **by name**: the hello's features are taken from the columns of
  those names (a one-hot feature ``C_v`` missing from the file is read from column ``C``, see
  :func:`roost.cluster.protocol.plan_columns`), other columns (``Class``, ``quality``, ``color``) are
  dropped, a missing one is ``DATA_COLUMN_MISSING`` naming it. The first ``window`` rows are the
  warm-up window; later windows take ``window`` consecutive rows from the rows after it, wrapping
  round to the first row after the warm-up (as the original client skipped its warm-up rows), or
  over the whole file when it holds fewer than two windows;
- images come from a folder (its JPEG/PNG/... files, sorted by name, round and round).

Per window it measures the end-to-end time (the window's first byte handed to the socket to its
reply received), the replica's own time (``server_ms`` of the reply; the original protocol's
``Execution_Time``), and the bytes sent and received **on the socket** (TCP payload: websocket
framing, masks and control frames included; :mod:`roost.cluster.wire_bytes`). The warm-up window is
measured but kept out of the summary (it includes the model's first call).

``format="legacy"`` speaks the original protocol (no token; ``window`` JSON text frames per window;
``Model ready``; text replies) against the replica's root path, after presenting a claim token to
``GET /claim`` (normally the hub's job). A socket that drops mid-stream, or a replica that closes
it, ends the stream with :class:`~roost.cluster.errors.SessionLostError` in the report.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt

from roost.cluster.errors import (
    ReplicaFullError,
    ReplicaNotReadyError,
    SessionConflictError,
    SessionLostError,
    SessionTokenError,
    StreamDataError,
    StreamMessageError,
    StreamProtocolError,
)
from roost.cluster.protocol import (
    CLOSE_IDLE,
    LEGACY_READY,
    ErrorReply,
    Hello,
    ImageResult,
    Kind,
    TabularResult,
    encode_image_frame,
    encode_json_window,
    encode_tabular_window,
    parse_legacy_result,
    parse_server_message,
    plan_columns,
)
from roost.errors import RoostError

__all__ = [
    "IMAGE_SUFFIXES",
    "Format",
    "StreamOptions",
    "StreamReport",
    "WindowStat",
    "load_csv",
    "load_csv_records",
    "stream",
    "write_plot",
]

log = logging.getLogger(__name__)

Format = Literal["binary", "json", "legacy"]
Matrix = npt.NDArray[np.float32]

IMAGE_SUFFIXES: Final = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
#: Largest CSV read (bytes) and rows kept.
MAX_CSV_BYTES: Final = 512 * 1024 * 1024
MAX_CSV_ROWS: Final = 2_000_000
MAX_IMAGES: Final = 10_000
MAX_IMAGE_BYTES: Final = 10 * 1024 * 1024
#: Errors kept in a report (the count goes on).
MAX_ERRORS_KEPT: Final = 100
LEGACY_WINDOW: Final = 40


# -- data -----------------------------------------------------------------------------------------


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        size = path.stat().st_size
        if size > MAX_CSV_BYTES:
            raise StreamDataError(f"{path} is {size} bytes; the most `roost stream` reads is {MAX_CSV_BYTES}")
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows: list[list[str]] = []
            for row in reader:
                if row:
                    rows.append(row)
                if len(rows) >= MAX_CSV_ROWS:
                    break
    except (OSError, UnicodeError, csv.Error) as err:
        raise StreamDataError(f"cannot read the CSV {path}: {err}") from err
    if not header:
        raise StreamDataError(f"{path} is empty: a CSV with a header row of column names is needed")
    if not rows:
        raise StreamDataError(f"{path} has a header but no rows")
    return [h.strip() for h in header], rows


def load_csv(path: Path, features: list[str]) -> Matrix:
    """The ``features`` columns of a CSV (by name), as float32 rows; see the module notes."""
    header, rows = _read_csv(path)
    plan, missing = plan_columns(features, header)
    if missing:
        raise StreamDataError(f"{path} has no column {', '.join(repr(m) for m in missing)}, which the model "
                              f"expects (its columns: {', '.join(header)})", code="DATA_COLUMN_MISSING")
    index = {name: i for i, name in enumerate(header)}
    out = np.empty((len(rows), len(features)), dtype=np.float32)
    for r, row in enumerate(rows):
        if len(row) != len(header):
            raise StreamDataError(f"{path} line {r + 2} has {len(row)} fields; the header has {len(header)}")
        for c, source in enumerate(plan):
            text = row[index[source.column]].strip()
            if source.equals is not None:
                out[r, c] = 1.0 if text == source.equals else 0.0
                continue
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or abs(value) > float(np.finfo(np.float32).max):
                raise StreamDataError(f"{path} line {r + 2}, column {source.column!r}: {text!r} is not a finite "
                                      "number")
            out[r, c] = value
    return out


def _scalar(text: str) -> float | int | str:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def load_csv_records(path: Path) -> list[dict[str, float | int | str]]:
    """Every row of a CSV as an object keyed by column name, numbers as numbers (what the original
    client sent, one text frame per row)."""
    header, rows = _read_csv(path)
    return [{name: _scalar(value) for name, value in zip(header, row, strict=False)} for row in rows]


def _images(folder: Path) -> list[Path]:
    try:
        root = folder.resolve(strict=True)
        found = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                       and p.resolve().parent == root)
    except OSError as err:
        raise StreamDataError(f"cannot list the image folder {folder}: {err}") from err
    if not found:
        raise StreamDataError(f"{folder} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return found[:MAX_IMAGES]


def _read_image(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise StreamDataError(f"{path} is {size} bytes; images of at most {MAX_IMAGE_BYTES} are sent")
        return path.read_bytes()
    except OSError as err:
        raise StreamDataError(f"cannot read the image {path}: {err}") from err


def _window_rows(n_rows: int, window: int) -> Iterator[npt.NDArray[np.int64]]:
    """Row indices of the warm-up window, then of every later window (see the module notes)."""
    if n_rows < window:
        raise StreamDataError(f"the CSV has {n_rows} rows, fewer than one window of {window}")
    yield np.arange(window)
    start, count = (window, n_rows - window) if n_rows >= 2 * window else (0, n_rows)
    offset = 0
    while True:
        yield start + (offset + np.arange(window)) % count
        offset = (offset + window) % count


# -- options and report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamOptions:
    """What to stream where. ``data`` (a CSV) streams a tabular session, ``images`` (a folder) an
    image session; ``endpoint`` is the session's ``ws://HOST:PORT/v1/stream``."""

    endpoint: str
    session_token: str | None = None
    type: str = "scalar"
    format: Format = "binary"
    data: Path | None = None
    images: Path | None = None
    #: Rows per window (default: the hello's window; the original protocol's 40).
    window: int | None = None
    duration: float = 300.0
    max_windows: int | None = None
    #: Seconds between windows (0: the next window as soon as the reply came).
    interval: float = 0.0
    claim_token: str | None = None
    offloaded: bool = False
    connect_timeout: float = 10.0
    reply_timeout: float = 60.0

    @property
    def kind(self) -> Kind:
        return "image" if self.images is not None else "tabular"


@dataclass(frozen=True)
class WindowStat:
    seq: int
    #: Seconds since the stream started (the warm-up's send).
    at_s: float
    e2e_ms: float
    server_ms: float | None
    sent: int
    received: int
    result: Any = None


@dataclass
class StreamReport:
    type: str
    endpoint: str
    offloaded: bool
    format: Format
    session: str | None = None
    warmup: WindowStat | None = None
    windows: list[WindowStat] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0
    #: Set when the session ended under the client (socket dropped, replica closed it).
    lost: RoostError | None = None

    def add_error(self, seq: int | None, code: str, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append({"seq": seq, "code": code, "message": message})

    def summary(self) -> dict[str, Any]:
        """The ``--json`` object."""
        e2e = [w.e2e_ms for w in self.windows]
        server = [w.server_ms for w in self.windows if w.server_ms is not None]
        n = len(self.windows)
        return {"type": self.type, "endpoint": self.endpoint, "offloaded": self.offloaded, "windows": n,
                "e2e_ms": _stats(e2e), "server_ms": _stats(server),
                "bytes_per_window": {"sent": sum(w.sent for w in self.windows) / n if n else None,
                                     "received": sum(w.received for w in self.windows) / n if n else None},
                "errors": self.errors}


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "p50": None, "p99": None}
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(arr.mean()), 4), "p50": round(float(np.percentile(arr, 50)), 4),
            "p99": round(float(np.percentile(arr, 99)), 4)}


# -- the connection ------------------------------------------------------------------------------


def _refusal(err: Any, endpoint: str) -> RoostError:
    """The error of an upgrade the replica refused (its JSON body names the code)."""
    response = err.response
    status = int(response.status_code)
    code, message = None, ""
    try:
        body = json.loads(bytes(response.body or b"").decode("utf-8"))
        code, message = body["error"]["code"], str(body["error"]["message"])
    except (ValueError, KeyError, TypeError, UnicodeError):
        pass
    if not isinstance(code, str):
        return StreamProtocolError(f"the replica at {endpoint} refused the upgrade with HTTP {status} and no JSON "
                                   "error body")
    message = f"the replica refused the session (HTTP {status}): {message}"
    if status == 401:
        return SessionTokenError(message, code=code)
    if status == 409:
        return SessionConflictError(message, code=code)
    if status == 503 and code == "REPLICA_FULL":
        return ReplicaFullError(message)
    if status == 503:
        return ReplicaNotReadyError(message, code=code)
    return StreamProtocolError(message, code=code)


def _lost(err: Exception, report: StreamReport) -> SessionLostError:
    from websockets.exceptions import ConnectionClosed

    if isinstance(err, ConnectionClosed) and err.rcvd is not None:
        code, reason = err.rcvd.code, err.rcvd.reason
        if code == CLOSE_IDLE:
            return SessionLostError(f"the replica closed the session: {reason or 'idle timeout'} ({code})",
                                    code="SESSION_IDLE_TIMEOUT")
        return SessionLostError(f"the replica closed the session mid-stream ({code} {reason or 'no reason'}) "
                                f"after {len(report.windows)} windows")
    return SessionLostError(f"the connection to the replica dropped mid-stream after {len(report.windows)} "
                            f"windows ({type(err).__name__}: {err})")


def _legacy_endpoint(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return urlunsplit((parts.scheme, parts.netloc, "/", "", ""))


def _claim(endpoint: str, token: str, timeout: float) -> None:
    """``GET /claim`` with a claim token (what the hub does before an original-protocol client)."""
    import urllib.error
    import urllib.request

    parts = urlsplit(endpoint)
    url = urlunsplit(("https" if parts.scheme == "wss" else "http", parts.netloc, "/claim", "", ""))
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as err:
        body = err.read().decode("utf-8", "replace")
        try:
            error = json.loads(body)["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            code, message = "STREAM_PROTOCOL_ERROR", body[:200]
        if err.code == 401:
            raise SessionTokenError(f"the replica refused the claim: {message}", code=code) from err
        if err.code == 409:
            raise SessionConflictError(f"the replica refused the claim: {message}", code=code) from err
        raise StreamProtocolError(f"the replica refused the claim (HTTP {err.code}): {message}", code=code) from err
    except (urllib.error.URLError, OSError) as err:
        raise SessionLostError(f"cannot reach the replica at {url}: {err}", code="REPLICA_UNREACHABLE") from err


class _Recv:
    """Receives one message with the reply timeout, turning a closed socket into SESSION_LOST."""

    def __init__(self, ws: Any, timeout: float) -> None:
        self.ws = ws
        self.timeout = timeout

    async def __call__(self) -> str | bytes:
        try:
            async with asyncio.timeout(self.timeout):
                message: str | bytes = await self.ws.recv()
                return message
        except TimeoutError as err:
            raise SessionLostError(f"the replica sent no reply within {self.timeout:g} s") from err


async def stream(options: StreamOptions, *, on_window: Callable[[WindowStat], None] | None = None,
                 on_hello: Callable[[Hello | None], None] | None = None,
                 stop: asyncio.Event | None = None) -> StreamReport:
    """Stream one session (see the module notes). Refusals before the upgrade raise; a session lost
    mid-stream is returned in :attr:`StreamReport.lost` (with the windows measured until then)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

    from roost.cluster.wire_bytes import CountingClientConnection

    if options.data is None and options.images is None:
        raise StreamDataError("nothing to stream: give a CSV (--data) or an image folder (--images)")
    legacy = options.format == "legacy"
    report = StreamReport(options.type, options.endpoint, options.offloaded, options.format)
    endpoint = options.endpoint
    headers: dict[str, str] = {}
    if legacy:
        if options.claim_token:
            await asyncio.to_thread(_claim, endpoint, options.claim_token, options.connect_timeout)
        endpoint = _legacy_endpoint(endpoint)
    elif options.session_token:
        headers["Authorization"] = f"Bearer {options.session_token}"
    records = load_csv_records(options.data) if legacy and options.data is not None else None
    images = _images(options.images) if options.images is not None else None
    try:
        ws = await connect(endpoint, additional_headers=headers, create_connection=CountingClientConnection,
                           open_timeout=options.connect_timeout, compression=None, max_size=4 * 1024 * 1024,
                           ping_interval=20, ping_timeout=20, close_timeout=5)
    except InvalidStatus as err:
        raise _refusal(err, endpoint) from err
    except (OSError, TimeoutError, InvalidHandshake) as err:
        raise SessionLostError(f"cannot connect to the replica at {endpoint}: {err}",
                               code="REPLICA_UNREACHABLE") from err
    assert isinstance(ws, CountingClientConnection)
    recv = _Recv(ws, options.reply_timeout)
    try:
        hello: Hello | None = None
        if not legacy:
            first = parse_server_message(await recv(), options.kind)
            if not isinstance(first, Hello):
                raise StreamProtocolError(f"the replica's first message is a {first.type}, not its hello")
            if first.kind != options.kind:
                given = "a CSV (--data)" if options.kind == "tabular" else "images (--images)"
                raise StreamDataError(f"the replica serves {first.kind} sessions, but {given} was given")
            hello = first
            report.session = hello.session
        if on_hello is not None:
            on_hello(hello)
        if options.kind == "tabular":
            assert options.data is not None
            window = options.window or (hello.window if hello else LEGACY_WINDOW)
            if hello is not None and window > hello.max_rows:
                raise StreamDataError(f"--window {window} is more rows than the replica takes per window "
                                      f"({hello.max_rows})")
            matrix = load_csv(options.data, hello.features) if hello is not None else None
            n_rows = len(records) if records is not None else len(matrix) if matrix is not None else 0
            batches: Iterator[Any] = _window_rows(n_rows, window)
        else:
            assert images is not None
            batches = (images[i % len(images)] for i in range(2**62))
        await _run(ws, recv, options, report, hello, batches, matrix if options.kind == "tabular" else None,
                   records, on_window, stop)
    except (ConnectionClosed, OSError) as err:
        report.lost = _lost(err, report)
        report.add_error(None, report.lost.code, report.lost.message)
    except SessionLostError as err:
        report.lost = err
        report.add_error(None, err.code, err.message)
    finally:
        await ws.close()
    return report


async def _run(ws: Any, recv: _Recv, options: StreamOptions, report: StreamReport, hello: Hello | None,
               batches: Iterator[Any], matrix: Matrix | None, records: list[dict[str, Any]] | None,
               on_window: Callable[[WindowStat], None] | None, stop: asyncio.Event | None) -> None:
    counter = ws.counter
    t_start = time.perf_counter()
    deadline: float | None = None
    seq = 0
    while True:
        if stop is not None and stop.is_set():
            return
        if deadline is not None and time.perf_counter() >= deadline:
            return
        if options.max_windows is not None and len(report.windows) >= options.max_windows:
            return
        batch = next(batches)
        sent0, received0 = counter.sent, counter.received
        t0 = time.perf_counter()
        if options.format == "legacy":
            outcome = await _legacy_window(ws, recv, options, batch, records, report, warm=report.warmup is not None)
        else:
            if options.kind == "image":
                frame: str | bytes = encode_image_frame(seq, await asyncio.to_thread(_read_image, batch))
            elif options.format == "json":
                assert matrix is not None
                frame = encode_json_window(seq, matrix[batch].tolist())
            else:
                assert matrix is not None
                frame = encode_tabular_window(seq, matrix[batch])
            await ws.send(frame)
            outcome = _roost_reply(parse_server_message(await recv(), options.kind), seq, report)
        e2e_ms = (time.perf_counter() - t0) * 1000.0
        if outcome is not None:
            server_ms, result = outcome
            stat = WindowStat(seq, t0 - t_start, e2e_ms, server_ms, counter.sent - sent0,
                              counter.received - received0, result)
            if report.warmup is None:
                report.warmup = stat
                deadline = time.perf_counter() + options.duration
            else:
                report.windows.append(stat)
            if on_window is not None:
                on_window(stat)
        seq += 1
        if options.interval > 0:
            await asyncio.sleep(options.interval)


def _warmup_refused(code: str, message: str, seq: int | None) -> StreamMessageError:
    return StreamMessageError(f"the replica refused the warm-up window: {message}", code=code, seq=seq)


def _roost_reply(reply: Any, seq: int, report: StreamReport) -> tuple[float | None, Any] | None:
    if isinstance(reply, ErrorReply):
        if report.warmup is None:
            raise _warmup_refused(reply.code, reply.message, reply.seq)
        report.add_error(reply.seq, reply.code, reply.message)
        return None
    if isinstance(reply, Hello):
        raise StreamProtocolError("the replica sent a second hello")
    if reply.seq != seq:
        raise StreamProtocolError(f"the replica answered window {reply.seq}, expected {seq}")
    expected = "ready" if report.warmup is None else "result"
    if reply.type != expected:
        raise StreamProtocolError(f"the replica answered with {reply.type!r}, expected {expected!r}")
    if isinstance(reply, TabularResult):
        return reply.server_ms, {"result": reply.result, "confidence": reply.confidence}
    assert isinstance(reply, ImageResult)
    return reply.server_ms, [{"label": label.label, "score": label.score} for label in reply.labels]


def _timestamp() -> str:
    return datetime.now(UTC).isoformat()


async def _legacy_window(ws: Any, recv: _Recv, options: StreamOptions, batch: Any,
                         records: list[dict[str, Any]] | None, report: StreamReport,
                         *, warm: bool) -> tuple[float | None, Any] | None:
    """One window of the original protocol: ``window`` row frames (or one image), one text reply."""
    if options.kind == "image":
        image = await asyncio.to_thread(_read_image, batch)
        await ws.send(json.dumps({"data": base64.b64encode(image).decode("ascii"), "timestamp": _timestamp()}))
        frames = 1
    else:
        assert records is not None
        for index in batch.tolist():
            await ws.send(json.dumps({**records[index], "timestamp": _timestamp()}))
        frames = len(batch)
    errors = 0
    while True:
        text = await recv()
        if isinstance(text, str) and text.startswith("{"):
            doc = json.loads(text)
            if doc.get("type") == "error":
                report.add_error(doc.get("seq"), str(doc.get("code")), str(doc.get("message")))
                errors += 1
                if errors >= frames:  # every frame of the window was refused: no result will come
                    if not warm:
                        raise _warmup_refused(str(doc.get("code")), str(doc.get("message")), doc.get("seq"))
                    return None
                continue
            if options.kind == "image":
                result = ImageResult.model_validate(doc)
                return result.server_ms, [{"label": x.label, "score": x.score} for x in result.labels]
            raise StreamProtocolError(f"unexpected reply in the original protocol: {text[:80]!r}")
        if options.kind == "image":
            raise StreamProtocolError(f"unexpected reply to an image: {str(text)[:80]!r}")
        if not warm:
            if text != LEGACY_READY:
                raise StreamProtocolError(f"the replica answered the warm-up with {str(text)[:80]!r}, not "
                                          f"{LEGACY_READY!r}")
            return None if errors else (None, LEGACY_READY)
        parsed = parse_legacy_result(text)
        return parsed.execution_s * 1000.0, {"result": parsed.result, "confidence": parsed.confidence}


# -- the plot -------------------------------------------------------------------------------------


def write_plot(report: StreamReport, path: Path) -> Path:
    """Latency over time and its histogram, as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (over_time, histogram) = plt.subplots(1, 2, figsize=(11, 4))
    at = [w.at_s for w in report.windows]
    e2e = [w.e2e_ms for w in report.windows]
    server = [w.server_ms for w in report.windows]
    over_time.plot(at, e2e, label="end to end", linewidth=0.8)
    if any(s is not None for s in server):
        over_time.plot(at, [s if s is not None else math.nan for s in server], label="server", linewidth=0.8)
    over_time.set_xlabel("time since start (s)")
    over_time.set_ylabel("latency (ms)")
    over_time.set_title(f"{report.type} via {report.format}: {len(report.windows)} windows")
    over_time.legend()
    histogram.hist(e2e or [0.0], bins=min(50, max(5, len(e2e) // 4 or 5)))
    histogram.set_xlabel("end-to-end latency (ms)")
    histogram.set_ylabel("windows")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path
