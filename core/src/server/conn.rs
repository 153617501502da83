//! Per-connection state: handshake phase, binding, heartbeat, send cursors and the small
//! control queue for untracked frames.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::auth::Principal;
use super::session::SessionId;
use crate::heartbeat::Heartbeat;

/// A connection id, allocated by the adapter (unique among live connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnId(pub u64);

impl ConnId {
    /// The label used as `client_id` in presence and `target` in recorded events.
    pub fn label(&self) -> String {
        format!("conn-{}", self.0)
    }
}

/// Replays owed to the connection: cursors `next..=end` of its session's ring, then `end_frame`.
#[derive(Debug, Clone)]
pub(crate) struct ReplayPhase {
    pub(crate) next: u64,
    pub(crate) end: u64,
    /// Join path and v2 add top-level `"seq"`.
    pub(crate) with_seq: bool,
    /// v2 `replay_end`, sent after the last replay.
    pub(crate) end_frame: Option<String>,
}

/// A close the server has decided on.
#[derive(Debug, Clone)]
pub(crate) struct Closing {
    pub(crate) code: u16,
    pub(crate) reason: String,
    /// Ring frames up to this cursor still go out first (graceful close).
    pub(crate) flush_until: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Binding {
    pub(crate) session: SessionId,
    pub(crate) agent_id: String,
    pub(crate) version: u32,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) principal: Option<Principal>,
    /// Set until a handshake succeeds.
    pub(crate) handshake_deadline: Option<Instant>,
    /// Started by the first successful handshake.
    pub(crate) heartbeat: Option<Heartbeat>,
    pub(crate) bound: Option<Binding>,
    pub(crate) control: VecDeque<Arc<str>>,
    pub(crate) replay: Option<ReplayPhase>,
    /// Next ring cursor to send live.
    pub(crate) live_next: u64,
    pub(crate) in_flight_frames: usize,
    pub(crate) in_flight_bytes: usize,
    pub(crate) closing: Option<Closing>,
    pub(crate) close_sent: bool,
    pub(crate) unknown_frames: u32,
    pub(crate) last_inbound_wall: f64,
    /// In the server's ready list.
    pub(crate) queued: bool,
    /// Store mode: the handshake waiting for `provide_session`.
    pub(crate) parked: Option<super::store::Parked>,
    /// Store mode: the store answered for the handshake being re-run.
    pub(crate) store_answered: bool,
}

impl Conn {
    pub(crate) fn new(deadline: Option<Instant>, wall: f64) -> Self {
        Self {
            principal: None,
            handshake_deadline: deadline,
            heartbeat: None,
            bound: None,
            control: VecDeque::new(),
            replay: None,
            live_next: 1,
            in_flight_frames: 0,
            in_flight_bytes: 0,
            closing: None,
            close_sent: false,
            unknown_frames: 0,
            last_inbound_wall: wall,
            queued: false,
            parked: None,
            store_answered: false,
        }
    }

    /// The lowest ring cursor this connection still has to be sent.
    pub(crate) fn min_needed(&self) -> u64 {
        match &self.replay {
            Some(r) if r.next <= r.end => r.next,
            _ => self.live_next,
        }
    }

    /// Whether nothing more goes out (closing or closed).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.is_some() || self.close_sent
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.is_closing() {
            return None;
        }
        let hb = self.heartbeat.as_ref().and_then(Heartbeat::next_deadline);
        match (self.handshake_deadline, hb) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
