"""The asyncio IPC client, :class:`IpcClient` (see :mod:`roost.ipc.client` for how to use it)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from roost.ipc import rpc
from roost.ipc.direct import DirectEnds
from roost.ipc.errors import (
    AgentBusyError,
    ConnectionRefusedByServer,
    InvalidArgumentsIpcError,
    IpcConnectionClosedError,
    IpcError,
    IpcTimeoutError,
    ProtocolError,
    error_from_response,
)
from roost.ipc.eventstream import Message, encode_frame
from roost.ipc.protocol import (
    _NOT_CONFIGURED,
    _PUBLISH_HEADER,
    _PUBLISH_HEADER_DEFERRED,
    DEFAULT_TIMEOUT,
    ENV_ROOST_SOCKET,
    ENV_ROOST_TOKEN,
    ENV_SOCKET,
    ENV_TOKEN,
    REPLY_TOPIC_PREFIX,
    _ClientProtocol,
    _connect_socket,
    _dumps,
    _expire,
    _fail,
    _full_operation,
    _loads,
    _publish_message,
    _Stream,
)
from roost.ipc.subscriptions import (
    ConfigurationUpdate,
    Received,
    Subscription,
    _parse_configuration_event,
    _parse_iot_core_message,
    _parse_subscription_message,
)

logger = logging.getLogger(__name__)


class IpcClient:
    """An asyncio Greengrass IPC connection. Create it with :meth:`connect`."""

    def __init__(self, socket_path: str, *, max_message_size: int = 16 * 1024 * 1024, direct: bool = False) -> None:
        self.socket_path = socket_path
        #: requests ask the agent for direct channels (roost.ipc.direct)
        self._direct_requests = direct
        self._direct: DirectEnds | None = None
        self._max_message_size = max_message_size
        # Frames larger than this are refused here with InvalidArgumentsIpcError: the agent would
        # answer them by closing the whole connection.
        self.max_outgoing = rpc.MAX_FRAME_SIZE
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._next_sid = 1
        self._closed: IpcConnectionClosedError | None = None
        self._closing_by_user = False
        self._connect_future: asyncio.Future[bool] = self._loop.create_future()
        self._lost_future: asyncio.Future[None] = self._loop.create_future()
        self._reply_topic = REPLY_TOPIC_PREFIX + uuid.uuid4().hex
        self._reply_sub: Subscription[Received] | None = None
        self._reply_lock = asyncio.Lock()
        self._replies: dict[str, asyncio.Future[Any]] = {}
        self._nowait_failed = False
        self._cid_count = 0
        self._out: list[bytes] = []
        self._corked = False

    # -- connection ---------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        socket_path: str | None = None,
        auth_token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        direct: bool = False,
    ) -> IpcClient:
        """Connect and authenticate; raises ConnectionRefusedByServer for a refused token.

        ``direct=True``: :meth:`request` asks the agent for a direct channel to a responder that
        offers one (:mod:`roost.ipc.direct`), and falls back to publishing through the agent.
        """
        path = socket_path or os.environ.get(ENV_SOCKET) or os.environ.get(ENV_ROOST_SOCKET)
        token = auth_token or os.environ.get(ENV_TOKEN) or os.environ.get(ENV_ROOST_TOKEN)
        if not path:
            raise IpcError(f"no IPC socket: pass socket_path or set {ENV_SOCKET}", code=_NOT_CONFIGURED)
        if not token:
            raise IpcError(f"no IPC auth token: pass auth_token or set {ENV_TOKEN}", code="IPC_NOT_CONFIGURED")
        client = cls(path, direct=direct)
        loop = client._loop
        sock = _connect_socket(path)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_unix_connection(lambda: _ClientProtocol(client, client._max_message_size),
                                                  sock=sock)
                assert client._transport is not None
                client._transport.write(rpc.connect_message(token))
                accepted = await client._connect_future
        except TimeoutError:
            if client._transport is None:
                sock.close()
            client._abort(None)
            raise IpcTimeoutError(f"no CONNECT_ACK from the IPC server at {path} within {timeout} s") from None
        except OSError as err:
            sock.close()
            raise IpcConnectionClosedError(f"cannot connect to the IPC socket {path}: {err}") from err
        if not accepted:
            client._abort(None)
            raise ConnectionRefusedByServer(f"the IPC server at {path} refused the auth token (SVCUID)")
        return client

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def close(self) -> None:
        """Close the connection; pending calls fail with IpcConnectionClosedError."""
        if self._closed is None:
            self._closing_by_user = True
            if self._transport is not None:
                self._flush_out()
                self._transport.close()
            else:
                self._connection_lost(None)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.shield(self._lost_future)

    async def __aenter__(self) -> IpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _direct_ends(self) -> DirectEnds:
        if self._direct is None:
            self._direct = DirectEnds(self)
        return self._direct

    def _abort(self, error: IpcError | None) -> None:
        if error is not None and self._closed is None:
            self._closed = IpcConnectionClosedError(f"IPC connection to {self.socket_path} failed: {error}")
        if self._transport is not None:
            self._transport.abort()

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._closed is None:
            if self._closing_by_user:
                reason = "closed by the client"
            elif exc is not None:
                reason = f"lost: {exc}"
            else:
                reason = "closed by the server"
            self._closed = IpcConnectionClosedError(f"IPC connection to {self.socket_path} {reason}")
        error = self._closed
        if self._direct is not None:
            self._direct.close()
        if not self._connect_future.done():
            self._connect_future.set_exception(error)
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            if stream.future is not None and not stream.future.done():
                stream.future.set_exception(error)
            elif stream.on_end is not None:
                stream.on_end(None if self._closing_by_user else error)
        replies, self._replies = self._replies, {}
        for fut in replies.values():
            if not fut.done():
                fut.set_exception(error)
        if not self._lost_future.done():
            self._lost_future.set_result(None)

    def _on_message(self, message: Message) -> None:
        headers = message.headers
        mtype = headers.get(rpc.H_MESSAGE_TYPE)
        if mtype == rpc.APPLICATION_MESSAGE or mtype == rpc.APPLICATION_ERROR:
            sid = headers.get(rpc.H_STREAM_ID)
            stream = self._streams.get(sid)  # type: ignore[arg-type]
            if stream is None:
                return
            future = stream.future
            terminate = headers.get(rpc.H_MESSAGE_FLAGS, 0) & rpc.FLAG_TERMINATE_STREAM
            if mtype == rpc.APPLICATION_ERROR:
                del self._streams[sid]  # type: ignore[arg-type]
                try:
                    doc = _loads(message.payload) if message.payload else {}
                except ValueError:
                    doc = {"message": message.payload.decode("utf-8", "replace")}
                error = error_from_response(str(headers.get(rpc.H_SERVICE_MODEL_TYPE, "")), doc)
                if future is not None and not future.done():
                    future.set_exception(error)
                elif stream.on_end is not None:
                    stream.on_end(error)
                return
            if future is None:
                if terminate:
                    del self._streams[sid]  # type: ignore[arg-type]
                    if stream.on_end is not None:
                        stream.on_end(None)
                return
            if not future.done():
                future.set_result(message.payload)
            elif stream.on_event is not None and rpc.H_SERVICE_MODEL_TYPE in headers:
                stream.on_event(message.payload)
            if terminate:
                self._streams.pop(sid, None)  # type: ignore[arg-type]
                if stream.on_end is not None:
                    stream.on_end(None)
        elif mtype == rpc.CONNECT_ACK:
            if not self._connect_future.done():
                flags = headers.get(rpc.H_MESSAGE_FLAGS, 0)
                self._connect_future.set_result(bool(flags & rpc.FLAG_CONNECTION_ACCEPTED))
        elif mtype == rpc.PING:
            self._write(rpc.ping_response(message.payload))
        elif mtype == rpc.PROTOCOL_ERROR or mtype == rpc.INTERNAL_ERROR:
            text = message.payload.decode("utf-8", "replace")
            try:
                doc = _loads(message.payload) if message.payload else {}
            except ValueError:
                doc = {}
            if isinstance(doc, dict) and doc.get("code") == AgentBusyError.code and self._closed is None:
                # The agent is at its connection limit: a specific, retryable error with its words.
                self._closed = AgentBusyError(
                    f"the IPC server at {self.socket_path} refused the connection: {doc.get('message', text)}"
                )
                self._abort(None)
                return
            self._abort(ProtocolError(f"the IPC server reported a protocol error: {text}"))

    def _write(self, data: bytes) -> None:
        if self._closed is not None:
            raise self._closed
        self._out_write(data)

    def _out_write(self, data: bytes) -> None:
        """Write coalescing: frames written while handling received data (subscription callbacks
        answering a batch of requests) go out in one ``send`` when the batch ends."""
        if self._corked:
            self._out.append(data)
            return
        transport = self._transport
        assert transport is not None
        transport.write(data)

    def _flush_out(self) -> None:
        out = self._out
        if out and self._transport is not None and self._closed is None:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _begin_batch(self) -> bool:
        was = self._corked
        self._corked = True
        return was

    def _end_batch(self, was_corked: bool) -> None:
        if not was_corked:
            self._corked = False
            self._flush_out()

    def _end_stream(self, sid: int) -> None:
        if self._streams.pop(sid, None) is not None and self._closed is None and self._transport is not None:
            self._out_write(rpc.terminate_stream(sid))

    # -- calls -------------------------------------------------------------------------------

    def _send(
        self,
        header: bytes,
        payload: bytes,
        on_event: Callable[[bytes], None] | None = None,
        on_end: Callable[[BaseException | None], None] | None = None,
    ) -> tuple[int, asyncio.Future[bytes]]:
        """Open a stream with its first message; the future gets the first answer's payload."""
        if self._closed is not None:
            raise self._closed
        sid = self._next_sid
        self._next_sid = sid + 1
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._streams[sid] = _Stream(future, on_event, on_end)
        assert self._transport is not None
        frame = encode_frame(header + rpc.stream_id_header(sid), payload)
        self._check_size(frame)
        self._out_write(frame)
        return sid, future

    async def _invoke(
        self,
        operation: str,
        header: bytes,
        payload: bytes,
        timeout: float,
        on_event: Callable[[bytes], None] | None = None,
        on_end: Callable[[BaseException | None], None] | None = None,
    ) -> tuple[int, bytes]:
        sid, future = self._send(header, payload, on_event, on_end)
        handle = self._loop.call_later(
            timeout,
            _expire,
            future,
            lambda: IpcTimeoutError(f"no answer to {rpc.short_name(operation)} within {timeout} s"),
        )
        try:
            return sid, await future
        except BaseException:
            self._end_stream(sid)
            raise
        finally:
            handle.cancel()

    async def _call_raw(self, operation: str, payload: bytes, timeout: float) -> bytes:
        op = _full_operation(operation)
        header = rpc.header_prefix(rpc.APPLICATION_MESSAGE, 0, rpc.request_model(op), op)
        return (await self._invoke(op, header, payload, timeout))[1]

    async def call(
        self, operation: str, request: Mapping[str, Any], timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """Any one-shot operation (``"GetConfiguration"`` or ``"aws.greengrass#GetConfiguration"``)."""
        raw = await self._call_raw(operation, _dumps(request), timeout)
        result = _loads(raw) if raw else {}
        if not isinstance(result, dict):
            raise ProtocolError(f"the {rpc.short_name(operation)} response is not a JSON object")
        return result

    async def publish(
        self,
        topic: str,
        payload: bytes | str | dict[str, Any] | list[Any],
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Publish to local pub/sub: dict/list as a JSON message, bytes/str as a binary message."""
        body = _dumps({"topic": topic, "publishMessage": _publish_message(payload)})
        await self._invoke(rpc.OP_PUBLISH_TO_TOPIC, _PUBLISH_HEADER, body, timeout)

    def publish_nowait(self, topic: str, payload: bytes | str | dict[str, Any] | list[Any]) -> None:
        """Publish without waiting for the server's answer (for callbacks on hot paths).

        The message is queued on the socket before this returns, so messages keep their order;
        a failure (unauthorised, invalid topic) is logged once per client instead of raised.
        """
        body = _dumps({"topic": topic, "publishMessage": _publish_message(payload)})
        self._send_nowait(body, self._nowait_done)

    def _send_nowait(self, body: bytes, on_end: Callable[[BaseException | None], None]) -> int:
        """Publish without a future: ``on_end`` gets the error, or None on success."""
        if self._closed is not None:
            raise self._closed
        sid = self._next_sid
        self._next_sid = sid + 1
        frame = encode_frame(_PUBLISH_HEADER_DEFERRED + rpc.stream_id_header(sid), body)
        self._check_size(frame)
        self._streams[sid] = _Stream(None, None, on_end)
        assert self._transport is not None
        self._out_write(frame)
        return sid

    def _check_size(self, frame: bytes) -> None:
        """Refuse a message the agent would refuse by closing the whole connection."""
        if len(frame) > self.max_outgoing:
            raise InvalidArgumentsIpcError(
                "aws.greengrass#InvalidArgumentsError",
                f"message of {len(frame)} bytes exceeds the IPC limit of {self.max_outgoing} bytes "
                f"(payloads up to {rpc.MAX_PAYLOAD_SIZE} bytes)")

    def _nowait_done(self, error: BaseException | None) -> None:
        if error is None or isinstance(error, IpcConnectionClosedError):
            return
        if not self._nowait_failed:
            self._nowait_failed = True
            logger.error("a publish_nowait/reply_nowait failed (logged once per client): %s", error)

    async def _open_subscription(
        self,
        operation: str,
        request: dict[str, Any],
        subscription: Subscription[Any],
        timeout: float,
    ) -> None:
        header = rpc.header_prefix(rpc.APPLICATION_MESSAGE, 0, rpc.request_model(operation), operation)
        if self._closed is not None:
            raise self._closed
        subscription._sid = self._next_sid
        await self._invoke(operation, header, _dumps(request), timeout, subscription._on_event, subscription._on_end)

    async def subscribe(
        self,
        topic: str,
        callback: Callable[[Received], Any] | None = None,
        receive_mode: str = rpc.RECEIVE_ALL_MESSAGES,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        direct: bool = False,
    ) -> Subscription[Received]:
        """Subscribe to a topic filter (MQTT wildcards allowed).

        With a ``callback`` (plain function or coroutine function) every message goes to it;
        without, iterate the returned :class:`Subscription`. ``direct=True`` (a topic without
        wildcards): also offer requesters a direct channel for it (:mod:`roost.ipc.direct`); their
        requests arrive the same way and :meth:`reply` answers over the channel.
        """
        sub: Subscription[Received] = Subscription(self, topic, _parse_subscription_message, callback)
        await self._open_subscription(
            rpc.OP_SUBSCRIBE_TO_TOPIC, {"topic": topic, "receiveMode": receive_mode}, sub, timeout
        )
        if direct:
            await self._direct_ends().offer(sub, topic, timeout)
        return sub

    async def _reply_subscription(self) -> Subscription[Received]:
        async with self._reply_lock:
            if self._reply_sub is None or self._reply_sub.closed:
                self._reply_sub = await self.subscribe(self._reply_topic, self._on_reply)
            return self._reply_sub

    def _on_reply(self, message: Received) -> None:
        doc = message.json
        if isinstance(doc, dict):
            cid = doc.get("correlationId")
            if isinstance(cid, str):
                future = self._replies.get(cid)
                if future is not None and not future.done():
                    future.set_result(doc)

    @property
    def reply_topic(self) -> str:
        return self._reply_topic

    async def request(self, topic: str, payload: Mapping[str, Any], timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Publish ``payload`` with ``replyTo``/``correlationId``; return the reply document."""
        if self._reply_sub is None or self._reply_sub.closed:
            await self._reply_subscription()
        channel = None
        if self._direct_requests:
            channel = await self._direct_ends().channel_for(topic, self._reply_topic, timeout)
        self._cid_count += 1
        cid = f"{self._cid_count:x}"  # unique per client; the reply topic is unique per client
        future: asyncio.Future[Any] = self._loop.create_future()
        self._replies[cid] = future
        message = dict(payload)
        message["replyTo"] = self._reply_topic
        message["correlationId"] = cid
        handle = self._loop.call_later(
            timeout,
            _expire,
            future,
            lambda: IpcTimeoutError(f"no reply to the request on {topic!r} within {timeout} s"),
        )
        sid: int | None = None
        try:
            if channel is not None:
                self._direct_ends().send(channel, message)
            else:
                body = _dumps({"topic": topic, "publishMessage": {"jsonMessage": {"message": message}}})
                # The publish's own answer is not awaited: a failure (unauthorised, ...) is forwarded
                # to the reply future; a success may arrive lazily (rpc.H_DEFER_ACK).
                sid = self._send_nowait(body, lambda error: _fail(future, error))
            return await future
        except BaseException:
            if sid is not None:
                self._streams.pop(sid, None)
            raise
        finally:
            handle.cancel()
            self._replies.pop(cid, None)

    @property
    def direct_channel_count(self) -> int:
        """How many direct request/reply channels this client holds open as a requester (roost.ipc.direct)."""
        return 0 if self._direct is None else self._direct.channel_count

    async def reply(
        self, request: Mapping[str, Any], payload: Mapping[str, Any], *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Answer a :meth:`request`: publish ``payload`` + its ``correlationId`` to its ``replyTo``."""
        reply_to = request.get("replyTo")
        cid = request.get("correlationId")
        if not isinstance(reply_to, str) or not isinstance(cid, str):
            raise IpcError("the message has no replyTo/correlationId to answer", code="NOT_A_REQUEST")
        message = dict(payload)
        message["correlationId"] = cid
        if self._direct is not None and self._direct.reply(reply_to, message):
            return
        await self.publish(reply_to, message, timeout=timeout)

    def reply_nowait(self, request: Mapping[str, Any], payload: Mapping[str, Any]) -> None:
        """:meth:`reply` without waiting for the server's answer (see :meth:`publish_nowait`)."""
        reply_to = request.get("replyTo")
        cid = request.get("correlationId")
        if not isinstance(reply_to, str) or not isinstance(cid, str):
            raise IpcError("the message has no replyTo/correlationId to answer", code="NOT_A_REQUEST")
        message = dict(payload)
        message["correlationId"] = cid
        if self._direct is not None and self._direct.reply(reply_to, message):
            return
        self.publish_nowait(reply_to, message)

    async def get_configuration(
        self,
        key_path: list[str] | None = None,
        component_name: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Any:
        """The configuration at ``key_path`` (a leaf comes back as ``{lastKey: value}``, as in Greengrass)."""
        request: dict[str, Any] = {"keyPath": list(key_path or [])}
        if component_name is not None:
            request["componentName"] = component_name
        return (await self.call(rpc.OP_GET_CONFIGURATION, request, timeout)).get("value")

    async def update_configuration(
        self,
        key_path: list[str] | None,
        value_to_merge: Any,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Merge ``value_to_merge`` at ``key_path`` of this component's configuration."""
        request = {"keyPath": list(key_path or []), "timestamp": time.time(), "valueToMerge": value_to_merge}
        await self.call(rpc.OP_UPDATE_CONFIGURATION, request, timeout)

    async def subscribe_to_configuration_update(
        self,
        callback: Callable[[ConfigurationUpdate], Any] | None = None,
        key_path: list[str] | None = None,
        component_name: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Subscription[ConfigurationUpdate]:
        request: dict[str, Any] = {"keyPath": list(key_path or [])}
        if component_name is not None:
            request["componentName"] = component_name
        sub: Subscription[ConfigurationUpdate] = Subscription(
            self, f"configuration of {component_name or 'self'}", _parse_configuration_event, callback
        )
        await self._open_subscription(rpc.OP_SUBSCRIBE_TO_CONFIGURATION_UPDATE, request, sub, timeout)
        return sub

    async def update_state(self, state: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Report ``RUNNING`` or ``ERRORED``."""
        await self.call(rpc.OP_UPDATE_STATE, {"state": state}, timeout)

    async def publish_to_iot_core(self, topic: str, payload: bytes | str, qos: int = 1, *, retain: bool = False,
                                  timeout: float = DEFAULT_TIMEOUT) -> None:
        """Publish to the agent's IoT Core broker (``--mqtt-broker``; docs/iotcore.md), QoS 0 or 1."""
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        request = {"topicName": topic, "qos": str(qos), "payload": base64.b64encode(data).decode(), "retain": retain}
        await self.call(rpc.OP_PUBLISH_TO_IOT_CORE, request, timeout)

    async def subscribe_to_iot_core(self, topic: str, callback: Callable[[Received], Any] | None = None,
                                    qos: int = 1, *, timeout: float = DEFAULT_TIMEOUT) -> Subscription[Received]:
        """Subscribe to a topic filter on the agent's IoT Core broker; messages arrive as :class:`Received`
        (binary payload), to ``callback`` or by iterating the subscription."""
        sub: Subscription[Received] = Subscription(self, f"IoT Core {topic}", _parse_iot_core_message, callback)
        await self._open_subscription(rpc.OP_SUBSCRIBE_TO_IOT_CORE, {"topicName": topic, "qos": str(qos)}, sub,
                                      timeout)
        return sub
