//! The client machine's fuzz body: runs a [`Script`] against a [`Client`], draining every output
//! after every input (the drive contract) and checking invariants as it goes.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::script::{
    Content, ErrorKind, Garbage, Input, LiveKind, ReplayPath, Script, ServerText, Setup, Shape,
    HELLO_ERROR_CODES, NEXT_STEPS,
};
use tether_core::backoff::Jitter;
use tether_core::client::{
    Client, ClientConfig, ClosedReason, DisconnectCause, Event, HandshakeMode, RequestStatus,
    SendError, State, Transmit,
};
use tether_core::cursor::{PendingRequest, ResumeState};
use tether_core::rng::seed_from_u64;
use tether_core::version::VersionRange;
use tether_core::wire::ClientFrame;

/// More transmits plus events than this from one input means a queue grows without bound.
const MAX_OUTPUTS_PER_INPUT: usize = 10_000;

/// What a run reached, for checking that seeds exercise what they claim to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientSummary {
    /// Inputs applied.
    pub inputs: usize,
    /// `StateChanged(Connected)` events.
    pub connections: u64,
    /// Of those, with `resumed`.
    pub resumed: u64,
    /// Of those, over the legacy `join` handshake.
    pub legacy: u64,
    /// `Delivered` events.
    pub delivered: u64,
    /// Of those, replayed.
    pub replayed: u64,
    /// `Gap` events.
    pub gaps: u64,
    /// `Lost` events.
    pub lost: u64,
    /// `Notice` events.
    pub notices: u64,
    /// `ServerError` events.
    pub server_errors: u64,
    /// `Snapshot` events.
    pub snapshots: u64,
    /// `ServerReset` events.
    pub server_resets: u64,
    /// `SessionReplaced` events.
    pub sessions_replaced: u64,
    /// Rejections, recoverable (a disconnect) or terminal (the close).
    pub rejections: u64,
    /// `StateChanged(AwaitingCredentials)` events.
    pub awaiting_credentials: u64,
    /// `Transmit::Open`s.
    pub opens: u64,
    /// `resync` frames written (v2 in-band gap repair).
    pub resyncs: u64,
    /// `Request` updates.
    pub request_updates: u64,
    /// `BadFrame` events.
    pub bad_frames: u64,
    /// The `Closed` event's reason, if the client stopped.
    pub closed: Option<ClosedReason>,
}

/// Fuzz body of the client machine: `data` is read as a [`Script`] and run from `origin` (the
/// body never reads a clock). See [`run`] for the invariants.
pub fn client_at(origin: Instant, data: &[u8]) -> ClientSummary {
    run(origin, &Script::from_bytes(data))
}

/// Runs `script` against a new client whose clock starts at `origin`, draining transmits, events
/// and the timeout after every input, and panics if an invariant breaks:
///
/// * within one numbering (until a `SessionReplaced` or `ServerReset`), delivered sequences
///   strictly increase, and nothing reported lost is delivered afterwards or lost twice;
/// * gaps and lost ranges are well-formed (`expected < received`, `from <= to`);
/// * at most one `Closed` event, the last output of the machine's life; `is_closed` agrees; a
///   closed client has no timer and refuses `send`;
/// * while connecting or waiting to reconnect, `poll_timeout` is armed;
/// * every frame the client writes decodes as a client frame;
/// * request updates name a pending request, and a final one ends it;
/// * `stats()` agrees with the events; one input yields at most 10 000 outputs.
pub fn run(origin: Instant, script: &Script) -> ClientSummary {
    let mut harness = Harness::new(origin, &script.setup);
    for input in &script.inputs {
        harness.apply(input);
    }
    harness.summary
}

struct Harness {
    client: Client,
    now: Instant,
    summary: ClientSummary,
    closed: bool,
    state: Option<State>,
    /// Last delivered sequence and last lost sequence in the current numbering.
    delivered_upto: Option<u64>,
    lost_upto: Option<u64>,
    lost_total: u64,
    /// Requests sent (or restored) without a final outcome yet.
    pending: HashSet<String>,
    /// The most recent request ids, for `response` frames.
    recent: Vec<String>,
}

