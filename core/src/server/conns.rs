//! The connections: per-connection state (handshake phase, binding, heartbeat, send cursors,
//! flow control, the control queue, the close decided on) and the table that owns them with
//! the ready list and the deadline index of their timers.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::auth::Principal;
use super::deadlines::Deadlines;
use super::handshake::Handshake;
use super::session::SessionId;
use super::text::FrameText;
use crate::heartbeat::{Heartbeat, HeartbeatAction, HeartbeatConfig};

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

/// How much of a connection's pending output goes out before its close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Drop everything (dead peer, slow consumer, takeover).
    Nothing,
    /// Queued untracked frames (e.g. the error explaining the close), no more events.
    Control,
    /// Queued frames and every recorded event up to the session's head (graceful).
    All,
}

/// The session a connection is bound to by its last successful handshake.
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    pub(crate) session: SessionId,
    pub(crate) agent_id: String,
    pub(crate) version: u32,
}

/// One connection. Its timers (handshake deadline, heartbeat) and its close are changed only
/// through [`Connections`], which keeps the deadline index in step.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) principal: Option<Principal>,
    /// Set until a handshake succeeds.
    handshake_deadline: Option<Instant>,
    /// Started by the first successful handshake.
    heartbeat: Option<Heartbeat>,
    /// The deadline this connection is indexed at.
    armed: Option<Instant>,
    pub(crate) bound: Option<Binding>,
    pub(crate) control: VecDeque<FrameText>,
    pub(crate) replay: Option<ReplayPhase>,
    /// Next window cursor to send live.
    pub(crate) live_next: u64,
    /// Its session may hold frames it is owed (replays, live events): set by every append to
    /// its session and every replay set-up, cleared once the output found nothing owed with
    /// the in-flight window open. Without it, only control frames and a close can be
    /// pending, and the output does not look the session up.
    pub(crate) owed: bool,
    pub(crate) in_flight_frames: usize,
    pub(crate) in_flight_bytes: usize,
    /// The close decided on, until it is handed out (then `close_sent`).
    pub(crate) closing: Option<Closing>,
    pub(crate) close_sent: bool,
    pub(crate) unknown_frames: u32,
    pub(crate) last_inbound_wall: f64,
    /// On the ready list.
    pub(crate) queued: bool,
    /// Store mode: the handshake waiting for `handle_store_session`.
    pub(crate) parked: Option<Box<Handshake>>,
    /// Store mode: the store answered for the handshake being re-run.
    pub(crate) store_answered: bool,
    /// Store mode: this connection created its session; nothing is sent (its `hello_ok`
    /// first) until the store holds the session (`Server::handle_store_written`).
    pub(crate) awaiting_store: bool,
}

