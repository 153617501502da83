//! The sans-IO server machine: sessions, stamping, recovery window, resume, presence, health.
//!
//! One [`Server`] serves many connections, each named by a [`ConnId`] the adapter allocates.
//! It speaks v1 (the PraisonAI gateway protocol, so the real Python `GatewayClient` works
//! against it) and v2 (tether's superset, negotiated only when the client offers max ≥ 2).
//!
//! # Drive contract
//! After **any** `handle_*` call or command, drain [`Server::poll_transmit`] (write the frames,
//! then report each written frame with [`Server::handle_sent`]), [`Server::poll_event`] and
//! read [`Server::poll_timeout`]; call [`Server::handle_timeout`] with the clock's current time
//! when that deadline passes (early or repeated calls do nothing). The machine reads no clock,
//! does no IO and draws randomness only from `ServerConfig::seed`: same inputs, same outputs.
//!
//! Flow control: each connection has an in-flight window (`max_queued_frames`,
//! `max_buffered_bytes`) of frames handed out but not yet confirmed by `handle_sent`. Tracked
//! frames are not copied per connection: the session's recovery window is the buffer, and a
//! connection only becomes a slow consumer (close 1013 `slow_consumer`) when the window
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
//! - Closes: 4003 auth (after `hello_error`), 4009 `session_taken_over`, 4002
//!   `liveness_timeout`, 1013 `slow_consumer`, 1008 `handshake_timeout`, 1007 garbage (after
//!   `error` `invalid_frame`), 1003 binary, 1009 over `max_payload` (after `error`
//!   `payload_too_large`), 4028 unknown-frame flood, 1001 `server_shutdown`; in store mode
//!   1012 `store_gap` and 4010 `session_lost` (see [`Server::session_lost`]).
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

mod auth;
mod config;
mod conn;
mod event;
mod fanout;
mod frames;
mod handshake;
mod log;
mod session;
mod snapshot;
mod status;
mod store;
#[cfg(test)]
mod tests;
mod text;
mod window;

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use auth::{AllowAll, Authenticator, ConnectInfo, Principal, Rejection, SharedToken};
pub use config::ServerConfig;
pub use conn::ConnId;
pub use event::{CommandError, PeerError, RestoreError, ServerEvent, ServerTransmit};
pub use fanout::Audience;
pub use session::{Outcome, OutcomeStatus, SessionId};
pub use snapshot::{DedupSnapshot, ServerSnapshot, SessionSnapshot};
pub use status::{Health, Liveness, PresenceInfo, ServerStats};
pub use store::{
    Ingest, IngestError, StoreUnavailable, StoredSession, Unsequenced, SESSION_LOST_CLOSE,
};
pub use text::FrameText;
pub use window::Recorded;

use conn::{Closing, Conn};
use frames::Obj;
use log::{EventLog, Held};
use session::Session;
use text::FrameWriter;

use crate::heartbeat::HeartbeatAction;
use crate::rng::Rng;
use crate::wire::{ClientFrame, DecodeError, MessageFrame};

/// Frame types the application cannot publish: they belong to the protocol itself.
const RESERVED_KINDS: &[&str] = &[
    "hello",
    "hello_ok",
    "hello_error",
    "join",
    "joined",
    "replay",
    "replay_end",
    "snapshot",
    "ping",
    "pong",
    "resync",
    "left",
];

/// Refuses protocol frame types and the fields the server sets itself.
fn check_publishable(kind: &str, fields: &[(&str, Value)]) -> Result<(), CommandError> {
    if kind.is_empty() || RESERVED_KINDS.contains(&kind) {
        return Err(CommandError::ReservedKind(kind.to_owned()));
    }
    if let Some((k, _)) = fields
        .iter()
        .find(|(k, _)| matches!(*k, "type" | "cursor" | "seq"))
    {
        return Err(CommandError::ReservedField((*k).to_owned()));
    }
    Ok(())
}

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

