//! Timeline tests of the server machine, written as `t0 + n s`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::version::VersionRange;
use crate::wire::ServerFrame;

use crate::test_origin as t0;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn cfg() -> ServerConfig {
    ServerConfig {
        agents: vec!["echo".into()],
        epoch_at_start: 1_700_000_000.0,
        ..ServerConfig::default()
    }
}

/// Drains every transmit (confirming each frame as written) and returns them.
fn drain(s: &mut Server, now: Instant) -> Vec<(ConnId, ServerTransmit)> {
    let mut out = Vec::new();
    while let Some((c, t)) = s.poll_transmit() {
        if let ServerTransmit::Frame(f) = &t {
            s.handle_sent(now, c, f.len());
        }
        out.push((c, t));
    }
    out
}

fn frames_of(out: &[(ConnId, ServerTransmit)], conn: ConnId) -> Vec<Value> {
    out.iter()
        .filter(|(c, _)| *c == conn)
        .filter_map(|(_, t)| match t {
            ServerTransmit::Frame(f) => Some(serde_json::from_str(f).unwrap()),
            ServerTransmit::Close { .. } => None,
        })
        .collect()
}

fn texts_of(out: &[(ConnId, ServerTransmit)], conn: ConnId) -> Vec<String> {
    out.iter()
        .filter(|(c, _)| *c == conn)
        .filter_map(|(_, t)| match t {
            ServerTransmit::Frame(f) => Some(f.to_string()),
            ServerTransmit::Close { .. } => None,
        })
        .collect()
}

fn close_of(out: &[(ConnId, ServerTransmit)], conn: ConnId) -> Option<(u16, String)> {
    out.iter().find_map(|(c, t)| match t {
        ServerTransmit::Close { code, reason } if *c == conn => Some((*code, reason.clone())),
        _ => None,
    })
}

