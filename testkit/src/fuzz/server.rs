//! The server machine's fuzz body: runs a [`ServerScript`] against a [`Server`], draining every
//! output after every step (the drive contract) and checking invariants as it goes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::server_script::{
    Agent, ClientGarbage, ClientText, MsgContent, Publish, ReqId, RestoreFrom, SentBytes,
    ServerScript, ServerSetup, SessionRef, Since, Step, Token, Ver, Versions,
};
use tether_core::server::{
    Audience, ConnId, ConnectInfo, Outcome, OutcomeStatus, Server, ServerConfig, ServerEvent,
    ServerSnapshot, ServerTransmit, SessionId,
};
use tether_core::version::VersionRange;
use tether_core::wire::ServerFrame;

/// More transmits plus events than this from one step means a queue grows without bound.
const MAX_OUTPUTS_PER_STEP: usize = 10_000;
/// The largest single event the script can record (a `Large` publish with its envelope).
const MAX_EVENT_COST: usize = 16 << 10;
/// Snapshots kept for [`RestoreFrom::Saved`].
const SAVED: usize = 4;
/// Sessions and requests remembered for the templates.
const RECENT: usize = 8;

/// What a run reached, for checking that seeds exercise what they claim to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerSummary {
    /// Steps applied.
    pub steps: usize,
    /// `SessionCreated` events.
    pub created: u64,
    /// `SessionResumed` events.
    pub resumed: u64,
    /// Of those, displacing another connection.
    pub takeovers: u64,
    /// Of those, reporting lost cursors.
    pub resumed_with_loss: u64,
    /// `SessionExpired` events.
    pub expired: u64,
    /// `ConnectionRejected` events.
    pub rejected: u64,
    /// `BadInput` events.
    pub bad_inputs: u64,
    /// `Request` events.
    pub requests: u64,
    /// `hello_ok` frames written.
    pub hello_oks: u64,
    /// `joined` frames written.
    pub joined: u64,
    /// `hello_error` frames written.
    pub hello_errors: u64,
    /// Tracked live frames written.
    pub live: u64,
    /// `replay` frames written.
    pub replays: u64,
    /// `replay_end` frames written.
    pub replay_ends: u64,
    /// `response` frames with status `duplicate` written.
    pub duplicates: u64,
    /// `response` frames with status `final` written.
    pub finals: u64,
    /// `ping` frames written.
    pub pings: u64,
    /// Close codes written, in order.
    pub closes: Vec<u16>,
    /// `publish` calls that succeeded.
    pub published: u64,
    /// `respond` calls that succeeded.
    pub responded: u64,
    /// Restores from a snapshot (not counting empty restarts).
    pub restores: u64,
    /// Of those, from an older saved snapshot (lost writes).
    pub lossy_restores: u64,
}

impl ServerSummary {
    /// Close frames written with `code`.
    pub fn closes_with(&self, code: u16) -> usize {
        self.closes.iter().filter(|c| **c == code).count()
    }
}

/// Fuzz body of the server machine: `data` is read as a [`ServerScript`] and run from `origin`
/// (the body never reads a clock). See [`run_server`] for the invariants.
pub fn server_at(origin: Instant, data: &[u8]) -> ServerSummary {
    run_server(origin, &ServerScript::from_bytes(data))
}

/// Runs `script` against a server whose clock starts at `origin`, draining transmits and events
/// after every step, and panics if an invariant breaks:
///
/// * nothing is written to a connection after its `Close`, nor to one the server does not
///   know; every `Close` follows that connection's one `Closing` event, and a decided close is
///   written in the same drain (it never waits for the in-flight window);
/// * every frame written decodes as a server frame; a tracked frame has `cursor == seq`;
/// * per connection, tracked live frames have strictly increasing `seq`, above the `cursor` of
///   the last handshake reply; replays within one replay phase strictly increase and never
///   exceed what the handshake or the live stream had reached;
/// * each `(session, request_id)` reaches the application at most once while the server's
///   dedup window must still hold it (younger than `dedup_ttl` and fewer than `dedup_max` newer
///   requests of that session). A restore from an older snapshot rolls this bookkeeping back to
///   the snapshot (the requests after it are forgotten with the lost writes, as in the
///   simulator's "line of server state"); an empty restart forgets everything;
/// * request content is never empty; session ids are never issued twice while live, and only
///   live sessions resume or expire;
/// * memory stays bounded: `ServerStats` within the configured recovery bounds, control queue,
///   dedup and session bounds, as many connections as the harness has open, no event left
///   undrained;
/// * after `handle_timeout(now)`, `poll_timeout()` is not in the past; after `shutdown`, every
///   new connection is rejected; snapshots survive a JSON round trip and restore;
/// * one step yields at most 10 000 outputs.
pub fn run_server(origin: Instant, script: &ServerScript) -> ServerSummary {
    let mut h = Harness::new(origin, &script.setup);
    for step in &script.steps {
        h.apply(step);
    }
    h.summary
}

