"""tether-core's sans-IO machines (Rust, PyO3): the client and server machines and their events.

Drive contract: after every ``handle_*`` call or command, drain ``poll_transmits()`` and
``poll_events()``, then arm a timer for ``poll_timeout()`` and call ``handle_timeout(now)`` when
it passes. ``now`` is the application's monotonic clock in seconds; the machines read none.
"""

from typing import Any, ClassVar, Dict, List, Literal, Mapping, Optional, Sequence, Tuple, Union, final

from .errors import ClientClosed

__version__: str

JSON = Any

# --------------------------------------------------------------------------- transmits

@final
class Open:
    """Transmit: open a new socket, then call ``handle_connected`` (or ``handle_connect_failed``)."""

    __match_args__: ClassVar[Tuple[()]]
    def __init__(self) -> None: ...

@final
class Close:
    """Transmit: close the socket with this code and reason, and feed nothing more from it."""

    __match_args__: ClassVar[Tuple[str, str]]
    def __init__(self, code: int, reason: str) -> None: ...
    @property
    def code(self) -> int:
        """WebSocket close code."""
    @property
    def reason(self) -> str:
        """Close reason."""

# --------------------------------------------------------------------------- client states

@final
class Connecting:
    """State: opening a socket and handshaking (``attempt`` 0 is the first connection)."""

    __match_args__: ClassVar[Tuple[str]]
    @property
    def attempt(self) -> int: ...

@final
class Connected:
    """State: the handshake is done; events flow."""

    __match_args__: ClassVar[Tuple[str, str, str, str]]
    @property
    def version(self) -> int:
        """The negotiated protocol version (1: PraisonAI, 2: tether)."""
    @property
    def session_id(self) -> str: ...
    @property
    def resumed(self) -> bool:
        """Whether the session asked for was resumed (not a new one)."""
    @property
    def legacy(self) -> bool:
        """Whether the legacy ``join`` handshake was used."""