impl Conn {
    /// A connection that must complete a handshake by `deadline`.
    pub(crate) fn new(deadline: Option<Instant>, wall: f64) -> Self {
        Self {
            principal: None,
            handshake_deadline: deadline,
            heartbeat: None,
            armed: None,
            bound: None,
            control: VecDeque::new(),
            replay: None,
            live_next: 1,
            owed: false,
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

    /// Counts a frame handed out into the in-flight window.
    #[inline]
    pub(crate) fn handed_out(&mut self, bytes: usize) {
        self.in_flight_frames += 1;
        self.in_flight_bytes += bytes;
    }

    fn next_deadline(&self) -> Option<Instant> {
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

/// What a connection's timer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnTimer {
    /// No handshake before the deadline.
    HandshakeExpired,
    /// The peer went silent for too long.
    Dead,
    /// Time to ping.
    Ping,
}

/// The control queue is full: the connection is a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ControlFull;

/// Every connection, the ready list (connections that may have output) and the deadline index
/// of their timers.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    map: BTreeMap<ConnId, Conn>,
    ready: VecDeque<ConnId>,
    deadlines: Deadlines<ConnId>,
}

impl Connections {
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn contains(&self, id: ConnId) -> bool {
        self.map.contains_key(&id)
    }

    pub(crate) fn get(&self, id: ConnId) -> Option<&Conn> {
        self.map.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.map.get_mut(&id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (ConnId, &Conn)> {
        self.map.iter().map(|(id, c)| (*id, c))
    }

    pub(crate) fn ids(&self) -> Vec<ConnId> {
        self.map.keys().copied().collect()
    }

    /// Adds a connection (its deadline indexed). An id in use is left as it is.
    pub(crate) fn insert(&mut self, id: ConnId, conn: Conn) {
        let c = self.map.entry(id).or_insert(conn);
        let to = c.next_deadline();
        self.deadlines.rearm(&id, &mut c.armed, to);
    }

    /// Removes a connection (and its deadline).
    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let mut c = self.map.remove(&id)?;
        self.deadlines.rearm(&id, &mut c.armed, None);
        Some(c)
    }

    fn rearm(&mut self, id: ConnId) {
        if let Some(c) = self.map.get_mut(&id) {
            let to = c.next_deadline();
            self.deadlines.rearm(&id, &mut c.armed, to);
        }
    }

    /// Puts `id` on the ready list unless it is on it or has sent its close.
    pub(crate) fn mark_ready(&mut self, id: ConnId) {
        if let Some(c) = self.map.get_mut(&id) {
            if !c.queued && !c.close_sent {
                c.queued = true;
                self.ready.push_back(id);
            }
        }
    }

    /// A new event in `id`'s session whose append evicted up to `evicted`: wakes `id`, or
    /// returns true if it was not sent what was evicted (a slow consumer). One lookup: this
    /// runs for every published event.
    #[inline]
    pub(crate) fn new_event(&mut self, id: ConnId, evicted: Option<u64>) -> bool {
        let Some(c) = self.map.get_mut(&id) else {
            return false;
        };
        if evicted.is_some_and(|e| !c.is_closing() && c.min_needed() <= e) {
            return true;
        }
        c.owed = true;
        if !c.queued && !c.close_sent {
            c.queued = true;
            self.ready.push_back(id);
        }
        false
    }

    /// The next connection of the ready list, taken off it (the caller clears its `queued`).
    #[inline]
    pub(crate) fn pop_ready(&mut self) -> Option<ConnId> {
        self.ready.pop_front()
    }

    /// An inbound frame on `id` at `now` (wall-clock `wall`): proof of life. False if it must
    /// be dropped (unknown or closing connection).
    pub(crate) fn inbound(&mut self, id: ConnId, now: Instant, wall: f64) -> bool {
        let Some(c) = self.map.get_mut(&id) else {
            return false;
        };
        if c.is_closing() {
            return false;
        }
        c.last_inbound_wall = wall;
        if let Some(h) = c.heartbeat.as_mut() {
            h.on_inbound(now);
            // Moves the deadline only when silence, not a ping, was the next thing due.
            let to = c.next_deadline();
            self.deadlines.rearm(&id, &mut c.armed, to);
        }
        true
    }

    /// `frames` frames of `bytes` bytes left `id`'s in-flight window (the adapter wrote them).
    /// Wakes it only if the confirmation opens a window that was full: output only ever waits
    /// for a full window (anything else is already on the ready list). True if it did.
    pub(crate) fn sent(
        &mut self,
        id: ConnId,
        frames: usize,
        bytes: usize,
        max: (usize, usize),
    ) -> bool {
        let Some(c) = self.map.get_mut(&id).filter(|_| frames > 0) else {
            return false;
        };
        let was_full = c.in_flight_frames >= max.0 || c.in_flight_bytes >= max.1;
        c.in_flight_frames = c.in_flight_frames.saturating_sub(frames);
        c.in_flight_bytes = c.in_flight_bytes.saturating_sub(bytes);
        if was_full {
            self.mark_ready(id);
        }
        was_full
    }

    /// Queues an untracked frame for `id` (nothing for a closing connection); `ControlFull` if
    /// its queue already holds `max` frames.
    pub(crate) fn push_control(
        &mut self,
        id: ConnId,
        frame: FrameText,
        max: usize,
    ) -> Result<(), ControlFull> {
        let Some(c) = self.map.get_mut(&id) else {
            return Ok(());
        };
        if c.is_closing() {
            return Ok(());
        }
        if c.control.len() >= max {
            return Err(ControlFull);
        }
        c.control.push_back(frame);
        self.mark_ready(id);
        Ok(())
    }

    /// Queues `frame` for every connection bound to a session and not closing, in one pass;
    /// returns how many, and appends to `full` those whose control queue already held `max`
    /// frames (slow consumers, put on the ready list where the frame would have woken them).
    pub(crate) fn push_control_to_bound(
        &mut self,
        frame: &FrameText,
        max: usize,
        full: &mut Vec<ConnId>,
    ) -> usize {
        let mut sent = 0;
        for (id, c) in self.map.iter_mut() {
            if c.bound.is_none() || c.is_closing() {
                continue;
            }
            sent += 1;
            if c.control.len() >= max {
                full.push(*id);
            } else {
                c.control.push_back(frame.clone());
            }
            if !c.queued && !c.close_sent {
                c.queued = true;
                self.ready.push_back(*id);
            }
        }
        sent
    }

    /// Puts a handshake reply ahead of anything queued (e.g. a ping): nothing else goes out
    /// between a handshake and its answer.
    pub(crate) fn push_front_control(&mut self, id: ConnId, frame: FrameText) {
        if let Some(c) = self.map.get_mut(&id) {
            if !c.is_closing() {
                c.control.push_front(frame);
                self.mark_ready(id);
            }
        }
    }

    /// Binds `id` to a session after a successful handshake: its handshake deadline stops
    /// and its heartbeat starts (if not already running).
    pub(crate) fn bind(&mut self, id: ConnId, binding: Binding, hb: HeartbeatConfig, now: Instant) {
        let Some(c) = self.map.get_mut(&id) else {
            return;
        };
        c.bound = Some(binding);
        c.handshake_deadline = None;
        if c.heartbeat.is_none() {
            c.heartbeat = Some(Heartbeat::new(hb, now));
        }
        self.rearm(id);
    }

    /// Decides to close `id` with `code` and `reason`, after the output `flush` keeps (`head`:
    /// its session's head, for a graceful close). Its timers stop. Returns the session it was
    /// bound to, or `None` if it is unknown or already closing (then nothing changes).
    pub(crate) fn close(
        &mut self,
        id: ConnId,
        (code, reason): (u16, String),
        flush: Flush,
        head: u64,
    ) -> Option<Option<SessionId>> {
        let c = self.map.get_mut(&id)?;
        if c.is_closing() {
            return None;
        }
        let flush_until = match flush {
            Flush::Nothing => {
                c.control.clear();
                c.replay = None;
                0
            }
            Flush::Control => {
                c.replay = None;
                0
            }
            Flush::All => head,
        };
        c.closing = Some(Closing {
            code,
            reason,
            flush_until,
        });
        c.heartbeat = None;
        c.handshake_deadline = None;
        let bound = c.bound.as_ref().map(|b| b.session.clone());
        self.rearm(id);
        Some(bound)
    }

    /// The earliest timer of any connection.
    #[inline]
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Every connection whose timer is due at `now`, in id order, for [`timer`](Self::timer).
    pub(crate) fn pop_due(&mut self, now: Instant, due: &mut Vec<ConnId>) {
        self.deadlines.pop_due(|at| at <= now, due);
        for id in due.iter() {
            if let Some(c) = self.map.get_mut(id) {
                c.armed = None;
            }
        }
        due.sort_unstable();
    }

    /// Runs `id`'s timers at `now` (after [`pop_due`](Self::pop_due)) and indexes its next
    /// deadline. A handshake deadline that passed stops there (the close follows).
    pub(crate) fn timer(&mut self, id: ConnId, now: Instant) -> Option<ConnTimer> {
        let c = self.map.get_mut(&id)?;
        let fired = if c.is_closing() {
            None
        } else if c.handshake_deadline.is_some_and(|d| now >= d) {
            c.handshake_deadline = None;
            Some(ConnTimer::HandshakeExpired)
        } else {
            match c.heartbeat.as_mut().and_then(|h| h.poll(now)) {
                Some(HeartbeatAction::Dead) => Some(ConnTimer::Dead),
                Some(HeartbeatAction::SendPing) => Some(ConnTimer::Ping),
                None => None,
            }
        };
        self.rearm(id);
        fired
    }

    /// Checks the deadline index against every connection (tests).
    #[cfg(test)]
    pub(crate) fn check_deadlines(&self) {
        let armed = self.map.values().filter(|c| c.armed.is_some()).count();
        assert_eq!(
            armed,
            self.deadlines.len(),
            "one index entry per armed connection"
        );
        for c in self.map.values() {
            assert_eq!(c.armed, c.next_deadline(), "indexed at its next deadline");
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