/// The dedup bookkeeping of one line of server state.
#[derive(Debug, Clone, Default)]
struct Book {
    /// (session, request id) → when it reached the application and its index among the
    /// session's requests.
    seen: BTreeMap<(SessionId, String), (Instant, u64)>,
    /// session → requests that reached the application.
    count: BTreeMap<SessionId, u64>,
}

#[derive(Debug, Default)]
struct ConnTrack {
    /// The one `Closing` event was seen.
    closing: bool,
    /// The `Close` was written.
    close_sent: bool,
    /// Sizes of frames written and not yet confirmed with `handle_sent`, oldest first.
    unconfirmed: VecDeque<usize>,
    /// `cursor` of the last handshake reply.
    floor: u64,
    /// Last tracked live `seq`.
    last_live: Option<u64>,
    /// Last `seq` of the current replay phase.
    last_replay: Option<u64>,
}

struct Saved {
    json: String,
    book: Book,
}

struct Harness {
    server: Server,
    config: ServerConfig,
    auto_ack: bool,
    now: Instant,
    summary: ServerSummary,
    /// Connections the server knows (connected, not yet reported closed).
    conns: BTreeMap<u8, ConnTrack>,
    /// Sessions the server holds.
    live_sessions: BTreeSet<SessionId>,
    /// Sessions ever created, newest last (for the templates).
    known: Vec<SessionId>,
    /// Requests the application got, newest last (for `respond`).
    requests: Vec<(SessionId, String)>,
    book: Book,
    saved: Vec<Saved>,
    instances: u32,
    shut_down: bool,
}

fn config_of(setup: &ServerSetup, instance: u32) -> ServerConfig {
    let pick = |i: u8, all: [usize; 4]| all[usize::from(i & 3)];
    let secs = Duration::from_secs;
    let mut seed = [0u8; 32];
    seed[0] = setup.seed;
    seed[1..5].copy_from_slice(&instance.to_le_bytes());
    let small = setup.small_bytes;
    ServerConfig {
        versions: match setup.versions & 3 {
            1 => VersionRange::V1_ONLY,
            2 => VersionRange::new(2, 2).expect("valid range"),
            _ => VersionRange::TETHER,
        },
        agents: vec!["echo".into()],
        seed: Some(seed),
        epoch_at_start: 1.7e9,
        auth_token: setup.auth.then(|| "secret".to_owned()),
        handshake_timeout: [secs(1), secs(2), secs(10), secs(60)][usize::from(setup.handshake & 3)],
        heartbeat_interval: [Some(secs(1)), Some(secs(5)), Some(secs(30)), None]
            [usize::from(setup.heartbeat & 3)],
        missed_beats: if setup.one_beat { 1 } else { 2 },
        session_ttl: if setup.short_ttl { secs(5) } else { secs(3600) },
        max_sessions: pick(setup.sessions, [1, 2, 4, 10_000]),
        max_connections: pick(setup.connections, [1, 2, 4, 10_000]),
        // Short windows make events age out under the clients (timers and appends evict).
        recovery_window: if setup.short_ttl { secs(3) } else { secs(120) },
        recovery_session_events: pick(setup.ring, [1, 3, 16, 256]),
        recovery_session_bytes: if small { 4 << 10 } else { 1 << 20 },
        recovery_total_bytes: if small { 8 << 10 } else { 4 << 20 },
        max_frame_bytes: if setup.small_payload { 512 } else { 64 << 10 },
        max_queued_frames: pick(setup.window, [1, 2, 8, 1000]),
        max_buffered_bytes: if small { 512 } else { 1 << 20 },
        max_control_frames: pick(setup.control, [1, 4, 16, 256]),
        dedup_max: pick(setup.dedup, [2, 8, 4096, 4096]),
        dedup_ttl: if setup.short_ttl {
            secs(20)
        } else {
            secs(24 * 3600)
        },
        max_unknown_frames: 3,
        handshake_presence_limit: if small { 1 } else { 32 },
        external_store: false,
    }
}

