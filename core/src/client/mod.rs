//! The client connection machine: handshake and negotiation, gap detection and repair, cursor
//! and resume, backoff, heartbeat and the request outbox, with no IO, clock or global RNG.
//!
//! # Drive contract
//! The adapter owns the socket and a timer. After creating the machine and after **every**
//! `handle_*` call or command, it drains [`Client::poll_transmit`] (performing each
//! [`Transmit`]), [`Client::poll_event`] (handing events to the application) and re-arms its timer
//! at [`Client::poll_timeout`], calling [`Client::handle_timeout`] with the *current* time when
//! it fires (early or repeated calls do nothing). After a [`Transmit::Close`] it feeds nothing
//! more from that socket. The last event is always exactly one [`Event::Closed`].

mod config;
mod event;
mod handshake;
mod inbound;
mod input;
mod kind;
mod outbox;
mod payload;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use config::{ClientConfig, HandshakeMode};
pub use event::{
    ClosedReason, Delivered, DisconnectCause, Event, Rejection, RequestStatus, RequestUpdate,
    State, Transmit,
};
pub use input::ClientInput;
pub use kind::Kind;
use outbox::Outbox;
pub use payload::Payload;
use payload::PayloadBatches;

use crate::backoff::Backoff;
use crate::cursor::ResumeState;
use crate::heartbeat::{Heartbeat, HeartbeatAction, HeartbeatConfig};
use crate::rng::Rng;
use crate::sequence::{SequenceTracker, Verdict};
use crate::version::{negotiate, VersionRange};
use crate::wire::{
    close, ClientFrame, ConnectErrorCode, DecodeError, ErrorFrame, EventFrame, Hello, HelloError,
    Join, RecoveryStep, ResponseFrame, ServerFrame,
};

/// Misuse of the client API (not a peer problem).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The client has stopped for good; create a new one.
    #[error("the client is closed")]
    Closed,
    /// Too many unresolved requests; wait for outcomes before sending more.
    #[error("outbox full ({capacity} unresolved requests)")]
    OutboxFull {
        /// The configured capacity.
        capacity: usize,
    },
    /// Empty content: the PraisonAI server accepts it but never answers, stalling the session.
    #[error("message content must not be empty")]
    EmptyContent,
    /// The request id is already in use by an unresolved request.
    #[error("request id {0:?} is already pending")]
    DuplicateRequestId(String),
}

/// Running counters, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Tracked events delivered.
    pub delivered: u64,
    /// Duplicates and stale frames dropped.
    pub duplicates: u64,
    /// Live gaps detected.
    pub gaps: u64,
    /// Events reported lost.
    pub lost: u64,
    /// Connections that reached the handshake.
    pub connections: u64,
    /// Frames that could not be decoded.
    pub bad_frames: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Asked the adapter for a socket.
    Connecting,
    /// Socket open, handshake sent.
    Handshaking(HandshakeMode),
    Connected,
    /// Between connections, `reconnect_at` armed.
    Waiting,
    AwaitingCredentials,
    Closed,
}

/// State that lives and dies with one socket.
#[derive(Debug, Default)]
struct Conn {
    heartbeat: Option<Heartbeat>,
    /// Head cursor announced by the handshake, until the replays that follow it are over.
    replay_head: Option<u64>,
    /// A recoverable rejection received, explaining the close that follows.
    rejection: Option<Rejection>,
    /// An in-band resync is in flight from this expected sequence.
    repair_pending: Option<u64>,
    /// A replay frame of the current replay phase (after a handshake or a resync) was seen. A
    /// hole before the first one is the server's window (gone); a hole after it was lost on
    /// the way, because a server replays what it holds contiguously, so it is repaired.
    replay_seen: bool,
    /// v2: a hole inside the replay phase, repaired by a resync once the phase has ended (the
    /// rest of the phase is still on its way and would mix with the resync's replays).
    replay_hole: Option<u64>,
    legacy: bool,
}

/// The sans-IO client connection machine. See the module docs for the drive contract.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    rng: Rng,
    backoff: Backoff,
    phase: Phase,
    session_id: Option<String>,
    cursor: Option<u64>,
    tracker: Option<SequenceTracker>,
    version: Option<u32>,
    /// The session's epoch from the last v2 handshake.
    epoch: Option<u64>,
    conn: Conn,
    handshake_deadline: Option<Instant>,
    reconnect_at: Option<Instant>,
    /// Expected sequence of the last live gap a repair was attempted for (no repair loops).
    repaired_from: Option<u64>,
    outbox: Outbox,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// The texts of delivered events, one shared buffer per batch.
    payloads: PayloadBatches,
    stats: ClientStats,
}

