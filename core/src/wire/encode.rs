//! Every frame's text, written by the one writer ([`json`](super::json)): the typed frames of
//! both directions ([`ServerFrame::encode`], [`ClientFrame::encode`]) and the frames only
//! tether's server writes (replays of recorded events, `replay_end`, `error`, `left`,
//! broadcasts, responses). Key order and bytes are those serde_json gives the typed frames
//! (the tests hold the two to each other); the server's own frames follow the reference
//! server's key order.

use serde_json::Value;

use super::codes::{ConnectErrorCode, RecoveryStep};
use super::json::{self, frame, push_json, push_u64, push_uuid, Obj};
use super::{
    Abort, ClientFrame, ErrorFrame, GatewayEvent, Hello, HelloError, HelloOk, Join, Joined,
    MessageFrame, Policy, Replay, ServerFrame, ServerReply, Snapshot,
};
use crate::version::VersionRange;

/// `{"type":"ping"}`.
pub(crate) const PING: &str = r#"{"type":"ping"}"#;
/// `{"type":"pong"}`.
pub(crate) const PONG: &str = r#"{"type":"pong"}"#;

impl ServerFrame {
    /// Encodes the frame as compact JSON text (the reference server's separators).
    pub fn encode(&self) -> String {
        match self {
            Self::HelloOk(f) => frame("hello_ok", |o| hello_ok(o, f).end()),
            Self::HelloError(f) => frame("hello_error", |o| hello_error(o, f).end()),
            Self::Joined(f) => frame("joined", |o| joined(o, f).end()),
            Self::Error(f) => frame("error", |o| error_frame(o, f).end()),
            Self::Replay(f) => frame("replay", |o| replay_frame(o, f).end()),
            Self::Snapshot(f) => frame("snapshot", |o| snapshot(o, f).end()),
            Self::Ping => PING.to_owned(),
            Self::Pong => PONG.to_owned(),
            Self::Event(f) => f.text.to_string(),
        }
    }
}

impl ClientFrame {
    /// Encodes the frame as compact JSON text.
    pub fn encode(&self) -> String {
        match self {
            Self::Hello(f) => frame("hello", |o| hello(o, f).end()),
            Self::Join(f) => frame("join", |o| join(o, f).end()),
            Self::Message(f) => frame("message", |o| message(o, f).end()),
            Self::Abort(f) => frame("abort", |o| abort(o, f).end()),
            Self::Leave(f) => frame("leave", |o| o.map(f).end()),
            Self::ServerReply(f) => frame("server_reply", |o| server_reply(o, f).end()),
            Self::Ping => PING.to_owned(),
            Self::Pong => PONG.to_owned(),
            Self::Other(f) => f.text.to_string(),
        }
    }
}

fn opt_values<'a>(o: Obj<'a>, key: &str, values: Option<&Vec<Value>>) -> Obj<'a> {
    match values {
        Some(v) => o.field(key, v),
        None => o,
    }
}

fn hello_ok<'a>(o: Obj<'a>, f: &HelloOk) -> Obj<'a> {
    o.u64("protocol", u64::from(f.protocol))
        .object("features", |m| {
            m.strings("methods", &f.features.methods)
                .strings("events", &f.features.events)
                .map(&f.features.extra);
        })
        .object("policy", |m| {
            policy(m, &f.policy);
        })
        .str("session_id", &f.session_id)
        .bool("resumed", f.resumed)
        .u64("cursor", f.cursor)
        .opt_u64("sequence", f.sequence)
        .opt_u64("oldest_cursor", f.oldest_cursor)
        .opt_bool("resync_required", f.resync_required)
        .then(|o| opt_values(o, "presence", f.presence.as_ref()))
        .opt_value("health", f.health.as_ref())
        .opt_u64("epoch", f.epoch)
        .map(&f.extra)
}

fn policy(m: json::Members<'_>, p: &Policy) {
    m.opt_u64("max_payload", p.max_payload)
        .opt_u64("max_buffered_bytes", p.max_buffered_bytes)
        .opt_u64("max_queued_frames", p.max_queued_frames)
        .opt_u64("heartbeat_ms", p.heartbeat_ms)
        .opt_u64("max_attachment_bytes", p.max_attachment_bytes)
        .opt_u64("max_attachments", p.max_attachments)
        .opt_u64("chunk_bytes", p.chunk_bytes)
        .map(&p.extra);
}