impl Harness {
    fn new(origin: Instant, setup: &ServerSetup) -> Self {
        let config = config_of(setup, 0);
        Self {
            server: Server::new(config.clone(), origin),
            config,
            auto_ack: setup.auto_ack,
            now: origin,
            summary: ServerSummary::default(),
            conns: BTreeMap::new(),
            live_sessions: BTreeSet::new(),
            known: Vec::new(),
            requests: Vec::new(),
            book: Book::default(),
            saved: Vec::new(),
            instances: 0,
            shut_down: false,
        }
    }

    fn apply(&mut self, step: &Step) {
        self.summary.steps += 1;
        let now = self.now;
        let mut timed_out = false;
        match step {
            Step::Wait { amount, unit } => {
                if let Some(later) = now.checked_add(unit.duration(*amount)) {
                    self.now = later;
                }
                return;
            }
            Step::Timeout => {
                self.server.handle_timeout(now);
                timed_out = true;
            }
            Step::FireTimer => {
                if let Some(at) = self.server.poll_timeout() {
                    self.now = now.max(at);
                    self.server.handle_timeout(self.now);
                    timed_out = true;
                }
            }
            Step::Connect { conn, token } => self.connect(*conn, *token),
            Step::Text { conn, text } => {
                let text = self.render(*conn, text);
                self.server.handle_text(now, ConnId((*conn).into()), &text);
            }
            Step::RawText { conn, text } => {
                self.server.handle_text(now, ConnId((*conn).into()), text)
            }
            Step::Binary { conn } => self.server.handle_binary(now, ConnId((*conn).into()), 7),
            Step::Sent { conn, bytes } => {
                let written = self
                    .conns
                    .get_mut(conn)
                    .and_then(|c| c.unconfirmed.pop_front());
                let exact = written.unwrap_or(0);
                let n = match bytes {
                    SentBytes::Exact => exact,
                    SentBytes::Zero => 0,
                    SentBytes::Double => exact.saturating_mul(2),
                    SentBytes::Max => usize::MAX,
                };
                self.server.handle_sent(now, ConnId((*conn).into()), n);
            }
            Step::SentAll { conn } => {
                let sizes: Vec<usize> = self
                    .conns
                    .get_mut(conn)
                    .map(|c| c.unconfirmed.drain(..).collect())
                    .unwrap_or_default();
                for n in sizes {
                    self.server.handle_sent(now, ConnId((*conn).into()), n);
                }
            }
            Step::Closed { conn } => {
                self.server.handle_closed(now, ConnId((*conn).into()));
                self.conns.remove(conn);
            }
            Step::Publish { session, kind } => self.publish(*session, *kind),
            Step::Respond { request, status } => self.respond(*request, *status),
            Step::Broadcast => {
                let n = self.server.broadcast(now, "notice", &json!({"text": "hi"}));
                assert!(n <= self.conns.len(), "broadcast to {n} connections");
            }
            Step::Disconnect { conn } => {
                let id = ConnId((*conn).into());
                let known = self.conns.contains_key(conn);
                let result = self.server.disconnect(now, id, 1000, "bye");
                assert_eq!(result.is_ok(), known, "disconnect of {id:?}: {result:?}");
            }
            Step::Shutdown => {
                self.server.shutdown(now);
                self.shut_down = true;
            }
            Step::Snapshot => {
                let json = self.snapshot_json();
                if self.saved.len() == SAVED {
                    self.saved.remove(0);
                }
                self.saved.push(Saved {
                    json,
                    book: self.book.clone(),
                });
            }
            Step::Restore(from) => self.restore(*from),
        }
        self.drain();
        if timed_out {
            if let Some(at) = self.server.poll_timeout() {
                assert!(
                    at > self.now,
                    "handle_timeout left a deadline in the past (busy loop)"
                );
            }
        }
    }

