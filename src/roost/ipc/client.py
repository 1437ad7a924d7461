"""Roost's Greengrass IPC client: asyncio, no AWS packages needed.

Inside a component::

    async with await IpcClient.connect() as ipc:       # socket and SVCUID from the environment
        await ipc.publish("local/result", [6.57, 4.87])
        async for msg in await ipc.subscribe("local/inference"):
            print(msg.topic, msg.json)

``connect()`` reads ``AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT`` and ``SVCUID``
(falling back to ``ROOST_IPC_SOCKET`` and ``ROOST_SVCUID``). Every call has a timeout; when the
connection closes, every pending call fails with
:class:`~roost.ipc.errors.IpcConnectionClosedError`. Server errors raise the typed
:class:`~roost.ipc.errors.ServiceErrorResponse` subclass (``UnauthorizedIpcError``, ...).

:class:`SyncIpcClient` offers the same methods for plain scripts; it runs an ``IpcClient`` on a
private event-loop thread (subscription callbacks run on that thread).

Request/reply (:meth:`IpcClient.request`) publishes a JSON message carrying ``replyTo`` (this
client's reply topic, ``roost/reply/<hex>``) and ``correlationId``; the responder answers with
:meth:`IpcClient.reply`, i.e. publishes a JSON object with the same ``correlationId`` to
``replyTo``. Both sides need pub/sub policies for the request topic and for ``roost/reply/*``.

The client is in four modules: :mod:`roost.ipc.protocol` (the wire side), :mod:`roost.ipc.subscriptions`,
:mod:`roost.ipc.async_client` and :mod:`roost.ipc.sync_client`; this module re-exports what users import.
"""

from __future__ import annotations

from roost.ipc.async_client import IpcClient
from roost.ipc.errors import (
    AgentBusyError,
    ConnectionRefusedByServer,
    FrameError,
    InvalidArgumentsIpcError,
    IpcConnectionClosedError,
    IpcError,
    IpcTimeoutError,
    ProtocolError,
    error_from_response,
)
from roost.ipc.protocol import (
    DEFAULT_TIMEOUT,
    ENV_ROOST_SOCKET,
    ENV_ROOST_TOKEN,
    ENV_SOCKET,
    ENV_TOKEN,
    REPLY_TOPIC_PREFIX,
)
from roost.ipc.subscriptions import ConfigurationUpdate, Received, Subscription
from roost.ipc.sync_client import SyncIpcClient, SyncSubscription

__all__ = [
    "DEFAULT_TIMEOUT",
    "ENV_ROOST_SOCKET",
    "ENV_ROOST_TOKEN",
    "ENV_SOCKET",
    "ENV_TOKEN",
    "REPLY_TOPIC_PREFIX",
    "AgentBusyError",
    "ConfigurationUpdate",
    "ConnectionRefusedByServer",
    "FrameError",
    "InvalidArgumentsIpcError",
    "IpcClient",
    "IpcConnectionClosedError",
    "IpcError",
    "IpcTimeoutError",
    "ProtocolError",
    "Received",
    "Subscription",
    "SyncIpcClient",
    "SyncSubscription",
    "error_from_response",
]
