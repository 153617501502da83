//! The sans-IO server machine: sessions, stamping, recovery window, resume, presence, health.
//!
//! One [`Server`] serves many connections, each named by a [`ConnId`] the adapter allocates.
//! It speaks v1 (the PraisonAI gateway protocol, so the real Python `GatewayClient` works
//! against it) and v2 (tether's superset, negotiated only when the client offers max ≥ 2).
//!
//! # Drive contract
//! After **any** `handle_*` call or command, drain [`Server::poll_transmit`] (write the frames,
//! then report each written frame with [`Server::handle_sent`]), [`Server::poll_event`] (and
//! in store mode [`Server::poll_store_request`]) and read [`Server::poll_timeout`]; call [`Server::handle_timeout`] with the clock's current time
//! when that deadline passes (early or repeated calls do nothing). The machine reads no clock,
//! does no IO and draws randomness only from `ServerConfig::seed`: same inputs, same outputs.
//!
//! Flow control: each connection has an in-flight window (`max_queued_frames`,
//! `max_buffered_bytes`) of frames handed out but not yet confirmed by `handle_sent`. Tracked
//! frames are not copied per connection: the session's recovery window is the buffer, and a
//! connection only becomes a slow consumer (close `SLOW_CONSUMER`, `slow_consumer`) when the window
//! evicts an event it has not been sent yet, or its control queue (pong, errors, broadcasts)
//! overflows. A single frame larger than the byte window still goes out when nothing is in
//! flight, so a big answer never evicts its reader.
//!
//! # Recovery window
//! Tracked events are kept for [`ServerConfig::recovery_window`] (default 120 s) for resumes,
//! within per-session and total byte bounds (the field docs state which bound wins). An event
//! published to many sessions with [`Server::publish_to`] is stored once, in a log shared by
//! the sessions' windows; each session still numbers it with its own cursor, and the frames
//! on the wire are the same as if it had been published to each session in turn.
//!
//! # Structure
//! The machine is composed of sub-machines that own their state: the connections (flow
//! control, control queue, replay phase, timers: `conns.rs`), the sessions (windows, dedup,
//! epochs, TTLs: `sessions.rs`) over the shared event log (`log.rs`, `window.rs`), the
//! handshake acceptor that decides and the attach step that applies its decision
//! (`handshake.rs`, `attach.rs`), presence and health (`status.rs`), snapshots
//! (`snapshot.rs`) and store mode (`store.rs`). Timers live in deadline indexes
//! (`deadlines.rs`): [`Server::poll_timeout`] is O(log n) and [`Server::handle_timeout`]
//! visits only what is due, however many connections and sessions are idle.
//!
//! # Wire decisions (v1 and v2)
//! - `hello_ok` always carries `sequence`: the first replayed cursor − 1 when replays follow,
//!   else the head. v2 adds `oldest_cursor` (oldest retained cursor, `head + 1` when nothing is
//!   retained), `resync_required` (`since` given and `since + 1 < oldest_cursor`), `presence`
//!   (clients of the same agent) and `health`. The join path's `joined` uses the same values
//!   (no off-by-one) and, when `resync_required`, sends the reference `snapshot` envelope and
//!   then the retained replays anyway.
//! - v1 hello with loss: `sequence` is set to `since`, so the Python client's own gap check
//!   reports the lost range on the first replay instead of skipping it silently.
//! - Replays: `{"type":"replay","event":E}` on the v1 hello path, `+ "seq":n` on the join path
//!   and in v2; v2 then always sends `{"type":"replay_end","cursor":<head>,"replayed":<n>}`,
//!   plus `"lost_from":a,"lost_to":b` when cursors `a..=b` are gone. A v2 client may send
//!   `{"type":"resync","since":n}` at any time after the handshake: replays of the cursors
//!   > n already sent live, then `replay_end` (`cursor` = last cursor sent live).
//! - Tracked frames end with `"cursor":n,"seq":n`; `error` frames are never tracked.
//!   `response` frames: `accepted` (`content:"Started processing."`, `session_id`,
//!   `request_id`), `final` (`content`, `outcome{status[,error]}`, `session_id`, `request_id`),
//!   `duplicate` (`[content, outcome` once answered`]`, `session_id`, `request_id`).
//! - An unknown `session_id` gets a new session with a fresh server-chosen id
//!   (`resumed:false`, `cursor:0`): a client whose cursor is above the head must reset.
//! - Closes (codes named in [`wire::close`](crate::wire::close)): `AUTH_FAILED` (after
//!   `hello_error`), `SESSION_TAKEN_OVER` `session_taken_over`, `LIVENESS_TIMEOUT`
//!   `liveness_timeout`, `SLOW_CONSUMER` `slow_consumer`, `HANDSHAKE_TIMEOUT`
//!   `handshake_timeout`, `INVALID_PAYLOAD` for garbage (after `error` `invalid_frame`),
//!   `UNSUPPORTED_DATA` for binary, `MESSAGE_TOO_BIG` over `max_frame_bytes` (after `error`
//!   `payload_too_large`), `UNKNOWN_FRAME_FLOOD`, `GOING_AWAY` `server_shutdown`; in store
//!   mode `STORE_GAP` `store_gap` and `SESSION_LOST` `session_lost` (see
//!   [`Server::handle_store_lost`]).
//!
//! ```
//! use std::time::Instant;
//! use tether_core::server::{Server, ServerConfig, ConnId, ConnectInfo, ServerTransmit};
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now(); // the adapter's clock, never read inside the core
//! let mut server = Server::new(ServerConfig { agents: vec!["echo".into()], ..ServerConfig::default() }, now);
//! let conn = ConnId(1);
//! server.handle_connected(now, conn, ConnectInfo::default());
//! server.handle_text(now, conn, r#"{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":1}"#);
//! while let Some((to, out)) = server.poll_transmit() {
//!     if let ServerTransmit::Frame(text) = &out {
//!         server.handle_sent(now, to, text.len()); // after the socket accepted it
//!     }
//! }
//! while let Some(_event) = server.poll_event() {}
//! let _next_wakeup = server.poll_timeout();
//! ```

