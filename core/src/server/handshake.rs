//! The handshake acceptor (`hello` and legacy `join`), session attach/takeover, and the
//! replay set-up shared with v2 `resync`.

use std::time::Instant;

use serde_json::Value;

use super::conns::{Binding, ConnId, Flush, ReplayPhase};
use super::event::{PeerError, ServerEvent};
use super::frames;
use super::session::{Dedup, SessionId};
use super::sessions::{Attachment, NewSession};
use super::store::Parked;
use super::{Rejection, Server};
use crate::heartbeat::HeartbeatConfig;
use crate::version::V2;
use crate::wire::Hello;
use crate::wire::{
    ConnectErrorCode, DecodeError, Features, HelloError, HelloOk, Join, Joined, Policy,
    RecoveryStep, ServerFrame,
};

const STREAM_EVENTS: [&str; 10] = [
    "token_stream",
    "tool_call_stream",
    "reasoning_stream",
    "tool_progress_stream",
    "stream_error",
    "stream_end",
    "model_fallback_stream",
    "retry_stream",
    "todo_stream",
    "tool_result_stream",
];

/// The `hello_error` envelope of a rejection.
pub(super) fn hello_error_frame(r: &Rejection) -> String {
    hello_error(
        r.code.clone(),
        &r.message,
        r.next_step.clone(),
        r.next.clone(),
        r.retry_after_seconds,
    )
}

pub(super) fn hello_error(
    code: ConnectErrorCode,
    message: &str,
    next_step: Option<RecoveryStep>,
    next: Option<String>,
    retry_after_seconds: Option<u64>,
) -> String {
    // `next` defaults to the `next_step` value, as on the reference server.
    let next = next.or_else(|| next_step.as_ref().map(|s| s.as_str().to_owned()));
    ServerFrame::HelloError(HelloError {
        code,
        message: message.to_owned(),
        next_step,
        retry_after_seconds,
        next,
        extra: Default::default(),
    })
    .encode()
}

/// A `hello` whose fields did not decode: typed `hello_error`, never a dropped socket.
pub(super) fn hello_field_error(field: &str, err: &DecodeError) -> String {
    let (code, message) = if field.starts_with("protocol") {
        (
            ConnectErrorCode::InvalidProtocolHello,
            format!("Invalid protocol version fields ({err}). Expected integer protocol_min/protocol_max."),
        )
    } else if field == "since" {
        (
            ConnectErrorCode::Other("invalid_value".into()),
            "Invalid 'since' cursor. Must be an integer.".to_owned(),
        )
    } else {
        (
            ConnectErrorCode::Other("invalid_frame".into()),
            err.to_string(),
        )
    };
    let mut frame = HelloError {
        code,
        message,
        next_step: Some(RecoveryStep::DoNotRetry),
        retry_after_seconds: None,
        next: Some("do_not_retry".into()),
        extra: Default::default(),
    };
    frame.extra.insert("field".into(), Value::from(field));
    ServerFrame::HelloError(frame).encode()
}

/// A `join` whose fields did not decode: the reference server's legacy `error` frames.
pub(super) fn join_field_error(field: &str) -> String {
    if field == "since" {
        frames::error(
            None,
            "Invalid 'since' cursor. Must be an integer.",
            Some(field),
        )
    } else if field.ends_with("_version") {
        frames::error(
            Some("invalid_protocol_hello"),
            "Invalid protocol version fields. Expected integer min_version/max_version.",
            Some(field),
        )
    } else {
        frames::error(
            Some("invalid_frame"),
            &format!("invalid field `{field}`"),
            Some(field),
        )
    }
}

/// Why an attach was refused.
enum Refusal {
    NotOwner,
    AgentMismatch,
    Full,
}

/// What the handshake reply reports about the replay that follows it.
pub(super) struct ReplayInfo {
    pub(super) sequence: u64,
    pub(super) oldest: u64,
    pub(super) resync_required: bool,
    pub(super) lost: Option<(u64, u64)>,
}