impl Client {
    /// A client for a new session; it asks for a socket at once ([`Transmit::Open`]).
    pub fn new(config: ClientConfig, now: Instant) -> Self {
        Self::with_resume_state(config, ResumeState::default(), now)
    }

    /// A client that resumes a persisted session (after a process restart): it rejoins `since`
    /// the saved cursor and resends the saved unresolved requests with their ids.
    pub fn with_resume_state(config: ClientConfig, state: ResumeState, now: Instant) -> Self {
        let mut rng = Rng::from_bytes(config.seed.unwrap_or_default());
        let backoff = Backoff::new(config.backoff.clone(), rng.fork());
        let mut outbox = Outbox::default();
        for p in state.outbox {
            if !outbox.contains(&p.request_id) {
                outbox.push(p.request_id, p.content, true);
            }
        }
        let tracker = state
            .session_id
            .as_ref()
            .and(state.sequence.or(state.cursor))
            .map(|last| SequenceTracker::new(last.saturating_add(1)));
        let mut client = Self {
            config,
            rng,
            backoff,
            phase: Phase::Closed,
            cursor: state.session_id.as_ref().and(state.cursor),
            session_id: state.session_id,
            tracker,
            version: state.version,
            epoch: state.epoch,
            conn: Conn::default(),
            handshake_deadline: None,
            reconnect_at: None,
            repaired_from: None,
            outbox,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            payloads: PayloadBatches::default(),
            stats: ClientStats::default(),
        };
        client.open(now);
        client
    }

    // ---------------------------------------------------------------- outputs

    /// The next transport action.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Whether a transport action is waiting for [`poll_transmit`](Self::poll_transmit): a
    /// transport that feeds several frames in a row stops here, so that a reply or a close
    /// takes effect before the next frame is fed.
    #[must_use]
    pub fn has_transmit(&self) -> bool {
        !self.transmits.is_empty()
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        let mut event = self.events.pop_front()?;
        if let Event::Delivered(d) = &mut event {
            self.payloads.resolve(&mut d.payload);
        }
        Some(event)
    }

