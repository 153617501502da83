//! Resume position: what a client must remember (in memory, or persisted across a process
//! restart) to rejoin its session exactly where it left off.
//!
//! ```
//! use tether_core::cursor::ResumeState;
//! let state = ResumeState { session_id: Some("s-1".into()), cursor: Some(0), ..Default::default() };
//! let json = serde_json::to_string(&state).unwrap();
//! assert_eq!(serde_json::from_str::<ResumeState>(&json).unwrap(), state);
//! assert_eq!(state.since(), Some(0)); // cursor 0 is a real cursor: resume sends since=0
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A client request not yet answered with a final outcome; resent with the same `request_id`
/// (the server deduplicates) after a resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingRequest {
    /// The idempotency key.
    pub request_id: String,
    /// The message content.
    pub content: Value,
}

/// Everything needed to resume a session: serialise it, and feed it to
/// [`crate::client::Client::with_resume_state`] after a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResumeState {
    /// The session to rejoin.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The last fully processed cursor (`since` on resume). `Some(0)` is a valid cursor.
    #[serde(default)]
    pub cursor: Option<u64>,
    /// The last delivered sequence number.
    #[serde(default)]
    pub sequence: Option<u64>,
    /// The protocol version last negotiated.
    #[serde(default)]
    pub version: Option<u32>,
    /// The session's epoch (tether v2), to detect a server that restored an older snapshot.
    #[serde(default)]
    pub epoch: Option<u64>,
    /// Requests without a final outcome, in send order.
    #[serde(default)]
    pub outbox: Vec<PendingRequest>,
}

impl ResumeState {
    /// The `since` to send: the cursor whenever one is known (0 included).
    pub fn since(&self) -> Option<u64> {
        self.session_id.as_ref().and(self.cursor)
    }
}