mod attach;
mod auth;
mod config;
mod conns;
mod deadlines;
mod event;
mod fanout;
mod handshake;
mod log;
mod output;
mod publish;
mod replay;
mod requests;
mod session;
mod sessions;
mod snapshot;
mod status;
mod store;
#[cfg(test)]
mod tests;
mod text;
mod window;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use auth::{AllowAll, Authenticator, ConnectInfo, Principal, Rejection, SharedToken};
pub use config::ServerConfig;
pub use conns::ConnId;
pub use event::{CommandError, PeerError, RestoreError, ServerEvent, ServerTransmit};
pub use fanout::Audience;
pub use session::{Outcome, OutcomeStatus, SessionId};
pub use snapshot::{DedupSnapshot, ServerSnapshot, SessionSnapshot};
pub use status::{Health, Liveness, PresenceInfo, ServerStats};
pub use store::{Ingest, IngestError, StoreRequest, StoreUnavailable, StoredSession, Unsequenced};
pub use text::FrameText;
pub use window::Recorded;

use conns::{Binding, ConnTimer, Connections, Flush};
use log::EventLog;
use output::Output;
use sessions::Sessions;

use crate::rng::Rng;
use crate::wire::{close, encode, ClientFrame, ConnectErrorCode, DecodeError, RecoveryStep};

/// One input, for generated tests and fuzzing ([`Server::handle_input`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ServerInput {
    /// [`Server::handle_connected`].
    Connected(ConnId, ConnectInfo),
    /// [`Server::handle_text`].
    Text(ConnId, String),
    /// [`Server::handle_binary`].
    Binary(ConnId, usize),
    /// [`Server::handle_sent`].
    Sent(ConnId, usize),
    /// [`Server::handle_closed`].
    Closed(ConnId),
    /// [`Server::handle_timeout`].
    Timeout,
}

