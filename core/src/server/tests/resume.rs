//! Resumes and replays: exact replays, reported loss, resync, leave, session expiry.

use super::*;

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