    /// When [`Client::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let connected = self.phase == Phase::Connected;
        let heartbeat = self
            .conn
            .heartbeat
            .as_ref()
            .filter(|_| connected)
            .and_then(Heartbeat::next_deadline);
        [self.handshake_deadline, self.reconnect_at, heartbeat]
            .into_iter()
            .flatten()
            .min()
    }

    // ---------------------------------------------------------------- queries

    /// What to persist to resume after a restart.
    pub fn resume_state(&self) -> ResumeState {
        ResumeState {
            session_id: self.session_id.clone(),
            cursor: self.cursor,
            sequence: self.tracker.as_ref().and_then(SequenceTracker::last),
            version: self.version,
            epoch: self.epoch,
            outbox: self.outbox.pending(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        let mut stats = self.stats;
        stats.duplicates += self.tracker.as_ref().map_or(0, SequenceTracker::duplicates);
        stats
    }

    /// The current session, once a handshake has named one.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// The resume cursor (`since` of the next handshake).
    pub fn cursor(&self) -> Option<u64> {
        self.cursor
    }

    /// Whether the handshake is done and events flow.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Connected
    }

    /// Whether the client has stopped for good.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    // ---------------------------------------------------------------- commands

    /// Queues a message; it is written now if connected, else after the next handshake. Returns
    /// its `request_id` (random from the seeded PRNG); outcomes arrive as [`Event::Request`].
    pub fn send(&mut self, now: Instant, content: impl Into<Value>) -> Result<String, SendError> {
        let id = self.rng.hex_id(16);
        self.send_with_id(now, id, content)
    }

    /// Like [`Client::send`] with a caller-chosen idempotency key.
    pub fn send_with_id(
        &mut self,
        _now: Instant,
        request_id: impl Into<String>,
        content: impl Into<Value>,
    ) -> Result<String, SendError> {
        let (request_id, content) = (request_id.into(), content.into());
        if self.phase == Phase::Closed {
            return Err(SendError::Closed);
        }
        if content.is_null() || content.as_str().is_some_and(str::is_empty) {
            return Err(SendError::EmptyContent);
        }
        if self.outbox.len() >= self.config.outbox_capacity {
            return Err(SendError::OutboxFull {
                capacity: self.config.outbox_capacity,
            });
        }
        if self.outbox.contains(&request_id) {
            return Err(SendError::DuplicateRequestId(request_id));
        }
        self.outbox.push(request_id.clone(), content, false);
        if self.phase == Phase::Connected {
            self.flush_outbox();
        }
        Ok(request_id)
    }

    /// Stops for good: closes the socket cleanly if one is open and emits [`Event::Closed`]
    /// with [`ClosedReason::Requested`]. Never raises an earlier error; idempotent.
    pub fn disconnect(&mut self, _now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        if self.socket_open() {
            self.close_socket(close::NORMAL, "client disconnect");
        }
        self.finish(ClosedReason::Requested);
    }

    /// After [`State::AwaitingCredentials`]: the adapter has fresh credentials; reconnect now.
    pub fn credentials_refreshed(&mut self, now: Instant) {
        if self.phase == Phase::AwaitingCredentials {
            self.backoff.reset();
            self.open(now);
        }
    }

    // ---------------------------------------------------------------- transport inputs

    /// The socket asked for by [`Transmit::Open`] is open: the handshake goes out.
    pub fn handle_connected(&mut self, _now: Instant) {
        if self.phase != Phase::Connecting {
            return;
        }
        self.conn = Conn::default();
        let mode = self.config.handshake;
        self.send_handshake(mode);
    }

    /// The socket asked for by [`Transmit::Open`] could not be opened.
    pub fn handle_connect_failed(&mut self, now: Instant, reason: impl Into<String>) {
        if self.phase == Phase::Connecting {
            self.connection_ended(now, DisconnectCause::ConnectFailed(reason.into()));
        }
    }

    /// The socket closed (`code` `None`: no close frame) or a write failed.
    pub fn handle_closed(&mut self, now: Instant, code: Option<u16>, reason: &str) {
        if !self.socket_open() {
            return;
        }
        if code == Some(close::CREDENTIALS_ROTATED) {
            // Credentials rotated: reconnecting with the old ones would only be refused.
            self.end_socket();
            self.phase = Phase::AwaitingCredentials;
            self.events
                .push_back(Event::StateChanged(State::AwaitingCredentials));
            return;
        }
        let cause = match self.conn.rejection.take() {
            Some(rejection) => DisconnectCause::Rejected(rejection),
            None => DisconnectCause::Closed {
                code,
                reason: reason.to_owned(),
            },
        };
        self.connection_ended(now, cause);
    }

    /// A binary frame arrived: not part of the protocol; reported and dropped.
    pub fn handle_binary(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Handshaking(_) | Phase::Connected) {
            return;
        }
        if let Some(hb) = self.conn.heartbeat.as_mut() {
            hb.on_inbound(now);
        }
        self.bad_frame(DecodeError::Binary);
    }

    /// A text frame arrived.
    pub fn handle_text(&mut self, now: Instant, text: &str) {
        let mode = match self.phase {
            Phase::Handshaking(mode) => Some(mode),
            Phase::Connected => None,
            _ => return,
        };
        if let Some(hb) = self.conn.heartbeat.as_mut() {
            hb.on_inbound(now);
        }
        if text.len() > self.config.max_frame_bytes {
            return self.bad_frame(DecodeError::TooLarge {
                len: text.len(),
                limit: self.config.max_frame_bytes,
            });
        }
        if mode.is_none() {
            if let Some((kind, seq, cursor)) = live_tracked(text) {
                // The hot path: a live tracked event is delivered from the text as it came,
                // exactly as the `ServerFrame::Event` arm of `on_frame` would.
                self.end_replay_phase(None);
                return self.on_tracked(now, kind, seq, cursor, text, false);
            }
        }
        match ServerFrame::decode(text) {
            Err(err) => self.bad_frame(err),
            Ok(frame) => match mode {
                Some(mode) => self.on_handshake_reply(now, mode, frame),
                None => self.on_frame(now, frame),
            },
        }
    }

    /// Timers: handshake deadline, reconnect, heartbeat.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.handshake_deadline.is_some_and(|d| now >= d) {
            self.handshake_deadline = None;
            if matches!(self.phase, Phase::Connecting | Phase::Handshaking(_)) {
                self.close_socket(close::NORMAL, "handshake timeout");
                self.connection_ended(now, DisconnectCause::HandshakeTimeout);
            }
        }
        if self.phase == Phase::Waiting && self.reconnect_at.is_some_and(|d| now >= d) {
            self.reconnect_at = None;
            self.open(now);
        }
        if self.phase == Phase::Connected {
            match self.conn.heartbeat.as_mut().and_then(|hb| hb.poll(now)) {
                Some(HeartbeatAction::SendPing) => self.send_frame(&ClientFrame::Ping),
                Some(HeartbeatAction::Dead) => {
                    self.close_socket(close::LIVENESS_TIMEOUT, "liveness_timeout");
                    self.connection_ended(now, DisconnectCause::HeartbeatTimeout);
                }
                None => {}
            }
        }
    }

    // ---------------------------------------------------------------- internals: lifecycle

    fn socket_open(&self) -> bool {
        matches!(
            self.phase,
            Phase::Connecting | Phase::Handshaking(_) | Phase::Connected
        )
    }

    fn open(&mut self, now: Instant) {
        self.phase = Phase::Connecting;
        self.handshake_deadline = Some(after(now, self.config.handshake_timeout));
        self.transmits.push_back(Transmit::Open);
        self.events
            .push_back(Event::StateChanged(State::Connecting {
                attempt: self.backoff.attempt(),
            }));
    }

    fn send_frame(&mut self, frame: &ClientFrame) {
        self.transmits.push_back(Transmit::Frame(frame.encode()));
    }

    fn close_socket(&mut self, code: u16, reason: &str) {
        self.transmits.push_back(Transmit::Close {
            code,
            reason: reason.to_owned(),
        });
    }

    /// Forgets the socket's state; unanswered requests wait for a resend (or turn ambiguous).
    fn end_socket(&mut self) {
        self.conn = Conn::default();
        self.handshake_deadline = None;
        let updates = self.outbox.connection_lost(self.config.resend_unanswered);
        self.push_request_updates(updates);
    }

    /// The socket is gone (or being closed by us): report it and schedule the next attempt.
    fn connection_ended(&mut self, now: Instant, cause: DisconnectCause) {
        let floor = match &cause {
            DisconnectCause::Rejected(r) => r.retry_after,
            _ => None,
        };
        self.end_socket();
        self.events
            .push_back(Event::StateChanged(State::Disconnected {
                cause: cause.clone(),
            }));
        let delay = if cause == DisconnectCause::GapRepair {
            // Not a failure: resume at once to fetch the missing events.
            Duration::ZERO
        } else {
            if let Some(floor) = floor {
                self.backoff.set_floor(floor);
            }
            match self.backoff.next_delay(now) {
                Ok(delay) => delay,
                Err(limit) => {
                    return self.finish(ClosedReason::GaveUp { limit, last: cause });
                }
            }
        };
        let delay = delay.min(MAX_WAIT);
        self.phase = Phase::Waiting;
        self.reconnect_at = Some(after(now, delay));
        self.events
            .push_back(Event::StateChanged(State::Reconnecting {
                attempt: self.backoff.attempt(),
                delay,
            }));
    }

    fn finish(&mut self, reason: ClosedReason) {
        self.conn = Conn::default();
        self.handshake_deadline = None;
        self.reconnect_at = None;
        self.phase = Phase::Closed;
        self.events.push_back(Event::Closed(reason));
    }

    fn bad_frame(&mut self, err: DecodeError) {
        self.stats.bad_frames += 1;
        self.events.push_back(Event::BadFrame(err));
    }

    fn protocol_error(&mut self, now: Instant, what: String) {
        self.close_socket(close::PROTOCOL_ERROR, "protocol error");
        self.connection_ended(
            now,
            DisconnectCause::Closed {
                code: Some(close::PROTOCOL_ERROR),
                reason: what,
            },
        );
    }

    fn reject(&mut self, now: Instant, rejection: Rejection) {
        if rejection.code.is_recoverable() {
            self.close_socket(close::NORMAL, "rejected");
            self.connection_ended(now, DisconnectCause::Rejected(rejection));
        } else {
            self.close_socket(close::NORMAL, "rejected");
            self.finish(ClosedReason::Rejected(rejection));
        }
    }

    fn flush_outbox(&mut self) {
        for frame in self.outbox.write_queued() {
            self.transmits.push_back(Transmit::Frame(frame));
        }
    }

    fn push_request_updates(&mut self, updates: Vec<RequestUpdate>) {
        self.events.extend(updates.into_iter().map(Event::Request));
    }
}