    fn connect(&mut self, conn: u8, token: Token) {
        let info = ConnectInfo {
            query_token: match token {
                Token::Right => Some("secret".into()),
                Token::Wrong => Some("guess".into()),
                Token::Absent => None,
            },
            ..ConnectInfo::default()
        };
        let rejected_before = self.summary.rejected;
        self.server
            .handle_connected(self.now, ConnId(conn.into()), info);
        if let std::collections::btree_map::Entry::Vacant(e) = self.conns.entry(conn) {
            e.insert(ConnTrack::default());
            self.drain();
            if self.shut_down {
                assert!(
                    self.summary.rejected > rejected_before,
                    "a connection was admitted after shutdown"
                );
            }
        }
    }

    fn session(&self, r: SessionRef) -> Option<String> {
        match r {
            SessionRef::None => None,
            SessionRef::Unknown => Some("00000000-0000-4000-8000-000000000000".into()),
            SessionRef::Empty => Some(String::new()),
            SessionRef::Known(k) => Some(match self.known.len() {
                0 => "never-issued".into(),
                n => self.known[n - 1 - usize::from(k) % n].0.clone(),
            }),
        }
    }

    fn since(&self, since: Since, session: Option<&str>) -> Option<Value> {
        let head = session
            .and_then(|s| self.server.session_head(&SessionId(s.to_owned())))
            .unwrap_or(0);
        match since {
            Since::None => None,
            Since::Rel(d) => Some(json!(head.saturating_add_signed(d.into()))),
            Since::Abs(v) => Some(json!(v)),
            Since::Negative => Some(json!(-1)),
            Since::Str => Some(json!("3")),
        }
    }

