"""tether for Python: real-time gateway connections that stay alive and lossless.

tether's sans-IO protocol machines (written once, in Rust) driven by asyncio over
``websockets``:

* :func:`connect` — a client that reconnects by itself, resumes its session since its cursor,
  repairs or reports every gap, delivers each event once and in order, and answers every
  request exactly once (``final``, ``duplicate`` or ``ambiguous``);
* :func:`serve` — a gateway that keeps what a client missed while it was away, answers resent
  requests with their original outcome, and speaks the PraisonAI gateway protocol (v1) as well
  as tether's v2.

The machines themselves are in :mod:`tether._native` (``ClientMachine``, ``ServerMachine``),
for other transports. Exceptions are in :mod:`tether.errors`.
"""

from ._native import (
    AwaitingCredentials,
    BadFrame,
    BadInput,
    ClientMachine,
    Close,
    Closed,
    Closing,
    Connected,
    Connecting,
    ConnectionRejected,
    Delivered,
    Disconnected,
    Gap,
    Lost,
    Notice,
    Open,
    Outcome,
    PresenceChanged,
    Reconnecting,
    Rejection,
    Request,
    RequestUpdate,
    ServerError,
    ServerMachine,
    ServerReset,
    SessionCreated,
    SessionDetached,
    SessionExpired,
    SessionReplaced,
    SessionResumed,
    Snapshot,
    StateChanged,
    __version__,
)
from ._types import Event, ServerEvent, State
from .client import Client, Connect, connect
from .errors import (
    AlreadyAnswered,
    AuthenticationFailed,
    ClientClosed,
    CommandError,
    ConfigError,
    EmptyContent,
    GaveUp,
    OutboxFull,
    ProtocolViolation,
    Rejected,
    RequestIdInUse,
    ReservedName,
    SendRefused,
    SnapshotError,
    TetherError,
    UnknownConnection,
    UnknownSession,
    VersionMismatch,
)
from .server import Gateway, RequestHandler, Serving, serve

__all__ = [
    "connect",
    "serve",
    "Client",
    "Connect",
    "Gateway",
    "Serving",
    "RequestHandler",
    "Event",
    "State",
    "ServerEvent",
    # client events and states
    "StateChanged",
    "Connecting",
    "Connected",
    "Disconnected",
    "Reconnecting",
    "AwaitingCredentials",
    "Rejection",
    "Delivered",
    "Notice",
    "ServerError",
    "Snapshot",
    "Gap",
    "Lost",
    "ServerReset",
    "SessionReplaced",
    "RequestUpdate",
    "Outcome",
    "BadFrame",
    "Closed",
    # server events
    "ConnectionRejected",
    "SessionCreated",
    "SessionResumed",
    "SessionDetached",
    "SessionExpired",
    "Request",
    "PresenceChanged",
    "BadInput",
    "Closing",
    # the machines and their transmits
    "ClientMachine",
    "ServerMachine",
    "Open",
    "Close",
    # errors
    "TetherError",
    "ConfigError",
    "ClientClosed",
    "Rejected",
    "AuthenticationFailed",
    "VersionMismatch",
    "ProtocolViolation",
    "GaveUp",
    "SendRefused",
    "OutboxFull",
    "EmptyContent",
    "RequestIdInUse",
    "CommandError",
    "UnknownSession",
    "UnknownConnection",
    "ReservedName",
    "AlreadyAnswered",
    "SnapshotError",
    "__version__",
]
