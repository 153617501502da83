//! Client configuration with production defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::BackoffConfig;
use crate::version::VersionRange;

/// Which handshake the client opens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandshakeMode {
    /// `hello`, falling back to legacy `join` on the same socket only when the server answers
    /// with a bare `error` that shows it does not understand `hello`.
    #[default]
    Hello,
    /// Legacy `join` only (servers that predate `hello`).
    Join,
}

/// How a [`super::Client`] behaves. `ClientConfig::new(agent_id)` gives the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    /// The agent to talk to (`agent_id` of hello/join).
    pub agent_id: String,
    /// Versions offered; default 1..=2 (the PraisonAI server answers 1, tether's answers 2).
    pub versions: VersionRange,
    /// Capabilities sent in hello; default `["streaming", "ack"]` like the reference client.
    pub capabilities: Vec<String>,
    /// Opening handshake.
    pub handshake: HandshakeMode,
    /// From asking for a socket to the handshake reply; default 10 s (the reference client's
    /// wait). Expiry is a transient failure.
    pub handshake_timeout: Duration,
    /// Reconnect schedule.
    pub backoff: BackoffConfig,
    /// Heartbeat interval when the server advertises none (`policy.heartbeat_ms`; a legacy
    /// `joined` never does); default 30 s, the reference gateway's interval, so a half-open socket
    /// is detected on every handshake path. `None` disables it.
    pub fallback_heartbeat: Option<Duration>,
    /// Silence longer than `missed_beats × interval` means the socket is dead; default 2.
    pub missed_beats: u32,
    /// Repair live gaps (in-band `resync` on v2, a resume on v1); default true. When false, or
    /// when the repair cannot recover them, missing events are reported as lost.
    pub repair_gaps: bool,
    /// Most requests held unresolved (queued or awaiting an answer); default 1024.
    pub outbox_capacity: usize,
    /// Resend requests that were written but got no answer before the connection died, with the
    /// same `request_id`, after resuming the same session; default true. Otherwise they resolve
    /// as [`super::RequestStatus::Ambiguous`].
    pub resend_unanswered: bool,
    /// Inbound frames larger than this are refused (reported, not parsed); default 16 MiB.
    pub max_frame_bytes: usize,
    /// Seed of the client's PRNG (jitter, request ids): the same seed replays the same run.
    /// `None` (the default): the adapter draws one from OS entropy (a machine built directly
    /// with `None` uses the all-zero seed). For tests, [`crate::rng::seed_from_u64`].
    pub seed: Option<[u8; 32]>,
}

impl ClientConfig {
    /// Defaults for talking to `agent_id`.
    pub fn new(agent_id: impl Into<String>) -> Self {
        Self {
            agent_id: agent_id.into(),
            ..Self::default()
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            agent_id: String::new(),
            versions: VersionRange::TETHER,
            capabilities: vec!["streaming".into(), "ack".into()],
            handshake: HandshakeMode::Hello,
            handshake_timeout: Duration::from_secs(10),
            backoff: BackoffConfig::default(),
            fallback_heartbeat: Some(Duration::from_secs(30)),
            missed_beats: 2,
            repair_gaps: true,
            outbox_capacity: 1024,
            resend_unanswered: true,
            max_frame_bytes: 16 << 20,
            seed: None,
        }
    }
}