    fn render(&self, conn: u8, text: &ClientText) -> String {
        let ver = |v: Ver| -> Option<Value> {
            match v {
                Ver::Absent => None,
                Ver::Int(i) => Some(json!(i)),
                Ver::Str => Some(json!("2")),
                Ver::Bool => Some(json!(true)),
                Ver::Float => Some(json!(1.5)),
                Ver::Null => Some(Value::Null),
                Ver::Huge => Some(json!(1u64 << 32)),
            }
        };
        let agent = |a: Agent| match a {
            Agent::Known => Some(json!("echo")),
            Agent::Other => Some(json!("nope")),
            Agent::Absent => None,
            Agent::Empty => Some(json!("")),
        };
        let mut frame = serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                frame.insert(k.to_owned(), v);
            }
        };
        match *text {
            ClientText::Hello {
                agent: a,
                versions,
                session,
                since,
                streaming,
            } => {
                put("type", Some(json!("hello")));
                put("agent_id", agent(a));
                match versions {
                    Versions::Flat(min, max) => {
                        put("protocol_min", ver(min));
                        put("protocol_max", ver(max));
                    }
                    Versions::Nested(min, max) => {
                        let mut p = serde_json::Map::new();
                        if let Some(v) = ver(min) {
                            p.insert("min".into(), v);
                        }
                        if let Some(v) = ver(max) {
                            p.insert("max".into(), v);
                        }
                        put("protocol", Some(Value::Object(p)));
                    }
                }
                if streaming {
                    put("capabilities", Some(json!(["streaming", "ack"])));
                }
                let sid = self.session(session);
                put("since", self.since(since, sid.as_deref()));
                put("session_id", sid.map(Value::from));
            }
            ClientText::Join {
                agent: a,
                min,
                max,
                session,
                since,
            } => {
                put("type", Some(json!("join")));
                put("agent_id", agent(a));
                put("min_version", ver(min));
                put("max_version", ver(max));
                let sid = self.session(session);
                put("since", self.since(since, sid.as_deref()));
                put("session_id", sid.map(Value::from));
            }
            ClientText::Message {
                content,
                request_id,
                untyped,
            } => {
                if !untyped {
                    put("type", Some(json!("message")));
                }
                put(
                    "content",
                    match content {
                        MsgContent::Text => Some(json!("hello")),
                        MsgContent::Empty => Some(json!("")),
                        MsgContent::Blank => Some(json!(" \n\t")),
                        MsgContent::Null => Some(Value::Null),
                        MsgContent::Absent => None,
                        MsgContent::Number => Some(json!(42)),
                        MsgContent::Object => Some(json!({"text": "hi", "n": [1, 2]})),
                    },
                );
                put(
                    "request_id",
                    match request_id {
                        ReqId::None => None,
                        ReqId::Numeric => Some(json!(7)),
                        ReqId::Id(i) => Some(json!(format!("r{}", i % 4))),
                    },
                );
            }
            ClientText::Resync(since) => {
                put("type", Some(json!("resync")));
                let sid = self
                    .server
                    .session_of(ConnId(conn.into()))
                    .map(|s| s.0.clone());
                put("since", self.since(since, sid.as_deref()));
            }
            ClientText::Ping => return r#"{"type":"ping"}"#.into(),
            ClientText::Pong => return r#"{"type":"pong"}"#.into(),
            ClientText::Leave => return r#"{"type":"leave"}"#.into(),
            ClientText::Abort => return r#"{"type":"abort","reason":"stop"}"#.into(),
            ClientText::Unknown => return r#"{"type":"bogus","x":1}"#.into(),
            ClientText::Garbage(g) => {
                return match g {
                    ClientGarbage::NotJson => "hello?".into(),
                    ClientGarbage::Truncated => r#"{"type":"mess"#.into(),
                    ClientGarbage::Array => "[1,2]".into(),
                    ClientGarbage::Null => "null".into(),
                    ClientGarbage::NumericType => r#"{"type":5}"#.into(),
                    ClientGarbage::Empty => String::new(),
                    ClientGarbage::Deep => {
                        format!(r#"{{"type":"message","x":{}}}"#, "[".repeat(200))
                    }
                    ClientGarbage::IllTypedHello => {
                        r#"{"type":"hello","agent_id":"echo","session_id":{"a":1}}"#.into()
                    }
                }
            }
            ClientText::Oversized => {
                let pad = "x".repeat(self.config.max_frame_bytes);
                return format!(r#"{{"type":"message","content":"{pad}"}}"#);
            }
        }
        Value::Object(frame).to_string()
    }

    fn publish(&mut self, session: SessionRef, kind: Publish) {
        let sid = SessionId(self.session(session).unwrap_or_else(|| "none".into()));
        let big = "y".repeat(3 << 10);
        let (k, fields): (&str, Vec<(&str, Value)>) = match kind {
            Publish::Small => ("message", vec![("content", json!("news"))]),
            Publish::Large => ("message", vec![("content", json!(big))]),
            Publish::Token => ("token_stream", vec![("data", json!({"token": "t"}))]),
            Publish::ReservedKind => ("replay", vec![]),
            Publish::ReservedField => ("message", vec![("seq", json!(1))]),
            Publish::Shared => {
                let fields = [("content", json!("to all"))];
                let result = self
                    .server
                    .publish_to(self.now, &Audience::All, "message", &fields);
                assert_eq!(
                    result,
                    Ok(self.live_sessions.len()),
                    "publish_to every live session"
                );
                self.summary.published += self.live_sessions.len() as u64;
                return;
            }
        };
        let result = self.server.publish(self.now, &sid, k, &fields);
        let expect_ok = self.live_sessions.contains(&sid)
            && matches!(kind, Publish::Small | Publish::Large | Publish::Token);
        assert_eq!(result.is_ok(), expect_ok, "publish {kind:?}: {result:?}");
        if let Ok(cursor) = result {
            assert_eq!(
                self.server.session_head(&sid),
                Some(cursor),
                "publish returned a cursor other than the head"
            );
            self.summary.published += 1;
        }
    }

    fn respond(&mut self, request: u8, status: u8) {
        let (sid, rid) = match self.requests.len() {
            0 => match self.known.last() {
                Some(s) => (s.clone(), "never-asked".to_owned()),
                None => return,
            },
            n => self.requests[n - 1 - usize::from(request) % n].clone(),
        };
        let outcome = Outcome {
            content: json!("answer"),
            status: [
                OutcomeStatus::Ok,
                OutcomeStatus::Error,
                OutcomeStatus::Rejected,
            ][usize::from(status % 3)],
            error: (status % 3 == 1).then(|| json!({"code": "boom", "retryable": false})),
        };
        let live = self.live_sessions.contains(&sid);
        match self.server.respond(self.now, &sid, &rid, outcome) {
            Ok(cursor) => {
                assert!(live, "respond accepted for a session not held");
                assert_eq!(self.server.session_head(&sid), Some(cursor));
                self.summary.responded += 1;
            }
            Err(e) => assert!(
                !live || matches!(e, tether_core::server::CommandError::AlreadyAnswered(_)),
                "respond refused: {e}"
            ),
        }
    }

    fn snapshot_json(&self) -> String {
        let snap = self.server.snapshot(self.now);
        assert!(
            snap.sessions.len() <= self.config.max_sessions.max(1),
            "snapshot holds {} sessions",
            snap.sessions.len()
        );
        let json = serde_json::to_string(&snap).expect("a snapshot serializes");
        let back: ServerSnapshot = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("snapshot JSON does not read back: {e}\n{json}"));
        let again = serde_json::to_string(&back).expect("a snapshot serializes");
        let (a, b): (Value, Value) = (
            serde_json::from_str(&json).expect("JSON"),
            serde_json::from_str(&again).expect("JSON"),
        );
        assert!(
            super::same_json(&a, &b),
            "snapshot changed through JSON:\n{json}\n{again}"
        );
        json
    }

    fn restore(&mut self, from: RestoreFrom) {
        let (json, book, lossy) = match from {
            RestoreFrom::Empty => (None, Book::default(), false),
            RestoreFrom::Saved(k) if !self.saved.is_empty() => {
                let n = self.saved.len();
                let s = &self.saved[n - 1 - usize::from(k) % n];
                (Some(s.json.clone()), s.book.clone(), true)
            }
            RestoreFrom::Saved(_) | RestoreFrom::Latest => {
                (Some(self.snapshot_json()), self.book.clone(), false)
            }
        };
        // The instance dies with its sockets; the next one knows none of them.
        self.instances += 1;
        let config = config_of_instance(&self.config, self.instances);
        self.server = match &json {
            None => Server::new(config, self.now),
            Some(json) => {
                let snap: ServerSnapshot = serde_json::from_str(json).expect("saved snapshot");
                Server::restore(config, snap, self.now)
                    .unwrap_or_else(|e| panic!("own snapshot does not restore: {e}"))
            }
        };
        if json.is_some() {
            self.summary.restores += 1;
            self.summary.lossy_restores += u64::from(lossy);
        }
        self.book = book;
        self.conns.clear();
        self.shut_down = false;
        let snap = self.server.snapshot(self.now);
        self.live_sessions = snap.sessions.into_iter().map(|s| s.session_id).collect();
        self.requests
            .retain(|(s, _)| self.live_sessions.contains(s));
    }

    fn drain(&mut self) {
        // Events first: a `Closing` is queued when the close is decided, before its `Close`.
        let mut outputs = self.drain_events(0);
        // Without confirmations in between, the batched drain must do as well as the other.
        let mut batch = Vec::new();
        if !self.auto_ack {
            self.server.poll_transmits(&mut batch);
        }
        let mut batch = batch.into_iter();
        while let Some((id, t)) = if self.auto_ack {
            self.server.poll_transmit()
        } else {
            batch.next()
        } {
            outputs += 1;
            assert!(outputs <= MAX_OUTPUTS_PER_STEP, "unbounded transmits");
            let key = u8::try_from(id.0).ok();
            let Some(c) = key.and_then(|k| self.conns.get_mut(&k)) else {
                panic!("{t:?} written to {id:?}, which the server does not know");
            };
            assert!(!c.close_sent, "{t:?} written to {id:?} after its Close");
            match t {
                ServerTransmit::Close { code, .. } => {
                    assert!(c.closing, "Close {code} on {id:?} without a Closing event");
                    c.close_sent = true;
                    self.summary.closes.push(code);
                }
                ServerTransmit::Frame(text) => {
                    observe_frame(c, &mut self.summary, id, &text);
                    if self.auto_ack {
                        self.server.handle_sent(self.now, id, text.len());
                    } else {
                        c.unconfirmed.push_back(text.len());
                    }
                }
            }
        }
        self.drain_events(outputs);
        for (id, c) in &self.conns {
            assert!(
                !c.closing || c.close_sent,
                "conn {id}: a decided close was not written"
            );
        }
        self.check_bounds();
    }

    /// Drains the events; returns `outputs` plus their number.
    fn drain_events(&mut self, mut outputs: usize) -> usize {
        while let Some(event) = self.server.poll_event() {
            outputs += 1;
            assert!(outputs <= MAX_OUTPUTS_PER_STEP, "unbounded events");
            self.observe(event);
        }
        assert!(
            self.server.poll_store_request().is_none(),
            "a store request outside store mode"
        );
        outputs
    }

    fn observe(&mut self, event: ServerEvent) {
        let s = &mut self.summary;
        match event {
            ServerEvent::ConnectionRejected { .. } => s.rejected += 1,
            ServerEvent::SessionCreated { session, .. } => {
                s.created += 1;
                assert!(
                    self.live_sessions.insert(session.clone()),
                    "session id {session} issued while it is held"
                );
                self.known.retain(|k| *k != session);
                self.known.push(session);
                if self.known.len() > RECENT {
                    self.known.remove(0);
                }
            }
            ServerEvent::SessionResumed {
                session,
                taken_over_from,
                lost,
                ..
            } => {
                s.resumed += 1;
                s.takeovers += u64::from(taken_over_from.is_some());
                s.resumed_with_loss += u64::from(lost.is_some());
                if let Some((a, b)) = lost {
                    assert!(a <= b, "resume reports lost {a}..={b}");
                }
                assert!(
                    self.live_sessions.contains(&session),
                    "resumed {session}, which is not held"
                );
            }
            ServerEvent::SessionExpired { session } => {
                s.expired += 1;
                assert!(
                    self.live_sessions.remove(&session),
                    "expired {session}, which is not held"
                );
            }
            ServerEvent::Request {
                session,
                request_id,
                content,
                ..
            } => {
                s.requests += 1;
                assert!(
                    !content.is_null() && content.as_str().is_none_or(|t| !t.trim().is_empty()),
                    "empty content handed to the application: {content:?}"
                );
                self.request(session, request_id);
            }
            ServerEvent::BadInput { .. } => s.bad_inputs += 1,
            ServerEvent::Closing { conn, code, .. } => {
                let c = u8::try_from(conn.0)
                    .ok()
                    .and_then(|k| self.conns.get_mut(&k))
                    .unwrap_or_else(|| panic!("Closing {code} for unknown {conn:?}"));
                assert!(!c.closing, "a second Closing ({code}) for {conn:?}");
                c.closing = true;
            }
            _ => {}
        }
    }

    fn request(&mut self, session: SessionId, request_id: String) {
        let count = self.book.count.entry(session.clone()).or_default();
        let index = *count;
        *count += 1;
        let key = (session, request_id);
        if let Some((at, prev)) = self.book.seen.get(&key) {
            let young = self.now.saturating_duration_since(*at) <= self.config.dedup_ttl;
            let newer = index - prev - 1;
            assert!(
                !(young && newer < self.config.dedup_max as u64),
                "request {} of session {} reached the application twice within the dedup \
                 window ({newer} newer requests, {:?} apart)",
                key.1,
                key.0,
                self.now.saturating_duration_since(*at)
            );
        }
        self.book.seen.insert(key.clone(), (self.now, index));
        self.requests.retain(|r| *r != key);
        self.requests.push(key);
        if self.requests.len() > RECENT {
            self.requests.remove(0);
        }
    }

    fn check_bounds(&self) {
        let st = self.server.stats();
        let cfg = &self.config;
        let fail = |what: String| panic!("server bound: {what} ({st:?})");
        if st.max_window_events > cfg.recovery_session_events.max(1) {
            fail(format!("a window holds {} events", st.max_window_events));
        }
        if st.max_window_bytes > cfg.recovery_session_bytes.max(MAX_EVENT_COST) {
            fail(format!("a window holds {} bytes", st.max_window_bytes));
        }
        if st.log_bytes > cfg.recovery_total_bytes.max(MAX_EVENT_COST) {
            fail(format!("the log holds {} bytes", st.log_bytes));
        }
        if st.max_control_frames > cfg.max_control_frames.max(1) {
            fail(format!("{} control frames queued", st.max_control_frames));
        }
        if st.max_dedup > cfg.dedup_max.max(1) {
            fail(format!("dedup window of {}", st.max_dedup));
        }
        if st.sessions > cfg.max_sessions.max(1) {
            fail(format!("{} sessions", st.sessions));
        }
        if st.sessions != self.live_sessions.len() {
            fail(format!(
                "{} sessions held, {} by the events",
                st.sessions,
                self.live_sessions.len()
            ));
        }
        if st.connections != self.conns.len() {
            fail(format!(
                "{} connections known, {} open (leak or loss)",
                st.connections,
                self.conns.len()
            ));
        }
        if st.pending_events > 0 {
            fail(format!("{} events left after draining", st.pending_events));
        }
    }
}

