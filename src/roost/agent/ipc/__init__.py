"""The agent's local IPC server: Greengrass event-stream RPC over a Unix socket.

Components connect with the path in ``AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT`` and
authenticate with their ``SVCUID``; both awsiotsdk's ``GreengrassCoreIPCClientV2`` and Roost's
own :class:`roost.ipc.client.IpcClient` work. The server is a thin transport: it parses,
authorises (:mod:`roost.agent.authz`), calls the agent's :class:`~roost.agent.ipc_core.IpcCore`
or the :class:`~roost.agent.pubsub.PubSub` broker, and serialises.

Connection rules (the limits are :class:`IpcLimits`):

* At most ``max_connections`` connections at once. One more is accepted only to be told why:
  a PROTOCOL_ERROR ``agent at its connection limit (N)`` with code ``IPC_BUSY`` (Roost's client
  raises :class:`~roost.ipc.errors.AgentBusyError`; awsiotsdk sees a failed connect), then
  the server half-closes it and drops it when the client closes, or after ``refused_linger`` s.
  The listen backlog is sized for the cap, so bursts of connects wait instead of failing.
* The first frame must be CONNECT (``:version`` 0.1.0, payload ``{"authToken": ...}``) within
  ``connect_timeout`` seconds, else the connection is closed. Before CONNECT succeeds a frame
  may be at most ``preconnect_max_frame`` bytes (the CONNECT frame is ~150 bytes) and the read
  buffer is 2 KiB, so an unauthenticated peer costs almost nothing; after CONNECT frames may be
  ``max_message_size``; a request larger than that (up to ``max_skipped_message_size``, 16 MiB)
  is read without being buffered and refused alone with ``IPC_MESSAGE_TOO_LARGE``, the connection
  stays. The read buffer grows for a busy or large message and is trimmed back
  when the connection is idle. A wrong token gets a CONNECT_ACK without the accepted flag,
  then the connection is closed.
* A component (all its connections together) may hold ``max_streams_per_component`` open
  streams (subscriptions), and one connection ``max_streams_per_connection``; one more is
  answered with a ServiceError carrying code ``IPC_STREAM_LIMIT``; its other streams go on.
* Refusals (failed CONNECTs, over-cap connections, malformed or oversized frames, unauthorised
  operations) are logged once, then counted and summarised once per ``refusal_log_interval``
  (:class:`~roost.agent.logfile.RateLimitedLog`), then the recovery once: a flood of them
  cannot fill the disk.
* Every request gets an answer, a response or an application error; awsiotsdk's blocking calls
  would wait forever otherwise.
* A malformed frame (bad CRC, too large, garbage) gets a PROTOCOL_ERROR and closes only that
  connection. A consumer whose unsent data exceeds ``write_buffer_cap`` is disconnected
  rather than buffered without bound.

The socket file is created with mode 0660: components run as the agent's user or group on
Roost (no per-component users), and the SVCUID is what authenticates a connection.

The parts: :mod:`~roost.agent.ipc.server` (listening, fan-out), :mod:`~roost.agent.ipc.connection`
(framing, CONNECT, limits, buffers, streams), :mod:`~roost.agent.ipc.operations` (the handlers)
and :mod:`~roost.agent.ipc.limits` (:class:`IpcLimits`).
"""

from __future__ import annotations

from roost.agent.ipc.limits import IpcLimits
from roost.agent.ipc.operations import registered_operations
from roost.agent.ipc.server import IpcServer

__all__ = ["IpcLimits", "IpcServer", "registered_operations"]
