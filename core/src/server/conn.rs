//! Per-connection state: handshake phase, binding, heartbeat, send cursors and the small
//! control queue for untracked frames.

use std::collections::VecDeque;
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

/// Replays owed to the connection: cursors `next..=end` of its session's window, then
/// `end_frame`.
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
    /// Window frames up to this cursor still go out first (graceful close).
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
    pub(crate) control: VecDeque<super::FrameText>,
    pub(crate) replay: Option<ReplayPhase>,
    /// Next window cursor to send live.
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
    pub(crate) parked: Option<Box<super::store::Parked>>,
    /// Store mode: the store answered for the handshake being re-run.
    pub(crate) store_answered: bool,
    /// Store mode: this connection created its session; nothing is sent (its `hello_ok`
    /// first) until the store holds the session (`Server::session_stored`).
    pub(crate) awaiting_store: bool,
}

impl Conn {
    /// Marks the connection as in the server's ready list; false if it already is or has
    /// sent its close (then it must not be listed).
    pub(crate) fn enqueue(&mut self) -> bool {
        if self.queued || self.close_sent {
            return false;
        }
        self.queued = true;
        true
    }

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
            awaiting_store: false,
        }
    }

    /// The lowest window cursor this connection still has to be sent.
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

impl super::Server {
    /// The adapter wrote `frames` frames of `bytes` wire bytes in all (from `poll_transmit`,
    /// for `conn`): the same as that many [`handle_sent`](Self::handle_sent) calls, in one.
    pub fn handle_sent_frames(&mut self, _now: Instant, conn: ConnId, frames: usize, bytes: usize) {
        let (max_frames, max_bytes) = (
            self.config.max_queued_frames,
            self.config.max_buffered_bytes,
        );
        let Some(c) = self.conns.get_mut(&conn).filter(|_| frames > 0) else {
            return;
        };
        // As `handle_sent`: wake the connection only if this confirmation opens a full window.
        let was_full = c.in_flight_frames >= max_frames || c.in_flight_bytes >= max_bytes;
        c.in_flight_frames = c.in_flight_frames.saturating_sub(frames);
        c.in_flight_bytes = c.in_flight_bytes.saturating_sub(bytes);
        if was_full {
            self.mark_ready(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{ConnectInfo, Server, ServerConfig, ServerTransmit};

    /// Frames written now: (count, bytes).
    fn written(s: &mut Server) -> (usize, usize) {
        let mut out = (0, 0);
        while let Some((_, t)) = s.poll_transmit() {
            if let ServerTransmit::Frame(f) = t {
                out = (out.0 + 1, out.1 + f.len());
            }
        }
        out
    }

    #[test]
    fn one_confirmation_of_several_frames_reopens_the_window_like_as_many_single_ones() {
        let t0 = crate::test_origin();
        let config = ServerConfig {
            agents: vec!["echo".into()],
            max_queued_frames: 2,
            ..ServerConfig::default()
        };
        let mut s = Server::new(config, t0);
        let conn = ConnId(1);
        s.handle_connected(t0, conn, ConnectInfo::default());
        s.handle_text(t0, conn, r#"{"type":"hello","agent_id":"echo"}"#);
        let (frames, bytes) = written(&mut s);
        assert_eq!(frames, 1, "hello_ok");
        s.handle_sent_frames(t0, conn, frames, bytes);
        let session = s.sessions.keys().next().cloned().unwrap();
        for n in 0..5 {
            s.publish(t0, &session, "m", &[("n", n.into())]).unwrap();
        }
        // The window holds two frames; confirming both at once lets two more out.
        let (frames, bytes) = written(&mut s);
        assert_eq!(frames, 2);
        assert_eq!(written(&mut s), (0, 0));
        s.handle_sent_frames(t0, conn, frames, bytes);
        let (frames, bytes) = written(&mut s);
        assert_eq!(frames, 2);
        s.handle_sent_frames(t0, conn, 0, 0);
        assert_eq!(written(&mut s), (0, 0), "confirming nothing opens nothing");
        s.handle_sent_frames(t0, conn, frames, bytes);
        assert_eq!(written(&mut s).0, 1);
        s.handle_sent_frames(t0, ConnId(9), 3, 3); // unknown: ignored
    }
}