fn config_of_instance(config: &ServerConfig, instance: u32) -> ServerConfig {
    let mut c = config.clone();
    let mut seed = c.seed.unwrap_or_default();
    seed[1..5].copy_from_slice(&instance.to_le_bytes());
    c.seed = Some(seed);
    c
}

/// Checks one written frame against the connection's numbering.
fn observe_frame(c: &mut ConnTrack, s: &mut ServerSummary, id: ConnId, text: &str) {
    if let Err(e) = ServerFrame::decode(text) {
        panic!("server wrote a frame that does not decode on {id:?}: {e}\n {text}");
    }
    let v: Value = serde_json::from_str(text).expect("a decoded frame is JSON");
    let kind = v["type"].as_str().unwrap_or_default();
    let seq = v.get("seq").map(|n| {
        n.as_u64()
            .unwrap_or_else(|| panic!("non-integer seq on {id:?}: {text}"))
    });
    match kind {
        "hello_ok" | "joined" => {
            if kind == "hello_ok" {
                s.hello_oks += 1;
            } else {
                s.joined += 1;
            }
            c.floor = v["cursor"].as_u64().expect("handshake reply has a cursor");
            c.last_live = None;
            c.last_replay = None;
        }
        "hello_error" => s.hello_errors += 1,
        "ping" => s.pings += 1,
        "replay" => {
            s.replays += 1;
            let n = seq
                .or_else(|| v["event"]["sequence"].as_u64())
                .unwrap_or_else(|| panic!("replay without a sequence on {id:?}: {text}"));
            if let Some(last) = c.last_replay {
                assert!(n > last, "replay {n} after replay {last} on {id:?}");
            }
            let reached = c.last_live.unwrap_or(0).max(c.floor);
            assert!(
                n <= reached,
                "replay {n} on {id:?} beyond what was reached ({reached})"
            );
            c.last_replay = Some(n);
        }
        "replay_end" => {
            s.replay_ends += 1;
            c.last_replay = None;
        }
        _ => {
            if let Some(n) = seq {
                s.live += 1;
                assert_eq!(
                    v["cursor"].as_u64(),
                    Some(n),
                    "tracked frame with cursor != seq on {id:?}: {text}"
                );
                assert!(
                    n > c.floor && c.last_live.is_none_or(|l| n > l),
                    "live seq {n} on {id:?} after {:?} (handshake cursor {})",
                    c.last_live,
                    c.floor
                );
                c.last_live = Some(n);
                if kind == "response" {
                    match v["status"].as_str() {
                        Some("duplicate") => s.duplicates += 1,
                        Some("final") => s.finals += 1,
                        _ => {}
                    }
                }
            }
        }
    }
}
