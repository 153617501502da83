//! What the server tells the adapter (transmits) and the application (events), and its errors.

use super::conns::ConnId;
use super::session::SessionId;
use super::text::FrameText;
use crate::wire::{ConnectErrorCode, Content, DecodeError};

/// A frame or close for one connection. After a `Close` nothing more comes for that
/// connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTransmit {
    /// A text frame to write. Live events share their text with the session's recovery window
    /// (no copy per connection); write it as is.
    Frame(FrameText),
    /// Send a close frame with this code and reason, then stop writing.
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
}

/// Something the application should know or act on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// The connection was refused at upgrade time or handshake (auth, limits, versions).
    ConnectionRejected {
        /// The connection.
        conn: ConnId,
        /// Why.
        code: ConnectErrorCode,
    },
    /// A handshake created a new session (also when an unknown `session_id` was asked for).
    SessionCreated {
        /// The new session.
        session: SessionId,
        /// Its first connection.
        conn: ConnId,
        /// The agent.
        agent_id: String,
    },
    /// A handshake re-attached an existing session.
    SessionResumed {
        /// The session.
        session: SessionId,
        /// The new owner connection.
        conn: ConnId,
        /// A connection that was displaced by this takeover (closed with
        /// [`wire::close::SESSION_TAKEN_OVER`](crate::wire::close::SESSION_TAKEN_OVER)).
        taken_over_from: Option<ConnId>,
        /// Cursors the client asked for that the recovery window no longer holds (reported to
        /// it), if any.
        lost: Option<(u64, u64)>,
    },
    /// A session lost its connection; it stays resumable for the TTL.
    SessionDetached {
        /// The session.
        session: SessionId,
    },
    /// A detached session reached its TTL (or was evicted at the session cap) and is gone.
    SessionExpired {
        /// The session.
        session: SessionId,
    },
    /// A new request: handed out exactly once per (session, request_id) within the dedup
    /// window. Answer it with `respond`.
    Request {
        /// The session.
        session: SessionId,
        /// The client's `request_id`, or a generated one.
        request_id: String,
        /// The `content` as sent (never empty; its `Display` writes a string without quotes).
        content: Content,
        /// The connection it came on.
        conn: ConnId,
    },
    /// The set of connected clients of an agent changed.
    PresenceChanged {
        /// The agent.
        agent_id: String,
    },
    /// A peer sent something invalid; it got a typed error frame (and maybe a close).
    BadInput {
        /// The connection.
        conn: ConnId,
        /// What was wrong.
        error: PeerError,
    },
    /// The server decided to close a connection (the Close is queued for it).
    Closing {
        /// The connection.
        conn: ConnId,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
}

/// The peer misbehaved. Reported in [`ServerEvent::BadInput`]; never affects other
/// connections.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The frame did not decode (garbage, non-object, ill-typed field).
    #[error("undecodable frame: {0}")]
    Decode(#[from] DecodeError),
    /// Handshake with an unusable version range.
    #[error("invalid protocol versions: {0}")]
    InvalidVersions(String),
    /// A frame that needs a field value the server refuses (empty `content`, bad `since`).
    #[error("invalid value for `{field}`")]
    InvalidValue {
        /// The field.
        field: String,
    },
    /// Tried to resume a session owned by another principal or agent.
    #[error("resume of a session it does not own")]
    Unauthorized,
    /// No valid handshake within the deadline.
    #[error("no handshake within the deadline")]
    HandshakeTimeout,
    /// Too many frames of unknown type.
    #[error("too many unknown frames")]
    Flood,
}

/// The caller misused the API (unknown session or connection, bad arguments).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No such session (never existed, expired, or evicted): drop the work.
    #[error("unknown session {0}")]
    UnknownSession(SessionId),
    /// No such connection (already closed): nothing to do.
    #[error("unknown connection {0:?}")]
    UnknownConnection(ConnId),
    /// `type`, `cursor` and `seq` are set by the server: rename the field.
    #[error("field `{0}` is reserved")]
    ReservedField(String),
    /// The kind is empty or a protocol frame type (`hello_ok`, `replay`, `ping`, ...).
    #[error("frame type `{0}` cannot be published")]
    ReservedKind(String),
    /// The request already got its final response.
    #[error("request {0} was already answered")]
    AlreadyAnswered(String),
    /// In store mode the store numbers events: publish through the store adapter (e.g.
    /// `tether_redis::RedisNode::publish`), which returns their sequences or its error.
    #[error("the server runs on a session store: publish through the store")]
    StoreMode,
}

/// A snapshot that cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// Written by an incompatible version of this crate.
    #[error("unsupported snapshot format {0}")]
    UnsupportedFormat(u32),
}