fn events(s: &mut Server) -> Vec<ServerEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Top-level keys in wire order (serde_json's Map sorts them).
fn keys(text: &str) -> Vec<String> {
    struct K(Vec<String>);
    impl<'de> serde::Deserialize<'de> for K {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = K;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<K, A::Error> {
                    let mut v = Vec::new();
                    while let Some(k) = m.next_key::<String>()? {
                        m.next_value::<serde::de::IgnoredAny>()?;
                        v.push(k);
                    }
                    Ok(K(v))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<K>(text).unwrap().0
}

const C1: ConnId = ConnId(1);
const C2: ConnId = ConnId(2);

fn hello(conn: ConnId, s: &mut Server, now: Instant, body: &str) -> Vec<(ConnId, ServerTransmit)> {
    s.handle_text(now, conn, body);
    drain(s, now)
}

/// Connects and says a v1 hello; returns the session id. In store mode the new session is
/// reported stored first (its `hello_ok` waits for that).
fn connect_v1(s: &mut Server, now: Instant, conn: ConnId) -> SessionId {
    s.handle_connected(now, conn, ConnectInfo::default());
    let mut out = hello(
        conn,
        s,
        now,
        r#"{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":1}"#,
    );
    if s.config().external_store {
        assert!(
            out.is_empty(),
            "nothing before the store holds the session: {out:?}"
        );
        let created = std::iter::from_fn(|| s.poll_event())
            .find_map(|e| match e {
                ServerEvent::StoreSession(stored) => Some(stored.session_id),
                _ => None,
            })
            .expect("the session goes to the store");
        s.session_stored(now, &created);
        out = drain(s, now);
    }
    let f = frames_of(&out, conn);
    assert_eq!(f[0]["type"], "hello_ok", "{f:?}");
    SessionId(f[0]["session_id"].as_str().unwrap().to_owned())
}

#[test]
fn v1_hello_ok_is_the_first_frame_in_reference_key_order_with_sequence() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    s.handle_connected(t0, C1, ConnectInfo::default());
    let out = hello(
        C1,
        &mut s,
        t0,
        r#"{"type": "hello", "agent_id": "echo", "protocol_min": 1, "protocol_max": 1, "capabilities": ["streaming", "ack"]}"#,
    );
    let texts = texts_of(&out, C1);
    assert_eq!(
        texts.len(),
        1,
        "nothing but hello_ok on v1 without since: {texts:?}"
    );
    assert_eq!(
        keys(&texts[0]),
        [
            "type",
            "protocol",
            "features",
            "policy",
            "session_id",
            "resumed",
            "cursor",
            "sequence",
            "epoch"
        ]
    );
    // Same prefix as the reference frame in the transcript.
    let reference = include_str!("../../tests/fixtures/praisonai-transcript-frames.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| {
            r["text"]
                .as_str()
                .unwrap()
                .starts_with(r#"{"type":"hello_ok""#)
        })
        .unwrap();
    let ref_text = reference["text"].as_str().unwrap();
    assert_eq!(keys(ref_text)[..], keys(&texts[0])[..7]);
    let ours: Value = serde_json::from_str(&texts[0]).unwrap();
    let theirs: Value = serde_json::from_str(ref_text).unwrap();
    assert_eq!(ours["features"], theirs["features"]);
    assert_eq!(ours["policy"], theirs["policy"]);
    assert_eq!(
        (
            ours["protocol"].clone(),
            ours["resumed"].clone(),
            ours["cursor"].clone()
        ),
        (json!(1), json!(false), json!(0))
    );
    assert_eq!(ours["sequence"], 0);
    assert!(
        matches!(ServerFrame::decode(&texts[0]).unwrap(), ServerFrame::HelloOk(ok) if ok.sequence == Some(0))
    );
    let ev = events(&mut s);
    assert!(ev
        .iter()
        .any(|e| matches!(e, ServerEvent::SessionCreated { conn: C1, .. })));
    // No ping before the handshake: the first deadline is the handshake-free heartbeat.
    assert_eq!(s.poll_timeout(), Some(t0 + secs(30)));
}

#[test]
fn v2_hello_ok_carries_oldest_resync_presence_health_then_replay_end() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    s.handle_connected(t0, C1, ConnectInfo::default());
    let out = hello(
        C1,
        &mut s,
        t0,
        r#"{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":2}"#,
    );
    let texts = texts_of(&out, C1);
    assert_eq!(
        keys(&texts[0]),
        [
            "type",
            "protocol",
            "features",
            "policy",
            "session_id",
            "resumed",
            "cursor",
            "sequence",
            "oldest_cursor",
            "resync_required",
            "presence",
            "health",
            "epoch"
        ]
    );
    let ok: Value = serde_json::from_str(&texts[0]).unwrap();
    assert_eq!(ok["protocol"], 2);
    assert_eq!(
        (ok["oldest_cursor"].clone(), ok["resync_required"].clone()),
        (json!(1), json!(false))
    );
    assert_eq!(ok["presence"][0]["client_id"], "conn-1");
    assert_eq!(ok["presence"][0]["status"], "online");
    assert_eq!(ok["health"]["sessions"], 1);
    assert_eq!(ok["health"]["liveness"]["interval_ms"], 30000);
    assert_eq!(texts[1], r#"{"type":"replay_end","cursor":0,"replayed":0}"#);
}

#[test]
fn requests_are_handed_out_once_and_duplicates_carry_the_original_outcome() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    let sid = connect_v1(&mut s, t0, C1);
    events(&mut s);
    s.handle_text(
        t0 + secs(1),
        C1,
        r#"{"type": "message", "content": "hi", "request_id": "req-1"}"#,
    );
    let out = drain(&mut s, t0 + secs(1));
    let texts = texts_of(&out, C1);
    assert_eq!(
        texts[0],
        format!(
            r#"{{"type":"response","status":"accepted","content":"Started processing.","session_id":"{sid}","request_id":"req-1","cursor":1,"seq":1}}"#
        )
    );
    let ev = events(&mut s);
    let reqs: Vec<_> = ev
        .iter()
        .filter(|e| matches!(e, ServerEvent::Request { .. }))
        .collect();
    assert_eq!(reqs.len(), 1);
    assert!(
        matches!(reqs[0], ServerEvent::Request { request_id, content, .. } if request_id == "req-1" && content == "hi")
    );

    // Resend before the answer: duplicate, no content, no second Request.
    for _ in 0..20 {
        s.handle_text(
            t0 + secs(2),
            C1,
            r#"{"type":"message","content":"hi","request_id":"req-1"}"#,
        );
    }
    let out = drain(&mut s, t0 + secs(2));
    assert_eq!(close_of(&out, C1), None, "duplicates never count as abuse");
    let f = frames_of(&out, C1);
    assert_eq!(f.len(), 20);
    assert_eq!(f[0]["status"], "duplicate");
    assert!(f[0].get("content").is_none());
    assert!(events(&mut s)
        .iter()
        .all(|e| !matches!(e, ServerEvent::Request { .. })));

    let n = s
        .respond(t0 + secs(3), &sid, "req-1", Outcome::ok("echo: hi"))
        .unwrap();
    let out = drain(&mut s, t0 + secs(3));
    let t = texts_of(&out, C1);
    assert_eq!(
        t[0],
        format!(
            r#"{{"type":"response","status":"final","content":"echo: hi","outcome":{{"status":"ok"}},"session_id":"{sid}","request_id":"req-1","cursor":{n},"seq":{n}}}"#
        )
    );
    assert_eq!(
        s.respond(t0 + secs(3), &sid, "req-1", Outcome::ok("x")),
        Err(CommandError::AlreadyAnswered("req-1".into()))
    );
    s.handle_text(
        t0 + secs(4),
        C1,
        r#"{"type":"message","content":"hi","request_id":"req-1"}"#,
    );
    let f = frames_of(&drain(&mut s, t0 + secs(4)), C1);
    assert_eq!(
        (
            f[0]["status"].clone(),
            f[0]["content"].clone(),
            f[0]["outcome"]["status"].clone()
        ),
        (json!("duplicate"), json!("echo: hi"), json!("ok"))
    );

    // No request_id: a generated one.
    s.handle_text(t0 + secs(5), C1, r#"{"content":"no id"}"#);
    drain(&mut s, t0 + secs(5));
    assert!(events(&mut s)
        .iter()
        .any(|e| matches!(e, ServerEvent::Request { request_id, .. } if request_id.len() == 32)));
}

#[test]
fn empty_content_gets_an_untracked_typed_error_and_consumes_no_sequence() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    let sid = connect_v1(&mut s, t0, C1);
    for bad in [
        r#"{"type":"message","content":""}"#,
        r#"{"type":"message"}"#,
        r#"{"type":"message","content":null}"#,
    ] {
        s.handle_text(t0, C1, bad);
        let f = frames_of(&drain(&mut s, t0), C1);
        assert_eq!(
            f,
            [
                json!({"type":"error","code":"invalid_value","message":"message content must be non-empty","field":"content"})
            ]
        );
    }
    s.handle_text(t0, C1, r#"{"type":"message","content":"x","request_id":5}"#);
    let f = frames_of(&drain(&mut s, t0), C1);
    assert_eq!(
        (f[0]["code"].clone(), f[0]["field"].clone()),
        (json!("invalid_value"), json!("request_id"))
    );
    assert_eq!(s.session_head(&sid), Some(0));
}

#[test]
fn events_published_while_away_are_replayed_exactly_on_resume_with_aligned_sequence() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    let sid = connect_v1(&mut s, t0, C1);
    for i in 1..=3 {
        s.publish(
            t0,
            &sid,
            "message",
            &[
                ("content", json!(format!("e{i}"))),
                ("session_id", json!(sid.0)),
            ],
        )
        .unwrap();
    }
    let live = texts_of(&drain(&mut s, t0), C1);
    assert_eq!(live.len(), 3);
    assert!(live[2].ends_with(r#","cursor":3,"seq":3}"#));
    s.handle_closed(t0 + secs(1), C1);
    for i in 4..=6 {
        s.publish(
            t0 + secs(2),
            &sid,
            "message",
            &[("content", json!(format!("e{i}")))],
        )
        .unwrap();
    }
    s.handle_connected(t0 + secs(3), C2, ConnectInfo::default());
    let out = hello(
        C2,
        &mut s,
        t0 + secs(3),
        &format!(
            r#"{{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":1,"session_id":"{sid}","since":3}}"#
        ),
    );
    let texts = texts_of(&out, C2);
    let ok: Value = serde_json::from_str(&texts[0]).unwrap();
    assert_eq!(
        (
            ok["resumed"].clone(),
            ok["cursor"].clone(),
            ok["sequence"].clone()
        ),
        (json!(true), json!(6), json!(3))
    );
    let replays: Vec<u64> = texts[1..]
        .iter()
        .map(|t| match ServerFrame::decode(t).unwrap() {
            ServerFrame::Replay(r) => {
                assert_eq!(r.seq, None, "v1 hello path: no top-level seq");
                assert_eq!(r.event.source.as_deref(), Some("gateway"));
                let data: Value = serde_json::from_str(r.event.data.get()).unwrap();
                assert_eq!(data["cursor"], json!(r.event.sequence));
                r.event.sequence.unwrap()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(replays, [4, 5, 6]);
    assert_eq!(keys(&texts[1]), ["type", "event"]);
    // Live continues after the replay.
    s.publish(t0 + secs(4), &sid, "message", &[("content", json!("e7"))])
        .unwrap();
    let t = texts_of(&drain(&mut s, t0 + secs(4)), C2);
    assert_eq!(
        t,
        [r#"{"type":"message","content":"e7","cursor":7,"seq":7}"#]
    );
}

#[test]
fn a_cursor_older_than_the_ring_is_reported_without_the_off_by_one() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            recovery_session_events: 5,
            ..cfg()
        },
        t0,
    );
    let sid = connect_v1(&mut s, t0, C1);
    s.handle_closed(t0, C1);
    for _ in 0..10 {
        s.publish(t0, &sid, "message", &[("content", json!("x"))])
            .unwrap();
    }
    // Ring holds 6..=10. since=5: nothing lost. since=3: 4 and 5 lost.
    let mut conn = 10;
    let mut join = |s: &mut Server, since: u64, proto: &str| {
        conn += 1;
        let c = ConnId(conn);
        s.handle_connected(t0, c, ConnectInfo::default());
        let out = hello(
            c,
            s,
            t0,
            &format!(
                r#"{{"type":"{proto}","agent_id":"echo","protocol_min":1,"protocol_max":2,"min_version":1,"max_version":1,"session_id":"{sid}","since":{since}}}"#
            ),
        );
        s.handle_closed(t0, c);
        texts_of(&out, c)
    };
    let t = join(&mut s, 5, "join");
    let j: Value = serde_json::from_str(&t[0]).unwrap();
    assert_eq!(
        (
            j["oldest_cursor"].clone(),
            j["resync_required"].clone(),
            j["sequence"].clone()
        ),
        (json!(6), json!(false), json!(5))
    );
    assert_eq!(
        keys(&t[0])[..7],
        [
            "type",
            "session_id",
            "agent_id",
            "resumed",
            "cursor",
            "oldest_cursor",
            "resync_required"
        ]
    );
    assert_eq!(t.len(), 6);
    assert!(
        t[1].ends_with(r#","seq":6}"#),
        "join path replays carry seq: {}",
        t[1]
    );

    let t = join(&mut s, 3, "join");
    let j: Value = serde_json::from_str(&t[0]).unwrap();
    assert_eq!(
        (j["resync_required"].clone(), j["sequence"].clone()),
        (json!(true), json!(5))
    );
    assert!(t[1].starts_with(r#"{"type":"snapshot""#));

    let t = join(&mut s, 3, "hello");
    let ok: Value = serde_json::from_str(&t[0]).unwrap();
    assert_eq!(
        (
            ok["protocol"].clone(),
            ok["resync_required"].clone(),
            ok["oldest_cursor"].clone(),
            ok["sequence"].clone()
        ),
        (json!(2), json!(true), json!(6), json!(5))
    );
    assert_eq!(
        t.last().unwrap(),
        r#"{"type":"replay_end","cursor":10,"replayed":5,"lost_from":4,"lost_to":5}"#
    );
    assert!(t[1].ends_with(r#","seq":6}"#), "v2 replays carry seq");
}

#[test]
fn v1_hello_with_loss_sets_sequence_at_since_so_the_python_gap_check_fires() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            recovery_session_events: 2,
            ..cfg()
        },
        t0,
    );
    let sid = connect_v1(&mut s, t0, C1);
    s.handle_closed(t0, C1);
    for _ in 0..5 {
        s.publish(t0, &sid, "message", &[]).unwrap();
    }
    s.handle_connected(t0, C2, ConnectInfo::default());
    let out = hello(
        C2,
        &mut s,
        t0,
        &format!(r#"{{"type":"hello","agent_id":"echo","session_id":"{sid}","since":1}}"#),
    );
    let f = frames_of(&out, C2);
    assert_eq!(f[0]["sequence"], 1);
    assert_eq!(f[1]["event"]["sequence"], 4);
}

#[test]
fn version_and_field_errors_are_typed_replies_never_crashes() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            versions: VersionRange::V1_ONLY,
            ..cfg()
        },
        t0,
    );
    s.handle_connected(t0, C1, ConnectInfo::default());
    let cases = [
        (
            r#"{"type":"hello","agent_id":"echo","protocol_min":2,"protocol_max":2}"#,
            r#"{"type":"hello_error","code":"protocol_unsupported","message":"Protocol version 2 is too new, server supports up to 1","next_step":"downgrade_client","next":"use_older_client"}"#,
        ),
        (
            r#"{"type":"hello","agent_id":"echo","protocol_min":0,"protocol_max":0}"#,
            r#"{"type":"hello_error","code":"protocol_unsupported","message":"Protocol version 0 is too old, minimum required is 1","next_step":"upgrade_client","next":"upgrade_client"}"#,
        ),
        (
            r#"{"type":"hello","agent_id":"nope"}"#,
            r#"{"type":"hello_error","code":"agent_not_found","message":"Agent not found: nope","next_step":"do_not_retry","next":"check_agent_id"}"#,
        ),
        (
            r#"{"type":"hello"}"#,
            r#"{"type":"hello_error","code":"agent_not_found","message":"Agent not found: None","next_step":"do_not_retry","next":"check_agent_id"}"#,
        ),
        (
            r#"{"type":"join","agent_id":"nope"}"#,
            r#"{"type":"error","message":"Agent not found: nope"}"#,
        ),
        (
            r#"{"type":"join","agent_id":"echo","min_version":2,"max_version":1}"#,
            r#"{"type":"error","code":"invalid_protocol_hello","message":"Invalid version range: min_version (2) > max_version (1)"}"#,
        ),
        (
            r#"{"type":"join","agent_id":"echo","min_version":2,"max_version":3}"#,
            r#"{"type":"error","code":"version_unsupported","message":"Protocol version mismatch. Server supports 1-1, client supports 2-3","server_min_version":1,"server_max_version":1,"next_step":"downgrade_client"}"#,
        ),
    ];
    for (input, want) in cases {
        let t = texts_of(&hello(C1, &mut s, t0, input), C1);
        assert_eq!(t, [want], "{input}");
    }
    for (input, field) in [
        (
            r#"{"type":"hello","agent_id":"echo","protocol_min":"1"}"#,
            "protocol_min",
        ),
        (
            r#"{"type":"hello","agent_id":"echo","protocol_max":true}"#,
            "protocol_max",
        ),
        (
            r#"{"type":"hello","agent_id":"echo","protocol_min":-1}"#,
            "protocol_min",
        ),
    ] {
        let f = frames_of(&hello(C1, &mut s, t0, input), C1);
        assert_eq!(
            (
                f[0]["type"].clone(),
                f[0]["code"].clone(),
                f[0]["field"].clone()
            ),
            (
                json!("hello_error"),
                json!("invalid_protocol_hello"),
                json!(field)
            ),
            "{input}"
        );
    }
    let f = frames_of(
        &hello(
            C1,
            &mut s,
            t0,
            r#"{"type":"hello","agent_id":"echo","protocol_min":3,"protocol_max":1}"#,
        ),
        C1,
    );
    assert_eq!(f[0]["code"], "invalid_protocol_hello");
    let f = frames_of(
        &hello(
            C1,
            &mut s,
            t0,
            r#"{"type":"join","agent_id":"echo","min_version":"x"}"#,
        ),
        C1,
    );
    assert_eq!(f[0]["code"], "invalid_protocol_hello");
    // The socket is still usable: a good hello now succeeds.
    let f = frames_of(
        &hello(
            C1,
            &mut s,
            t0,
            r#"{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":2}"#,
        ),
        C1,
    );
    assert_eq!(
        (f[0]["type"].clone(), f[0]["protocol"].clone()),
        (json!("hello_ok"), json!(1))
    );
}

#[test]
fn bad_token_gets_the_reference_envelope_before_any_client_frame() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            auth_token: Some("s3cret".into()),
            ..cfg()
        },
        t0,
    );
    s.handle_connected(
        t0,
        C1,
        ConnectInfo {
            query_token: Some("wrong".into()),
            ..Default::default()
        },
    );
    let out = drain(&mut s, t0);
    assert_eq!(
        texts_of(&out, C1),
        [
            r#"{"type":"hello_error","code":"auth_required","message":"Authentication required","next_step":"reauthenticate","next":"reauthenticate"}"#
        ]
    );
    assert_eq!(
        close_of(&out, C1),
        Some((4003, "Authentication required".into()))
    );
    assert_eq!(out.len(), 2);
    s.handle_text(t0, C1, r#"{"type":"hello","agent_id":"echo"}"#);
    assert!(drain(&mut s, t0).is_empty(), "nothing after a Close");
    s.handle_connected(
        t0,
        C2,
        ConnectInfo {
            query_token: Some("s3cret".into()),
            ..Default::default()
        },
    );
    assert!(drain(&mut s, t0).is_empty());
    assert!(
        auth::constant_time_eq(b"abc", b"abc")
            && !auth::constant_time_eq(b"abc", b"abd")
            && !auth::constant_time_eq(b"ab", b"abc")
    );
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

#[test]
fn resuming_another_principals_session_is_refused_and_leaves_it_untouched() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    s.set_authenticator(Box::new(ByToken));
    s.handle_connected(
        t0,
        C1,
        ConnectInfo {
            query_token: Some("alice".into()),
            ..Default::default()
        },
    );
    let f = frames_of(
        &hello(C1, &mut s, t0, r#"{"type":"hello","agent_id":"echo"}"#),
        C1,
    );
    let sid = f[0]["session_id"].as_str().unwrap().to_owned();
    s.handle_connected(
        t0,
        C2,
        ConnectInfo {
            query_token: Some("mallory".into()),
            ..Default::default()
        },
    );
    let f = frames_of(
        &hello(
            C2,
            &mut s,
            t0,
            &format!(r#"{{"type":"hello","agent_id":"echo","session_id":"{sid}","since":0}}"#),
        ),
        C2,
    );
    assert_eq!(
        (f[0]["type"].clone(), f[0]["code"].clone()),
        (json!("hello_error"), json!("auth_unauthorized"))
    );
    assert_eq!(f.len(), 1, "no replay leaks");
    assert_eq!(s.session_of(C1).map(|x| x.0.clone()), Some(sid));
    assert_eq!(s.session_of(C2), None);
}

#[test]
fn takeover_closes_the_old_socket_whose_later_close_does_not_orphan_the_session() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    let sid = connect_v1(&mut s, t0, C1);
    s.handle_connected(t0 + secs(1), C2, ConnectInfo::default());
    let out = hello(
        C2,
        &mut s,
        t0 + secs(1),
        &format!(r#"{{"type":"hello","agent_id":"echo","session_id":"{sid}","since":0}}"#),
    );
    assert_eq!(
        close_of(&out, C1),
        Some((4009, "session_taken_over".into()))
    );
    assert!(events(&mut s).iter().any(|e| matches!(
        e,
        ServerEvent::SessionResumed {
            taken_over_from: Some(C1),
            ..
        }
    )));
    s.handle_closed(t0 + secs(2), C1);
    assert!(events(&mut s)
        .iter()
        .all(|e| !matches!(e, ServerEvent::SessionDetached { .. })));
    s.handle_text(
        t0 + secs(3),
        C2,
        r#"{"type":"message","content":"still there?"}"#,
    );
    let f = frames_of(&drain(&mut s, t0 + secs(3)), C2);
    assert_eq!(f[0]["status"], "accepted");
}

#[test]
fn a_second_hello_releases_the_first_session_which_stays_resumable() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    let first = connect_v1(&mut s, t0, C1);
    let f = frames_of(
        &hello(C1, &mut s, t0, r#"{"type":"hello","agent_id":"echo"}"#),
        C1,
    );
    let second = f[0]["session_id"].as_str().unwrap().to_owned();
    assert_ne!(first.0, second);
    assert!(events(&mut s)
        .iter()
        .any(|e| matches!(e, ServerEvent::SessionDetached { session } if *session == first)));
    s.publish(t0, &first, "message", &[]).unwrap();
    assert!(
        drain(&mut s, t0).is_empty(),
        "the released session's events do not go to C1"
    );
    s.handle_connected(t0, C2, ConnectInfo::default());
    let f = frames_of(
        &hello(
            C2,
            &mut s,
            t0,
            &format!(r#"{{"type":"hello","agent_id":"echo","session_id":"{first}","since":0}}"#),
        ),
        C2,
    );
    assert_eq!((f[0]["resumed"].clone(), f.len()), (json!(true), 2));
}

#[test]
fn an_unknown_session_id_gets_a_fresh_session_with_a_new_id() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    s.handle_connected(t0, C1, ConnectInfo::default());
    let f = frames_of(
        &hello(
            C1,
            &mut s,
            t0,
            r#"{"type":"hello","agent_id":"echo","protocol_max":2,"session_id":"mine","since":7}"#,
        ),
        C1,
    );
    assert_ne!(f[0]["session_id"], "mine");
    // v2 definition: resync_required iff since + 1 < oldest_cursor; here the signal is
    // `cursor` (0) below the client's `since` (7): the client must treat it as a reset.
    assert_eq!(
        (
            f[0]["resumed"].clone(),
            f[0]["cursor"].clone(),
            f[0]["resync_required"].clone()
        ),
        (json!(false), json!(0), json!(false))
    );
    assert_eq!(f[1], json!({"type":"replay_end","cursor":0,"replayed":0}));
}

#[test]
fn pings_on_schedule_and_reaping_after_inbound_silence() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    let sid = connect_v1(&mut s, t0, C1);
    s.handle_timeout(t0 + secs(29));
    assert!(drain(&mut s, t0 + secs(29)).is_empty());
    s.handle_timeout(t0 + secs(30));
    assert_eq!(
        texts_of(&drain(&mut s, t0 + secs(30)), C1),
        [r#"{"type":"ping"}"#]
    );
    s.handle_timeout(t0 + secs(30));
    assert!(
        drain(&mut s, t0 + secs(30)).is_empty(),
        "twice does nothing"
    );
    s.handle_text(t0 + secs(40), C1, r#"{"type":"pong"}"#);
    // Our own traffic is no proof of life.
    s.publish(t0 + secs(90), &sid, "message", &[]).unwrap();
    s.handle_timeout(t0 + secs(100));
    let out = drain(&mut s, t0 + secs(100));
    assert!(close_of(&out, C1).is_none());
    s.handle_timeout(t0 + secs(101));
    let out = drain(&mut s, t0 + secs(101));
    assert_eq!(close_of(&out, C1), Some((4002, "liveness_timeout".into())));
    assert_eq!(s.health(t0 + secs(101)).liveness.reaped_connections, 1);
    assert!(events(&mut s)
        .iter()
        .any(|e| matches!(e, ServerEvent::SessionDetached { .. })));
}

#[test]
fn a_silent_connection_is_closed_at_the_handshake_deadline() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    s.handle_connected(t0, C1, ConnectInfo::default());
    s.handle_text(t0 + secs(5), C1, r#"{"type":"ping"}"#);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(10)));
    drain(&mut s, t0 + secs(5));
    s.handle_timeout(t0 + secs(10));
    assert_eq!(
        close_of(&drain(&mut s, t0 + secs(10)), C1),
        Some((1008, "handshake_timeout".into()))
    );
}

#[test]
fn garbage_binary_and_oversize_frames_get_typed_errors_and_clean_closes() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            max_payload: 100,
            ..cfg()
        },
        t0,
    );
    let other = connect_v1(&mut s, t0, ConnId(9));
    type Feed<'a> = &'a dyn Fn(&mut Server, ConnId);
    let cases: [(Feed, u16, &str); 4] = [
        (
            &|s, c| s.handle_text(t0, c, "{not json"),
            1007,
            "invalid_frame",
        ),
        (
            &|s, c| s.handle_text(t0, c, "[1,2,3]"),
            1007,
            "invalid_frame",
        ),
        (&|s, c| s.handle_binary(t0, c, 12), 1003, "invalid_frame"),
        (
            &|s, c| s.handle_text(t0, c, &"x".repeat(101)),
            1009,
            "payload_too_large",
        ),
    ];
    for (i, (feed, code, err)) in cases.into_iter().enumerate() {
        let c = ConnId(100 + i as u64);
        connect_v1(&mut s, t0, c);
        feed(&mut s, c);
        let out = drain(&mut s, t0);
        let f = frames_of(&out, c);
        assert_eq!(
            (f[0]["type"].clone(), f[0]["code"].clone()),
            (json!("error"), json!(err))
        );
        assert_eq!(close_of(&out, c).map(|x| x.0), Some(code));
        assert!(
            out.iter().all(|(to, _)| *to == c),
            "other connections untouched"
        );
    }
    s.publish(t0, &other, "message", &[]).unwrap();
    assert_eq!(frames_of(&drain(&mut s, t0), ConnId(9)).len(), 1);
}

#[test]
fn unknown_types_are_ignored_then_a_flood_is_closed_4028() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            max_unknown_frames: 3,
            ..cfg()
        },
        t0,
    );
    connect_v1(&mut s, t0, C1);
    for _ in 0..3 {
        s.handle_text(t0, C1, r#"{"type":"subscribe"}"#);
        assert!(drain(&mut s, t0).is_empty());
    }
    s.handle_text(t0, C1, r#"{"type":"subscribe"}"#);
    assert_eq!(
        close_of(&drain(&mut s, t0), C1),
        Some((4028, String::new()))
    );
}

#[test]
fn a_burst_never_evicts_a_fast_reader_but_a_stalled_one_is_closed_1013_alone() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            recovery_session_events: 100,
            max_queued_frames: 10,
            ..cfg()
        },
        t0,
    );
    let fast = connect_v1(&mut s, t0, C1);
    let slow = connect_v1(&mut s, t0, C2);
    // Burst of 90 without draining: the ring holds it; the window only paces.
    for _ in 0..90 {
        s.publish(t0, &fast, "message", &[]).unwrap();
    }
    let out = drain(&mut s, t0);
    assert_eq!(frames_of(&out, C1).len(), 90);
    assert!(close_of(&out, C1).is_none());
    // The slow one never confirms writes: its window fills at 10 frames.
    let mut got = 0;
    for _ in 0..150 {
        s.publish(t0, &slow, "message", &[]).unwrap();
        while let Some((c, t)) = s.poll_transmit() {
            assert_eq!(c, C2);
            if let ServerTransmit::Close { code, reason } = t {
                assert_eq!((code, reason.as_str()), (1013, "slow_consumer"));
                got = 1000;
            } else {
                got += 1;
            }
        }
    }
    assert_eq!(got, 1000, "slow consumer closed");
    s.publish(t0, &fast, "message", &[]).unwrap();
    assert_eq!(frames_of(&drain(&mut s, t0), C1).len(), 1);
    // The slow session keeps everything it could for a resume.
    assert_eq!(s.session_head(&slow), Some(150));
}