enum Negotiated {
    Version(u32),
    Inverted,
    TooOld,
    TooNew,
}

impl Server {
    fn agent_known(&self, agent: Option<&str>) -> bool {
        match agent {
            Some(a) if !a.is_empty() => {
                self.config.agents.is_empty() || self.config.agents.iter().any(|x| x == a)
            }
            _ => false,
        }
    }

    /// Highest common version; a client minimum of 0 is tolerated (the reference reports it
    /// as "too old" only when the maximum is below ours).
    fn negotiate(&self, min: u32, max: u32) -> Negotiated {
        let server = self.config.versions;
        if min > max {
            Negotiated::Inverted
        } else if max < server.min() {
            Negotiated::TooOld
        } else if min > server.max() {
            Negotiated::TooNew
        } else {
            Negotiated::Version(max.min(server.max()))
        }
    }

    pub(super) fn on_hello(&mut self, now: Instant, conn: ConnId, h: Hello) {
        if !self.agent_known(h.agent_id.as_deref()) {
            let shown = h.agent_id.as_deref().unwrap_or("None");
            let frame = hello_error(
                ConnectErrorCode::AgentNotFound,
                &format!("Agent not found: {shown}"),
                Some(RecoveryStep::DoNotRetry),
                Some("check_agent_id".into()),
                None,
            );
            self.reject(now, conn, ConnectErrorCode::AgentNotFound, frame);
            return;
        }
        let agent = h.agent_id.clone().unwrap_or_default();
        let (min, max) = h.offered_range();
        let server = self.config.versions;
        let version = match self.negotiate(min, max) {
            Negotiated::Version(v) => v,
            Negotiated::Inverted => {
                let msg =
                    format!("Invalid version range: protocol_min ({min}) > protocol_max ({max})");
                let frame = hello_error(
                    ConnectErrorCode::InvalidProtocolHello,
                    &msg,
                    Some(RecoveryStep::DoNotRetry),
                    None,
                    None,
                );
                self.bad_input(conn, PeerError::InvalidVersions(msg));
                self.reject(now, conn, ConnectErrorCode::InvalidProtocolHello, frame);
                return;
            }
            Negotiated::TooOld => {
                let msg = format!(
                    "Protocol version {max} is too old, minimum required is {}",
                    server.min()
                );
                let frame = hello_error(
                    ConnectErrorCode::ProtocolUnsupported,
                    &msg,
                    Some(RecoveryStep::UpgradeClient),
                    Some("upgrade_client".into()),
                    None,
                );
                self.reject(now, conn, ConnectErrorCode::ProtocolUnsupported, frame);
                return;
            }
            Negotiated::TooNew => {
                let msg = format!(
                    "Protocol version {min} is too new, server supports up to {}",
                    server.max()
                );
                let frame = hello_error(
                    ConnectErrorCode::ProtocolUnsupported,
                    &msg,
                    Some(RecoveryStep::DowngradeClient),
                    Some("use_older_client".into()),
                    None,
                );
                self.reject(now, conn, ConnectErrorCode::ProtocolUnsupported, frame);
                return;
            }
        };
        let requested = h.session_id.clone();
        if self.park_for_store(now, conn, requested.as_deref(), || Parked::Hello(h.clone())) {
            return;
        }
        let caps = h.offered_capabilities().to_vec();
        let sid = match self.attach(now, conn, &agent, h.session_id.as_deref(), version, &caps) {
            Ok(x) => x,
            Err(r) => {
                let (code, msg, step) = match r {
                    Refusal::NotOwner => (
                        ConnectErrorCode::AuthUnauthorized,
                        "Session belongs to another principal",
                        RecoveryStep::DoNotRetry,
                    ),
                    Refusal::AgentMismatch => (
                        ConnectErrorCode::AuthUnauthorized,
                        "Session does not belong to the requested agent",
                        RecoveryStep::Reauthenticate,
                    ),
                    Refusal::Full => (
                        ConnectErrorCode::RateLimited,
                        "Too many sessions",
                        RecoveryStep::WaitThenRetry,
                    ),
                };
                let (next, retry) = match code {
                    ConnectErrorCode::RateLimited => (None, Some(1)),
                    _ => (Some("start_new_session".to_owned()), None),
                };
                if matches!(r, Refusal::NotOwner | Refusal::AgentMismatch) {
                    self.bad_input(conn, PeerError::Unauthorized);
                }
                let frame = hello_error(code.clone(), msg, Some(step), next, retry);
                self.reject(now, conn, code, frame);
                return;
            }
        };
        let resumed = sid.1;
        let sid = sid.0;
        let v2 = version >= V2;
        let since = self.effective_since(&sid, resumed, h.since, h.epoch);
        let info = self.start_replay(conn, &sid, since, v2, v2);
        self.note_resume_loss(conn, info.lost);
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        // v1 has no loss flag: a `sequence` at `since` makes the Python client's own gap check
        // report exactly the lost range on the first replay, instead of skipping it silently.
        let sequence = match (v2, info.resync_required, since) {
            (false, true, Some(since)) => since,
            _ => info.sequence,
        };
        let mut events: Vec<String> = ["message", "error", "message_abort"]
            .map(String::from)
            .to_vec();
        if caps.iter().any(|c| c == "streaming") {
            events.extend(STREAM_EVENTS.map(String::from));
        }
        let mut methods: Vec<String> = ["message", "leave", "abort"].map(String::from).to_vec();
        if v2 {
            methods.push("resync".into());
            events.push("replay_end".into());
        }
        let ok = HelloOk {
            protocol: version,
            features: Features {
                methods,
                events,
                extra: Default::default(),
            },
            policy: self.policy(),
            session_id: sid.0.clone(),
            resumed,
            cursor: s.head,
            sequence: Some(sequence),
            oldest_cursor: v2.then_some(info.oldest),
            resync_required: v2.then_some(info.resync_required),
            presence: v2.then(|| self.presence_values(&agent)),
            health: v2.then(|| self.health_value(now)),
            epoch: Some(s.epoch),
            extra: Default::default(),
        };
        self.push_front_control(conn, ServerFrame::HelloOk(ok).encode());
    }