fn config_of(setup: &Setup) -> ClientConfig {
    let mut config = ClientConfig::new("fuzz");
    if setup.join {
        config.handshake = HandshakeMode::Join;
    }
    config.repair_gaps = !setup.no_repair;
    config.resend_unanswered = !setup.no_resend;
    config.fallback_heartbeat = setup
        .heartbeat
        .map(|n| Duration::from_millis(100 * (u64::from(n) + 1)));
    config.versions = match setup.versions & 3 {
        0 => VersionRange::TETHER,
        1 => VersionRange::V1_ONLY,
        2 => VersionRange::new(2, 2).expect("valid range"),
        _ => VersionRange::new(1, 3).expect("valid range"),
    };
    config.backoff.jitter = match setup.jitter & 3 {
        0 => Jitter::Proportional(0.2),
        1 => Jitter::None,
        2 => Jitter::Full,
        _ => Jitter::Decorrelated,
    };
    config.backoff.max_attempts = setup.max_attempts.map(u32::from);
    config.backoff.max_elapsed = setup
        .max_elapsed_secs
        .map(|s| Duration::from_secs(s.into()));
    config.outbox_capacity = 16 - usize::from(setup.outbox & 15);
    if setup.small_frames {
        config.max_frame_bytes = 240;
    }
    config.seed = Some(seed_from_u64(setup.seed.into()));
    config
}

impl Harness {
    fn new(origin: Instant, setup: &Setup) -> Self {
        let config = config_of(setup);
        let mut recent = Vec::new();
        let client = match setup.resume {
            None => Client::new(config, origin),
            Some(r) => {
                let outbox: Vec<PendingRequest> = (0..r.pending % 4)
                    .map(|i| PendingRequest {
                        request_id: format!("saved-{i}"),
                        content: json!("saved"),
                    })
                    .collect();
                recent.extend(outbox.iter().map(|p| p.request_id.clone()));
                let state = ResumeState {
                    session_id: Some(format!("s{}", r.session % 4)),
                    cursor: r.cursor,
                    sequence: r.sequence,
                    version: None,
                    epoch: None,
                    outbox,
                };
                Client::with_resume_state(config, state, origin)
            }
        };
        let pending = recent.iter().cloned().collect();
        let mut harness = Self {
            client,
            now: origin,
            summary: ClientSummary::default(),
            closed: false,
            state: None,
            delivered_upto: None,
            lost_upto: None,
            lost_total: 0,
            pending,
            recent,
        };
        harness.drain();
        harness
    }

    fn apply(&mut self, input: &Input) {
        self.summary.inputs += 1;
        let now = self.now;
        match input {
            Input::Wait { amount, unit } => {
                if let Some(later) = now.checked_add(unit.duration(*amount)) {
                    self.now = later;
                }
            }
            Input::Timeout => self.client.handle_timeout(now),
            Input::FireTimer => {
                if let Some(at) = self.client.poll_timeout() {
                    self.now = now.max(at);
                    self.client.handle_timeout(self.now);
                }
            }
            Input::Connected => self.client.handle_connected(now),
            Input::ConnectFailed => self.client.handle_connect_failed(now, "refused"),
            Input::Closed(code) => self.client.handle_closed(now, *code, "closed by peer"),
            Input::Binary => self.client.handle_binary(now),
            Input::Text(template) => {
                let base = self.client.resume_state().sequence.unwrap_or(0);
                let text = render(template, base, &self.recent);
                self.client.handle_text(now, &text);
            }
            Input::RawText(text) => self.client.handle_text(now, text),
            Input::Send(content) => {
                let result = self.client.send(now, value_of(*content));
                self.sent(*content, result);
            }
            Input::SendWithId(id, content) => {
                let id = format!("req-{}", id % 4);
                let result = self.client.send_with_id(now, id, value_of(*content));
                self.sent(*content, result);
            }
            Input::Disconnect => self.client.disconnect(now),
            Input::CredentialsRefreshed => self.client.credentials_refreshed(now),
        }
        self.drain();
    }

