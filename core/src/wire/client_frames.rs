//! Frames the client sends (C→S), typed after PROTOCOL.md §3.1, §4.1 and §8.
//!
//! Version fields are strict unsigned integers: the reference server crashes on `"1"` and echoes
//! `true`; tether refuses both with a typed error naming the field.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Map;

/// Nested `"protocol": {"min", "max"}` form of the hello version range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolRange {
    /// Lowest version (defaults to 1 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    /// Highest version (defaults to 1 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

/// `hello`: the modern handshake.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Registered agent to talk to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Lowest version offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_min: Option<u32>,
    /// Highest version offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_max: Option<u32>,
    /// Nested range form, used only when both flat keys are absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ProtocolRange>,
    /// Capabilities (`streaming`, `ack`, `presence`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    /// Alias of `capabilities`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<String>>,
    /// Session to resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Replay events with cursor > since (0 is a valid cursor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// The `epoch` of the last `hello_ok` (tether v2; other servers ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

impl Hello {
    /// The offered range with the reference server's defaulting: flat keys win (a missing one is
    /// 1), else the nested form, else 1..=1.
    pub fn offered_range(&self) -> (u32, u32) {
        if self.protocol_min.is_some() || self.protocol_max.is_some() {
            (
                self.protocol_min.unwrap_or(1),
                self.protocol_max.unwrap_or(1),
            )
        } else if let Some(p) = self.protocol {
            (p.min.unwrap_or(1), p.max.unwrap_or(1))
        } else {
            (1, 1)
        }
    }

    /// `capabilities`, else `caps`, else none.
    pub fn offered_capabilities(&self) -> &[String] {
        self.capabilities
            .as_deref()
            .or(self.caps.as_deref())
            .unwrap_or(&[])
    }
}

/// `join`: the legacy handshake.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Join {
    /// Registered agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Lowest version offered (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<u32>,
    /// Highest version offered (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_version: Option<u32>,
    /// Session to resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Replay events with cursor > since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// The `epoch` of the last `joined` (tether v2; other servers ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// `message`: a user turn. Also what a frame without `type` means.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageFrame {
    /// Text or any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// Idempotency key: a resend with the same id is answered `duplicate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Fields this version does not model (`metadata`, `attachments`, ...).
    #[serde(flatten)]
    pub extra: Map,
}

/// `abort` / `message_abort`: cancel the running turn.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Abort {
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `"turn"` or `"session"` (the reference server also accepts booleans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Value>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// `server_reply`: the answer to a `server_request`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerReply {
    /// The request answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The chosen value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}