    pub(super) fn on_join(&mut self, now: Instant, conn: ConnId, j: Join) {
        if !self.agent_known(j.agent_id.as_deref()) {
            let shown = j.agent_id.as_deref().unwrap_or("None");
            let frame = frames::error(None, &format!("Agent not found: {shown}"), None);
            self.reject(now, conn, ConnectErrorCode::AgentNotFound, frame);
            return;
        }
        let agent = j.agent_id.clone().unwrap_or_default();
        let (min, max) = (j.min_version.unwrap_or(1), j.max_version.unwrap_or(1));
        let server = self.config.versions;
        let version = match self.negotiate(min, max) {
            Negotiated::Version(v) => v,
            Negotiated::Inverted => {
                let msg =
                    format!("Invalid version range: min_version ({min}) > max_version ({max})");
                let frame = frames::error(Some("invalid_protocol_hello"), &msg, None);
                self.bad_input(conn, PeerError::InvalidVersions(msg));
                self.reject(now, conn, ConnectErrorCode::InvalidProtocolHello, frame);
                return;
            }
            n => {
                let step = if matches!(n, Negotiated::TooOld) {
                    "upgrade_client"
                } else {
                    "downgrade_client"
                };
                let message = format!(
                    "Protocol version mismatch. Server supports {}-{}, client supports {min}-{max}",
                    server.min(),
                    server.max()
                );
                let frame = frames::frame("error", |o| {
                    o.str("code", "version_unsupported")
                        .str("message", &message)
                        .u64("server_min_version", u64::from(server.min()))
                        .u64("server_max_version", u64::from(server.max()))
                        .str("next_step", step)
                        .end()
                });
                self.reject(now, conn, ConnectErrorCode::VersionUnsupported, frame);
                return;
            }
        };
        let requested = j.session_id.clone();
        if self.park_for_store(now, conn, requested.as_deref(), || Parked::Join(j.clone())) {
            return;
        }
        let (sid, resumed) =
            match self.attach(now, conn, &agent, j.session_id.as_deref(), version, &[]) {
                Ok(x) => x,
                Err(r) => {
                    let msg = match r {
                        Refusal::NotOwner => "Session belongs to another principal",
                        Refusal::AgentMismatch => "Session does not belong to the requested agent",
                        Refusal::Full => "Too many sessions",
                    };
                    if !matches!(r, Refusal::Full) {
                        self.bad_input(conn, PeerError::Unauthorized);
                    }
                    let frame = frames::error(Some("unauthorized"), msg, None);
                    self.reject(now, conn, ConnectErrorCode::Unauthorized, frame);
                    return;
                }
            };
        let v2 = version >= V2;
        let since = self.effective_since(&sid, resumed, j.since, j.epoch);
        let info = self.start_replay(conn, &sid, since, true, v2);
        self.note_resume_loss(conn, info.lost);
        let Some(s) = self.sessions.get(&sid) else {
            return;
        };
        let head = s.head;
        let joined = ServerFrame::Joined(Joined {
            session_id: sid.0.clone(),
            agent_id: Some(agent.clone()),
            resumed,
            cursor: head,
            oldest_cursor: Some(info.oldest),
            resync_required: info.resync_required,
            sequence: Some(info.sequence),
            protocol_version: Some(version),
            server_min_version: Some(server.min()),
            server_max_version: Some(server.max()),
            presence: Some(self.presence_values(&agent)),
            health: Some(self.health_value(now)),
            epoch: Some(s.epoch),
            extra: Default::default(),
        })
        .encode();
        if info.resync_required {
            // The reference's snapshot envelope; unlike it, the retained events still follow.
            let state = serde_json::json!({
                "session_id": sid.0, "agent_id": agent, "state": {}, "messages": [],
                "event_cursor": head,
            });
            let state = frames::frame("snapshot", |o| o.field("state", &state).end());
            self.push_front_control(conn, state);
        }
        self.push_front_control(conn, joined);
    }