#[test]
fn leave_answers_left_and_keeps_the_session_resumable() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    let sid = connect_v1(&mut s, t0, C1);
    s.handle_text(t0, C1, r#"{"type":"leave"}"#);
    assert_eq!(
        frames_of(&drain(&mut s, t0), C1),
        [json!({"type":"left","session_id":sid.0})]
    );
    s.handle_text(t0, C1, r#"{"type":"message","content":"x"}"#);
    assert_eq!(
        frames_of(&drain(&mut s, t0), C1),
        [json!({"type":"error","message":"Not joined to any session"})]
    );
    let f = frames_of(
        &hello(
            C1,
            &mut s,
            t0,
            &format!(r#"{{"type":"hello","agent_id":"echo","session_id":"{sid}"}}"#),
        ),
        C1,
    );
    assert_eq!(f[0]["resumed"], true);
}

#[test]
fn v2_resync_replays_in_band_and_reports_loss() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            recovery_session_events: 4,
            ..cfg()
        },
        t0,
    );
    s.handle_connected(t0, C1, ConnectInfo::default());
    let f = frames_of(
        &hello(
            C1,
            &mut s,
            t0,
            r#"{"type":"hello","agent_id":"echo","protocol_max":2}"#,
        ),
        C1,
    );
    let sid = SessionId(f[0]["session_id"].as_str().unwrap().into());
    for _ in 0..6 {
        s.publish(t0, &sid, "message", &[]).unwrap();
        drain(&mut s, t0); // a burst beyond the ring without draining would be a slow consumer
    }
    s.handle_text(t0, C1, r#"{"type":"resync","since":4}"#);
    let t = texts_of(&drain(&mut s, t0), C1);
    assert_eq!(t.len(), 3);
    assert!(t[0].starts_with(r#"{"type":"replay","event":{"type":"message","data":{"type":"message","cursor":5,"seq":5}"#), "{}", t[0]);
    assert_eq!(t[2], r#"{"type":"replay_end","cursor":6,"replayed":2}"#);
    s.handle_text(t0, C1, r#"{"type":"resync","since":0}"#);
    let t = texts_of(&drain(&mut s, t0), C1);
    assert_eq!(
        t.last().unwrap(),
        r#"{"type":"replay_end","cursor":6,"replayed":4,"lost_from":1,"lost_to":2}"#
    );
}

#[test]
fn snapshot_restore_resumes_without_false_gaps_or_lost_dedup() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    let sid = connect_v1(&mut s, t0, C1);
    s.handle_text(
        t0,
        C1,
        r#"{"type":"message","content":"hi","request_id":"r1"}"#,
    );
    for _ in 0..4 {
        s.publish(t0, &sid, "message", &[("content", json!("x"))])
            .unwrap();
    }
    drain(&mut s, t0);
    let snap = s.snapshot(t0 + secs(1));
    let text = serde_json::to_string(&snap).unwrap();
    let snap: ServerSnapshot = serde_json::from_str(&text).unwrap();
    let t1 = t0 + secs(100);
    let mut r = Server::restore(cfg(), snap, t1).unwrap();
    r.handle_connected(t1, C2, ConnectInfo::default());
    let f = frames_of(
        &hello(
            C2,
            &mut r,
            t1,
            &format!(r#"{{"type":"hello","agent_id":"echo","session_id":"{sid}","since":2}}"#),
        ),
        C2,
    );
    assert_eq!(
        (f[0]["cursor"].clone(), f[0]["sequence"].clone()),
        (json!(5), json!(2))
    );
    let seqs: Vec<Value> = f[1..]
        .iter()
        .map(|x| x["event"]["sequence"].clone())
        .collect();
    assert_eq!(seqs, [json!(3), json!(4), json!(5)]);
    r.handle_text(
        t1,
        C2,
        r#"{"type":"message","content":"hi","request_id":"r1"}"#,
    );
    let f = frames_of(&drain(&mut r, t1), C2);
    assert_eq!(
        (f[0]["status"].clone(), f[0]["cursor"].clone()),
        (json!("duplicate"), json!(6))
    );
}

#[test]
fn detached_sessions_expire_after_the_ttl() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            session_ttl: secs(60),
            ..cfg()
        },
        t0,
    );
    let sid = connect_v1(&mut s, t0, C1);
    s.handle_closed(t0 + secs(5), C1);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(65)));
    s.publish(t0 + secs(10), &sid, "message", &[]).unwrap();
    s.handle_timeout(t0 + secs(64));
    assert_eq!(s.session_head(&sid), Some(1));
    s.handle_timeout(t0 + secs(65));
    assert_eq!(s.session_head(&sid), None);
    assert!(events(&mut s)
        .iter()
        .any(|e| matches!(e, ServerEvent::SessionExpired { session } if *session == sid)));
    assert_eq!(
        s.publish(t0 + secs(66), &sid, "message", &[]),
        Err(CommandError::UnknownSession(sid))
    );
}

