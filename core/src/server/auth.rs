//! Credential checks: what the transport saw at upgrade time, and who that makes the peer.

use serde::{Deserialize, Serialize};

use crate::wire::{close, ConnectErrorCode, RecoveryStep};

/// What the adapter learnt from the WebSocket upgrade request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectInfo {
    /// The `?token=` query parameter, as received.
    pub query_token: Option<String>,
    /// The `praisonai_session` cookie, if any (only custom authenticators read it).
    pub cookie: Option<String>,
    /// The peer address, for logs and custom policies.
    pub peer: Option<String>,
}

/// An authenticated identity. Sessions belong to the principal that created them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Principal(pub String);

/// Why a connection was refused, in the reference server's envelope: one `hello_error`, then
/// a close with `close_code` and the message as reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `hello_error.code`.
    pub code: ConnectErrorCode,
    /// `hello_error.message` and the close reason.
    pub message: String,
    /// `hello_error.next_step`.
    pub next_step: Option<RecoveryStep>,
    /// Legacy `next` hint (defaults to `next_step`).
    pub next: Option<String>,
    /// `retry_after_seconds`, for `rate_limited`.
    pub retry_after_seconds: Option<u64>,
    /// WebSocket close code ([`wire::close::AUTH_FAILED`](crate::wire::close::AUTH_FAILED) for auth).
    pub close_code: u16,
}

impl Rejection {
    /// Missing or wrong credentials: `auth_required` / `reauthenticate`, close
    /// [`wire::close::AUTH_FAILED`](crate::wire::close::AUTH_FAILED).
    pub fn auth_required() -> Self {
        Self {
            code: ConnectErrorCode::AuthRequired,
            message: "Authentication required".into(),
            next_step: Some(RecoveryStep::Reauthenticate),
            next: None,
            retry_after_seconds: None,
            close_code: close::AUTH_FAILED,
        }
    }

    /// Credentials that were valid but are not any more: `next_step` `reauthenticate`.
    pub fn reauthenticate(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            ..Self::auth_required()
        }
    }
}

/// A pluggable credential check, run once per connection in `handle_connected`.
pub trait Authenticator {
    /// The principal `info` proves, or the rejection to send.
    fn authenticate(&self, info: &ConnectInfo) -> Result<Principal, Rejection>;
}

/// The built-in check: `?token=` must equal the shared secret (constant-time). Every holder of
/// the token is the same principal `token`, as on the reference server.
#[derive(Clone)]
pub struct SharedToken(String);

impl SharedToken {
    /// A check against `token`.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl std::fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedToken(..)") // never log the secret
    }
}

impl Authenticator for SharedToken {
    fn authenticate(&self, info: &ConnectInfo) -> Result<Principal, Rejection> {
        match &info.query_token {
            Some(t) if constant_time_eq(t.as_bytes(), self.0.as_bytes()) => {
                Ok(Principal("token".into()))
            }
            _ => Err(Rejection::auth_required()),
        }
    }
}

/// Admits everyone as `anonymous` (no token configured).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authenticator for AllowAll {
    fn authenticate(&self, _: &ConnectInfo) -> Result<Principal, Rejection> {
        Ok(Principal("anonymous".into()))
    }
}

/// Compares in time that depends only on the lengths, so the secret's prefix cannot be probed.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}
