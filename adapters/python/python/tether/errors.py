"""The exceptions of tether. Every one is a :class:`TetherError`.

Client side, a connection that ends for good raises a :class:`ClientClosed` subclass naming why
(:class:`AuthenticationFailed`, :class:`VersionMismatch`, :class:`Rejected`,
:class:`ProtocolViolation`, :class:`GaveUp`); ``send`` refuses with :class:`SendRefused`
subclasses. Server side, commands refuse with :class:`CommandError` subclasses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from ._native import Closed

__all__ = [
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
]


class TetherError(Exception):
    """Base class of every tether exception."""


class ConfigError(TetherError, ValueError):
    """An option the core refuses (a version range with min > max, a negative duration...):
    fix the argument."""


class ClientClosed(TetherError):
    """The client has stopped for good: create a new one (with ``resume=`` to keep the session).

    ``closed`` is the client's last event when the stop came from the connection (``None``
    when the client was simply used after it stopped)."""

    closed: Optional[Closed]

    def __init__(self, message: str, closed: Optional[Closed] = None) -> None:
        super().__init__(message)
        self.closed = closed


class Rejected(ClientClosed):
    """The server refused the client for good (``closed.rejection`` has its code, text and
    advised next step). The client made no further attempt."""


class AuthenticationFailed(Rejected):
    """Missing, wrong or expired credentials (``auth_required``, ``auth_unauthorized``): get a
    valid token."""


class VersionMismatch(Rejected):
    """No protocol version both ends speak (``protocol_unsupported``, ``version_unsupported``):
    upgrade the client or the server, as ``closed.rejection.next_step`` says."""


class ProtocolViolation(ClientClosed):
    """The server broke the protocol (a version outside the range offered, a broken
    handshake): it is not a tether or PraisonAI gateway, or it is buggy."""


class GaveUp(ClientClosed):
    """The reconnect limits (``max_attempts``, ``max_elapsed``) ran out; ``closed.last`` says
    what ended the last attempt. Check that the server is up and reachable."""


class SendRefused(TetherError):
    """``send`` refused the request (nothing was sent)."""


class OutboxFull(SendRefused):
    """Too many unanswered requests (``outbox_capacity``): await some outcomes first."""


class EmptyContent(SendRefused):
    """Empty content: the PraisonAI server accepts it but never answers. Send something."""


class RequestIdInUse(SendRefused):
    """The ``request_id`` belongs to a request still unanswered: use another one."""


class CommandError(TetherError):
    """A server command was refused."""


class UnknownSession(CommandError):
    """No such session (never existed, expired or evicted): drop the work."""


class UnknownConnection(CommandError):
    """No such connection (already closed): nothing to do."""


class ReservedName(CommandError):
    """The event type is a protocol frame type (``hello_ok``, ``replay``, ...) or a field is
    one the server sets (``type``, ``cursor``, ``seq``): rename it."""


class AlreadyAnswered(CommandError):
    """The request already got its final response."""


class SnapshotError(TetherError):
    """A snapshot (file) that cannot be read or restored: written by an incompatible version,
    or not a snapshot. Move it aside to start empty."""