@final
class Rejection:
    """A server's refusal: its code, text, advised next step and minimum wait."""

    __match_args__: ClassVar[Tuple[str, str, str, str]]
    @property
    def code(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def next_step(self) -> Optional[str]: ...
    @property
    def retry_after(self) -> Optional[float]: ...

@final
class Disconnected:
    """State: the connection ended; the client reconnects by itself."""

    __match_args__: ClassVar[Tuple[str, str, str, str]]
    @property
    def cause(
        self,
    ) -> Literal[
        "connect_failed", "closed", "handshake_timeout", "heartbeat_timeout", "rejected", "gap_repair", "other"
    ]: ...
    @property
    def code(self) -> Optional[int]: ...
    @property
    def reason(self) -> str: ...
    @property
    def rejection(self) -> Optional[Rejection]: ...

@final
class Reconnecting:
    """State: waiting ``delay`` seconds before attempt number ``attempt``."""

    __match_args__: ClassVar[Tuple[str, str]]
    @property
    def attempt(self) -> int: ...
    @property
    def delay(self) -> float: ...

@final
class AwaitingCredentials:
    """State: the server rotated credentials (close 4001); call ``credentials_refreshed``."""

    __match_args__: ClassVar[Tuple[()]]

# --------------------------------------------------------------------------- client events

@final
class StateChanged:
    """Event: the machine's state changed."""

    __match_args__: ClassVar[Tuple[str]]
    @property
    def state(self) -> Union[Connecting, Connected, Disconnected, Reconnecting, AwaitingCredentials]: ...

@final
class Delivered:
    """Event: a tracked event, delivered once, in increasing ``seq`` order."""

    __match_args__: ClassVar[Tuple[str, str, str, str]]
    @property
    def kind(self) -> str:
        """The frame's ``type``."""
    @property
    def seq(self) -> int:
        """Its sequence number."""
    @property
    def cursor(self) -> int:
        """Its cursor."""
    @property
    def replayed(self) -> bool:
        """Whether it came as a replay after a resume."""
    @property
    def text(self) -> str:
        """The event's JSON text, as the server sent it live."""
    @property
    def data(self) -> Dict[str, Any]:
        """The event parsed (``json.loads(text)``)."""

@final
class Notice:
    """Event: an untracked frame (broadcasts, ``status``, unknown types), passed through."""

    __match_args__: ClassVar[Tuple[str, str]]
    @property
    def kind(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def data(self) -> Dict[str, Any]: ...

@final
class ServerError:
    """Event: an untracked ``error`` frame after the handshake."""

    __match_args__: ClassVar[Tuple[str, str, str]]
    @property
    def code(self) -> Optional[str]: ...
    @property
    def message(self) -> str: ...
    @property
    def extra(self) -> Dict[str, Any]: ...

@final
class Snapshot:
    """Event: state sent instead of replays (legacy join with ``resync_required``)."""

    __match_args__: ClassVar[Tuple[str, str]]
    @property
    def state(self) -> JSON: ...
    @property
    def extra(self) -> Dict[str, Any]: ...

@final
class Gap:
    """Event: live events ``expected..received`` are missing; a repair follows if enabled."""

    __match_args__: ClassVar[Tuple[str, str]]
    @property
    def expected(self) -> int: ...
    @property
    def received(self) -> int: ...

@final
class Lost:
    """Event: events ``first..=last`` are gone for good."""

    __match_args__: ClassVar[Tuple[str, str]]
    @property
    def first(self) -> int: ...
    @property
    def last(self) -> int: ...

@final
class ServerReset:
    """Event: the server lost its state; numbering restarts after ``head``."""

    __match_args__: ClassVar[Tuple[str, str]]
    @property
    def cursor(self) -> int: ...
    @property
    def head(self) -> int: ...

@final
class SessionReplaced:
    """Event: the session asked for was not resumed; a new one began."""

    __match_args__: ClassVar[Tuple[str, str]]
    @property
    def previous(self) -> str: ...
    @property
    def current(self) -> str: ...

@final
class Outcome:
    """Where a request stands: ``accepted``, then ``final``, ``duplicate`` or ``ambiguous``."""

    __match_args__: ClassVar[Tuple[str, str, str]]
    @property
    def status(self) -> Literal["accepted", "final", "duplicate", "ambiguous"]: ...
    @property
    def content(self) -> JSON:
        """The answer (usually a ``str``), when there is one."""
    @property
    def result(self) -> Any:
        """The server's outcome object (``{"status": "ok"}``, ...), when there is one."""

@final
class RequestUpdate:
    """Event: a request changed status."""

    __match_args__: ClassVar[Tuple[str, str]]
    @property
    def request_id(self) -> str: ...
    @property
    def outcome(self) -> Outcome: ...

@final
class BadFrame:
    """Event: a frame from the server could not be decoded; dropped, the connection goes on."""

    __match_args__: ClassVar[Tuple[str]]
    @property
    def error(self) -> str: ...

@final
class Closed:
    """Event: the last one: the client stopped for good."""

    __match_args__: ClassVar[Tuple[str, str, str, str]]
    @property
    def reason(self) -> Literal["requested", "rejected", "protocol_violation", "gave_up", "other"]: ...
    @property
    def message(self) -> str: ...
    @property
    def rejection(self) -> Optional[Rejection]: ...
    @property
    def last(self) -> Optional[Disconnected]: ...

def closed_error(closed: Closed) -> ClientClosed:
    """The exception naming why a client stopped (``AuthenticationFailed``, ``VersionMismatch``,
    ``Rejected``, ``ProtocolViolation``, ``GaveUp`` or ``ClientClosed``)."""

ClientEvent = Union[
    StateChanged, Delivered, Notice, ServerError, Snapshot, Gap, Lost, ServerReset, SessionReplaced,
    RequestUpdate, BadFrame, Closed,
]

# --------------------------------------------------------------------------- the client machine

@final
class ClientMachine:
    """tether-core's client machine."""

    def __init__(
        self,
        agent_id: str,
        now: float,
        *,
        seed: bytes,
        resume: Optional[Mapping[str, Any]] = None,
        versions: Optional[Tuple[int, int]] = None,
        join: Optional[bool] = None,
        capabilities: Optional[Sequence[str]] = None,
        handshake_timeout: Optional[float] = None,
        backoff_initial: Optional[float] = None,
        backoff_max: Optional[float] = None,
        backoff_multiplier: Optional[float] = None,
        jitter: Union[str, float, None] = None,
        max_attempts: Optional[int] = None,
        max_elapsed: Optional[float] = None,
        heartbeat: Optional[float] = None,
        missed_beats: Optional[int] = None,
        repair_gaps: Optional[bool] = None,
        outbox_capacity: Optional[int] = None,
        resend_unanswered: Optional[bool] = None,
        max_frame_bytes: Optional[int] = None,
    ) -> None: ...
    def handle_connected(self, now: float) -> None: ...
    def handle_connect_failed(self, now: float, reason: str) -> None: ...
    def handle_closed(self, now: float, code: Optional[int], reason: str) -> None: ...
    def handle_text(self, now: float, text: str) -> None: ...
    def handle_binary(self, now: float) -> None: ...
    def handle_timeout(self, now: float) -> None: ...
    def send(self, now: float, content: JSON, request_id: Optional[str] = None) -> str: ...
    def disconnect(self, now: float) -> None: ...
    def credentials_refreshed(self, now: float) -> None: ...
    def poll_transmit(self) -> Union[str, Open, Close, None]: ...
    def poll_transmits(self) -> List[Union[str, Open, Close]]: ...
    def has_transmit(self) -> bool: ...
    def poll_event(self) -> Optional[ClientEvent]: ...
    def poll_events(self) -> List[ClientEvent]: ...
    def poll_timeout(self) -> Optional[float]: ...
    def resume_state(self) -> Dict[str, Any]: ...
    def stats(self) -> Dict[str, int]: ...
    @property
    def session_id(self) -> Optional[str]: ...
    @property
    def cursor(self) -> Optional[int]: ...
    @property
    def is_connected(self) -> bool: ...
    @property
    def is_closed(self) -> bool: ...

# --------------------------------------------------------------------------- server events

@final
class ConnectionRejected:
    """Server event: a connection was refused (credentials, limits, versions)."""

    __match_args__: ClassVar[Tuple[str, str]]
    @property
    def conn(self) -> int: ...
    @property
    def code(self) -> str: ...

@final
class SessionCreated:
    """Server event: a handshake created a new session."""

    __match_args__: ClassVar[Tuple[str, str, str]]
    @property
    def session(self) -> str: ...
    @property
    def conn(self) -> int: ...
    @property
    def agent_id(self) -> str: ...

@final
class SessionResumed:
    """Server event: a handshake re-attached an existing session."""

    __match_args__: ClassVar[Tuple[str, str, str, str, str]]
    @property
    def session(self) -> str: ...
    @property
    def conn(self) -> int: ...
    @property
    def agent_id(self) -> str: ...
    @property
    def taken_over_from(self) -> Optional[int]: ...
    @property
    def lost(self) -> Optional[Tuple[int, int]]: ...

@final
class SessionDetached:
    """Server event: a session lost its connection; it stays resumable for the session TTL."""

    __match_args__: ClassVar[Tuple[str]]
    @property
    def session(self) -> str: ...

@final
class SessionExpired:
    """Server event: a detached session reached its TTL (or was evicted) and is gone."""

    __match_args__: ClassVar[Tuple[str]]
    @property
    def session(self) -> str: ...

@final
class Request:
    """Server event: a new request, handed out exactly once per (session, request_id)."""

    __match_args__: ClassVar[Tuple[str, str, str, str, str]]
    @property
    def session(self) -> str: ...
    @property
    def request_id(self) -> str: ...
    @property
    def content(self) -> JSON: ...
    @property
    def conn(self) -> int: ...
    @property
    def agent_id(self) -> str: ...

@final
class PresenceChanged:
    """Server event: the set of connected clients of an agent changed."""

    __match_args__: ClassVar[Tuple[str]]
    @property
    def agent_id(self) -> str: ...

@final
class BadInput:
    """Server event: a peer sent something invalid (it got a typed error frame)."""

    __match_args__: ClassVar[Tuple[str, str]]
    @property
    def conn(self) -> int: ...
    @property
    def error(self) -> str: ...

@final
class Closing:
    """Server event: the server decided to close a connection."""

    __match_args__: ClassVar[Tuple[str, str, str]]
    @property
    def conn(self) -> int: ...
    @property
    def code(self) -> int: ...
    @property
    def reason(self) -> str: ...

ServerEvent = Union[
    ConnectionRejected, SessionCreated, SessionResumed, SessionDetached, SessionExpired, Request,
    PresenceChanged, BadInput, Closing,
]

# --------------------------------------------------------------------------- the server machine

@final
class ServerMachine:
    """tether-core's server machine: many connections, each named by an ``int`` id."""

    def __init__(
        self,
        now: float,
        *,
        seed: bytes,
        epoch: float,
        snapshot: Optional[str] = None,
        agents: Optional[Sequence[str]] = None,
        token: Optional[str] = None,
        versions: Optional[Tuple[int, int]] = None,
        handshake_timeout: Optional[float] = None,
        heartbeat_interval: Optional[float] = None,
        missed_beats: Optional[int] = None,
        session_ttl: Optional[float] = None,
        recovery_window: Optional[float] = None,
        recovery_session_bytes: Optional[int] = None,
        recovery_total_bytes: Optional[int] = None,
        max_sessions: Optional[int] = None,
        max_connections: Optional[int] = None,
        max_frame_bytes: Optional[int] = None,
    ) -> None: ...
    def handle_connected(
        self, now: float, conn: int, token: Optional[str] = None, cookie: Optional[str] = None, peer: Optional[str] = None
    ) -> None: ...
    def handle_text(self, now: float, conn: int, text: str) -> None: ...
    def handle_binary(self, now: float, conn: int, length: int) -> None: ...
    def handle_sent(self, now: float, conn: int, frames: int, nbytes: int) -> None: ...
    def handle_closed(self, now: float, conn: int) -> None: ...
    def handle_timeout(self, now: float) -> None: ...
    def poll_transmit(self) -> Optional[Tuple[int, Union[str, Close]]]: ...
    def poll_transmits(self) -> List[Tuple[int, Union[str, Close]]]: ...
    def poll_event(self) -> Optional[ServerEvent]: ...
    def poll_events(self) -> List[ServerEvent]: ...
    def poll_timeout(self) -> Optional[float]: ...
    def publish(self, now: float, session: str, kind: str, fields: Mapping[str, Any]) -> int: ...
    def publish_to(
        self,
        now: float,
        kind: str,
        fields: Mapping[str, Any],
        *,
        agent: Optional[str] = None,
        sessions: Optional[Sequence[str]] = None,
    ) -> int: ...
    def respond(
        self,
        now: float,
        session: str,
        request_id: str,
        content: JSON,
        status: str = "ok",
        error: Optional[Mapping[str, Any]] = None,
    ) -> int: ...
    def broadcast(self, now: float, kind: str, data: JSON) -> int: ...
    def disconnect(self, now: float, conn: int, code: int, reason: str) -> None: ...
    def shutdown(self, now: float) -> None: ...
    def snapshot(self, now: float) -> str: ...
    def presence(self) -> List[Dict[str, Any]]: ...
    def health(self, now: float) -> Dict[str, Any]: ...
    def stats(self) -> Dict[str, int]: ...
    def session_of(self, conn: int) -> Optional[str]: ...
    def session_head(self, session: str) -> Optional[int]: ...
