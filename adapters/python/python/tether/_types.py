"""The unions of event and state classes, for annotations and ``isinstance`` dispatch."""

from __future__ import annotations

from typing import Union

from ._native import (
    AwaitingCredentials,
    BadFrame,
    BadInput,
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
    PresenceChanged,
    Reconnecting,
    Request,
    RequestUpdate,
    ServerError,
    ServerReset,
    SessionCreated,
    SessionDetached,
    SessionExpired,
    SessionReplaced,
    SessionResumed,
    Snapshot,
    StateChanged,
)

#: What ``Client.events()`` yields.
Event = Union[
    StateChanged,
    Delivered,
    Notice,
    ServerError,
    Snapshot,
    Gap,
    Lost,
    ServerReset,
    SessionReplaced,
    RequestUpdate,
    BadFrame,
    Closed,
]

#: A client's state (``StateChanged.state``, the ``on_state`` callback's argument).
State = Union[Connecting, Connected, Disconnected, Reconnecting, AwaitingCredentials]

#: What ``Gateway.events()`` yields.
ServerEvent = Union[
    ConnectionRejected,
    SessionCreated,
    SessionResumed,
    SessionDetached,
    SessionExpired,
    Request,
    PresenceChanged,
    BadInput,
    Closing,
]