#[test]
fn shutdown_flushes_queued_frames_then_closes_1001() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            max_queued_frames: 2,
            ..cfg()
        },
        t0,
    );
    let sid = connect_v1(&mut s, t0, C1);
    for _ in 0..5 {
        s.publish(t0, &sid, "message", &[]).unwrap();
    }
    s.shutdown(t0);
    let out: Vec<_> = std::iter::from_fn(|| s.poll_transmit()).collect();
    assert_eq!(
        frames_of(&out, C1).len(),
        5,
        "the window no longer paces a graceful close"
    );
    assert_eq!(close_of(&out, C1), Some((1001, "server_shutdown".into())));
    assert_eq!(s.health(t0).status, "stopped");
}

#[test]
fn publish_refuses_reserved_kinds_and_fields() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    let sid = connect_v1(&mut s, t0, C1);
    assert_eq!(
        s.publish(t0, &sid, "replay", &[]),
        Err(CommandError::ReservedKind("replay".into()))
    );
    assert_eq!(
        s.publish(t0, &sid, "m", &[("seq", json!(1))]),
        Err(CommandError::ReservedField("seq".into()))
    );
    assert_eq!(
        s.broadcast(t0, "broadcast", &json!({"text":"hello everyone"})),
        1
    );
    let t = texts_of(&drain(&mut s, t0), C1);
    assert_eq!(
        keys(&t[0]),
        ["type", "data", "event_id", "timestamp", "source", "target"]
    );
}