    /// The `since` to replay from: a client of another epoch may hold numbers this line of
    /// history gave to other events (a restore from an older snapshot lost them), so it is
    /// rewound to the epoch's start; the handshake's `sequence` tells it so.
    fn effective_since(
        &self,
        sid: &SessionId,
        resumed: bool,
        since: Option<u64>,
        epoch: Option<u64>,
    ) -> Option<u64> {
        match (self.sessions.get(sid), since, epoch) {
            (Some(s), Some(c), Some(e)) if resumed && e != s.epoch && c > s.epoch_start => {
                Some(s.epoch_start)
            }
            _ => since,
        }
    }

    /// Completes this connection's queued `SessionResumed` with the loss its replay reports.
    fn note_resume_loss(&mut self, conn: ConnId, loss: Option<(u64, u64)>) {
        let queued = self.events.iter_mut().rev().find_map(|e| match e {
            ServerEvent::SessionResumed { conn: c, lost, .. } if *c == conn => Some(lost),
            _ => None,
        });
        if let Some(lost) = queued {
            *lost = loss;
        }
    }

    /// v2 in-band repair: `{"type":"resync","since":n}` → replays of cursor > n, then
    /// `replay_end` (with `lost_from`/`lost_to` when the window no longer holds n+1).
    pub(super) fn on_resync(&mut self, now: Instant, conn: ConnId, text: &str) {
        #[derive(serde::Deserialize)]
        struct Resync {
            since: u64,
        }
        let Some(b) = self.conns.get(conn).and_then(|c| c.bound.clone()) else {
            self.push_control(
                now,
                conn,
                frames::error(None, "Not joined to any session", None),
            );
            return;
        };
        if b.version < V2 {
            self.on_unknown(now, conn); // not a v1 frame: ignored like the reference
            return;
        }
        let since = match serde_json::from_str::<Resync>(text) {
            Ok(r) => r.since,
            Err(_) => {
                self.push_control(
                    now,
                    conn,
                    frames::error(
                        Some("invalid_value"),
                        "resync requires an integer 'since'",
                        Some("since"),
                    ),
                );
                self.bad_input(
                    conn,
                    PeerError::InvalidValue {
                        field: "since".into(),
                    },
                );
                return;
            }
        };
        let (Some(c), Some(s)) = (self.conns.get_mut(conn), self.sessions.get(&b.session)) else {
            return;
        };
        // Replays cover what was already sent live; live sending continues after them.
        let end = c.live_next.saturating_sub(1).min(s.head);
        let oldest = s.oldest_cursor(&self.log);
        let first = since.saturating_add(1).max(oldest);
        let replayed = if first <= end { end - first + 1 } else { 0 };
        let lost = (since.saturating_add(1) < oldest && since < end)
            .then(|| (since + 1, (oldest - 1).min(end)));
        c.replay = Some(ReplayPhase {
            next: first,
            end,
            with_seq: true,
            end_frame: Some(frames::replay_end(end, replayed, lost)),
        });
        self.conns.mark_ready(conn);
    }

