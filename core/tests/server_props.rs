//! Properties of the server machine: exact replay on resume, loss always reported, hijacks
//! refused, and arbitrary input never panics nor grows memory past the configured bounds.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{json, Value};
use tether_core::server::{
    Audience, Authenticator, ConnId, ConnectInfo, Principal, Rejection, Server, ServerConfig,
    ServerInput, ServerTransmit, SessionId,
};
use tether_core::wire::ServerFrame;

#[allow(clippy::disallowed_methods)] // tests only: an arbitrary origin for the timeline
fn t0() -> Instant {
    Instant::now()
}

const RING: usize = 8;

fn cfg() -> ServerConfig {
    ServerConfig {
        agents: vec!["echo".into()],
        recovery_session_events: RING,
        ..ServerConfig::default()
    }
}

fn drain(s: &mut Server, now: Instant) -> Vec<(ConnId, ServerTransmit)> {
    let mut out = Vec::new();
    while let Some((c, t)) = s.poll_transmit() {
        if let ServerTransmit::Frame(f) = &t {
            s.handle_sent(now, c, f.len());
        }
        out.push((c, t));
    }
    while s.poll_event().is_some() {}
    out
}

fn frames(out: &[(ConnId, ServerTransmit)], conn: ConnId) -> Vec<String> {
    out.iter()
        .filter(|(c, _)| *c == conn)
        .filter_map(|(_, t)| match t {
            ServerTransmit::Frame(f) => Some(f.to_string()),
            ServerTransmit::Close { .. } => None,
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Publish(u8),
    Drop,
    Resume { since_back: u8, v2: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..6).prop_map(Op::Publish),
        1 => Just(Op::Drop),
        2 => (0u8..20, any::<bool>()).prop_map(|(since_back, v2)| Op::Resume { since_back, v2 }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the schedule, a resume since c replays exactly the retained cursors > c in
    /// order, the handshake `sequence` is the first replayed − 1 (else the head), and a cursor
    /// older than the ring is always reported (v2 `resync_required` + `lost_from`).
    #[test]
    fn resume_replays_exactly_the_retained_events_after_since(ops in proptest::collection::vec(op(), 1..40)) {
        let t0 = t0();
        let mut s = Server::new(cfg(), t0);
        let mut next_conn = 0u64;
        let mut conn = None::<ConnId>;
        let mut sid = None::<SessionId>;
        let mut head = 0u64;
        for (i, op) in ops.into_iter().enumerate() {
            let now = t0 + Duration::from_millis(i as u64 * 10);
            match op {
                Op::Publish(n) => {
                    if let Some(sid) = &sid {
                        for _ in 0..n {
                            head = s.publish(now, sid, "message", &[("content", json!("x"))]).unwrap();
                            drain(&mut s, now);
                        }
                    }
                }
                Op::Drop => {
                    if let Some(c) = conn.take() {
                        s.handle_closed(now, c);
                    }
                }
                Op::Resume { since_back, v2 } => {
                    if let Some(c) = conn.take() {
                        s.handle_closed(now, c);
                    }
                    next_conn += 1;
                    let c = ConnId(next_conn);
                    s.handle_connected(now, c, ConnectInfo::default());
                    let since = head.saturating_sub(u64::from(since_back));
                    let hello = match &sid {
                        Some(sid) => json!({"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max": if v2 {2} else {1},"session_id":sid.0,"since":since}),
                        None => json!({"type":"hello","agent_id":"echo","protocol_max": if v2 {2} else {1}}),
                    };
                    s.handle_text(now, c, &hello.to_string());
                    let out = frames(&drain(&mut s, now), c);
                    let ok: Value = serde_json::from_str(&out[0]).unwrap();
                    prop_assert_eq!(&ok["type"], "hello_ok");
                    if sid.is_none() {
                        sid = Some(SessionId(ok["session_id"].as_str().unwrap().into()));
                        conn = Some(c);
                        continue;
                    }
                    let oldest = if head == 0 { 1 } else { head.saturating_sub(RING as u64 - 1).max(1) };
                    let first = (since + 1).max(oldest);
                    let want: Vec<u64> = (first..=head).collect();
                    let got: Vec<u64> = out[1..]
                        .iter()
                        .filter_map(|t| match ServerFrame::decode(t).unwrap() {
                            ServerFrame::Replay(r) => r.event.sequence,
                            _ => None,
                        })
                        .collect();
                    prop_assert_eq!(&got, &want);
                    let lost = since + 1 < oldest;
                    let expected_sequence = if want.is_empty() { head } else if !v2 && lost { since } else { first - 1 };
                    prop_assert_eq!(ok["sequence"].as_u64(), Some(expected_sequence));
                    prop_assert_eq!(ok["cursor"].as_u64(), Some(head));
                    if v2 {
                        prop_assert_eq!(ok["resync_required"].as_bool(), Some(lost));
                        prop_assert_eq!(ok["oldest_cursor"].as_u64(), Some(if head == 0 { 1 } else { oldest }));
                        let end: Value = serde_json::from_str(out.last().unwrap()).unwrap();
                        prop_assert_eq!(&end["type"], "replay_end");
                        prop_assert_eq!(end["replayed"].as_u64(), Some(want.len() as u64));
                        prop_assert_eq!(end.get("lost_from").and_then(Value::as_u64), lost.then_some(since + 1));
                    }
                    conn = Some(c);
                }
            }
        }
    }
}

struct ByToken;
impl Authenticator for ByToken {
    fn authenticate(&self, info: &ConnectInfo) -> Result<Principal, Rejection> {
        info.query_token
            .clone()
            .map(Principal)
            .ok_or_else(Rejection::auth_required)
    }
}

proptest! {
    /// A session can only be resumed by the principal that created it.
    #[test]
    fn hijacks_are_refused(owners in proptest::collection::vec(0u8..3, 2..12), attempts in proptest::collection::vec((0usize..12, 0u8..3), 1..20)) {
        let t0 = t0();
        let mut s = Server::new(cfg(), t0);
        s.set_authenticator(Box::new(ByToken));
        let mut sessions = Vec::new();
        let mut n = 0;
        for who in &owners {
            n += 1;
            s.handle_connected(t0, ConnId(n), ConnectInfo { query_token: Some(format!("p{who}")), ..Default::default() });
            s.handle_text(t0, ConnId(n), r#"{"type":"hello","agent_id":"echo"}"#);
            let ok: Value = serde_json::from_str(&frames(&drain(&mut s, t0), ConnId(n))[0]).unwrap();
            sessions.push((ok["session_id"].as_str().unwrap().to_owned(), *who));
        }
        for (idx, who) in attempts {
            let (sid, owner) = &sessions[idx % sessions.len()];
            n += 1;
            s.handle_connected(t0, ConnId(n), ConnectInfo { query_token: Some(format!("p{who}")), ..Default::default() });
            s.handle_text(t0, ConnId(n), &json!({"type":"hello","agent_id":"echo","session_id":sid,"since":0}).to_string());
            let reply: Value = serde_json::from_str(&frames(&drain(&mut s, t0), ConnId(n))[0]).unwrap();
            if who == *owner {
                prop_assert_eq!(&reply["type"], "hello_ok");
                prop_assert_eq!(reply["session_id"].as_str(), Some(sid.as_str()));
            } else {
                prop_assert_eq!(&reply["type"], "hello_error");
                prop_assert_eq!(&reply["code"], "auth_unauthorized");
            }
        }
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        Just(r#"{"type":"hello","agent_id":"echo","protocol_max":2}"#.to_owned()),
        Just(r#"{"type":"hello","agent_id":"echo","session_id":"x","since":3}"#.to_owned()),
        Just(
            r#"{"type":"join","agent_id":"echo","min_version":1,"max_version":2,"since":0}"#
                .to_owned()
        ),
        (0u8..50)
            .prop_map(|i| format!(r#"{{"type":"message","content":"c","request_id":"r{i}"}}"#)),
        Just(r#"{"content":"no id"}"#.to_owned()),
        Just(r#"{"type":"ping"}"#.to_owned()),
        Just(r#"{"type":"leave"}"#.to_owned()),
        (0u64..30).prop_map(|n| format!(r#"{{"type":"resync","since":{n}}}"#)),
        Just(r#"{"type":"subscribe"}"#.to_owned()),
        Just(r#"{"type":"hello","protocol_min":true}"#.to_owned()),
        Just("[1,2]".to_owned()),
    ]
}

fn input() -> impl Strategy<Value = (u64, ServerInput, bool)> {
    let conn = (0u64..6).prop_map(ConnId);
    let inp = prop_oneof![
        1 => conn.clone().prop_map(|c| ServerInput::Connected(c, ConnectInfo::default())),
        6 => (conn.clone(), text()).prop_map(|(c, t)| ServerInput::Text(c, t)),
        1 => (conn.clone(), 0usize..100).prop_map(|(c, n)| ServerInput::Binary(c, n)),
        1 => (conn.clone(), 0usize..500).prop_map(|(c, n)| ServerInput::Sent(c, n)),
        1 => conn.prop_map(ServerInput::Closed),
        1 => Just(ServerInput::Timeout),
    ];
    (0u64..20_000, inp, any::<bool>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Arbitrary inputs at arbitrary times, drained or not: no panic, every bound holds.
    #[test]
    fn arbitrary_input_never_panics_nor_exceeds_bounds(inputs in proptest::collection::vec(input(), 1..120), publishes in proptest::collection::vec(any::<u8>(), 0..40)) {
        let t0 = t0();
        let config = ServerConfig {
            agents: vec!["echo".into()],
            recovery_session_events: 16,
            recovery_session_bytes: 4096,
            recovery_total_bytes: 8192,
            recovery_window: Duration::from_secs(10),
            max_control_frames: 8,
            dedup_max: 5,
            max_sessions: 3,
            max_connections: 4,
            max_frame_bytes: 512,
            max_queued_frames: 4,
            max_buffered_bytes: 1024,
            heartbeat_interval: Some(Duration::from_secs(5)),
            handshake_timeout: Duration::from_secs(3),
            session_ttl: Duration::from_secs(30),
            ..ServerConfig::default()
        };
        let mut s = Server::new(config.clone(), t0);
        let mut now = t0;
        let mut publishes = publishes.into_iter();
        for (dt, inp, do_drain) in inputs {
            now += Duration::from_millis(dt);
            s.handle_input(now, inp);
            if let Some(p) = publishes.next() {
                for c in 0..6 {
                    if let Some(sid) = s.session_of(ConnId(c)).cloned() {
                        let _ = s.publish(now, &sid, "message", &[("content", json!("y".repeat(p as usize)))]);
                        let _ = s.respond(now, &sid, "r1", tether_core::server::Outcome::ok("done"));
                    }
                }
                s.broadcast(now, "broadcast", &json!({"n": p}));
                let _ = s.publish_to(now, &Audience::All, "tick", &[("n", json!(p))]);
            }
            if do_drain {
                while let Some((_, t)) = s.poll_transmit() {
                    let _ = t;
                }
                while s.poll_event().is_some() {}
            }
            if let Some(at) = s.poll_timeout() {
                if at <= now {
                    s.handle_timeout(now);
                }
            }
            let st = s.stats();
            prop_assert!(st.sessions <= config.max_sessions);
            prop_assert!(st.connections <= 6);
            prop_assert!(st.max_window_events <= config.recovery_session_events);
            prop_assert!(st.max_window_bytes <= config.recovery_session_bytes + 1024);
            prop_assert!(st.log_bytes <= config.recovery_total_bytes + 1024);
            prop_assert!(st.max_control_frames <= config.max_control_frames);
            prop_assert!(st.max_dedup <= config.dedup_max);
        }
        let snap = s.snapshot(now);
        let restored = Server::restore(config, snap, now).unwrap();
        prop_assert_eq!(restored.stats().sessions, s.stats().sessions);
    }
}