/// How much of a connection's pending output goes out before its close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// Drop everything (dead peer, slow consumer, takeover).
    Nothing,
    /// Queued untracked frames (e.g. the error explaining the close), no more events.
    Control,
    /// Queued frames and every recorded event up to the current head (graceful).
    All,
}

/// The server machine. See the [module docs](self) for the drive contract.
pub struct Server {
    config: ServerConfig,
    auth: Box<dyn Authenticator + Send>,
    rng: Rng,
    start: Instant,
    sessions: BTreeMap<SessionId, Session>,
    conns: BTreeMap<ConnId, Conn>,
    ready: VecDeque<ConnId>,
    events: VecDeque<ServerEvent>,
    /// Reused buffer the frames are written into before they become shared text.
    scratch: String,
    /// Every session's retained events, each stored once.
    log: EventLog,
    /// Where frames assembled for sending (replays, shared bodies with a session's tail) are
    /// written.
    out: FrameWriter,
    /// The latest `now` the log was brought to its bounds at (evictions happen then): a
    /// connection that finds an event it was owed gone is a slow consumer from then on.
    log_time: Instant,
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
            rng: Rng::from_bytes(config.seed),
            last_inbound_wall: config.epoch_at_start,
            log: EventLog::new(config.recovery_window, config.recovery_total_bytes),
            config,
            auth,
            start: now,
            sessions: BTreeMap::new(),
            conns: BTreeMap::new(),
            ready: VecDeque::new(),
            events: VecDeque::new(),
            scratch: String::new(),
            out: FrameWriter::default(),
            log_time: now,
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
    /// the reference envelope (`hello_error`, then close 4003) before any client frame. A
    /// `conn` id still in use is ignored.
    pub fn handle_connected(&mut self, now: Instant, conn: ConnId, info: ConnectInfo) {
        if self.conns.contains_key(&conn) {
            return;
        }
        let wall = self.wall(now);
        let deadline = now.checked_add(self.config.handshake_timeout);
        let mut c = Conn::new(deadline, wall);
        let verdict = if self.shutting_down {
            Err(Rejection {
                code: "unavailable".into(),
                message: "Server shutting down".into(),
                next_step: Some(crate::wire::RecoveryStep::WaitThenRetry),
                next: None,
                retry_after_seconds: Some(1),
                close_code: 1001,
            })
        } else if self.conns.len() >= self.config.max_connections {
            Err(Rejection {
                code: crate::wire::ConnectErrorCode::RateLimited,
                message: "Too many connections".into(),
                next_step: Some(crate::wire::RecoveryStep::WaitThenRetry),
                next: None,
                retry_after_seconds: Some(1),
                close_code: 4029,
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
        if text.len() > self.config.max_payload {
            let err = DecodeError::TooLarge {
                len: text.len(),
                limit: self.config.max_payload,
            };
            self.push_control(
                now,
                conn,
                frames::error(Some("payload_too_large"), &err.to_string(), None),
            );
            self.bad_input(conn, PeerError::Decode(err));
            self.close_conn(now, conn, 1009, "payload_too_large".into(), Flush::Control);
            return;
        }
        match ClientFrame::decode(text) {
            Ok(frame) => self.on_frame(now, conn, frame),
            Err(err) => self.on_decode_error(now, conn, text, err),
        }
    }

    /// A binary frame of `len` bytes arrived: not part of the protocol (error, close 1003).
    pub fn handle_binary(&mut self, now: Instant, conn: ConnId, len: usize) {
        let _ = len;
        if !self.inbound(now, conn) {
            return;
        }
        let err = DecodeError::Binary;
        self.push_control(
            now,
            conn,
            frames::error(Some("invalid_frame"), &err.to_string(), None),
        );
        self.bad_input(conn, PeerError::Decode(err));
        self.close_conn(now, conn, 1003, "invalid_frame".into(), Flush::Control);
    }

    /// The adapter wrote one frame of `bytes` wire bytes (from `poll_transmit`) to the socket:
    /// it leaves the in-flight window. Call once per written frame.
    pub fn handle_sent(&mut self, _now: Instant, conn: ConnId, bytes: usize) {
        let (max_frames, max_bytes) = (
            self.config.max_queued_frames,
            self.config.max_buffered_bytes,
        );
        if let Some(c) = self.conns.get_mut(&conn) {
            // Output only ever waits for a full window (anything else is already queued in
            // `ready`): wake the connection only when this confirmation opens one.
            let was_full = c.in_flight_frames >= max_frames || c.in_flight_bytes >= max_bytes;
            c.in_flight_frames = c.in_flight_frames.saturating_sub(1);
            c.in_flight_bytes = c.in_flight_bytes.saturating_sub(bytes);
            if was_full {
                self.mark_ready(conn);
            }
        }
    }

    /// The transport is gone (peer close, error, or after our Close). The session stays
    /// resumable for the TTL; a connection displaced by a takeover never touches it.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            if let Some(b) = c.bound {
                self.detach_if_owner(now, &b.session, conn);
            }
        }
    }