fn hello_error<'a>(o: Obj<'a>, f: &HelloError) -> Obj<'a> {
    o.str("code", f.code.as_str())
        .str("message", &f.message)
        .opt_str("next_step", f.next_step.as_ref().map(RecoveryStep::as_str))
        .opt_u64("retry_after_seconds", f.retry_after_seconds)
        .opt_str("next", f.next.as_deref())
        .map(&f.extra)
}

fn joined<'a>(o: Obj<'a>, f: &Joined) -> Obj<'a> {
    o.str("session_id", &f.session_id)
        .opt_str("agent_id", f.agent_id.as_deref())
        .bool("resumed", f.resumed)
        .u64("cursor", f.cursor)
        .opt_u64("oldest_cursor", f.oldest_cursor)
        .bool("resync_required", f.resync_required)
        .opt_u64("sequence", f.sequence)
        .opt_u64("protocol_version", f.protocol_version.map(u64::from))
        .opt_u64("server_min_version", f.server_min_version.map(u64::from))
        .opt_u64("server_max_version", f.server_max_version.map(u64::from))
        .then(|o| opt_values(o, "presence", f.presence.as_ref()))
        .opt_value("health", f.health.as_ref())
        .opt_u64("epoch", f.epoch)
        .map(&f.extra)
}

fn error_frame<'a>(o: Obj<'a>, f: &ErrorFrame) -> Obj<'a> {
    o.opt_str("code", f.code.as_ref().map(ConnectErrorCode::as_str))
        .str("message", &f.message)
        .map(&f.extra)
}

fn snapshot<'a>(o: Obj<'a>, f: &Snapshot) -> Obj<'a> {
    o.value("state", &f.state).map(&f.extra)
}

fn replay_frame<'a>(o: Obj<'a>, f: &Replay) -> Obj<'a> {
    o.nested("event", |out| gateway_event(out, &f.event))
        .opt_u64("seq", f.seq)
        .map(&f.extra)
}

fn gateway_event(out: &mut String, e: &GatewayEvent) {
    Obj::start(out, &e.kind)
        .raw("data", e.data.get())
        .opt_str("event_id", e.event_id.as_deref())
        .then(|o| match e.timestamp {
            Some(t) => o.field("timestamp", &t),
            None => o,
        })
        .field("source", &e.source)
        .field("target", &e.target)
        .opt_u64("sequence", e.sequence)
        .map(&e.extra)
        .end();
}

fn hello<'a>(o: Obj<'a>, f: &Hello) -> Obj<'a> {
    o.opt_str("agent_id", f.agent_id.as_deref())
        .opt_u64("protocol_min", f.protocol_min.map(u64::from))
        .opt_u64("protocol_max", f.protocol_max.map(u64::from))
        .then(|o| match f.protocol {
            Some(p) => o.object("protocol", |m| {
                m.opt_u64("min", p.min.map(u64::from))
                    .opt_u64("max", p.max.map(u64::from));
            }),
            None => o,
        })
        .then(|o| match &f.capabilities {
            Some(c) => o.strings("capabilities", c),
            None => o,
        })
        .then(|o| match &f.caps {
            Some(c) => o.strings("caps", c),
            None => o,
        })
        .opt_str("session_id", f.session_id.as_deref())
        .opt_u64("since", f.since)
        .opt_u64("epoch", f.epoch)
        .map(&f.extra)
}

fn join<'a>(o: Obj<'a>, f: &Join) -> Obj<'a> {
    o.opt_str("agent_id", f.agent_id.as_deref())
        .opt_u64("min_version", f.min_version.map(u64::from))
        .opt_u64("max_version", f.max_version.map(u64::from))
        .opt_str("session_id", f.session_id.as_deref())
        .opt_u64("since", f.since)
        .opt_u64("epoch", f.epoch)
        .map(&f.extra)
}

fn message<'a>(o: Obj<'a>, f: &MessageFrame) -> Obj<'a> {
    o.opt_value("content", f.content.as_ref())
        .opt_str("request_id", f.request_id.as_deref())
        .map(&f.extra)
}

fn abort<'a>(o: Obj<'a>, f: &Abort) -> Obj<'a> {
    o.opt_str("reason", f.reason.as_deref())
        .opt_value("scope", f.scope.as_ref())
        .map(&f.extra)
}

fn server_reply<'a>(o: Obj<'a>, f: &ServerReply) -> Obj<'a> {
    o.opt_str("request_id", f.request_id.as_deref())
        .opt_str("value", f.value.as_deref())
        .map(&f.extra)
}