#[test]
fn replays_keep_ids_targets_and_times_through_snapshot_and_restore() {
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    let sid = connect_v1(&mut s, t0, C1);
    s.publish(t0, &sid, "message", &[("content", json!("live"))])
        .unwrap();
    s.handle_closed(t0, C1);
    s.publish(t0 + secs(1), &sid, "we\"ird", &[("content", json!("away"))])
        .unwrap();
    drain(&mut s, t0 + secs(1));
    let resume = format!(r#"{{"type":"hello","agent_id":"echo","session_id":"{sid}","since":0}}"#);
    let replays = |s: &mut Server, conn: ConnId, now: Instant| -> Vec<Value> {
        s.handle_connected(now, conn, ConnectInfo::default());
        let f = frames_of(&hello(conn, s, now, &resume), conn);
        s.handle_closed(now, conn);
        f[1..].iter().map(|r| r["event"].clone()).collect()
    };
    let before = replays(&mut s, C2, t0 + secs(2));
    assert_eq!(before.len(), 2);
    assert_eq!(
        (&before[0]["target"], &before[1]["target"]),
        (&json!("conn-1"), &Value::Null)
    );
    assert_eq!(before[1]["type"], "we\"ird");
    let id = before[0]["event_id"].as_str().unwrap();
    assert!(id.len() == 36 && id.as_bytes()[14] == b'4', "uuid4: {id}");
    assert_ne!(before[0]["event_id"], before[1]["event_id"]);

    let text = serde_json::to_string(&s.snapshot(t0 + secs(3))).unwrap();
    let snap: ServerSnapshot = serde_json::from_str(&text).unwrap();
    let mut r = Server::restore(cfg(), snap.clone(), t0 + secs(4)).unwrap();
    assert_eq!(
        replays(&mut r, ConnId(3), t0 + secs(5)),
        before,
        "same events after a restore"
    );

    let mut old = snap.clone();
    old.format = 1;
    assert!(matches!(
        Server::restore(cfg(), old, t0),
        Err(RestoreError::UnsupportedFormat(1))
    ));
    // An event whose frame does not carry its kind was not written by this server: dropped
    // (a hole it leaves drops what precedes it, as for any hole in a restored ring).
    let mut odd = snap;
    odd.sessions[0].events[1].frame = r#"{"type":"other","cursor":2,"seq":2}"#.into();
    let mut r = Server::restore(cfg(), odd, t0).unwrap();
    assert_eq!(replays(&mut r, ConnId(4), t0), before[..1]);
}

#[test]
fn a_client_of_a_lost_epoch_is_rewound_to_the_restore_point() {
    // Found by the simulator: a restore from an older snapshot hands out the lost numbers again.
    let t0 = t0();
    let mut s = Server::new(cfg(), t0);
    s.handle_connected(t0, C1, ConnectInfo::default());
    let out = hello(
        C1,
        &mut s,
        t0,
        r#"{"type":"hello","agent_id":"echo","protocol_min":2,"protocol_max":2}"#,
    );
    let ok: Value = serde_json::from_str(&texts_of(&out, C1)[0]).unwrap();
    let (sid, epoch) = (
        ok["session_id"].as_str().unwrap().to_owned(),
        ok["epoch"].as_u64().unwrap(),
    );
    let session = SessionId(sid.clone());
    for _ in 0..3 {
        s.publish(t0, &session, "message", &[("n", Value::from(1))])
            .unwrap();
    }
    let snapshot = s.snapshot(t0); // head 3
    for _ in 0..2 {
        s.publish(t0, &session, "message", &[("n", Value::from(2))])
            .unwrap();
    }
    // The client saw 1..=5; the server crashes and comes back from the head-3 snapshot, then
    // publishes two new events that reuse the numbers 4 and 5.
    let mut s = Server::restore(cfg(), snapshot, t0).unwrap();
    for _ in 0..2 {
        s.publish(t0, &session, "message", &[("n", Value::from(3))])
            .unwrap();
    }
    s.handle_connected(t0, C2, ConnectInfo::default());
    let resume = format!(
        r#"{{"type":"hello","agent_id":"echo","protocol_min":2,"protocol_max":2,"session_id":"{sid}","since":5,"epoch":{epoch}}}"#
    );
    let texts = texts_of(&hello(C2, &mut s, t0, &resume), C2);
    let ok: Value = serde_json::from_str(&texts[0]).unwrap();
    assert_eq!(ok["sequence"], 3, "rewound to the restore point");
    assert_ne!(ok["epoch"].as_u64(), Some(epoch));
    let replayed: Vec<u64> = texts[1..]
        .iter()
        .map(|t| serde_json::from_str::<Value>(t).unwrap())
        .filter(|v| v["type"] == "replay")
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        replayed,
        vec![4, 5],
        "the new events at the reused numbers are replayed"
    );
    // A client of the current epoch is not rewound.
    s.handle_connected(t0, ConnId(3), ConnectInfo::default());
    let current = ok["epoch"].as_u64().unwrap();
    let resume = format!(
        r#"{{"type":"hello","agent_id":"echo","protocol_min":2,"protocol_max":2,"session_id":"{sid}","since":5,"epoch":{current}}}"#
    );
    let ok: Value =
        serde_json::from_str(&texts_of(&hello(ConnId(3), &mut s, t0, &resume), ConnId(3))[0])
            .unwrap();
    assert_eq!(ok["sequence"], 5);
}

