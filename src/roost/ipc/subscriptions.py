"""What subscriptions deliver (:class:`Received`, :class:`ConfigurationUpdate`) and the
:class:`Subscription` stream itself (an async iterator, or a callback target)."""

from __future__ import annotations

import asyncio
import base64
import collections
import inspect
import logging
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from roost.ipc.errors import IpcTimeoutError
from roost.ipc.protocol import DEFAULT_TIMEOUT, _dumps, _loads

logger = logging.getLogger(__name__)

T = TypeVar("T")


class StreamOwner(Protocol):
    """The client a subscription belongs to (:class:`~roost.ipc.async_client.IpcClient`), as far as
    the subscription uses it. A Protocol, so this module does not import the client."""

    def _end_stream(self, sid: int) -> None: ...


class Received:
    """One pub/sub message: ``topic``, ``payload`` (bytes) and ``json`` (the JSON value, or None
    for a binary message). ``payload`` of a JSON message is its compact JSON encoding."""

    __slots__ = ("_payload", "json", "topic")

    def __init__(self, topic: str, payload: bytes | None, json: Any = None) -> None:
        self.topic = topic
        self.json = json
        self._payload = payload

    @property
    def payload(self) -> bytes:
        if self._payload is None:
            self._payload = _dumps(self.json)
        return self._payload

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Received):
            return NotImplemented
        return (self.topic, self.payload, self.json) == (other.topic, other.payload, other.json)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Received(topic={self.topic!r}, payload={self.payload!r}, json={self.json!r})"


class ConfigurationUpdate:
    """One configuration change notification."""

    __slots__ = ("component_name", "key_path")

    def __init__(self, component_name: str, key_path: list[str]) -> None:
        self.component_name = component_name
        self.key_path = key_path

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConfigurationUpdate):
            return NotImplemented
        return (self.component_name, self.key_path) == (other.component_name, other.key_path)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ConfigurationUpdate(component_name={self.component_name!r}, key_path={self.key_path!r})"


def _parse_subscription_message(payload: bytes) -> Received:
    doc = _loads(payload)
    jm = doc.get("jsonMessage")
    if jm is not None:
        ctx = jm.get("context") or {}
        return Received(ctx.get("topic", ""), None, jm.get("message"))
    bm = doc.get("binaryMessage") or {}
    ctx = bm.get("context") or {}
    return Received(ctx.get("topic", ""), base64.b64decode(bm.get("message", "")), None)


def _parse_configuration_event(payload: bytes) -> ConfigurationUpdate:
    event = _loads(payload).get("configurationUpdateEvent") or {}
    return ConfigurationUpdate(event.get("componentName", ""), list(event.get("keyPath") or []))


class Subscription(Generic[T]):
    """An open stream of events: an async iterator, or a callback target. ``close()`` ends it.

    Iteration stops when the subscription is closed (by either side); it raises
    :class:`IpcConnectionClosedError` if the connection was lost.
    """

    def __init__(
        self,
        client: StreamOwner,
        name: str,
        parse: Callable[[bytes], T],
        callback: Callable[[T], Any] | None,
    ) -> None:
        self.name = name
        self._client = client
        self._parse = parse
        self._callback = callback
        self._queue: collections.deque[T] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._error: BaseException | None = None
        self._sid = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._callback_failed = False

    @property
    def closed(self) -> bool:
        return self._ended

    def _on_event(self, payload: bytes) -> None:
        try:
            item = self._parse(payload)
        except (ValueError, AttributeError, TypeError):
            logger.warning("ignoring a malformed event on subscription %s", self.name)
            return
        self._deliver(item)

    def _deliver(self, item: T) -> None:
        """Hand one parsed event to the callback or the queue (also used by direct channels)."""
        callback = self._callback
        if callback is None:
            self._queue.append(item)
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return
        try:
            result = callback(item)
            if result is not None and inspect.iscoroutine(result):
                task = asyncio.get_running_loop().create_task(result)
                self._tasks.add(task)
                task.add_done_callback(self._task_done)
        except Exception:
            self._callback_error()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._callback_error(task.exception())

    def _callback_error(self, exc: BaseException | None = None) -> None:
        if not self._callback_failed:
            self._callback_failed = True
            logger.error(
                "subscription callback for %s raised (logged once)",
                self.name,
                exc_info=exc if exc is not None else True,
            )

    def _on_end(self, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """End the subscription (tells the server; idempotent)."""
        if self._ended:
            return
        self._client._end_stream(self._sid)
        self._on_end(None)

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        while not self._queue:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        return self._queue.popleft()

    async def get(self, timeout: float = DEFAULT_TIMEOUT) -> T:
        """The next event, or IpcTimeoutError."""
        try:
            async with asyncio.timeout(timeout):
                return await self.__anext__()
        except TimeoutError:
            raise IpcTimeoutError(f"no event on {self.name} within {timeout} s") from None

    async def __aenter__(self) -> Subscription[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