// ---------------------------------------------------------------------------------------------
// The frames only tether's server writes

/// Untracked `{"type":"error"[,"code":c],"message":m[,"field":f]}`.
pub(crate) fn error(code: Option<ConnectErrorCode>, message: &str, field: Option<&str>) -> String {
    frame("error", |o| {
        o.opt_str("code", code.as_ref().map(ConnectErrorCode::as_str))
            .str("message", message)
            .opt_str("field", field)
            .end()
    })
}

/// The join path's version refusal: `error` `version_unsupported` with the server's range and
/// the step the client must take.
pub(crate) fn version_unsupported(
    message: &str,
    server: VersionRange,
    step: &RecoveryStep,
) -> String {
    frame("error", |o| {
        o.str("code", ConnectErrorCode::VersionUnsupported.as_str())
            .str("message", message)
            .u64("server_min_version", u64::from(server.min()))
            .u64("server_max_version", u64::from(server.max()))
            .str("next_step", step.as_str())
            .end()
    })
}

/// The reference's `snapshot` envelope of the join path (`resync_required`).
pub(crate) fn join_snapshot(session_id: &str, agent_id: &str, head: u64) -> String {
    let state = serde_json::json!({
        "session_id": session_id, "agent_id": agent_id, "state": {}, "messages": [],
        "event_cursor": head,
    });
    frame("snapshot", |o| o.field("state", &state).end())
}

/// `{"type":"left","session_id":s}`.
pub(crate) fn left(session_id: &str) -> String {
    frame("left", |o| o.str("session_id", session_id).end())
}

/// v2: `{"type":"replay_end","cursor":c,"replayed":n[,"lost_from":a,"lost_to":b]}`.
pub(crate) fn replay_end(cursor: u64, replayed: u64, lost: Option<(u64, u64)>) -> String {
    frame("replay_end", |o| {
        o.u64("cursor", cursor)
            .u64("replayed", replayed)
            .opt_u64("lost_from", lost.map(|l| l.0))
            .opt_u64("lost_to", lost.map(|l| l.1))
            .end()
    })
}

/// An untracked broadcast in the GatewayEvent shape: `{"type":kind,"data":d,"event_id":id,
/// "timestamp":t,"source":"gateway","target":null}`.
pub(crate) fn broadcast(kind: &str, data: &Value, event_id: u128, timestamp: f64) -> String {
    frame(kind, |o| {
        o.field("data", data)
            .str("event_id", &json::uuid_string(event_id))
            .field("timestamp", &timestamp)
            .str("source", "gateway")
            .raw("target", "null")
            .end()
    })
}

/// What a replay of a recorded event says about it.
pub(crate) struct Recorded<'a> {
    /// The frame's `type` as JSON text (quoted, escaped).
    pub(crate) kind_json: &'a str,
    pub(crate) event_id: u128,
    pub(crate) timestamp: f64,
    /// The connection that held the session when it was recorded (`target`: `conn-<n>`).
    pub(crate) target: Option<u64>,
    pub(crate) cursor: u64,
}

/// Appends `{"type":"replay","event":E}` (+ `"seq":n` when `with_seq`), E in GatewayEvent
/// shape with `data` = the original frame exactly as sent, which `push_data` appends (`len`
/// bytes of it).
pub(crate) fn replay(
    out: &mut String,
    e: &Recorded<'_>,
    (len, push_data): (usize, impl FnOnce(&mut String)),
    with_seq: bool,
) {
    out.reserve(len + 2 * e.kind_json.len() + 240);
    out.push_str("{\"type\":\"replay\",\"event\":");
    out.push_str(json::TYPE_PREFIX);
    out.push_str(e.kind_json);
    out.push_str(",\"data\":");
    push_data(out);
    out.push_str(",\"event_id\":\"");
    push_uuid(out, e.event_id);
    out.push_str("\",\"timestamp\":");
    push_json(out, &e.timestamp);
    out.push_str(",\"source\":\"gateway\",\"target\":");
    match e.target {
        Some(c) => {
            out.push_str("\"conn-");
            push_u64(out, c);
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"sequence\":");
    push_u64(out, e.cursor);
    out.push('}');
    if with_seq {
        out.push_str(",\"seq\":");
        push_u64(out, e.cursor);
    }
    out.push('}');
}

/// The body of an `accepted` response (before its tracked tail).
pub(crate) fn accepted<'a>(o: Obj<'a>, session_id: &str, request_id: &str) -> Obj<'a> {
    o.str("status", "accepted")
        .str("content", "Started processing.")
        .str("session_id", session_id)
        .str("request_id", request_id)
}

