//! WebSocket close codes, named: the ones tether's machines send and the ones they act on.
//! The standard codes (RFC 6455 §7.4.1) are used with their usual meaning; the 4000s are the
//! PraisonAI gateway's and tether's own.

/// Normal closure: a client that disconnects, gives up a handshake, or reconnects to repair
/// a gap.
pub const NORMAL: u16 = 1000;
/// Going away: the server is shutting down (`server_shutdown`).
pub const GOING_AWAY: u16 = 1001;
/// Protocol error: a peer broke the protocol (an unexpected frame, an unoffered version).
pub const PROTOCOL_ERROR: u16 = 1002;
/// Unsupported data: a binary frame (`invalid_frame`).
pub const UNSUPPORTED_DATA: u16 = 1003;
/// Invalid payload: a frame that is not JSON or not an object (`invalid_frame`).
pub const INVALID_PAYLOAD: u16 = 1007;
/// Policy violation: no handshake before the deadline (`handshake_timeout`).
pub const HANDSHAKE_TIMEOUT: u16 = 1008;
/// Message too big: a frame over `max_frame_bytes` (`payload_too_large`).
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// Internal error on the server.
pub const INTERNAL_ERROR: u16 = 1011;
/// Service restart: store mode lost events it cannot fetch (`store_gap`); resume elsewhere.
pub const STORE_GAP: u16 = 1012;
/// Try again later: a reader too slow for its window (`slow_consumer`).
pub const SLOW_CONSUMER: u16 = 1013;
/// Credentials rotated: reconnect with fresh ones (the client waits for them).
pub const CREDENTIALS_ROTATED: u16 = 4001;
/// The peer went silent past its heartbeat (`liveness_timeout`).
pub const LIVENESS_TIMEOUT: u16 = 4002;
/// Authentication failed (after `hello_error` `auth_required`).
pub const AUTH_FAILED: u16 = 4003;
/// Another connection resumed this session (`session_taken_over`).
pub const SESSION_TAKEN_OVER: u16 = 4009;
/// Store mode: the store lost the session (`session_lost`, see `Server::handle_store_lost`).
pub const SESSION_LOST: u16 = 4010;
/// Too many frames of unknown type.
pub const UNKNOWN_FRAME_FLOOD: u16 = 4028;
/// Too many connections (after `hello_error` `rate_limited`).
pub const TOO_MANY_CONNECTIONS: u16 = 4029;