#[test]
fn a_gap_the_store_cannot_fill_releases_the_holder_so_its_resume_reports_the_loss() {
    let now = t0();
    let mut s = Server::new(
        ServerConfig {
            external_store: true,
            ..cfg()
        },
        now,
    );
    let conn = ConnId(1);
    let sid = connect_v1(&mut s, now, conn);
    events(&mut s);
    let frame = |n: u64| {
        let body = format!(r#"{{"type":"message","content":"e{n}""#);
        Unsequenced {
            session: sid.clone(),
            kind: "message".into(),
            body,
            event_id: u128::from(n),
            timestamp: 1.0,
        }
        .into_recorded(n)
    };
    assert_eq!(s.ingest(now, &sid, frame(1)), Ok(Ingest::Appended));
    assert_eq!(s.ingest(now, &sid, frame(1)), Ok(Ingest::Duplicate));
    assert_eq!(
        s.ingest(now, &sid, frame(5)),
        Ok(Ingest::Gap { expected: 2 })
    );
    assert!(s.release_holder(now, &sid));
    let out = drain(&mut s, now);
    let texts = texts_of(&out, conn);
    assert!(
        texts.iter().any(|t| t.contains(r#""content":"e1""#)),
        "what it was owed goes out first: {texts:?}"
    );
    assert_eq!(close_of(&out, conn), Some((1012, "store_gap".into())));
    assert!(!s.release_holder(now, &SessionId("other".into())));
}

#[test]
fn a_session_the_store_lost_closes_its_holder_after_what_it_was_owed() {
    let now = t0();
    let mut s = Server::new(
        ServerConfig {
            external_store: true,
            ..cfg()
        },
        now,
    );
    let conn = ConnId(1);
    let sid = connect_v1(&mut s, now, conn);
    events(&mut s);
    let first = Unsequenced {
        session: sid.clone(),
        kind: "message".into(),
        body: r#"{"type":"message","content":"e1""#.into(),
        event_id: 1,
        timestamp: 1.0,
    };
    assert_eq!(
        s.ingest(now, &sid, first.into_recorded(1)),
        Ok(Ingest::Appended)
    );
    assert!(s.session_lost(now, &sid));
    let out = drain(&mut s, now);
    let texts = texts_of(&out, conn);
    assert!(
        texts.iter().any(|t| t.contains(r#""content":"e1""#)),
        "what it was owed goes out first: {texts:?}"
    );
    assert_eq!(
        close_of(&out, conn),
        Some((crate::wire::close::SESSION_LOST, "session_lost".into()))
    );
    assert!(s.held_sessions().is_empty());
    assert!(!s.session_lost(now, &sid), "held nowhere any more");
}

/// What each connection was sent, in order.
type PerConn = BTreeMap<ConnId, Vec<ServerTransmit>>;

/// One scenario on two servers built alike: one drained with `poll_transmit`, the other
/// with `poll_transmits`, after every step; frames are confirmed as written after the drain.
#[test]
fn poll_transmits_gives_each_connection_what_poll_transmit_gives_it() {
    let config = ServerConfig {
        max_queued_frames: 3, // the in-flight window stops a drain midway
        ..cfg()
    };
    let t0 = t0();
    let mut one = (Server::new(config.clone(), t0), PerConn::new());
    let mut batched = (Server::new(config, t0), PerConn::new());
    let step = |(s, seen): &mut (Server, PerConn), batch: bool, now: Instant| loop {
        let mut out = Vec::new();
        if batch {
            s.poll_transmits(&mut out);
        } else {
            while let Some(t) = s.poll_transmit() {
                out.push(t);
            }
        }
        if out.is_empty() {
            break;
        }
        for (c, t) in out {
            if let ServerTransmit::Frame(f) = &t {
                s.handle_sent(now, c, f.len());
            }
            seen.entry(c).or_default().push(t);
        }
    };
    let c3 = ConnId(3);
    let hello = r#"{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":2}"#;
    let mut sids = Vec::new();
    for (s, batch) in [(&mut one, false), (&mut batched, true)] {
        let now = t0;
        for c in [C1, C2] {
            s.0.handle_connected(now, c, ConnectInfo::default());
            s.0.handle_text(now, c, hello);
        }
        step(s, batch, now);
        let ids: Vec<SessionId> = [C1, C2]
            .iter()
            .map(|c| {
                let ServerTransmit::Frame(f) = &s.1[c][0] else {
                    panic!("no hello_ok")
                };
                let v: Value = serde_json::from_str(f).unwrap();
                SessionId(v["session_id"].as_str().unwrap().to_owned())
            })
            .collect();
        for i in 0..10 {
            for sid in &ids {
                s.0.publish(now, sid, "message", &[("n", json!(i))])
                    .unwrap();
            }
            if i % 4 == 0 {
                step(s, batch, now);
            }
        }
        step(s, batch, now);
        s.0.handle_closed(now + secs(1), C1);
        for i in 10..15 {
            s.0.publish(now + secs(1), &ids[0], "message", &[("n", json!(i))])
                .unwrap();
        }
        s.0.handle_connected(now + secs(2), c3, ConnectInfo::default());
        let resume = format!(
            r#"{{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":2,"session_id":"{}","since":4}}"#,
            ids[0]
        );
        s.0.handle_text(now + secs(2), c3, &resume);
        step(s, batch, now + secs(2));
        s.0.disconnect(now + secs(3), C2, 4000, "bye").unwrap();
        step(s, batch, now + secs(3));
        sids.push(ids);
    }
    assert_eq!(sids[0], sids[1], "the servers are alike");
    assert_eq!(one.1, batched.1);
    // The scenario reached what it meant to: a replay, live frames, a close.
    let c3_frames = batched.1[&c3].len();
    assert!(
        c3_frames > 10,
        "{c3_frames} frames to the resumed connection"
    );
    assert!(batched.1[&C2]
        .iter()
        .any(|t| matches!(t, ServerTransmit::Close { code: 4000, .. })));
}

/// A v2 resume of `sid` since `since` on `conn`: every frame it gets now.
fn resume_v2(
    s: &mut Server,
    now: Instant,
    conn: ConnId,
    sid: &SessionId,
    since: u64,
) -> Vec<Value> {
    s.handle_connected(now, conn, ConnectInfo::default());
    let out = hello(
        conn,
        s,
        now,
        &format!(
            r#"{{"type":"hello","agent_id":"echo","protocol_min":2,"protocol_max":2,"session_id":"{sid}","since":{since}}}"#
        ),
    );
    frames_of(&out, conn)
}

fn window_cfg(window: Duration) -> ServerConfig {
    ServerConfig {
        recovery_window: window,
        ..cfg()
    }
}

#[test]
fn events_stay_for_the_recovery_window_and_a_resume_after_it_learns_exactly_what_aged_out() {
    let t0 = t0();
    let mut s = Server::new(window_cfg(secs(10)), t0);
    let sid = connect_v1(&mut s, t0, C1);
    s.handle_closed(t0, C1);
    for (at, n) in [(0, 1), (6, 2), (12, 3)] {
        s.publish(t0 + secs(at), &sid, "m", &[("n", json!(n))])
            .unwrap();
    }
    // At 12 s event 1 is 12 s old: gone; event 2 (6 s old) is kept, whatever the bounds.
    let f = resume_v2(&mut s, t0 + secs(12), C2, &sid, 0);
    assert_eq!(
        (&f[0]["oldest_cursor"], &f[0]["resync_required"]),
        (&json!(2), &json!(true))
    );
    let replayed: Vec<&Value> = f.iter().filter(|f| f["type"] == "replay").collect();
    assert_eq!(replayed.len(), 2);
    assert_eq!(replayed[0]["event"]["data"]["n"], 2);
    let end = f.iter().find(|f| f["type"] == "replay_end").unwrap();
    assert_eq!((&end["lost_from"], &end["lost_to"]), (&json!(1), &json!(1)));
    // A resume at 10 s would still have had everything.
    let mut s = Server::new(window_cfg(secs(10)), t0);
    let sid = connect_v1(&mut s, t0, C1);
    s.handle_closed(t0, C1);
    s.publish(t0 + secs(1), &sid, "m", &[]).unwrap();
    let f = resume_v2(&mut s, t0 + secs(10), C2, &sid, 0);
    assert_eq!(f[0]["resync_required"], false);
}

#[test]
fn a_quiet_log_is_evicted_by_the_timer_within_a_second_of_the_window() {
    let t0 = t0();
    let mut s = Server::new(window_cfg(secs(10)), t0);
    let sid = connect_v1(&mut s, t0, C1);
    s.handle_closed(t0, C1);
    s.publish(t0 + secs(1), &sid, "m", &[]).unwrap();
    s.publish(t0 + secs(3), &sid, "m", &[]).unwrap();
    assert_eq!(s.stats().log_events, 2);
    // The session expires after an hour; the log's first deadline is event 1's, 1 s late.
    assert_eq!(s.poll_timeout(), Some(t0 + secs(12)));
    s.handle_timeout(t0 + secs(12));
    assert_eq!(s.stats().log_events, 1);
    assert_eq!(s.poll_timeout(), Some(t0 + secs(14)));
    s.handle_timeout(t0 + secs(14));
    assert_eq!((s.stats().log_events, s.stats().log_bytes), (0, 0));
    assert_eq!(s.poll_timeout(), Some(t0 + s.config().session_ttl));
    // Nothing retained: a resume since the head loses nothing, one since 1 loses 2..=2.
    let f = resume_v2(&mut s, t0 + secs(15), C2, &sid, 2);
    assert_eq!(f[0]["resync_required"], false);
    s.handle_closed(t0 + secs(15), C2);
    let f = resume_v2(&mut s, t0 + secs(15), ConnId(3), &sid, 1);
    let end = f.iter().find(|f| f["type"] == "replay_end").unwrap();
    assert_eq!((&end["lost_from"], &end["lost_to"]), (&json!(2), &json!(2)));
}

#[test]
fn the_total_bound_evicts_the_oldest_across_sessions_and_a_reader_left_behind_is_a_slow_consumer() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            // Room for about ten events in all.
            recovery_total_bytes: 10 * (60 + log::RECORD_COST),
            max_queued_frames: 1,
            ..cfg()
        },
        t0,
    );
    let a = connect_v1(&mut s, t0, C1);
    let b = connect_v1(&mut s, t0, C2);
    drain(&mut s, t0);
    // A's reader is stuck with one frame in flight (never confirmed): its events wait.
    s.publish(t0, &a, "m", &[("x", json!("a"))]).unwrap();
    s.publish(t0, &a, "m", &[("x", json!("a"))]).unwrap();
    let out: Vec<_> = std::iter::from_fn(|| s.poll_transmit()).collect();
    assert_eq!(texts_of(&out, C1).len(), 1, "one frame in flight");
    // B's stream pushes A's second event out of the log.
    for _ in 0..20 {
        s.publish(t0, &b, "m", &[("x", json!("b"))]).unwrap();
        drain(&mut s, t0);
    }
    assert!(s.stats().log_bytes <= s.config().recovery_total_bytes);
    // Once A's window opens it is owed an event that is gone: closed, never skipped. The
    // confirmation decides it, so its `Closing` is queued before the Close is handed out.
    let _ = events(&mut s);
    s.handle_sent(t0, C1, 1);
    let decided = events(&mut s);
    assert!(decided.iter().any(|e| matches!(
        e,
        ServerEvent::Closing {
            conn: C1,
            code: close::SLOW_CONSUMER,
            ..
        }
    )));
    assert!(decided
        .iter()
        .any(|e| matches!(e, ServerEvent::SessionDetached { session } if *session == a)));
    let out = drain(&mut s, t0);
    assert_eq!(texts_of(&out, C1), Vec::<String>::new());
    assert_eq!(
        close_of(&out, C1),
        Some((close::SLOW_CONSUMER, "slow_consumer".into()))
    );
    // Its resume learns exactly what it lost.
    s.handle_closed(t0, C1);
    let f = resume_v2(&mut s, t0, ConnId(3), &a, 1);
    let end = f.iter().find(|f| f["type"] == "replay_end").unwrap();
    assert_eq!((&end["lost_from"], &end["lost_to"]), (&json!(2), &json!(2)));
}

#[test]
fn a_sessions_byte_bound_evicts_only_its_own_oldest_events() {
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            recovery_session_bytes: 4 * (60 + log::RECORD_COST),
            ..cfg()
        },
        t0,
    );
    let a = connect_v1(&mut s, t0, C1);
    let b = connect_v1(&mut s, t0, C2);
    s.handle_closed(t0, C1);
    s.handle_closed(t0, C2);
    s.publish(t0, &b, "m", &[("x", json!("b"))]).unwrap();
    for _ in 0..10 {
        s.publish(t0, &a, "m", &[("x", json!("a"))]).unwrap();
    }
    let st = s.stats();
    assert!(st.max_window_bytes <= s.config().recovery_session_bytes);
    assert!(st.max_window_events < 10);
    // B's one event is untouched by A's bound.
    let f = resume_v2(&mut s, t0, ConnId(3), &b, 0);
    assert_eq!(f[0]["resync_required"], false);
    assert_eq!(f.iter().filter(|f| f["type"] == "replay").count(), 1);
    // The log holds what the windows hold, not what A evicted.
    assert_eq!(st.log_events, 1 + st.max_window_events);
}

