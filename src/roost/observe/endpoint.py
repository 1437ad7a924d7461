"""The agent's ``/metrics`` HTTP endpoint: a small asyncio server in the agent's event loop.

One request per connection (``Connection: close``), which is all Prometheus needs. Bounded: at most
:data:`MAX_CONNECTIONS` connections at once (more are closed at once), a request head of at most
:data:`MAX_HEAD` bytes read within :data:`READ_TIMEOUT` seconds. ``GET /metrics`` only (404 elsewhere,
405 for other methods). The page is rendered on the event loop, where the agent's state lives
(a few milliseconds for a hundred components: see bench/README.md).

With a token (``MetricsSettings.token_sha256``) a scrape must send ``Authorization: Bearer <token>``;
without it the answer is 401 ``METRICS_TOKEN_REQUIRED``, with a wrong one 401 ``METRICS_TOKEN_INVALID``
(a JSON body ``{"error": {"code", "message"}}``, as the hub's). Tokens are compared as SHA-256
digests in constant time and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from typing import Final

from roost.observe.settings import parse_address

logger = logging.getLogger(__name__)

MAX_CONNECTIONS: Final = 16
MAX_HEAD: Final = 8192
READ_TIMEOUT: Final = 5.0
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def _response(status: str, body: bytes, content_type: str, extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n{extra}\r\n")
    return head.encode("latin-1") + body


def _error(status: str, code: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return _response(status, body, "application/json", extra)


class MetricsEndpoint:
    """``await start()`` listens on ``address`` (``HOST:PORT``); ``await stop()``."""

    def __init__(self, address: str, render: Callable[[], bytes], token_sha256: str | None = None, *,
                 max_connections: int = MAX_CONNECTIONS, read_timeout: float = READ_TIMEOUT) -> None:
        self.host, self.port = parse_address(address)
        self.render = render
        self._digest = bytes.fromhex(token_sha256) if token_sha256 else None
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self._server: asyncio.Server | None = None
        self._open = 0
        self.refused = 0

    @property
    def has_token(self) -> bool:
        return self._digest is not None

    @property
    def bound(self) -> tuple[str, int]:
        """The address actually listened on (the port chosen when PORT was 0)."""
        if self._server is None or not self._server.sockets:
            return self.host, self.port
        name = self._server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=MAX_HEAD,
                                                  reuse_address=True)
        host, port = self.bound
        logger.info("metrics endpoint on http://%s:%d/metrics%s", host, port,
                    " (bearer token required)" if self._digest else "")

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= self.max_connections:
            self.refused += 1
            writer.close()
            return
        self._open += 1
        try:
            try:
                async with asyncio.timeout(self.read_timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            writer.write(self.answer(head))
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(self.read_timeout):
                    await writer.drain()
        finally:
            self._open -= 1
            writer.close()

    def answer(self, head: bytes) -> bytes:
        """The whole HTTP response to one request head."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _error("400 Bad Request", "BAD_REQUEST", "not an HTTP/1.x request line")
        method, target = parts[0], parts[1]
        path = target.split("?", 1)[0]
        if path != "/metrics":
            return _error("404 Not Found", "NOT_FOUND", "only /metrics is served here")
        if method != "GET":
            return _error("405 Method Not Allowed", "METHOD_NOT_ALLOWED", "use GET", "Allow: GET\r\n")
        if self._digest is not None:
            token = None
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "authorization":
                    scheme, _, rest = value.strip().partition(" ")
                    if scheme.lower() == "bearer" and rest.strip():
                        token = rest.strip()
                    break
            challenge = 'WWW-Authenticate: Bearer realm="roost-agent-metrics"\r\n'
            if token is None:
                return _error("401 Unauthorized", "METRICS_TOKEN_REQUIRED",
                              "this agent's metrics need 'Authorization: Bearer <token>'", challenge)
            given = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
            if not hmac.compare_digest(given, self._digest):
                return _error("401 Unauthorized", "METRICS_TOKEN_INVALID", "wrong metrics token", challenge)
        try:
            body = self.render()
        except Exception:
            logger.exception("rendering the metrics failed")
            return _error("500 Internal Server Error", "INTERNAL_ERROR", "rendering the metrics failed")
        return _response("200 OK", body, CONTENT_TYPE)


__all__ = ["CONTENT_TYPE", "MAX_CONNECTIONS", "MetricsEndpoint"]
