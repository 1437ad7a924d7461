"""The IPC server's resource bounds (:class:`IpcLimits`) and the open-file limit they need."""


from __future__ import annotations

import contextlib
import logging
import resource
from dataclasses import dataclass
from typing import Final

from roost.errors import InvalidInputError
from roost.ipc import rpc

logger = logging.getLogger(__name__)

MAX_PAYLOAD_SIZE: Final = rpc.MAX_PAYLOAD_SIZE
#: A 1 MiB binary message grows by a third in base64, plus headers and JSON framing.
DEFAULT_MAX_MESSAGE_SIZE: Final = rpc.MAX_FRAME_SIZE
DEFAULT_WRITE_BUFFER_CAP: Final = 8 * 1024 * 1024
#: The event-stream message maximum of awscrt (AWS_EVENT_STREAM_MAX_MESSAGE_SIZE), which the nucleus
#: and awsiotsdk run on: the largest IPC message Greengrass carries.
MAX_EVENT_STREAM_MESSAGE: Final = 16 * 1024 * 1024


@dataclass(frozen=True)
class IpcLimits:
    """The IPC server's resource bounds (see the module docstring for what each one does)."""

    #: Connections held at once (authenticated or not); one more is refused with IPC_BUSY.
    max_connections: int = 1024
    #: Seconds a new connection has to complete CONNECT.
    connect_timeout: float = 5.0
    #: Largest frame accepted before CONNECT succeeds (the CONNECT frame itself is tiny).
    preconnect_max_frame: int = 8 * 1024
    #: Largest frame accepted after CONNECT.
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    #: Largest frame refused on its own after CONNECT: a request above ``max_message_size`` up to
    #: this size (awscrt's event-stream maximum, 16 MiB, what Greengrass' IPC carries) is read
    #: without being buffered and answered ``IPC_MESSAGE_TOO_LARGE``; the connection stays. Beyond
    #: it, FRAME_TOO_LARGE closes the connection.
    max_skipped_message_size: int = MAX_EVENT_STREAM_MESSAGE
    #: Open streams (subscriptions) per component, across all its connections.
    max_streams_per_component: int = 1024
    #: Open streams per connection.
    max_streams_per_connection: int = 1024
    #: Unsent bytes per connection before a slow consumer is dropped.
    write_buffer_cap: int = DEFAULT_WRITE_BUFFER_CAP
    #: Seconds between two summary lines of repeated refusals.
    refusal_log_interval: float = 60.0
    #: Seconds between housekeeping passes (trimming idle read buffers, refusal summaries).
    housekeeping_interval: float = 10.0
    #: Seconds a refused (over-cap) connection may stay open to read its refusal.
    refused_linger: float = 2.0

    def __post_init__(self) -> None:
        for name in ("max_connections", "preconnect_max_frame", "max_message_size", "max_streams_per_component",
                     "max_streams_per_connection", "write_buffer_cap", "max_skipped_message_size"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"IPC limit {name} must be at least 1, got {getattr(self, name)}",
                                        code="INVALID_IPC_LIMIT")
        for name in ("connect_timeout", "refusal_log_interval", "housekeeping_interval", "refused_linger"):
            if getattr(self, name) <= 0:
                raise InvalidInputError(f"IPC limit {name} must be positive, got {getattr(self, name)}",
                                        code="INVALID_IPC_LIMIT")

    @property
    def backlog(self) -> int:
        """Listen backlog sized for the cap (the kernel clamps it to net.core.somaxconn)."""
        return max(128, min(self.max_connections, 65535))


def _ensure_fd_limit(max_connections: int) -> None:
    """Raise the soft RLIMIT_NOFILE so the connection cap, not EMFILE, is what limits connections."""
    wanted = max_connections + 256  # components' pipes, the store, log files, sockets to the hub
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if new > soft:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
                soft = new
    if soft != resource.RLIM_INFINITY and soft < wanted:
        logger.warning(
            "the open-file limit (%d) is below what %d IPC connections need (~%d): connections may be "
            "refused by the OS before the agent's own limit; raise the hard limit (ulimit -Hn)",
            soft, max_connections, wanted,
        )