    /// Timers: handshake deadlines, pings, reaping, session expiry, events leaving the
    /// recovery window. Early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            if c.is_closing() {
                continue;
            }
            if c.handshake_deadline.is_some_and(|d| now >= d) {
                c.handshake_deadline = None;
                self.bad_input(id, PeerError::HandshakeTimeout);
                self.close_conn(now, id, 1008, "handshake_timeout".into(), Flush::Control);
                continue;
            }
            match c.heartbeat.as_mut().and_then(|h| h.poll(now)) {
                Some(HeartbeatAction::Dead) => {
                    self.reaped += 1;
                    self.close_conn(now, id, 4002, "liveness_timeout".into(), Flush::Nothing);
                }
                Some(HeartbeatAction::SendPing) => {
                    self.push_control(now, id, r#"{"type":"ping"}"#);
                }
                None => {}
            }
        }
        let ttl = self.config.session_ttl;
        let expired: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|s| s.conn.is_none())
            .filter(|s| {
                s.detached_at
                    .and_then(|d| d.checked_add(ttl))
                    .is_some_and(|at| now >= at)
            })
            .map(|s| s.id.clone())
            .collect();
        for id in expired {
            self.expire(&id);
        }
        // Also what the expired sessions' windows were the last to hold.
        self.evict_log(now, self.wall(now));
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
        while let Some(id) = self.ready.pop_front() {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            c.queued = false;
            let session = c.bound.as_ref().and_then(|b| self.sessions.get(&b.session));
            let mut out = Output {
                log: &self.log,
                scratch: &mut self.scratch,
                writer: &mut self.out,
                config: &self.config,
                evicted: false,
            };
            if let Some((t, more)) = next_frame(c, session, &mut out) {
                if more {
                    self.mark_ready(id);
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
        while let Some(id) = self.ready.pop_front() {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            c.queued = false;
            let session = c.bound.as_ref().and_then(|b| self.sessions.get(&b.session));
            let mut output = Output {
                log: &self.log,
                scratch: &mut self.scratch,
                writer: &mut self.out,
                config: &self.config,
                evicted: false,
            };
            while let Some((t, more)) = next_frame(c, session, &mut output) {
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

    /// Connection `id` was owed an event the log has evicted since (by age or total size): it
    /// is a slow consumer from when that happened; its close goes out next.
    fn evicted_owed(&mut self, id: ConnId) {
        let at = self.log_time;
        self.close_conn(at, id, 1013, "slow_consumer".into(), Flush::Nothing);
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// The earliest deadline: handshake, ping, reap, session expiry, or events leaving the
    /// recovery window.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conns = self.conns.values().filter_map(Conn::next_deadline);
        let ttl = self.config.session_ttl;
        let sessions = self
            .sessions
            .values()
            .filter(|s| s.conn.is_none())
            .filter_map(|s| s.detached_at.and_then(|d| d.checked_add(ttl)));
        conns.chain(sessions).chain(self.log_deadline()).min()
    }

    // ----------------------------------------------------------------------------------------
    // Application commands

    /// Records a tracked frame `{"type":kind, fields..., "cursor":n, "seq":n}` in the session
    /// and sends it to the session's connection if one is attached. A detached session keeps
    /// it for its resume. Returns the cursor.
    pub fn publish(
        &mut self,
        now: Instant,
        session: &SessionId,
        kind: &str,
        fields: &[(&str, Value)],
    ) -> Result<u64, CommandError> {
        check_publishable(kind, fields)?;
        self.record(now, session, kind, |o| {
            fields.iter().fold(o, |o, (k, v)| o.value(k, v))
        })
        .ok_or_else(|| CommandError::UnknownSession(session.clone()))
    }

    /// Sends the tracked `final` response of a request, with `request_id` echoed, and remembers
    /// the outcome so a resend of the request gets it in its `duplicate`.
    pub fn respond(
        &mut self,
        now: Instant,
        session: &SessionId,
        request_id: &str,
        outcome: Outcome,
    ) -> Result<u64, CommandError> {
        // In store mode the outcome and the `final` go to the store: a local copy evicted or
        // expired while the application worked must not lose the answer.
        match self.sessions.get_mut(session) {
            Some(s) => {
                if let Some(e) = s.dedup.find_mut(request_id) {
                    if e.outcome.is_some() {
                        return Err(CommandError::AlreadyAnswered(request_id.to_owned()));
                    }
                    e.outcome = Some(outcome.clone());
                }
            }
            None if self.config.external_store => {}
            None => return Err(CommandError::UnknownSession(session.clone())),
        }
        if self.config.external_store {
            self.events.push_back(ServerEvent::OutcomeRecorded {
                session: session.clone(),
                request_id: request_id.to_owned(),
                outcome: outcome.clone(),
            });
        }
        self.record(now, session, "response", |o| {
            o.str("status", "final")
                .value("content", &outcome.content)
                .field("outcome", &outcome.outcome_json())
                .str("session_id", session.as_str())
                .str("request_id", request_id)
        })
        .ok_or_else(|| CommandError::UnknownSession(session.clone()))
    }

    /// Sends an untracked GatewayEvent-shaped frame (`{"type","data","event_id","timestamp",
    /// "source":"gateway","target":null}`) to every connection bound to a session. Returns how
    /// many got it.
    pub fn broadcast(&mut self, now: Instant, kind: &str, data: &Value) -> usize {
        let event_id = frames::uuid_string(session::uuid4(&mut self.rng));
        let timestamp = self.wall(now);
        let frame: FrameText = frames::frame(kind, |o| {
            o.field("data", data)
                .str("event_id", &event_id)
                .field("timestamp", &timestamp)
                .str("source", "gateway")
                .raw("target", "null")
                .end()
        })
        .into();
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.bound.is_some() && !c.is_closing())
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.push_control(now, *id, frame.clone());
        }
        ids.len()
    }

    /// Closes a connection gracefully: its queued frames and recorded events go out first,
    /// then `Close{code, reason}`. Its session stays resumable.
    pub fn disconnect(
        &mut self,
        now: Instant,
        conn: ConnId,
        code: u16,
        reason: &str,
    ) -> Result<(), CommandError> {
        if !self.conns.contains_key(&conn) {
            return Err(CommandError::UnknownConnection(conn));
        }
        self.close_conn(now, conn, code, reason.into(), Flush::All);
        Ok(())
    }

    /// Graceful shutdown: every connection gets its queued frames, then close 1001
    /// `server_shutdown`; new connections are refused. Take a [`snapshot`](Self::snapshot)
    /// afterwards to persist the sessions.
    pub fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close_conn(now, id, 1001, "server_shutdown".into(), Flush::All);
        }
    }

    // ----------------------------------------------------------------------------------------
    // Internals

    /// Common inbound bookkeeping; false if the frame must be dropped (unknown or closing).
    fn inbound(&mut self, now: Instant, conn: ConnId) -> bool {
        let wall = self.wall(now);
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if c.is_closing() {
            return false;
        }
        if let Some(h) = c.heartbeat.as_mut() {
            h.on_inbound(now);
        }
        c.last_inbound_wall = wall;
        self.last_inbound_wall = wall;
        true
    }

    fn bad_input(&mut self, conn: ConnId, error: PeerError) {
        self.events.push_back(ServerEvent::BadInput { conn, error });
    }

    fn on_frame(&mut self, now: Instant, conn: ConnId, frame: ClientFrame) {
        match frame {
            ClientFrame::Hello(h) => self.on_hello(now, conn, h),
            ClientFrame::Join(j) => self.on_join(now, conn, j),
            ClientFrame::Message(m) => self.on_message(now, conn, m),
            ClientFrame::Leave(_) => self.on_leave(now, conn),
            ClientFrame::Ping => self.push_control(now, conn, r#"{"type":"pong"}"#),
            // Pong only proves liveness; abort/server_reply are not modelled yet (ignored).
            ClientFrame::Pong | ClientFrame::Abort(_) | ClientFrame::ServerReply(_) => {}
            ClientFrame::Other(ev) if ev.kind == "resync" => self.on_resync(now, conn, &ev.text),
            ClientFrame::Other(_) => self.on_unknown(now, conn),
            // ClientFrame is non_exhaustive: future frame types count as unknown.
            #[allow(unreachable_patterns)]
            _ => self.on_unknown(now, conn),
        }
    }

    fn on_unknown(&mut self, now: Instant, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.unknown_frames = c.unknown_frames.saturating_add(1);
        if c.unknown_frames > self.config.max_unknown_frames {
            self.bad_input(conn, PeerError::Flood);
            self.close_conn(now, conn, 4028, String::new(), Flush::Control);
        }
    }

    fn on_decode_error(&mut self, now: Instant, conn: ConnId, text: &str, err: DecodeError) {
        let Some(field) = err.field().map(str::to_owned) else {
            // Not JSON or not an object: nothing sensible can follow on this socket.
            self.push_control(
                now,
                conn,
                frames::error(Some("invalid_frame"), &err.to_string(), None),
            );
            self.bad_input(conn, PeerError::Decode(err));
            self.close_conn(now, conn, 1007, "invalid_frame".into(), Flush::Control);
            return;
        };
        #[derive(serde::Deserialize)]
        struct Kind {
            #[serde(rename = "type", default)]
            kind: Option<Value>,
        }
        let kind = serde_json::from_str::<Kind>(text)
            .ok()
            .and_then(|k| k.kind)
            .and_then(|k| k.as_str().map(str::to_owned));
        let reply = match kind.as_deref() {
            Some("hello") => handshake::hello_field_error(&field, &err),
            Some("join") => handshake::join_field_error(&field),
            None | Some("message") => {
                frames::error(Some("invalid_value"), &err.to_string(), Some(&field))
            }
            Some(_) => frames::error(Some("invalid_frame"), &err.to_string(), Some(&field)),
        };
        self.push_control(now, conn, reply);
        self.bad_input(conn, PeerError::Decode(err));
    }

    fn on_message(&mut self, now: Instant, conn: ConnId, m: MessageFrame) {
        let Some(b) = self.conns.get(&conn).and_then(|c| c.bound.clone()) else {
            self.push_control(
                now,
                conn,
                frames::error(None, "Not joined to any session", None),
            );
            return;
        };
        let content = match m.content {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(v) => Some(v),
        };
        let Some(content) = content else {
            // An empty turn would never get a `final` (PROTOCOL.md §14.13): refuse it.
            self.push_control(
                now,
                conn,
                frames::error(
                    Some("invalid_value"),
                    "message content must be non-empty",
                    Some("content"),
                ),
            );
            self.bad_input(
                conn,
                PeerError::InvalidValue {
                    field: "content".into(),
                },
            );
            return;
        };
        let request_id = m.request_id.unwrap_or_else(|| self.rng.hex_id(16));
        if self.config.external_store {
            // Another node may have seen this id: the store decides (`admit_request`).
            self.events.push_back(ServerEvent::RequestCheck {
                conn,
                session: b.session,
                request_id,
                content,
            });
            return;
        }
        let Some(s) = self.sessions.get_mut(&b.session) else {
            return;
        };
        s.dedup.prune(now, self.config.dedup_ttl);
        if let Some(prev) = s.dedup.find(&request_id) {
            // A resend (e.g. after a reconnect): never abuse, never handed out twice.
            let outcome = prev.outcome.clone();
            self.record_duplicate(now, &b.session, &request_id, outcome);
            return;
        }
        self.accept_request(now, conn, &b.session, request_id, content);
    }

    /// Answers a resent request with `duplicate` (and its outcome once known).
    fn record_duplicate(
        &mut self,
        now: Instant,
        sid: &SessionId,
        request_id: &str,
        outcome: Option<Outcome>,
    ) {
        self.record(now, sid, "response", |o| {
            let mut o = o.str("status", "duplicate");
            if let Some(out) = &outcome {
                o = o
                    .value("content", &out.content)
                    .field("outcome", &out.outcome_json());
            }
            o.str("session_id", sid.as_str())
                .str("request_id", request_id)
        });
    }

    /// A first sighting: remembered, `accepted`, handed to the application once.
    fn accept_request(
        &mut self,
        now: Instant,
        conn: ConnId,
        sid: &SessionId,
        request_id: String,
        content: Value,
    ) {
        let (ttl, max) = (self.config.dedup_ttl, self.config.dedup_max);
        if let Some(s) = self.sessions.get_mut(sid) {
            s.dedup.prune(now, ttl);
            s.dedup.insert(request_id.clone(), now, max);
        }
        self.record(now, sid, "response", |o| {
            o.str("status", "accepted")
                .str("content", "Started processing.")
                .str("session_id", sid.as_str())
                .str("request_id", &request_id)
        });
        self.events.push_back(ServerEvent::Request {
            session: sid.clone(),
            request_id,
            content: content.into(),
            conn,
        });
    }

    fn on_leave(&mut self, now: Instant, conn: ConnId) {
        let Some(b) = self.conns.get_mut(&conn).and_then(|c| {
            c.replay = None;
            c.bound.take()
        }) else {
            return; // the reference sends nothing when unbound
        };
        let left = frames::frame("left", |o| o.str("session_id", b.session.as_str()).end());
        self.push_control(now, conn, left);
        self.detach_if_owner(now, &b.session, conn);
    }

    /// Stamps and records a tracked frame built by `build(obj)` after its `type`, then wakes
    /// the owner. `None` if the session does not exist. In store mode the frame goes to the
    /// store for its sequence instead ([`ServerEvent::StoreAppend`], cursor reported as 0).
    fn record(
        &mut self,
        now: Instant,
        session: &SessionId,
        kind: &str,
        build: impl for<'a> FnOnce(Obj<'a>) -> Obj<'a>,
    ) -> Option<u64> {
        if self.config.external_store {
            let pending = self.unsequenced(now, session, kind, build);
            self.events.push_back(ServerEvent::StoreAppend(pending));
            return Some(0);
        }
        let timestamp = self.wall(now);
        let s = self.sessions.get_mut(session)?;
        // Drawn only for an existing session: the PRNG stream stays what it always was.
        let event_id = session::uuid4(&mut self.rng);
        let n = s.head + 1;
        let target = s.conn;
        // Written once into the reused buffer, then shared by the log and the transmit.
        let scratch = &mut self.scratch;
        scratch.clear();
        let obj = Obj::start(scratch, kind);
        let kind_end = obj.len();
        let text = s.window.write(build(obj).tracked(n).as_str());
        if scratch.capacity() > SCRATCH_KEEP {
            *scratch = String::new(); // one huge frame must not pin its buffer forever
        }
        let held = self
            .log
            .push((text, false, kind_end), (event_id, timestamp), timestamp, 1);
        let (owner, evicted) = s.append(&mut self.log, held, target, &self.config);
        self.evict_log(now, timestamp);
        self.after_append(now, owner, evicted);
        Some(n)
    }

    /// Appends log record `held` (held for it, recorded at wall time `wall` while `target` held
    /// the session) to `session` as its next cursor and routes it to the owner, which becomes
    /// a slow consumer if the append evicts what it was not sent yet.
    fn append_record(
        &mut self,
        now: Instant,
        wall: f64,
        session: &SessionId,
        held: Held,
        target: Option<ConnId>,
    ) {
        let Some(s) = self.sessions.get_mut(session) else {
            self.log.release(held.id);
            return;
        };
        let (owner, evicted) = s.append(&mut self.log, held, target, &self.config);
        self.evict_log(now, wall);
        self.after_append(now, owner, evicted);
    }

    /// After an append to a session bound to `owner` that evicted up to `evicted`: the owner
    /// becomes a slow consumer if it was not sent what was evicted, else it has a frame to
    /// send. One lookup of the connection (this runs for every published event).
    fn after_append(&mut self, now: Instant, owner: Option<ConnId>, evicted: Option<u64>) {
        let Some(owner) = owner else {
            return;
        };
        let Some(c) = self.conns.get_mut(&owner) else {
            return;
        };
        if evicted.is_some_and(|e| !c.is_closing() && c.min_needed() <= e) {
            self.close_conn(now, owner, 1013, "slow_consumer".into(), Flush::Nothing);
        } else if c.enqueue() {
            self.ready.push_back(owner);
        }
    }

    fn mark_ready(&mut self, id: ConnId) {
        if self.conns.get_mut(&id).is_some_and(Conn::enqueue) {
            self.ready.push_back(id);
        }
    }

    /// Queues an untracked frame; an overflowing control queue makes a slow consumer.
    fn push_control(&mut self, now: Instant, id: ConnId, frame: impl Into<FrameText>) {
        let max = self.config.max_control_frames.max(1);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.is_closing() {
            return;
        }
        if c.control.len() >= max {
            self.close_conn(now, id, 1013, "slow_consumer".into(), Flush::Nothing);
            return;
        }
        c.control.push_back(frame.into());
        self.mark_ready(id);
    }

    /// Decides to close a connection: its session (if it owns one) is detached at once so a
    /// reconnect can resume it while the close drains.
    fn close_conn(&mut self, now: Instant, id: ConnId, code: u16, reason: String, flush: Flush) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.is_closing() {
            return;
        }
        let head = c
            .bound
            .as_ref()
            .and_then(|b| self.sessions.get(&b.session))
            .map_or(0, |s| s.head);
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
            reason: reason.clone(),
            flush_until,
        });
        c.heartbeat = None;
        c.handshake_deadline = None;
        let bound = c.bound.as_ref().map(|b| b.session.clone());
        self.events.push_back(ServerEvent::Closing {
            conn: id,
            code,
            reason,
        });
        if let Some(s) = bound {
            self.detach_if_owner(now, &s, id);
        }
        self.mark_ready(id);
    }

    /// Detaches `session` from `conn` if (and only if) `conn` still owns it.
    fn detach_if_owner(&mut self, now: Instant, session: &SessionId, conn: ConnId) {
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        if s.conn != Some(conn) {
            return; // taken over by a newer connection: not ours to touch
        }
        s.conn = None;
        s.detached_at = Some(now);
        let agent_id = s.agent_id.clone();
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
        let victim = self
            .sessions
            .values()
            .filter(|s| s.conn.is_none())
            .min_by_key(|s| s.detached_at)
            .map(|s| s.id.clone());
        match victim {
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
}

/// What [`next_frame`] reads and writes besides the connection and its session.
struct Output<'a> {
    log: &'a EventLog,
    /// Replay frames are assembled here.
    scratch: &'a mut String,
    /// Frames that are not a record's text as it is go out from here.
    writer: &'a mut FrameWriter,
    config: &'a ServerConfig,
    /// Set when the connection is owed an event its session's window no longer holds (a slow
    /// consumer; `next_frame` then returns `None`).
    evicted: bool,
}