#[test]
fn a_reader_whose_owed_event_aged_out_behind_a_full_window_is_closed_by_the_publish_that_finds_it_gone(
) {
    // The fuzzer's input: one frame in flight (the hello_ok, never confirmed), an event that
    // waits behind it, three hours, a second publish (its append evicts the first by age),
    // then the confirmation. The close is decided with the publish: its `Closing` is queued
    // before the Close is handed out.
    let t0 = t0();
    let mut s = Server::new(
        ServerConfig {
            max_queued_frames: 1,
            heartbeat_interval: Duration::ZERO,
            ..window_cfg(secs(120))
        },
        t0,
    );
    s.handle_connected(t0, C1, ConnectInfo::default());
    s.handle_text(
        t0,
        C1,
        r#"{"type":"hello","agent_id":"echo","protocol_min":1,"protocol_max":1}"#,
    );
    let out: Vec<_> = std::iter::from_fn(|| s.poll_transmit()).collect();
    let hello_ok = texts_of(&out, C1);
    assert_eq!(hello_ok.len(), 1, "the hello_ok fills the window");
    let sid = events(&mut s)
        .into_iter()
        .find_map(|e| match e {
            ServerEvent::SessionCreated { session, .. } => Some(session),
            _ => None,
        })
        .unwrap();
    s.publish(t0, &sid, "m", &[]).unwrap();
    assert!(
        s.poll_transmit().is_none(),
        "the event waits for the window"
    );
    let later = t0 + secs(3 * 3600);
    s.publish(later, &sid, "m", &[]).unwrap();
    assert!(
        events(&mut s).iter().any(|e| matches!(
            e,
            ServerEvent::Closing {
                conn: C1,
                code: close::SLOW_CONSUMER,
                ..
            }
        )),
        "Closing queued by the publish, before the Close is handed out"
    );
    s.handle_sent(later, C1, hello_ok[0].len());
    let out = drain(&mut s, later);
    assert_eq!(
        texts_of(&out, C1),
        Vec::<String>::new(),
        "event 1 never skipped"
    );
    assert_eq!(
        close_of(&out, C1),
        Some((close::SLOW_CONSUMER, "slow_consumer".into()))
    );
}
