"""Roost's Greengrass-compatible IPC: the client SDK components import, and the event-stream
codec shared with the agent's server. Needs no AWS package."""

from roost.ipc.client import (
    ConfigurationUpdate,
    IpcClient,
    Received,
    Subscription,
    SyncIpcClient,
    SyncSubscription,
)
from roost.ipc.errors import (
    AgentBusyError,
    ConflictIpcError,
    ConnectionRefusedByServer,
    FrameError,
    InvalidArgumentsIpcError,
    IpcConnectionClosedError,
    IpcError,
    IpcTimeoutError,
    ProtocolError,
    ResourceNotFoundIpcError,
    ServiceErrorResponse,
    ServiceIpcError,
    UnauthorizedIpcError,
)

__all__ = [
    "AgentBusyError",
    "ConfigurationUpdate",
    "ConflictIpcError",
    "ConnectionRefusedByServer",
    "FrameError",
    "InvalidArgumentsIpcError",
    "IpcClient",
    "IpcConnectionClosedError",
    "IpcError",
    "IpcTimeoutError",
    "ProtocolError",
    "Received",
    "ResourceNotFoundIpcError",
    "ServiceErrorResponse",
    "ServiceIpcError",
    "Subscription",
    "SyncIpcClient",
    "SyncSubscription",
    "UnauthorizedIpcError",
]