/// The next output of connection `c` (bound to `session`, if any): control frames, then owed
/// replays, then live events (both read from the session's window while the in-flight window
/// has room), then its close. The flag says whether more may follow (false: nothing is pending
/// until new output wakes it).
fn next_frame(
    c: &mut Conn,
    session: Option<&Session>,
    out: &mut Output<'_>,
) -> Option<(ServerTransmit, bool)> {
    let (max_frames, max_bytes) = (out.config.max_queued_frames, out.config.max_buffered_bytes);
    if c.close_sent || (c.awaiting_store && c.closing.is_none()) {
        return None;
    }
    if let Some(f) = c.control.pop_front() {
        c.in_flight_frames += 1;
        c.in_flight_bytes += f.len();
        return Some((ServerTransmit::Frame(f), true));
    }
    let window_open =
        c.closing.is_some() || (c.in_flight_frames < max_frames && c.in_flight_bytes < max_bytes);
    if let (Some(s), true) = (session, window_open) {
        if let Some(r) = c.replay.as_mut() {
            while r.next <= r.end {
                let cursor = r.next;
                let Some(e) = s.window.get(out.log, cursor) else {
                    // Evicted since the replay was set up. A closing connection's client
                    // learns of the loss when it resumes; anyone else was owed it.
                    if c.closing.is_none() {
                        out.evicted = true;
                        return None;
                    }
                    r.next += 1;
                    continue;
                };
                r.next += 1;
                let scratch = &mut *out.scratch;
                scratch.clear();
                frames::replay(scratch, &e, r.with_seq);
                let f = out.writer.write(scratch);
                if scratch.capacity() > SCRATCH_KEEP {
                    *scratch = String::new();
                }
                c.in_flight_frames += 1;
                c.in_flight_bytes += f.len();
                return Some((ServerTransmit::Frame(f), true));
            }
            let end = r.end_frame.take();
            c.replay = None;
            if let Some(f) = end {
                c.in_flight_frames += 1;
                c.in_flight_bytes += f.len();
                return Some((ServerTransmit::Frame(f.into()), true));
            }
        }
        let limit = c.closing.as_ref().map_or(u64::MAX, |cl| cl.flush_until);
        if c.live_next <= s.head && c.live_next <= limit {
            let e = match s.window.get(out.log, c.live_next) {
                Some(e) => Some(e),
                None if c.closing.is_none() => {
                    out.evicted = true;
                    return None;
                }
                // Closing: what is still retained goes out; the client learns of the rest
                // when it resumes.
                None => s
                    .window
                    .oldest(out.log)
                    .and_then(|o| s.window.get(out.log, o.max(c.live_next))),
            };
            if let Some(e) = e {
                c.live_next = e.cursor + 1;
                let f = e.record.frame(e.cursor, out.writer);
                c.in_flight_frames += 1;
                c.in_flight_bytes += f.len();
                let more = c.closing.is_some() || c.live_next <= s.head.min(limit);
                return Some((ServerTransmit::Frame(f), more));
            }
            c.live_next = s.head + 1;
        }
    }
    if let Some(cl) = c.closing.take() {
        c.close_sent = true;
        c.replay = None;
        return Some((
            ServerTransmit::Close {
                code: cl.code,
                reason: cl.reason,
            },
            false,
        ));
    }
    None
}

/// How late the timer may evict events that left the recovery window (appends evict on time).
const EVICTION_SLACK: Duration = Duration::from_secs(1);

/// The frame buffer keeps its capacity up to this size between frames.
const SCRATCH_KEEP: usize = 64 << 10;
