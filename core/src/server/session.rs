//! A session's values: its id, the outcome of a request, and the request dedup window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rng::Rng;

/// A session id: a uuid4-formatted string drawn from the server's seeded PRNG.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionId(pub String);

impl SessionId {
    pub(crate) fn random(rng: &mut Rng) -> Self {
        Self(crate::wire::json::uuid_string(uuid4(rng)))
    }

    /// The id as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A random uuid4 (122 random bits, version and variant set), as the big-endian value of its
/// 16 bytes; formatted only where it is written.
pub(crate) fn uuid4(rng: &mut Rng) -> u128 {
    // Two words rather than `fill_bytes`: the same bytes, for a fraction of the work.
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    b[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    u128::from_be_bytes(b)
}

/// How a request ended, as the application reports it with `respond`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// `final.content` (the answer text, or any JSON).
    pub content: Value,
    /// `final.outcome.status`: `ok`, `error` or `rejected`.
    pub status: OutcomeStatus,
    /// `final.outcome.error` (`{code, retryable, retry_after_seconds, message}`), if any.
    pub error: Option<Value>,
}

impl Outcome {
    /// A successful answer.
    pub fn ok(content: impl Into<Value>) -> Self {
        Self {
            content: content.into(),
            status: OutcomeStatus::Ok,
            error: None,
        }
    }

    pub(crate) fn outcome_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("status".into(), Value::from(self.status.as_str()));
        if let Some(e) = &self.error {
            m.insert("error".into(), e.clone());
        }
        Value::Object(m)
    }
}

/// `final.outcome.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// The request succeeded.
    Ok,
    /// The request failed.
    Error,
    /// The request was refused.
    Rejected,
}

impl OutcomeStatus {
    /// Wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Rejected => "rejected",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct DedupEntry {
    pub(crate) request_id: String,
    pub(crate) at: Instant,
    pub(crate) outcome: Option<Outcome>,
}

/// Request ids seen recently: bounded by count and age.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dedup {
    pub(crate) entries: VecDeque<DedupEntry>,
}

impl Dedup {
    pub(crate) fn prune(&mut self, now: Instant, ttl: Duration) {
        while self
            .entries
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) > ttl)
        {
            self.entries.pop_front();
        }
    }

    pub(crate) fn find(&self, request_id: &str) -> Option<&DedupEntry> {
        self.entries.iter().find(|e| e.request_id == request_id)
    }

    pub(crate) fn find_mut(&mut self, request_id: &str) -> Option<&mut DedupEntry> {
        self.entries.iter_mut().find(|e| e.request_id == request_id)
    }

    pub(crate) fn insert(&mut self, request_id: String, now: Instant, max: usize) {
        while self.entries.len() >= max.max(1) {
            self.entries.pop_front();
        }
        self.entries.push_back(DedupEntry {
            request_id,
            at: now,
            outcome: None,
        });
    }
}
