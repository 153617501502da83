//! What the client machine tells the transport ([`Transmit`]) and the application ([`Event`]).

use std::time::Duration;

use serde_json::Value;

use super::{Kind, Payload};
use crate::backoff::GiveUp;
use crate::wire::{
    ConnectErrorCode, Content, DecodeError, ErrorFrame, EventFrame, RecoveryStep, Snapshot,
};

/// A transport action for the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Open a new socket, then call `handle_connected` (or `handle_connect_failed`).
    Open,
    /// Write this text frame.
    Frame(String),
    /// Close the socket with this code and reason, and feed nothing more from it.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
}

/// A tracked event delivered to the application: each sequence number at most once, in
/// increasing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The frame's `type` (`message`, `response`, `token_stream`, ...).
    pub kind: Kind,
    /// Its sequence number.
    pub seq: u64,
    /// Its cursor (the resume position once processed).
    pub cursor: u64,
    /// Whether it came as a replay after a resume (it was not seen live).
    pub replayed: bool,
    /// The original tracked frame's JSON text, as the server sent it live (shared with the
    /// events delivered with it: see [`Payload`]).
    pub payload: Payload,
}

impl Delivered {
    /// Parses the payload.
    pub fn parse<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, DecodeError> {
        crate::wire::parse_typed(&self.payload)
    }
}

/// How a request ended (or where it stands).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RequestStatus {
    /// The server acknowledged it (`response` `accepted`).
    Accepted,
    /// The final answer (`response` `final`): content and outcome as sent.
    Final {
        /// The answer (its `Display` writes a string without quotes).
        content: Option<Content>,
        /// `{"status": "ok" | "error" | ...}`.
        outcome: Option<Value>,
    },
    /// The server had already seen this `request_id`. tether's server repeats the original
    /// outcome here; the PraisonAI server sends none.
    Duplicate {
        /// The original answer, when the server repeats it.
        content: Option<Content>,
        /// The original outcome, when the server repeats it.
        outcome: Option<Value>,
    },
    /// Written, but the connection died before any answer and it could not be safely resent
    /// (the session was not resumed, or resending is disabled): it may or may not have run.
    Ambiguous,
}

/// A change in a request's status.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestUpdate {
    /// The idempotency key returned by `send`.
    pub request_id: String,
    /// The new status; `Final`, `Duplicate` and `Ambiguous` are the last for this id.
    pub status: RequestStatus,
}

/// Why a connection ended (transiently: the client reconnects).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectCause {
    /// The socket could not be opened.
    ConnectFailed(String),
    /// The socket closed (`code` absent = no close frame, 1006).
    Closed {
        /// Close code, if any.
        code: Option<u16>,
        /// Close reason.
        reason: String,
    },
    /// No handshake reply within the deadline.
    HandshakeTimeout,
    /// Silence beyond the heartbeat limit: a half-open socket.
    HeartbeatTimeout,
    /// A recoverable rejection (`rate_limited`, unknown codes).
    Rejected(Rejection),
    /// The client dropped the connection itself to repair a gap by resuming.
    GapRepair,
}

/// A server refusal: code, text and the step it advises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Machine-readable code.
    pub code: ConnectErrorCode,
    /// Server text.
    pub message: String,
    /// What to do next (`next_step`, else the legacy `next`).
    pub next_step: Option<RecoveryStep>,
    /// Minimum wait the server asked for.
    pub retry_after: Option<Duration>,
}

/// Why the client stopped for good: the last event it ever emits.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClosedReason {
    /// The application called `disconnect`.
    Requested,
    /// A terminal rejection (bad credentials, version mismatch, unknown agent, ...).
    Rejected(Rejection),
    /// The server negotiated a version outside the offered range, or broke the handshake.
    ProtocolViolation(String),
    /// The attempt cap or the total deadline was reached.
    GaveUp {
        /// Which limit.
        limit: GiveUp,
        /// What ended the last attempt.
        last: DisconnectCause,
    },
}

/// The machine's state, as reported in [`Event::StateChanged`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Opening a socket and handshaking (`attempt` 0 is the first connection).
    Connecting {
        /// Consecutive failed attempts before this one.
        attempt: u32,
    },
    /// Handshake done.
    Connected {
        /// Negotiated protocol version.
        version: u32,
        /// The session.
        session_id: String,
        /// Whether the session we asked for was resumed (not a new one).
        resumed: bool,
        /// Whether the legacy join handshake was used.
        legacy: bool,
    },
    /// The connection ended; the client will reconnect.
    Disconnected {
        /// Why.
        cause: DisconnectCause,
    },
    /// Waiting `delay` before attempt number `attempt`.
    Reconnecting {
        /// The attempt about to be made (1-based).
        attempt: u32,
        /// The wait.
        delay: Duration,
    },
    /// The server rotated credentials (close [`wire::close::CREDENTIALS_ROTATED`](crate::wire::close::CREDENTIALS_ROTATED)): waiting for
    /// `credentials_refreshed`.
    AwaitingCredentials,
}

/// Something the application should know.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Lifecycle: connecting, connected, disconnected, reconnecting.
    StateChanged(State),
    /// A tracked event, in order, once.
    Delivered(Delivered),
    /// An untracked frame (`status`, broadcasts, `aborted`, `server_request`, unknown types):
    /// passed through as sent, outside the sequence.
    Notice(EventFrame),
    /// An untracked `error` frame after the handshake (e.g. "Not joined", scope errors).
    ServerError(ErrorFrame),
    /// State sent instead of replays (legacy join with `resync_required`).
    Snapshot(Snapshot),
    /// Live events `expected..received` are missing; a repair follows if enabled.
    Gap {
        /// First missing sequence.
        expected: u64,
        /// The sequence that arrived.
        received: u64,
    },
    /// Events `from..=to` are gone for good (the server no longer holds them).
    Lost {
        /// First lost sequence.
        from: u64,
        /// Last lost sequence.
        to: u64,
    },
    /// The server's head is behind our cursor: it lost its state; numbering restarts at `head`.
    ServerReset {
        /// Our cursor.
        cursor: u64,
        /// The server's head.
        head: u64,
    },
    /// The session we asked to resume was not resumed; a new one began (events of the old one
    /// not yet delivered are lost).
    SessionReplaced {
        /// The session we asked for.
        previous: String,
        /// The new session.
        current: String,
    },
    /// A request changed status.
    Request(RequestUpdate),
    /// A frame from the server could not be decoded; it was dropped and the connection goes on.
    BadFrame(DecodeError),
    /// The last event: the client stopped for good.
    Closed(ClosedReason),
}