/// The server machine. See the [module docs](self) for the drive contract.
pub struct Server {
    config: ServerConfig,
    auth: Box<dyn Authenticator + Send>,
    rng: Rng,
    start: Instant,
    sessions: Sessions,
    conns: Connections,
    events: VecDeque<ServerEvent>,
    /// Store mode: what the session store is asked (`poll_store_request`).
    store_requests: VecDeque<StoreRequest>,
    /// Every session's retained events, each stored once.
    log: EventLog,
    /// The latest `now` the log was brought to its bounds at (evictions happen then): a
    /// connection that finds an event it was owed gone is a slow consumer from then on.
    log_time: Instant,
    /// Where frames are assembled before they become shared text.
    output: Output,
    /// What `handle_timeout` found due (kept to reuse their buffers).
    due_conns: Vec<ConnId>,
    due_sessions: Vec<SessionId>,
    reaped: u64,
    last_inbound_wall: f64,
    shutting_down: bool,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("sessions", &self.sessions.len())
            .field("conns", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server starting at `now` (which corresponds to `config.epoch_at_start` on the wall
    /// clock). With `config.auth_token` set, `?token=` is checked; else everyone is admitted.
    pub fn new(config: ServerConfig, now: Instant) -> Self {
        let auth: Box<dyn Authenticator + Send> = match &config.auth_token {
            Some(t) => Box::new(SharedToken::new(t.clone())),
            None => Box::new(AllowAll),
        };
        Self {
            rng: Rng::from_bytes(config.seed.unwrap_or_default()),
            last_inbound_wall: config.epoch_at_start,
            log: EventLog::new(config.recovery_window, config.recovery_total_bytes),
            config,
            auth,
            start: now,
            sessions: Sessions::default(),
            conns: Connections::default(),
            events: VecDeque::new(),
            store_requests: VecDeque::new(),
            output: Output::default(),
            log_time: now,
            due_conns: Vec::new(),
            due_sessions: Vec::new(),
            reaped: 0,
            shutting_down: false,
        }
    }

    /// Replaces the credential check (e.g. per-user principals from a signed cookie).
    pub fn set_authenticator(&mut self, auth: Box<dyn Authenticator + Send>) {
        self.auth = auth;
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Wall-clock seconds at `now`.
    fn wall(&self, now: Instant) -> f64 {
        self.config.epoch_at_start + now.saturating_duration_since(self.start).as_secs_f64()
    }

    // ----------------------------------------------------------------------------------------
    // Inputs

    /// Dispatches one [`ServerInput`].
    pub fn handle_input(&mut self, now: Instant, input: ServerInput) {
        match input {
            ServerInput::Connected(c, info) => self.handle_connected(now, c, info),
            ServerInput::Text(c, t) => self.handle_text(now, c, &t),
            ServerInput::Binary(c, n) => self.handle_binary(now, c, n),
            ServerInput::Sent(c, n) => self.handle_sent(now, c, n),
            ServerInput::Closed(c) => self.handle_closed(now, c),
            ServerInput::Timeout => self.handle_timeout(now),
        }
    }

    /// A WebSocket upgrade completed. Credentials are checked right away: a rejection queues
    /// the reference envelope (`hello_error`, then close [`wire::close::AUTH_FAILED`](crate::wire::close::AUTH_FAILED)) before any
    /// client frame. A
    /// `conn` id still in use is ignored.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId, info: ConnectInfo) {
        if self.conns.contains(conn) {
            return;
        }
        let wall = self.wall(now);
        let deadline = now.checked_add(self.config.handshake_timeout);
        let mut c = conns::Conn::new(deadline, wall);
        let verdict = if self.shutting_down {
            Err(Rejection {
                code: ConnectErrorCode::Unavailable,
                message: "Server shutting down".into(),
                next_step: Some(RecoveryStep::WaitThenRetry),
                next: None,
                retry_after_seconds: Some(1),
                close_code: close::GOING_AWAY,
            })
        } else if self.conns.len() >= self.config.max_connections {
            Err(Rejection {
                code: ConnectErrorCode::RateLimited,
                message: "Too many connections".into(),
                next_step: Some(RecoveryStep::WaitThenRetry),
                next: None,
                retry_after_seconds: Some(1),
                close_code: close::TOO_MANY_CONNECTIONS,
            })
        } else {
            self.auth.authenticate(&info)
        };
        match verdict {
            Ok(p) => {
                c.principal = Some(p);
                self.conns.insert(conn, c);
            }
            Err(r) => {
                // Over the connection cap the entry still exists until the adapter reports
                // the close; it holds one frame, so the bound holds up to a constant.
                self.conns.insert(conn, c);
                self.push_control(now, conn, handshake::hello_error_frame(&r));
                self.events.push_back(ServerEvent::ConnectionRejected {
                    conn,
                    code: r.code.clone(),
                });
                self.close_conn(now, conn, r.close_code, r.message, Flush::Control);
            }
        }
    }

    /// A text frame arrived.
    pub fn handle_text(&mut self, now: Instant, conn: ConnId, text: &str) {
        if !self.inbound(now, conn) {
            return;
        }
        if text.len() > self.config.max_frame_bytes {
            let err = DecodeError::TooLarge {
                len: text.len(),
                limit: self.config.max_frame_bytes,
            };
            self.push_control(
                now,
                conn,
                encode::error(
                    Some(ConnectErrorCode::PayloadTooLarge),
                    &err.to_string(),
                    None,
                ),
            );
            self.bad_input(conn, PeerError::Decode(err));
            self.close_conn(
                now,
                conn,
                close::MESSAGE_TOO_BIG,
                "payload_too_large".into(),
                Flush::Control,
            );
            return;
        }
        match ClientFrame::decode(text) {
            Ok(frame) => self.on_frame(now, conn, frame),
            Err(err) => self.on_decode_error(now, conn, text, err),
        }
    }

    /// A binary frame of `len` bytes arrived: not part of the protocol (error, close
    /// [`wire::close::UNSUPPORTED_DATA`](crate::wire::close::UNSUPPORTED_DATA)).
    pub fn handle_binary(&mut self, now: Instant, conn: ConnId, len: usize) {
        let _ = len;
        if !self.inbound(now, conn) {
            return;
        }
        self.unreadable_frame(now, conn, DecodeError::Binary, close::UNSUPPORTED_DATA);
    }

    /// A frame nothing sensible can follow on this socket (binary, not JSON, not an object):
    /// a typed `invalid_frame` error, then close `code` after it.
    pub(super) fn unreadable_frame(
        &mut self,
        now: Instant,
        conn: ConnId,
        err: DecodeError,
        code: u16,
    ) {
        self.push_control(
            now,
            conn,
            encode::error(Some(ConnectErrorCode::InvalidFrame), &err.to_string(), None),
        );
        self.bad_input(conn, PeerError::Decode(err));
        self.close_conn(now, conn, code, "invalid_frame".into(), Flush::Control);
    }

    /// The adapter wrote one frame of `bytes` wire bytes (from `poll_transmit`) to the socket:
    /// it leaves the in-flight window. Call once per written frame.
    pub fn handle_sent(&mut self, now: Instant, conn: ConnId, bytes: usize) {
        self.handle_sent_frames(now, conn, 1, bytes);
    }

    /// The adapter wrote `frames` frames of `bytes` wire bytes in all (from `poll_transmit`,
    /// for `conn`): the same as that many [`handle_sent`](Self::handle_sent) calls, in one.
    pub fn handle_sent_frames(&mut self, _now: Instant, conn: ConnId, frames: usize, bytes: usize) {
        let window = (
            self.config.max_queued_frames,
            self.config.max_buffered_bytes,
        );
        if self.conns.sent(conn, frames, bytes, window) && self.owes_evicted(conn) {
            // Decided here, with the input, so that its `Closing` is out before its Close.
            self.evicted_owed(conn);
        }
    }

    /// The transport is gone (peer close, error, or after our Close). The session stays
    /// resumable for the TTL; a connection displaced by a takeover never touches it.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.remove(conn) {
            if let Some(b) = c.bound {
                self.detach_if_owner(now, &b.session, conn);
            }
        }
    }