/// The `type`, sequence and cursor of a live tracked event frame (the hot path of
/// `handle_text`), or `None` for any other frame, which goes through [`ServerFrame::decode`].
/// Tracked frames of these types decode to their own frame kinds, not to events.
fn live_tracked(text: &str) -> Option<(&str, u64, u64)> {
    let p = crate::wire::peek(text)?;
    let seq = p.seq.or(p.cursor)?;
    let cursor = p.cursor.or(p.seq)?;
    let framed = matches!(
        p.kind,
        "hello_ok" | "hello_error" | "joined" | "replay" | "snapshot" | "replay_end"
    );
    (!framed).then_some((p.kind, seq, cursor))
}

/// Sequence numbers and cursors above this are refused as malformed: 2^53 − 1 is the largest
/// integer every JSON peer (JavaScript included) represents exactly, and a bound keeps the
/// counters clear of overflow.
pub const MAX_SEQUENCE: u64 = (1 << 53) - 1;

/// Longest wait the machine ever schedules (a peer's `retry_after` or a config cannot push a
/// deadline past what `Instant` can hold).
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// `now + wait`, with `wait` capped at [`MAX_WAIT`].
fn after(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait.min(MAX_WAIT)).unwrap_or(now)
}

#[cfg(test)]
mod tests;