    fn sent(&mut self, content: Content, result: Result<String, SendError>) {
        if self.closed {
            assert_eq!(result, Err(SendError::Closed), "send on a closed client");
            return;
        }
        match result {
            Ok(id) => {
                assert!(
                    !matches!(content, Content::Empty | Content::Null),
                    "empty content accepted"
                );
                assert!(self.pending.insert(id.clone()), "id {id} accepted twice");
                self.recent.push(id);
                if self.recent.len() > 8 {
                    self.recent.remove(0);
                }
            }
            Err(SendError::Closed) => panic!("send refused as closed on an open client"),
            Err(SendError::DuplicateRequestId(id)) => {
                assert!(
                    self.pending.contains(&id),
                    "{id} refused as pending but is not"
                )
            }
            Err(SendError::EmptyContent | SendError::OutboxFull { .. }) => {}
        }
    }

    fn drain(&mut self) {
        let was_closed = self.closed;
        let mut outputs = 0;
        while let Some(transmit) = self.client.poll_transmit() {
            outputs += 1;
            assert!(outputs <= MAX_OUTPUTS_PER_INPUT, "unbounded transmits");
            assert!(!was_closed, "{transmit:?} after Event::Closed");
            match &transmit {
                Transmit::Open => self.summary.opens += 1,
                Transmit::Frame(text) => {
                    let frame = ClientFrame::decode(text)
                        .unwrap_or_else(|err| panic!("client wrote a bad frame {text:?}: {err}"));
                    if matches!(&frame, ClientFrame::Other(f) if f.kind == "resync") {
                        self.summary.resyncs += 1;
                    }
                }
                Transmit::Close { .. } => {}
            }
        }
        while let Some(event) = self.client.poll_event() {
            outputs += 1;
            assert!(outputs <= MAX_OUTPUTS_PER_INPUT, "unbounded events");
            assert!(!self.closed, "{event:?} after Event::Closed");
            self.observe(event);
        }
        assert_eq!(
            self.client.is_closed(),
            self.closed,
            "is_closed() disagrees"
        );
        let timeout = self.client.poll_timeout();
        if self.closed {
            assert_eq!(timeout, None, "a closed client keeps a timer");
        } else if matches!(
            self.state,
            Some(State::Connecting { .. } | State::Reconnecting { .. })
        ) {
            assert!(timeout.is_some(), "no timer while {:?}", self.state);
        }
        let stats = self.client.stats();
        assert_eq!(stats.delivered, self.summary.delivered, "stats.delivered");
        assert_eq!(stats.lost, self.lost_total, "stats.lost");
        assert_eq!(stats.gaps, self.summary.gaps, "stats.gaps");
        assert_eq!(
            stats.bad_frames, self.summary.bad_frames,
            "stats.bad_frames"
        );
    }

    fn new_numbering(&mut self) {
        self.delivered_upto = None;
        self.lost_upto = None;
    }

    /// The highest sequence delivered or reported lost in the current numbering.
    fn settled(&self) -> Option<u64> {
        self.delivered_upto.max(self.lost_upto)
    }

    fn observe(&mut self, event: Event) {
        let settled = self.settled();
        let s = &mut self.summary;
        match event {
            Event::StateChanged(state) => {
                match &state {
                    State::Connected {
                        resumed, legacy, ..
                    } => {
                        s.connections += 1;
                        s.resumed += u64::from(*resumed);
                        s.legacy += u64::from(*legacy);
                    }
                    State::Disconnected {
                        cause: DisconnectCause::Rejected(_),
                    } => s.rejections += 1,
                    State::AwaitingCredentials => s.awaiting_credentials += 1,
                    State::Connecting { .. }
                    | State::Disconnected { .. }
                    | State::Reconnecting { .. } => {}
                    other => unknown(other),
                }
                self.state = Some(state);
            }
            Event::Delivered(d) => {
                if let Some(settled) = settled {
                    assert!(
                        d.seq > settled,
                        "delivered seq {} after {:?} delivered and {:?} lost",
                        d.seq,
                        self.delivered_upto,
                        self.lost_upto
                    );
                }
                s.delivered += 1;
                s.replayed += u64::from(d.replayed);
                self.delivered_upto = Some(d.seq);
            }
            Event::Notice(_) => s.notices += 1,
            Event::ServerError(_) => s.server_errors += 1,
            Event::Snapshot(_) => s.snapshots += 1,
            Event::Gap { expected, received } => {
                assert!(expected < received, "gap {expected}..{received}");
                s.gaps += 1;
            }
            Event::Lost { from, to } => {
                assert!(from <= to, "lost {from}..={to}");
                if let Some(settled) = settled {
                    assert!(
                        from > settled,
                        "lost {from}..={to} after {:?} delivered and {:?} lost",
                        self.delivered_upto,
                        self.lost_upto
                    );
                }
                s.lost += 1;
                self.lost_total = self
                    .lost_total
                    .saturating_add((to - from).saturating_add(1));
                self.lost_upto = Some(to);
            }
            Event::ServerReset { .. } => {
                s.server_resets += 1;
                self.new_numbering();
            }
            Event::SessionReplaced { .. } => {
                s.sessions_replaced += 1;
                self.new_numbering();
            }
            Event::Request(update) => {
                s.request_updates += 1;
                let id = &update.request_id;
                assert!(
                    self.pending.contains(id),
                    "update {update:?} for a request not pending"
                );
                if !matches!(update.status, RequestStatus::Accepted) {
                    self.pending.remove(id);
                }
            }
            Event::BadFrame(_) => s.bad_frames += 1,
            Event::Closed(reason) => {
                if matches!(reason, ClosedReason::Rejected(_)) {
                    s.rejections += 1;
                }
                s.closed = Some(reason);
                self.closed = true;
            }
            other => unknown(&other),
        }
    }
}