    /// Timers: handshake deadlines, pings, reaping, session expiry, events leaving the
    /// recovery window. Early or repeated calls do nothing. Only what is due is visited.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due_conns);
        self.conns.pop_due(now, &mut due);
        for id in due.drain(..) {
            match self.conns.timer(id, now) {
                Some(ConnTimer::HandshakeExpired) => {
                    self.bad_input(id, PeerError::HandshakeTimeout);
                    self.close_conn(
                        now,
                        id,
                        close::HANDSHAKE_TIMEOUT,
                        "handshake_timeout".into(),
                        Flush::Control,
                    );
                }
                Some(ConnTimer::Dead) => {
                    self.reaped += 1;
                    self.close_conn(
                        now,
                        id,
                        close::LIVENESS_TIMEOUT,
                        "liveness_timeout".into(),
                        Flush::Nothing,
                    );
                }
                Some(ConnTimer::Ping) => self.push_control(now, id, encode::PING),
                None => {}
            }
        }
        self.due_conns = due;
        // After the connections: a session they detached just now may expire at once.
        let mut expired = std::mem::take(&mut self.due_sessions);
        self.sessions
            .pop_expired(now, self.config.session_ttl, &mut expired);
        for id in expired.drain(..) {
            self.expire(&id);
        }
        self.due_sessions = expired;
        // Also what the expired sessions' windows were the last to hold.
        self.evict_log(now, self.wall(now));
        #[cfg(test)]
        self.check_deadlines();
    }

    /// Evicts what the log holds beyond the recovery window and the total byte bound (`wall`
    /// is the wall-clock time at `now`).
    fn evict_log(&mut self, now: Instant, wall: f64) {
        self.log_time = self.log_time.max(now);
        self.log.evict(wall);
    }

    /// When the oldest retained event leaves the window: up to [`EVICTION_SLACK`] late, so that
    /// a stream of events wakes the timer about once a second, not once per event (appends
    /// evict as they go, so this only matters for a quiet server).
    fn log_deadline(&self) -> Option<Instant> {
        let due = self.log.expires_at()?;
        let after_start = due - self.config.epoch_at_start + EVICTION_SLACK.as_secs_f64();
        if !after_start.is_finite() {
            return None; // a wall clock that is not one: the byte bounds still hold
        }
        let after_start = Duration::try_from_secs_f64(after_start.max(0.0)).ok()?;
        self.start.checked_add(after_start)
    }

    // ----------------------------------------------------------------------------------------
    // Outputs

    /// The next frame or close to write, and for which connection.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(ConnId, ServerTransmit)> {
        while let Some(id) = self.conns.pop_ready() {
            let Some(c) = self.conns.get_mut(id) else {
                continue;
            };
            c.queued = false;
            let mut out = self.output.for_conn(&self.log, &self.config);
            if let Some((t, more)) = out.next_frame(c, &self.sessions) {
                if more {
                    self.conns.mark_ready(id);
                }
                return Some((id, t));
            }
            if out.evicted {
                self.evicted_owed(id);
            }
        }
        None
    }

    /// Every transport action [`poll_transmit`](Self::poll_transmit) would return until
    /// `None`, appended to `out`, one connection's run after another (each connection's own
    /// order is kept; only the interleaving between connections differs). A transport that
    /// writes in batches saves the map lookups `poll_transmit` repeats for every frame.
    pub fn poll_transmits(&mut self, out: &mut Vec<(ConnId, ServerTransmit)>) {
        while let Some(id) = self.conns.pop_ready() {
            let Some(c) = self.conns.get_mut(id) else {
                continue;
            };
            c.queued = false;
            let mut output = self.output.for_conn(&self.log, &self.config);
            while let Some((t, more)) = output.next_frame(c, &self.sessions) {
                out.push((id, t));
                if !more {
                    break;
                }
            }
            if output.evicted {
                self.evicted_owed(id);
            }
        }
    }

    /// Whether connection `id` (open, not waiting for the store) is owed an event its
    /// session's window no longer holds: evicted by age or total size while its in-flight
    /// window was full. One lookup: checked when a confirmation opens that window.
    fn owes_evicted(&self, id: ConnId) -> bool {
        let Some(c) = self.conns.get(id) else {
            return false;
        };
        if c.is_closing() || c.awaiting_store {
            return false;
        }
        let Some(s) = c.bound.as_ref().and_then(|b| self.sessions.get(&b.session)) else {
            return false;
        };
        let cursor = c.min_needed();
        let owed = c.replay.as_ref().is_some_and(|r| r.next <= r.end) || cursor <= s.head;
        owed && s.window.get(&self.log, cursor).is_none()
    }

    /// Connection `id` was owed an event the log has evicted since (by age or total size): it
    /// is a slow consumer from when that happened; its close goes out next. Its own session's
    /// appends and the confirmation that opens its window decide this with the input (the
    /// `Closing` event is queued before anything is polled); the output finds it only for a
    /// connection still waiting to be drained when another session's append evicted its event.
    fn evicted_owed(&mut self, id: ConnId) {
        let at = self.log_time;
        self.slow_consumer(at, id);
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Store mode: the next request to the session store ([`StoreRequest`] says what to do); never
    /// one otherwise. Drained with the other outputs after every input.
    #[must_use]
    pub fn poll_store_request(&mut self) -> Option<StoreRequest> {
        self.store_requests.pop_front()
    }

    /// The earliest deadline: handshake, ping, reap, session expiry, or events leaving the
    /// recovery window. O(log n) in the connections and sessions held.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        #[cfg(test)]
        self.check_deadlines();
        let sessions = self.sessions.next_expiry(self.config.session_ttl);
        [self.conns.next_deadline(), sessions, self.log_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    // ----------------------------------------------------------------------------------------
    // Internals shared by the inputs and commands

    /// Common inbound bookkeeping; false if the frame must be dropped (unknown or closing).
    fn inbound(&mut self, now: Instant, conn: ConnId) -> bool {
        let wall = self.wall(now);
        if !self.conns.inbound(conn, now, wall) {
            return false;
        }
        self.last_inbound_wall = wall;
        true
    }

    fn bad_input(&mut self, conn: ConnId, error: PeerError) {
        self.events.push_back(ServerEvent::BadInput { conn, error });
    }

    /// The session `conn` is bound to; if none, the reference's untyped "Not joined" error.
    fn bound_or_refuse(&mut self, now: Instant, conn: ConnId) -> Option<Binding> {
        let bound = self.conns.get(conn).and_then(|c| c.bound.clone());
        if bound.is_none() {
            self.push_control(
                now,
                conn,
                encode::error(None, "Not joined to any session", None),
            );
        }
        bound
    }

    /// Queues an untracked frame; an overflowing control queue makes a slow consumer.
    fn push_control(&mut self, now: Instant, id: ConnId, frame: impl Into<FrameText>) {
        let max = self.config.max_control_frames.max(1);
        if self.conns.push_control(id, frame.into(), max).is_err() {
            self.slow_consumer(now, id);
        }
    }

    /// A reader too slow for its window: closed at once, nothing more sent.
    fn slow_consumer(&mut self, now: Instant, id: ConnId) {
        self.close_conn(
            now,
            id,
            close::SLOW_CONSUMER,
            "slow_consumer".into(),
            Flush::Nothing,
        );
    }

    /// Decides to close a connection: its session (if it owns one) is detached at once so a
    /// reconnect can resume it while the close drains.
    fn close_conn(&mut self, now: Instant, id: ConnId, code: u16, reason: String, flush: Flush) {
        let head = self
            .conns
            .get(id)
            .and_then(|c| c.bound.as_ref())
            .and_then(|b| self.sessions.get(&b.session))
            .map_or(0, |s| s.head);
        let Some(bound) = self.conns.close(id, (code, reason.clone()), flush, head) else {
            return;
        };
        self.events.push_back(ServerEvent::Closing {
            conn: id,
            code,
            reason,
        });
        if let Some(s) = bound {
            self.detach_if_owner(now, &s, id);
        }
        self.conns.mark_ready(id);
    }

    /// Detaches `session` from `conn` if (and only if) `conn` still owns it.
    fn detach_if_owner(&mut self, now: Instant, session: &SessionId, conn: ConnId) {
        let Some(agent_id) = self.sessions.detach_if_owner(session, conn, now) else {
            return;
        };
        self.events.push_back(ServerEvent::SessionDetached {
            session: session.clone(),
        });
        self.events
            .push_back(ServerEvent::PresenceChanged { agent_id });
    }

    /// At the session cap, expires the longest-detached session; false if every session is
    /// attached (no room).
    fn make_room(&mut self) -> bool {
        if self.sessions.len() < self.config.max_sessions.max(1) {
            return true;
        }
        match self.sessions.longest_detached().cloned() {
            Some(v) => {
                self.expire(&v);
                true
            }
            None => false,
        }
    }

    fn expire(&mut self, id: &SessionId) {
        if let Some(mut s) = self.sessions.remove(id) {
            s.window.clear(&mut self.log);
            self.events.push_back(ServerEvent::SessionExpired {
                session: id.clone(),
            });
        }
    }

    /// Checks both deadline indexes against what they index (unit tests, after each timer).
    #[cfg(test)]
    fn check_deadlines(&self) {
        self.conns.check_deadlines();
        self.sessions.check_index();
    }
}

/// How late the timer may evict events that left the recovery window (appends evict on time).
const EVICTION_SLACK: Duration = Duration::from_secs(1);