    /// A handshake reply must be the first frame after the request: put it ahead of anything
    /// queued (e.g. a ping) — nothing else is sent between a hello and its answer.
    fn push_front_control(&mut self, conn: ConnId, frame: String) {
        self.conns.push_front_control(conn, frame.into());
    }

    /// A handshake refusal: the reply, no close (the socket stays usable, as on the
    /// reference); the handshake deadline keeps running.
    pub(super) fn reject(
        &mut self,
        _now: Instant,
        conn: ConnId,
        code: ConnectErrorCode,
        frame: String,
    ) {
        self.push_front_control(conn, frame);
        self.events
            .push_back(ServerEvent::ConnectionRejected { conn, code });
    }

    /// Binds `conn` to the requested session (resume, takeover) or to a new one.
    fn attach(
        &mut self,
        now: Instant,
        conn: ConnId,
        agent: &str,
        requested: Option<&str>,
        version: u32,
        caps: &[String],
    ) -> Result<(SessionId, bool), Refusal> {
        let principal = self
            .conns
            .get(conn)
            .and_then(|c| c.principal.clone())
            .ok_or(Refusal::NotOwner)?;
        let existing = requested
            .map(|r| SessionId(r.to_owned()))
            .filter(|r| self.sessions.contains(r));
        if let Some(sid) = &existing {
            if let Some(s) = self.sessions.get(sid) {
                if s.owner != principal {
                    return Err(Refusal::NotOwner);
                }
                if s.agent_id != agent {
                    return Err(Refusal::AgentMismatch);
                }
            }
        }
        // A second handshake on this connection releases its previous session (it keeps its
        // TTL and stays resumable) unless it is the same one.
        let previous = self
            .conns
            .get(conn)
            .and_then(|c| c.bound.as_ref().map(|b| b.session.clone()));
        if let Some(prev) = previous {
            if existing.as_ref() != Some(&prev) {
                if let Some(c) = self.conns.get_mut(conn) {
                    c.bound = None;
                    c.replay = None;
                }
                self.detach_if_owner(now, &prev, conn);
            }
        }
        let (sid, resumed) = match existing {
            Some(sid) => {
                let old_owner = self
                    .sessions
                    .get(&sid)
                    .and_then(|s| s.conn())
                    .filter(|c| *c != conn);
                // The session is this connection's from now on: the half-open old socket is
                // closed and its later close cannot touch the session.
                self.sessions.attach(&sid, conn);
                if let Some(old) = old_owner {
                    self.close_conn(now, old, 4009, "session_taken_over".into(), Flush::Nothing);
                }
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.version = version;
                    s.capabilities = caps.to_vec();
                }
                self.events.push_back(ServerEvent::SessionResumed {
                    session: sid.clone(),
                    conn,
                    taken_over_from: old_owner,
                    lost: None, // known once the replay is set up: `note_resume_loss`
                });
                (sid, true)
            }
            None => {
                if !self.make_room() {
                    return Err(Refusal::Full);
                }
                // Never adopt the client's id: ids stay server-chosen and unguessable.
                let mut sid = SessionId::random(&mut self.rng);
                while self.sessions.contains(&sid) {
                    sid = SessionId::random(&mut self.rng);
                }
                let session = NewSession {
                    id: sid.clone(),
                    agent_id: agent.to_owned(),
                    owner: principal,
                    head: 0,
                    window: Default::default(),
                    dedup: Dedup::default(),
                    version,
                    capabilities: caps.to_vec(),
                    epoch: self.rng.next_u64(),
                    epoch_start: 0,
                };
                self.sessions.insert(session, Attachment::Attached(conn));
                self.events.push_back(ServerEvent::SessionCreated {
                    session: sid.clone(),
                    conn,
                    agent_id: agent.to_owned(),
                });
                (sid, false)
            }
        };
        let hb = HeartbeatConfig {
            interval: self.config.heartbeat_interval,
            silence_factor: self.config.missed_beats,
        };
        let binding = Binding {
            session: sid.clone(),
            agent_id: agent.to_owned(),
            version,
        };
        self.conns.bind(conn, binding, hb, now);
        if self.config.external_store {
            if let Some(stored) = self.stored_session(&sid) {
                self.events
                    .push_back(ServerEvent::StoreSession(Box::new(stored)));
            }
            if !resumed {
                // The client learns the id only once other nodes can publish to it.
                if let Some(c) = self.conns.get_mut(conn) {
                    c.awaiting_store = true;
                }
            }
        }
        self.events.push_back(ServerEvent::PresenceChanged {
            agent_id: agent.to_owned(),
        });
        Ok((sid, resumed))
    }

    /// Sets the connection's send cursors after a handshake: replays of the retained events
    /// with cursor > `since` (nothing without `since`), then live from head + 1.
    fn start_replay(
        &mut self,
        conn: ConnId,
        sid: &SessionId,
        since: Option<u64>,
        with_seq: bool,
        v2: bool,
    ) -> ReplayInfo {
        let (head, oldest) = self
            .sessions
            .get(sid)
            .map_or((0, 1), |s| (s.head, s.oldest_cursor(&self.log)));
        let mut info = ReplayInfo {
            sequence: head,
            oldest,
            resync_required: false,
            lost: None,
        };
        let mut replay = None;
        let mut replayed = 0;
        if let Some(since) = since {
            let first = since.saturating_add(1).max(oldest);
            if first <= head {
                replayed = head - first + 1;
                info.sequence = first - 1;
                replay = Some((first, head));
            }
            info.resync_required = since.saturating_add(1) < oldest;
            if info.resync_required {
                info.lost = Some((since + 1, oldest - 1));
            }
        }
        let end_frame = v2.then(|| frames::replay_end(head, replayed, info.lost));
        if let Some(c) = self.conns.get_mut(conn) {
            c.live_next = head + 1;
            c.replay = match (replay, end_frame) {
                (Some((first, end)), end_frame) => Some(ReplayPhase {
                    next: first,
                    end,
                    with_seq,
                    end_frame,
                }),
                (None, Some(f)) => Some(ReplayPhase {
                    next: 1,
                    end: 0,
                    with_seq,
                    end_frame: Some(f),
                }),
                (None, None) => None,
            };
        }
        self.conns.mark_ready(conn);
        info
    }

    pub(super) fn policy(&self) -> Policy {
        Policy {
            max_payload: Some(self.config.max_payload as u64),
            max_buffered_bytes: Some(self.config.max_buffered_bytes as u64),
            max_queued_frames: Some(self.config.max_queued_frames as u64),
            heartbeat_ms: Some(self.config.heartbeat_interval.as_millis() as u64),
            max_attachment_bytes: Some(10_485_760),
            max_attachments: Some(10),
            chunk_bytes: Some(262_144),
            extra: Default::default(),
        }
    }
}
