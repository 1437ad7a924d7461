"""The blocking IPC client, :class:`SyncIpcClient`: an :class:`~roost.ipc.async_client.IpcClient`
run on a private event-loop thread (subscription callbacks run on that thread)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any, Generic, TypeVar

from roost.ipc import rpc
from roost.ipc.async_client import IpcClient
from roost.ipc.protocol import DEFAULT_TIMEOUT
from roost.ipc.subscriptions import ConfigurationUpdate, Received, Subscription

T = TypeVar("T")


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (measured: about a third less CPU per message than asyncio's loop)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class SyncSubscription(Generic[T]):
    """Blocking view of a :class:`Subscription` (iterate it, or ``get(timeout)``)."""

    def __init__(self, owner: SyncIpcClient, sub: Subscription[T]) -> None:
        self._owner = owner
        self._sub = sub

    def get(self, timeout: float = DEFAULT_TIMEOUT) -> T:
        return self._owner._run(self._sub.get(timeout), timeout + 5)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        try:
            return self._owner._run(self._sub.__anext__(), None)
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        self._owner._loop.call_soon_threadsafe(self._sub.close)

    def __enter__(self) -> SyncSubscription[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncIpcClient:
    """The :class:`IpcClient` API for synchronous code (runs on a private event-loop thread)."""

    def __init__(
        self,
        socket_path: str | None = None,
        auth_token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._loop = _new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="roost-ipc-client", daemon=True)
        self._thread.start()
        try:
            self._client: IpcClient = self._run(
                IpcClient.connect(socket_path, auth_token, timeout=timeout), timeout + 5
            )
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()

    def call(self, operation: str, request: Mapping[str, Any], timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        return self._run(self._client.call(operation, request, timeout), timeout + 5)

    def publish(
        self,
        topic: str,
        payload: bytes | str | dict[str, Any] | list[Any],
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._run(self._client.publish(topic, payload, timeout=timeout), timeout + 5)

    def subscribe(
        self,
        topic: str,
        callback: Callable[[Received], Any] | None = None,
        receive_mode: str = rpc.RECEIVE_ALL_MESSAGES,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> SyncSubscription[Received]:
        """``callback`` runs on the client's event-loop thread."""
        sub = self._run(self._client.subscribe(topic, callback, receive_mode, timeout=timeout), timeout + 5)
        return SyncSubscription(self, sub)

    def request(self, topic: str, payload: Mapping[str, Any], timeout: float = DEFAULT_TIMEOUT) -> Any:
        return self._run(self._client.request(topic, payload, timeout), timeout + 5)

    def reply(
        self, request: Mapping[str, Any], payload: Mapping[str, Any], *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._run(self._client.reply(request, payload, timeout=timeout), timeout + 5)

    def get_configuration(
        self,
        key_path: list[str] | None = None,
        component_name: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Any:
        return self._run(self._client.get_configuration(key_path, component_name, timeout=timeout), timeout + 5)

    def update_configuration(
        self, key_path: list[str] | None, value_to_merge: Any, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._run(self._client.update_configuration(key_path, value_to_merge, timeout=timeout), timeout + 5)

    def subscribe_to_configuration_update(
        self,
        callback: Callable[[ConfigurationUpdate], Any] | None = None,
        key_path: list[str] | None = None,
        component_name: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> SyncSubscription[ConfigurationUpdate]:
        sub = self._run(
            self._client.subscribe_to_configuration_update(callback, key_path, component_name, timeout=timeout),
            timeout + 5,
        )
        return SyncSubscription(self, sub)

    def update_state(self, state: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._run(self._client.update_state(state, timeout=timeout), timeout + 5)

    def publish_to_iot_core(self, topic: str, payload: bytes | str, qos: int = 1, *, retain: bool = False,
                            timeout: float = DEFAULT_TIMEOUT) -> None:
        self._run(self._client.publish_to_iot_core(topic, payload, qos, retain=retain, timeout=timeout), timeout + 5)

    def subscribe_to_iot_core(self, topic: str, callback: Callable[[Received], Any] | None = None, qos: int = 1, *,
                              timeout: float = DEFAULT_TIMEOUT) -> SyncSubscription[Received]:
        """``callback`` runs on the client's event-loop thread."""
        sub = self._run(self._client.subscribe_to_iot_core(topic, callback, qos, timeout=timeout), timeout + 5)
        return SyncSubscription(self, sub)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self._run(self._client.close(), 5)
        self._stop_loop()

    def __enter__(self) -> SyncIpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
