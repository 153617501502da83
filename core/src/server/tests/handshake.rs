//! The handshake: hello_ok shapes, typed refusals, authentication, takeover, second hellos.

use super::*;

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
    let reference = include_str!("../../../tests/fixtures/praisonai-transcript-frames.jsonl")
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
