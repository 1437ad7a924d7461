"""The exception tree of :mod:`roost.ipc` (client SDK and event-stream codec).

::

    RoostError
     └── IpcError                          IPC_ERROR
          ├── FrameError                   FRAME_INVALID     a frame could not be decoded/encoded
          │    ├── FrameCrcError           FRAME_CRC         prelude or message CRC mismatch
          │    ├── FrameTooLargeError      FRAME_TOO_LARGE   total length above the limit
          │    └── FrameTruncatedError     FRAME_TRUNCATED   a header runs past its section
          ├── ProtocolError                PROTOCOL_ERROR    valid frames, wrong conversation
          ├── ConnectionRefusedByServer    CONNECT_REJECTED  SVCUID refused (Reauthenticate)
          ├── IpcConnectionClosedError     CONNECTION_CLOSED the connection went away (Retryable)
          │    └── AgentBusyError          IPC_BUSY          the agent refused the connection for load (Retryable)
          ├── IpcTimeoutError              IPC_TIMEOUT       no answer in time (Retryable)
          └── ServiceErrorResponse         SERVICE_ERROR_RESPONSE  the server answered with an error
               ├── UnauthorizedIpcError    UNAUTHORIZED
               ├── ResourceNotFoundIpcError NOT_FOUND
               ├── InvalidArgumentsIpcError INVALID_INPUT
               ├── ConflictIpcError        CONFLICT
               └── ServiceIpcError         SERVICE_ERROR
"""

from __future__ import annotations

from typing import Any

from roost.errors import Reauthenticate, Retryable, RoostError


class IpcError(RoostError):
    """Base of every error raised by :mod:`roost.ipc`."""

    code = "IPC_ERROR"


class FrameError(IpcError):
    """A byte stream is not a valid AWS event-stream message."""

    code = "FRAME_INVALID"


class FrameCrcError(FrameError):
    """The prelude CRC or the message CRC does not match."""

    code = "FRAME_CRC"


class FrameTooLargeError(FrameError):
    """The frame's total length is above the decoder's limit."""

    code = "FRAME_TOO_LARGE"


class FrameTruncatedError(FrameError):
    """A header or the frame itself ends before its declared length."""

    code = "FRAME_TRUNCATED"


class ProtocolError(IpcError):
    """The peer sent valid frames that break the event-stream RPC conversation."""

    code = "PROTOCOL_ERROR"


class ConnectionRefusedByServer(Reauthenticate, IpcError):
    """The server rejected the CONNECT (wrong or stale SVCUID): get a new token."""

    code = "CONNECT_REJECTED"


class IpcConnectionClosedError(Retryable, IpcError):
    """The IPC connection closed while a call was pending; reconnect and retry."""

    code = "CONNECTION_CLOSED"


class AgentBusyError(IpcConnectionClosedError):
    """The agent refused the connection because it is at its connection limit (or its listen
    backlog is full): retry later, with backoff. The message names the limit."""

    code = "IPC_BUSY"


class IpcTimeoutError(Retryable, IpcError):
    """No answer arrived within the call's timeout."""

    code = "IPC_TIMEOUT"


class ServiceErrorResponse(IpcError):
    """The server answered a call with an application error.

    ``error_type`` is the Greengrass shape name (``aws.greengrass#UnauthorizedError``),
    ``payload`` the decoded error document.
    """

    code = "SERVICE_ERROR_RESPONSE"

    def __init__(self, error_type: str, message: str, payload: Any = None) -> None:
        super().__init__(f"{error_type}: {message}" if message else error_type)
        self.error_type = error_type
        self.message = message
        self.payload = payload


class UnauthorizedIpcError(ServiceErrorResponse):
    """The component's accessControl does not allow this operation/resource."""

    code = "UNAUTHORIZED"


class ResourceNotFoundIpcError(ServiceErrorResponse):
    """The named component, configuration key or deployment does not exist."""

    code = "NOT_FOUND"


class InvalidArgumentsIpcError(ServiceErrorResponse):
    """The request was malformed (missing field, wrong type, bad topic)."""

    code = "INVALID_INPUT"


class ConflictIpcError(ServiceErrorResponse):
    """The request conflicts with the current state (stale timestamp, busy)."""

    code = "CONFLICT"


class ServiceIpcError(ServiceErrorResponse):
    """The server failed, or does not know the operation."""

    code = "SERVICE_ERROR"


_BY_ERROR_TYPE: dict[str, type[ServiceErrorResponse]] = {
    "aws.greengrass#UnauthorizedError": UnauthorizedIpcError,
    "aws.greengrass#ResourceNotFoundError": ResourceNotFoundIpcError,
    "aws.greengrass#ComponentNotFoundError": ResourceNotFoundIpcError,
    "aws.greengrass#InvalidArgumentsError": InvalidArgumentsIpcError,
    "aws.greengrass#ConflictError": ConflictIpcError,
    "aws.greengrass#FailedUpdateConditionCheckError": ConflictIpcError,
    "aws.greengrass#ServiceError": ServiceIpcError,
}


def error_from_response(error_type: str, payload: Any) -> ServiceErrorResponse:
    """Build the typed :class:`ServiceErrorResponse` for an APPLICATION_ERROR answer."""
    message = ""
    if isinstance(payload, dict):
        raw = payload.get("message") or payload.get("_message") or ""
        message = raw if isinstance(raw, str) else str(raw)
    cls = _BY_ERROR_TYPE.get(error_type, ServiceErrorResponse)
    return cls(error_type, message, payload)