/// The body of a `final` response: the answer and its `outcome` object.
pub(crate) fn final_response<'a>(
    o: Obj<'a>,
    (content, outcome): (&Value, &Value),
    session_id: &str,
    request_id: &str,
) -> Obj<'a> {
    o.str("status", "final")
        .value("content", content)
        .field("outcome", outcome)
        .str("session_id", session_id)
        .str("request_id", request_id)
}

/// The body of a `duplicate` response, with the answer and its `outcome` once known.
pub(crate) fn duplicate<'a>(
    o: Obj<'a>,
    answer: Option<(&Value, &Value)>,
    session_id: &str,
    request_id: &str,
) -> Obj<'a> {
    let o = o.str("status", "duplicate");
    let o = match answer {
        Some((content, outcome)) => o.value("content", content).field("outcome", outcome),
        None => o,
    };
    o.str("session_id", session_id)
        .str("request_id", request_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Features, Map, ProtocolRange};
    use serde::Serialize;
    use serde_json::json;

    fn empty() -> Map {
        Map::new()
    }

    /// What serde_json makes of a frame: the oracle the writer is held to.
    fn serde_text<T: Serialize>(kind: &str, body: &T) -> String {
        #[derive(Serialize)]
        struct Tagged<'a, T> {
            #[serde(rename = "type")]
            kind: &'a str,
            #[serde(flatten)]
            body: &'a T,
        }
        serde_json::to_string(&Tagged { kind, body }).unwrap()
    }

    fn extra() -> Map {
        let mut m = empty();
        m.insert("zeta".into(), json!([1, {"b": null, "a": "x\"y"}]));
        m.insert("alpha".into(), json!(1.25));
        m
    }

    #[test]
    fn typed_frames_are_written_exactly_as_serde_json_writes_them() {
        let features = Features {
            methods: vec!["message".into(), "leave".into()],
            events: vec![],
            extra: extra(),
        };
        let policy = Policy {
            max_payload: Some(5),
            heartbeat_ms: Some(0),
            chunk_bytes: None,
            extra: extra(),
            ..Policy::default()
        };
        let ok = HelloOk {
            protocol: 2,
            features,
            policy,
            session_id: "s\u{1}é".into(),
            resumed: true,
            cursor: 7,
            sequence: Some(3),
            oldest_cursor: None,
            resync_required: Some(false),
            presence: Some(vec![json!({"client_id": "c"}), json!(null)]),
            health: Some(json!({"status": "healthy", "uptime": 1.5})),
            epoch: Some(u64::MAX),
            extra: extra(),
        };
        let mut bare = ok.clone();
        (bare.sequence, bare.resync_required, bare.presence) = (None, None, None);
        (bare.health, bare.epoch, bare.extra) = (None, None, empty());
        (bare.features, bare.policy) = (Features::default(), Policy::default());
        for f in [ok, bare] {
            assert_eq!(
                ServerFrame::HelloOk(f.clone()).encode(),
                serde_text("hello_ok", &f)
            );
        }
        let err = HelloError {
            code: ConnectErrorCode::from("brand_new"),
            message: "m".into(),
            next_step: Some(RecoveryStep::WaitThenRetry),
            retry_after_seconds: Some(1),
            next: None,
            extra: extra(),
        };
        assert_eq!(
            ServerFrame::HelloError(err.clone()).encode(),
            serde_text("hello_error", &err)
        );
        let joined = Joined {
            session_id: "s".into(),
            agent_id: None,
            resumed: false,
            cursor: 0,
            oldest_cursor: Some(1),
            resync_required: true,
            sequence: None,
            protocol_version: Some(1),
            server_min_version: Some(1),
            server_max_version: None,
            presence: Some(vec![]),
            health: None,
            epoch: Some(9),
            extra: extra(),
        };
        assert_eq!(
            ServerFrame::Joined(joined.clone()).encode(),
            serde_text("joined", &joined)
        );
        for code in [None, Some(ConnectErrorCode::Unauthorized)] {
            let e = ErrorFrame {
                code,
                message: "no".into(),
                extra: extra(),
            };
            assert_eq!(
                ServerFrame::Error(e.clone()).encode(),
                serde_text("error", &e)
            );
        }
        let snap = Snapshot {
            state: json!({"b": 1, "a": [true]}),
            extra: extra(),
        };
        assert_eq!(
            ServerFrame::Snapshot(snap.clone()).encode(),
            serde_text("snapshot", &snap)
        );
        for (event_id, timestamp, source, sequence, seq) in [
            (
                Some("e".to_owned()),
                Some(1.5e9),
                Some("gateway".to_owned()),
                Some(3),
                Some(3),
            ),
            (None, None, None, None, None),
        ] {
            let r = Replay {
                event: GatewayEvent {
                    kind: "m\"".into(),
                    data: serde_json::value::RawValue::from_string(r#"{"x": 1}"#.into()).unwrap(),
                    event_id,
                    timestamp,
                    source,
                    target: Some("conn-1".into()),
                    sequence,
                    extra: extra(),
                },
                seq,
                extra: extra(),
            };
            assert_eq!(
                ServerFrame::Replay(r.clone()).encode(),
                serde_text("replay", &r)
            );
        }
    }

    #[test]
    fn client_frames_are_written_exactly_as_serde_json_writes_them() {
        let hello = Hello {
            agent_id: Some("a".into()),
            protocol_min: Some(1),
            protocol_max: None,
            protocol: Some(ProtocolRange {
                min: None,
                max: Some(3),
            }),
            capabilities: Some(vec!["streaming".into()]),
            caps: Some(vec![]),
            session_id: Some("s".into()),
            since: Some(0),
            epoch: None,
            extra: extra(),
        };
        assert_eq!(
            ClientFrame::Hello(hello.clone()).encode(),
            serde_text("hello", &hello)
        );
        let empty_hello = Hello::default();
        assert_eq!(
            ClientFrame::Hello(empty_hello.clone()).encode(),
            serde_text("hello", &empty_hello)
        );
        let join = Join {
            agent_id: None,
            min_version: Some(1),
            max_version: Some(2),
            session_id: None,
            since: Some(4),
            epoch: Some(5),
            extra: extra(),
        };
        assert_eq!(
            ClientFrame::Join(join.clone()).encode(),
            serde_text("join", &join)
        );
        let m = MessageFrame {
            content: Some(json!({"k": [1, 2]})),
            request_id: Some("r\n".into()),
            extra: extra(),
        };
        assert_eq!(
            ClientFrame::Message(m.clone()).encode(),
            serde_text("message", &m)
        );
        let a = Abort {
            reason: None,
            scope: Some(json!(true)),
            extra: extra(),
        };
        assert_eq!(
            ClientFrame::Abort(a.clone()).encode(),
            serde_text("abort", &a)
        );
        let r = ServerReply {
            request_id: Some("r".into()),
            value: None,
            extra: extra(),
        };
        assert_eq!(
            ClientFrame::ServerReply(r.clone()).encode(),
            serde_text("server_reply", &r)
        );
        assert_eq!(
            ClientFrame::Leave(extra()).encode(),
            serde_text("leave", &extra())
        );
    }

    #[test]
    fn server_frames_keep_the_reference_key_order() {
        assert_eq!(
            error(Some(ConnectErrorCode::InvalidFrame), "m", Some("f")),
            r#"{"type":"error","code":"invalid_frame","message":"m","field":"f"}"#
        );
        assert_eq!(error(None, "m", None), r#"{"type":"error","message":"m"}"#);
        assert_eq!(
            replay_end(9, 2, Some((3, 4))),
            r#"{"type":"replay_end","cursor":9,"replayed":2,"lost_from":3,"lost_to":4}"#
        );
        assert_eq!(left("s"), r#"{"type":"left","session_id":"s"}"#);
        let mut out = String::new();
        let e = Recorded {
            kind_json: "\"m\"",
            event_id: 1,
            timestamp: 2.5,
            target: Some(7),
            cursor: 3,
        };
        let data = r#"{"type":"m","cursor":3,"seq":3}"#;
        replay(
            &mut out,
            &e,
            (data.len(), |o: &mut String| o.push_str(data)),
            true,
        );
        assert_eq!(
            out,
            r#"{"type":"replay","event":{"type":"m","data":{"type":"m","cursor":3,"seq":3},"event_id":"00000000-0000-0000-0000-000000000001","timestamp":2.5,"source":"gateway","target":"conn-7","sequence":3},"seq":3}"#
        );
    }
}