/// A variant the core added after these checks were written (its enums are
/// `#[non_exhaustive]`): the checks must learn what it means before they can vouch for it.
fn unknown(what: &dyn std::fmt::Debug) -> ! {
    panic!("the client fuzz body does not know {what:?}: teach its checks this variant")
}

fn value_of(content: Content) -> Value {
    match content {
        Content::Text => json!("hello"),
        Content::Empty => json!(""),
        Content::Null => Value::Null,
        Content::Number => json!(7),
        Content::Object => json!({"text": "hi", "n": [1, 2]}),
    }
}

fn render(template: &ServerText, base: u64, recent: &[String]) -> String {
    let n = |num: super::Num| num.resolve(base);
    match *template {
        ServerText::HelloOk {
            protocol,
            session,
            resumed,
            cursor,
            sequence,
            heartbeat_ms,
            resync_required,
        } => {
            let mut frame = json!({
                "type": "hello_ok",
                "protocol": protocol,
                "features": {"methods": ["message", "leave", "abort"], "events": ["message"]},
                "policy": {"max_payload": 1_048_576},
                "session_id": format!("s{}", session % 4),
                "resumed": resumed,
                "cursor": n(cursor),
            });
            if let Some(sequence) = sequence {
                frame["sequence"] = json!(n(sequence));
            }
            if let Some(ms) = heartbeat_ms {
                frame["policy"]["heartbeat_ms"] = json!(ms);
            }
            if resync_required {
                frame["resync_required"] = json!(true);
            }
            frame.to_string()
        }
        ServerText::Joined {
            session,
            cursor,
            sequence,
            protocol_version,
            resync_required,
        } => {
            let mut frame = json!({
                "type": "joined",
                "session_id": format!("s{}", session % 4),
                "agent_id": "fuzz",
                "resumed": false,
                "cursor": n(cursor),
                "resync_required": resync_required,
            });
            if let Some(sequence) = sequence {
                frame["sequence"] = json!(n(sequence));
            }
            if let Some(v) = protocol_version {
                frame["protocol_version"] = json!(v);
            }
            frame.to_string()
        }
        ServerText::Live { kind, seq, shape } => {
            let seq = n(seq);
            let mut frame = match kind {
                LiveKind::Message => json!({"type": "message", "content": "live"}),
                LiveKind::Token => json!({"type": "token_stream", "data": {"token": "t"}}),
                LiveKind::Error => json!({"type": "error", "message": "boom", "code": "internal"}),
                LiveKind::Response { request, status } => {
                    let id = match recent.len() {
                        0 => "unknown".to_owned(),
                        len => recent[usize::from(request) % len].clone(),
                    };
                    match status & 3 {
                        0 => json!({"type": "response", "status": "accepted",
                            "content": "Started processing.", "session_id": "s0", "request_id": id}),
                        1 => json!({"type": "response", "status": "final", "content": "done",
                            "outcome": {"status": "ok"}, "session_id": "s0", "request_id": id}),
                        2 => json!({"type": "response", "status": "duplicate",
                            "session_id": "s0", "request_id": id}),
                        _ => json!({"type": "response", "status": "final", "content": "done",
                            "outcome": {"status": "ok"}, "session_id": "s0"}),
                    }
                }
            };
            let (cursor, seq) = match shape {
                Shape::Both => (Some(seq), Some(seq)),
                Shape::SeqOnly => (None, Some(seq)),
                Shape::CursorOnly => (Some(seq), None),
                Shape::Split(cursor) => (Some(n(cursor)), Some(seq)),
            };
            if let Some(cursor) = cursor {
                frame["cursor"] = json!(cursor);
            }
            if let Some(seq) = seq {
                frame["seq"] = json!(seq);
            }
            frame.to_string()
        }
        ServerText::Replay { seq, path } => {
            let seq = n(seq);
            let data = match path {
                ReplayPath::NoSeq => json!({"type": "message", "content": "old"}),
                ReplayPath::BadData => json!("not an object"),
                _ => json!({"type": "message", "content": "old", "cursor": seq, "seq": seq}),
            };
            let mut event = json!({"type": "message", "data": data, "event_id": "e",
                "timestamp": 1.7e9, "source": "gateway", "target": null});
            let mut frame = json!({"type": "replay"});
            match path {
                ReplayPath::Hello | ReplayPath::BadData => event["sequence"] = json!(seq),
                ReplayPath::Join => frame["seq"] = json!(seq),
                ReplayPath::Inner | ReplayPath::NoSeq => {}
            }
            frame["event"] = event;
            frame.to_string()
        }
        ServerText::ReplayEnd { cursor } => match cursor {
            Some(c) => format!(r#"{{"type":"replay_end","cursor":{}}}"#, n(c)),
            None => r#"{"type":"replay_end"}"#.to_owned(),
        },
        ServerText::Ping => r#"{"type":"ping"}"#.to_owned(),
        ServerText::Pong => r#"{"type":"pong"}"#.to_owned(),
        ServerText::HelloError {
            code,
            next_step,
            retry_after,
        } => {
            let mut frame = json!({
                "type": "hello_error",
                "code": HELLO_ERROR_CODES[usize::from(code) % HELLO_ERROR_CODES.len()],
                "message": "refused",
            });
            if let Some(step) = usize::from(next_step).checked_sub(1) {
                frame["next_step"] = json!(NEXT_STEPS[step % NEXT_STEPS.len()]);
            }
            if let Some(secs) = retry_after {
                frame["retry_after_seconds"] = json!(secs);
            }
            frame.to_string()
        }
        ServerText::Error(kind) => match kind {
            ErrorKind::Bare => r#"{"type":"error","message":"Unknown message type: hello"}"#,
            ErrorKind::UnknownType => {
                r#"{"type":"error","code":"configuration_error","message":"Unknown frame type"}"#
            }
            ErrorKind::VersionUnsupported => {
                r#"{"type":"error","code":"version_unsupported","message":"no","server_min_version":2}"#
            }
            ErrorKind::AuthRequired => {
                r#"{"type":"error","code":"auth_required","message":"token"}"#
            }
            ErrorKind::NewCode => r#"{"type":"error","code":"brand_new","message":"?"}"#,
        }
        .to_owned(),
        ServerText::Snapshot => r#"{"type":"snapshot","state":{"messages":[]}}"#.to_owned(),
        ServerText::Notice => r#"{"type":"status","text":"thinking"}"#.to_owned(),
        ServerText::Garbage(g) => match g {
            Garbage::Empty => String::new(),
            Garbage::Truncated => r#"{"type":"mess"#.to_owned(),
            Garbage::Array => "[1,2,3]".to_owned(),
            Garbage::Null => "null".to_owned(),
            Garbage::NumericType => r#"{"type":5,"seq":1}"#.to_owned(),
            Garbage::NegativeSeq => r#"{"type":"message","cursor":-1,"seq":-1}"#.to_owned(),
            Garbage::FloatSeq => r#"{"type":"message","cursor":1.5,"seq":1.5}"#.to_owned(),
            Garbage::HugeSeq => r#"{"type":"message","seq":18446744073709551616}"#.to_owned(),
            Garbage::Untyped => r#"{"content":"x","cursor":1,"seq":1}"#.to_owned(),
            Garbage::Deep => format!(r#"{{"type":"message","x":{}}}"#, "[".repeat(200)),
        },
    }
}
